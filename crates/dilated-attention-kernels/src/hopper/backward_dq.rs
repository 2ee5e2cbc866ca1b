//! `dQ` of the backward on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a), head dim 64 or
//! 128, warp-specialised like `super::forward`, whose cube, ring and walk it shares.
//!
//! Same math, shapes, grid and accumulation contract as `crate::sm80::backward_dq` (its module
//! docs hold them): a cube owns `ROWS = 128` gathered query rows (two consumer warpgroups of
//! 64), the producer warp fills the ring with chunks of `CHUNK = 64` gathered keys and values
//! (`super::ring::fill_stage`: the rows of keys that are not there land as zeros), and for each
//! chunk a warpgroup forms
//! - `S[64, 64] = Q·Kᵀ` and `dP[64, 64] = dO·Vᵀ` (`wgmma`, shared × shared, K-major, issued
//!   together),
//! - `dS = P ∘ (dP − Δ)` with `P = 2^{log2(e)·scale·S − L}` over the pairs the forward saw
//!   (`L` base 2, `+inf` for a row that sees no key, so its `P` is 0),
//! - `dQ[64, d] += dS·K` (`dS` from registers, `K` the MN-major operand, `trans-b`),
//!
//! then `dQ · scale` is added to (or stored into) `dq`. The cube's `Q` and `dO` rows are
//! staged once into K-major tiles by the consumers.
//!
//! Shapes: `q, dout: [batch, heads, n, d]`, `k, v: [batch, kv_heads, n, d]` read as 8-wide
//! vectors, `lse, delta: [batch, heads, n]` f32, `dq: [batch, heads, n, d]` (an f32
//! accumulator, or the inputs' dtype when stored). Shared memory: 97 KB a cube at head dim 64,
//! 193 KB at 128 (one cube an SM; `dK/dV` then runs on the manual-MMA kernel).

use cubecl::prelude::*;

use super::query_tile::{ROWS, stage_queries};
use super::ring::{CONSUMERS, Ring, STAGES, sync_consumers};
use super::schedule::serves;
use super::tiles::{p_fragments, plane_and_group, tiles_assign, tiles_into, wg_rows_bytes};
use super::tma::{fill_or_load, map_address};
use super::wgmma::{
    PANEL_ROW, Product, half_of, k_major, mma_rs_add, mma_ss_pair, mn_major, shared_address,
};
use crate::addressing::{Rows, locate};
use crate::args::{GradOperands, Operands, Pass};
use crate::sm80::backward_dq::write_query_grads;
use crate::sm80::forward::LOG2E;
use crate::sm80::grads::query_stats;
use crate::sm80::mma::{CHUNK, P2, Walk, exp2_approx, zero_tiles};

/// Whether the kernel serves head dim `d` (64 or 128).
pub(crate) fn serves_head_dim(d: usize) -> bool {
    matches!(d, 64 | 128)
}

#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dq_wgmma<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dq: &mut Tensor<G>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] bf16: bool,
    #[comptime] tma: bool,
    kmap: &TensorMap<F, Tiled>,
    vmap: &TensorMap<F, Tiled>,
) {
    let subtiles = comptime!(pass.block / ROWS);
    let d = comptime!(pass.head_dim);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        false,
    );
    let q0 = tile.qb * pass.block + (CUBE_POS_X as usize % subtiles) * ROWS;
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if !serves(&tile, &queries, q0) {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let (plane, group) = plane_and_group();

    // Stage s holds keys at vector 2s·tv and values at (2s + 1)·tv; the Q and dO tiles (ROWS
    // rows each) come last.
    let tv = comptime!(CHUNK * d / 8);
    let q_at = comptime!(2 * STAGES * tv);
    let g_at = comptime!(2 * STAGES * tv + ROWS * d / 8);
    let buf_len = comptime!(2 * STAGES * tv + 2 * ROWS * d / 8);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 1024usize);
    let mut kvalid = Shared::<[u32]>::new_slice(comptime!(STAGES * CHUNK));
    let ring = Ring::new();
    // The barriers are armed for every unit; the producer starts on the ring while the
    // consumers stage the Q and dO tiles.
    sync_cube();

    let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &keys, pass.block, false);
    let mut i = 0usize;
    if unit >= CONSUMERS {
        // Bound once: `gpu_asm!` must get their values (`super::tma`).
        let kaddr = map_address::<F>(kmap);
        let vaddr = map_address::<F>(vmap);
        let stages = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
        while walk.live() {
            ring.acquire(i);
            fill_or_load::<F, N>(
                &ring,
                i,
                &io.k,
                &io.v,
                &io.mask,
                &mut buf[0..buf_len],
                &mut kvalid[0..comptime!(STAGES * CHUNK)],
                stages,
                kaddr,
                vaddr,
                &tile,
                &keys,
                walk.first(pass.block),
                false,
                d,
                pass.masked,
                false,
                tma,
            );
            walk.advance(&io.runs, pass.block, false);
            i += 1;
        }
        terminate!();
    }

    stage_queries::<F, N>(&io.q, &mut buf[0..buf_len], &tile, &queries, q0, q_at, d);
    stage_queries::<F, N>(
        &grad.dout,
        &mut buf[0..buf_len],
        &tile,
        &queries,
        q0,
        g_at,
        d,
    );
    sync_consumers();

    let base = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
    let tile_bytes = comptime!((tv * 16) as u32);
    // K-major Q and dO tiles (A of S and dP), each warpgroup's rows 64 rows into a panel;
    // K-major key and value chunks (B of S and dP); MN-major keys (B of dQ).
    let wg = group as u32 * wg_rows_bytes();
    let dqt = k_major(base + comptime!((q_at * 16) as u32) + wg);
    let dgt = k_major(base + comptime!((g_at * 16) as u32) + wg);
    let sp = comptime!(Product::over_head_dim(bf16, d));
    let grad_product = comptime!(Product::over_chunk(bf16));

    let mut acc = zero_tiles(comptime!(d / 8));
    let sl2 = io.scale * LOG2E;
    let prow0 = q0 + group * 64 + (plane % 4) * 16;
    let (first_row, last_row) = (q0 + group * 64, q0 + group * 64 + 63);
    let g = (unit % 32) / 4;
    // L (base 2; +inf for a row with no key or past the segment) and Δ of rows g and g + 8.
    let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
    let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);
    let mut lrow = Array::<f32>::new(2usize);
    let mut drow = Array::<f32>::new(2usize);
    #[unroll]
    for h in 0..2usize {
        let (l, dl) = query_stats(
            &grad.lse,
            &grad.delta,
            &tile,
            l_base,
            d_base,
            prow0 + g + 8 * h,
            io.neg_inf,
        );
        lrow[h] = l;
        drow[h] = dl;
    }
    // A warpgroup whose rows all lie past the segment has nothing to add.
    let idle = first_row >= queries.hi;

    while walk.live() {
        let k0 = walk.first(pass.block);
        walk.advance(&io.runs, pass.block, false);
        let stage = i % STAGES;
        ring.take(i);
        // The landed chunk becomes visible to `wgmma`.
        sync_async_proxy_shared();

        // The warpgroup's rows all precede the chunk's keys: nothing to add (causal).
        let skip = idle || (pass.causal && k0 > last_row);
        if !skip {
            let kbase = base + comptime!(2 * tile_bytes) * stage as u32;
            dq_chunk::<F>(
                &mut acc,
                dqt,
                dgt,
                kbase,
                &kvalid[0..comptime!(STAGES * CHUNK)],
                stage,
                k0,
                &keys,
                prow0,
                &lrow,
                &drow,
                sl2,
                io.neg_inf,
                pass,
                sp,
                grad_product,
            );
        }
        // `wgmma` has finished reading the stage (each call waits for its products).
        ring.release(i);
        i += 1;
    }
    write_query_grads::<G>(
        &acc, dq, &tile, &queries, prow0, io.scale, 1usize, d, overwrite,
    );
}

/// One warpgroup's chunk of `CHUNK` keys, its keys at shared address `kbase` and its values
/// one tile on (ring stage `stage`, key flags at `kvalid[stage · CHUNK..]`): `S` and `dP`
/// issued together, `dS = P ∘ (dP − Δ)` in `dP`'s place (the masks only where the chunk meets
/// an edge of `keys`, the padding mask or the causal diagonal), then `dQ += dS·K` into `acc`
/// (`d / 8` tiles), one product per 64 columns of the head dim. `dqt`, `dgt`: the descriptors
/// of the warpgroup's `Q` and `dO` rows.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn dq_chunk<F: Float>(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    dqt: u64,
    dgt: u64,
    kbase: u32,
    kvalid: &[u32],
    stage: usize,
    k0: usize,
    keys: &Rows,
    prow0: usize,
    lrow: &Array<f32>,
    drow: &Array<f32>,
    sl2: f32,
    neg_inf: f32,
    #[comptime] pass: Pass,
    #[comptime] sp: Product,
    #[comptime] grad_product: Product,
) {
    let d = comptime!(pass.head_dim);
    let vbase = kbase + comptime!((CHUNK * d / 8 * 16) as u32);
    // S and dP, issued together.
    let sdp = mma_ss_pair(dqt, k_major(kbase), dgt, k_major(vbase), sp);
    let mut s = zero_tiles(8usize);
    tiles_assign(&mut s, 0usize, half_of(sdp, 0usize));
    let mut dp = zero_tiles(8usize);
    tiles_assign(&mut dp, 0usize, half_of(sdp, 1usize));

    let mut need = k0 < keys.lo || k0 + CHUNK > keys.hi;
    if comptime!(pass.masked) {
        need = true;
    }
    if comptime!(pass.causal) {
        need = need || k0 + CHUNK > prow0 + 1;
    }
    // dS = P ∘ (dP − Δ) in dP's place; the masks only for a chunk at an edge (one branch a
    // chunk, not a predicate on every score).
    if need {
        grad_scores(
            &s,
            &mut dp,
            kvalid,
            stage * CHUNK,
            k0,
            prow0,
            lrow,
            drow,
            sl2,
            neg_inf,
            pass.causal,
            true,
        );
    } else {
        grad_scores(
            &s,
            &mut dp,
            kvalid,
            stage * CHUNK,
            k0,
            prow0,
            lrow,
            drow,
            sl2,
            neg_inf,
            pass.causal,
            false,
        );
    }
    // dQ += dS·K, one call per 64 columns of the head dim.
    let df = p_fragments::<F>(&dp);
    #[unroll]
    for hh in 0..comptime!(d / 64) {
        let b = mn_major(kbase + comptime!((hh * CHUNK * PANEL_ROW) as u32));
        let o = mma_rs_add(tiles_into(&*acc, comptime!(8 * hh)), df, b, grad_product);
        tiles_assign(acc, comptime!(8 * hh), o);
    }
}

/// `dS = P ∘ (dP − Δ)` in `dp`'s place for one warpgroup's chunk: `P = 2^{sl2 · S − L}` from
/// the scores `s`, `L` and `Δ` of the unit's rows in `lrow` and `drow`. With `masked`, a pair
/// whose key is not there (`kvalid[kv0 + key]`) or, causal, lies after the row gets `P = 0`
/// and `dS = 0` (even where `dP` is NaN: a causal-future key whose value row is not finite).
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
fn grad_scores(
    s: &Sequence<Array<Vector<f32, P2>>>,
    dp: &mut Sequence<Array<Vector<f32, P2>>>,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    prow0: usize,
    lrow: &Array<f32>,
    drow: &Array<f32>,
    sl2: f32,
    neg_inf: f32,
    #[comptime] causal: bool,
    #[comptime] masked: bool,
) {
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    #[unroll]
    for j in 0..8usize {
        #[unroll]
        for h in 0..2usize {
            let row = prow0 + g + 8 * h;
            let x = s.index(j)[h];
            let mut y = dp.index(j)[h];
            #[unroll]
            for c in 0..2usize {
                let key = j * 8 + 2 * t + c;
                let mut xs = x.extract(c) * sl2;
                let mut ok = true;
                if comptime!(masked) {
                    ok = kvalid[kv0 + key] != 0;
                    if comptime!(causal) {
                        ok = ok && k0 + key <= row;
                    }
                    xs = select(ok, xs, neg_inf);
                }
                let p = exp2_approx(xs - lrow[h]);
                let mut ds = p * (y.extract(c) - drow[h]);
                if comptime!(masked) {
                    ds = select(ok, ds, 0.0f32);
                }
                y.insert(c, ds);
            }
            let dj = dp.index_mut(j);
            dj[h] = y;
        }
    }
}

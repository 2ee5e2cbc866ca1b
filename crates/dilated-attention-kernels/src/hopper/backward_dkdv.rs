//! `dK/dV` of the backward on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a), head dim 64,
//! warp-specialised like `super::forward`.
//!
//! Same math, shapes, grid and accumulation contract as `crate::sm80::backward_dkdv` (whose
//! module docs and `crate::sm80::backward_dq`'s hold them): rows are keys, the walk goes over
//! the chunks of queries that see them (the transposed layout), and for each chunk
//! - `Sᵀ[64, 64] = K·Qᵀ` and `dPᵀ[64, 64] = V·dOᵀ` (`wgmma`, both operands in shared memory,
//!   K-major; issued together, waited for once),
//! - `Pᵀ = 2^{log2(e)·scale·Sᵀ − L}` with `L` per column (query), causal-masked, and
//!   `dSᵀ = Pᵀ ∘ (dPᵀ − Δ)` with `Δ` per column,
//! - `dV[64, d] += Pᵀ·dO` and `dK[64, d] += dSᵀ·Q` (`Pᵀ`, `dSᵀ` from registers, `dO` and `Q`
//!   the MN-major operands, `trans-b`; issued together),
//!
//! then `dK · scale` and `dV` are added to (or stored into) the gradient buffers. `dQ` is
//! `super::backward_dq`'s job.
//!
//! A cube is 288 units: a producer warp fills the ring (`super::ring`) with chunks of
//! `CHUNK = 64` gathered query and `dO` rows and their `L` (base 2, `+inf` for a query that
//! sees no key or lies past the segment, so that its `p` is 0) and `Δ`; two consumer
//! warpgroups own 64 keys each of the cube's `ROWS = 128`, whose `K` and `V` rows they stage
//! once (zeros for keys that are not there, so `0 · NaN` cannot reach a gradient). A
//! warpgroup whose keys all follow a chunk's queries (causal) or lie past the segment skips
//! the chunk but still takes and releases its stage.
//!
//! Shapes: `q, dout: [batch, heads, n, 64]`, `k, v: [batch, kv_heads, n, 64]` read as 8-wide
//! vectors, `lse, delta: [batch, heads, n]` f32, `dk, dv: [batch, heads, n, 64]` (per query
//! head; f32 accumulators, or the inputs' dtype when stored). Shared memory: 100 KB a cube.

use cubecl::prelude::*;

use super::forward::{p_fragments, tile_vector, tiles_assign, tiles_into, wg_rows_bytes};
use super::ring::{CONSUMERS, Ring, STAGES, copy_pair, sync_consumers};
use super::wgmma::{
    PANEL_ROW, Product, half_of, k_major, mma_rs_add_pair, mma_ss_pair, mn_major, shared_address,
    swizzled,
};
use crate::addressing::{Rows, Tile, locate};
use crate::args::{GradOperands, Operands, Pass};
use crate::sm80::backward_dkdv::{query_stats, write_key_grads};
use crate::sm80::forward::{LOG2E, key_present};
use crate::sm80::mma::{CHUNK, Walk, exp2_approx, zero_tiles};

/// Keys per cube: two warpgroups of one `wgmma` M (64 rows) each.
pub(crate) const ROWS: usize = 128;
/// Units per cube: two consumer warpgroups and the producer warp.
pub(crate) const THREADS: usize = CONSUMERS + super::ring::PRODUCERS;

/// Whether the kernel serves head dim `d` (64: at 128 its four accumulators would not fit
/// the registers).
pub(crate) fn serves_head_dim(d: usize) -> bool {
    d == 64
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dkdv_wgmma<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dk: &mut Tensor<G>,
    dv: &mut Tensor<G>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] bf16: bool,
) {
    // Rows are keys: `tile.qb` is the key block, the transposed layout lists its query blocks.
    let subtiles = comptime!(pass.block / ROWS);
    let d = comptime!(pass.head_dim);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        false,
    );
    let k0 = tile.qb * pass.block + (CUBE_POS_X as usize % subtiles) * ROWS;
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || k0 >= keys.hi || k0 + ROWS <= keys.lo {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let group = unit / 128;

    // Stage s holds query rows at vector 2s·tv and dO rows at (2s + 1)·tv; the K and V tiles
    // (ROWS rows each) come last.
    let tv = comptime!(CHUNK * d / 8);
    let k_at = comptime!(2 * STAGES * tv);
    let v_at = comptime!(2 * STAGES * tv + ROWS * d / 8);
    let buf_len = comptime!(2 * STAGES * tv + 2 * ROWS * d / 8);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 1024usize);
    let mut lq = Shared::<[f32]>::new_slice(comptime!(STAGES * CHUNK));
    let mut dlt = Shared::<[f32]>::new_slice(comptime!(STAGES * CHUNK));
    let ring = Ring::new();
    // The barriers are armed for every unit; the producer starts on the ring while the
    // consumers stage the K and V tiles.
    sync_cube();

    let mut walk = Walk::new(
        &io.blocks,
        &io.runs,
        tile.csr_base + tile.qb,
        queries.first_block(pass.block),
        queries.end_block(pass.block),
        false,
    );
    let mut i = 0usize;
    if unit >= CONSUMERS {
        let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
        let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);
        let lane = unit % 32;
        while walk.live() {
            ring.acquire(i);
            let first = walk.first(pass.block);
            let s = i % STAGES;
            #[unroll]
            for h in 0..2usize {
                let r = lane + 32 * h;
                let (l, dl) = query_stats(
                    &grad.lse,
                    &grad.delta,
                    &tile,
                    l_base,
                    d_base,
                    first + r,
                    io.neg_inf,
                );
                lq[s * CHUNK + r] = l;
                dlt[s * CHUNK + r] = dl;
            }
            copy_pair::<F, N>(
                &io.q,
                &grad.dout,
                &io.mask,
                &mut buf[0..buf_len],
                &tile,
                &queries,
                tile.head,
                first,
                s * comptime!(2 * tv),
                d,
                false,
                false,
            );
            ring.publish(i);
            walk.advance(&io.runs, pass.block, false);
            i += 1;
        }
        terminate!();
    }

    stage_keys::<F, N>(
        &io.k,
        &io.v,
        &io.mask,
        &mut buf[0..buf_len],
        &tile,
        &keys,
        k0,
        k_at,
        v_at,
        pass,
    );
    sync_consumers();

    let base = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
    let tile_bytes = comptime!((tv * 16) as u32);
    // K-major K and V tiles (A of Sᵀ and dPᵀ), each warpgroup's 64 keys 64 rows into a panel;
    // K-major query and dO chunks (B of Sᵀ and dPᵀ) as the forward's keys; MN-major ones (B of
    // dV and dK) as its values.
    let wg = group as u32 * wg_rows_bytes();
    let dkt = k_major(base + comptime!((k_at * 16) as u32) + wg);
    let dvt = k_major(base + comptime!((v_at * 16) as u32) + wg);
    let st = comptime!(Product {
        bf16,
        steps: (d / 16) as u32,
        a_panel: (ROWS * PANEL_ROW) as u32,
        b_panel: (CHUNK * PANEL_ROW) as u32,
        b_transposed: false,
    });
    let grad_product = comptime!(Product {
        bf16,
        steps: (CHUNK / 16) as u32,
        a_panel: 0,
        b_panel: 0,
        b_transposed: true,
    });

    let mut dk_acc = zero_tiles(comptime!(d / 8));
    let mut dv_acc = zero_tiles(comptime!(d / 8));
    let sl2 = io.scale * LOG2E;
    let kw0 = k0 + group * 64;
    let krow0 = kw0 + (plane % 4) * 16;
    let lane = unit % 32;
    let (g, t) = (lane / 4, lane % 4);
    // A warpgroup whose keys all lie past the segment has nothing to add.
    let idle = kw0 >= keys.hi;

    while walk.live() {
        let c0 = walk.first(pass.block);
        walk.advance(&io.runs, pass.block, false);
        let stage = i % STAGES;
        ring.take(i);
        // The landed chunk becomes visible to `wgmma`.
        sync_async_proxy_shared();

        // The warpgroup's keys all follow the chunk's queries: nothing to add (causal).
        let skip = idle || (pass.causal && c0 + CHUNK <= kw0);
        if !skip {
            let cq0 = stage * CHUNK;
            let qbase = base + comptime!(2 * tile_bytes) * stage as u32;
            let gbase = qbase + tile_bytes;

            // Sᵀ and dPᵀ, issued together.
            let sdp = mma_ss_pair(dkt, k_major(qbase), dvt, k_major(gbase), st);
            let mut s = zero_tiles(8usize);
            tiles_assign(&mut s, 0usize, half_of(sdp, 0usize));
            let mut dp = zero_tiles(8usize);
            tiles_assign(&mut dp, 0usize, half_of(sdp, 1usize));
            // Pᵀ = 2^{x − L} (queries along the columns), then dSᵀ = Pᵀ ∘ (dPᵀ − Δ) in dPᵀ's
            // place.
            let need = pass.causal && c0 < krow0 + 16;
            #[unroll]
            for j in 0..8usize {
                #[unroll]
                for h in 0..2usize {
                    let key = krow0 + g + 8 * h;
                    let mut x = s.index(j)[h];
                    let mut y = dp.index(j)[h];
                    #[unroll]
                    for c in 0..2usize {
                        let col = j * 8 + 2 * t + c;
                        let mut xs = x.extract(c) * sl2;
                        if need {
                            xs = select(key <= c0 + col, xs, io.neg_inf);
                        }
                        let p = exp2_approx(xs - lq[cq0 + col]);
                        x.insert(c, p);
                        y.insert(c, p * (y.extract(c) - dlt[cq0 + col]));
                    }
                    let sj = s.index_mut(j);
                    sj[h] = x;
                    let dj = dp.index_mut(j);
                    dj[h] = y;
                }
            }
            // dV += Pᵀ·dO and dK += dSᵀ·Q, issued together, one pair per 64 columns of the
            // head dim.
            let (pf, df) = (p_fragments::<F>(&s), p_fragments::<F>(&dp));
            #[unroll]
            for hh in 0..comptime!(d / 64) {
                let half = comptime!((hh * CHUNK * PANEL_ROW) as u32);
                let o = mma_rs_add_pair(
                    tiles_into(&dv_acc, comptime!(8 * hh)),
                    pf,
                    mn_major(gbase + half),
                    tiles_into(&dk_acc, comptime!(8 * hh)),
                    df,
                    mn_major(qbase + half),
                    grad_product,
                );
                tiles_assign(&mut dv_acc, comptime!(8 * hh), half_of(o, 0usize));
                tiles_assign(&mut dk_acc, comptime!(8 * hh), half_of(o, 1usize));
            }
        }
        // `wgmma` has finished reading the stage (each call waits for its products).
        ring.release(i);
        i += 1;
    }
    write_key_grads::<F, G, N>(
        &dk_acc, &dv_acc, dk, dv, io, &tile, &keys, krow0, pass, overwrite,
    );
}

/// Loads the cube's `ROWS` gathered key and value rows from `k0` into the K-major tiles at
/// vectors `k_at` and `v_at` (the consumer units, `CONSUMERS` of them; a plain load a vector);
/// the rows of keys that are not there (padding, past the segment) become zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_keys<F: Float, N: Size>(
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    keys: &Rows,
    k0: usize,
    #[comptime] k_at: usize,
    #[comptime] v_at: usize,
    #[comptime] pass: Pass,
) {
    let nv = N::value();
    let k_base = tile.batch * k.stride(0) + tile.kv_head * k.stride(1);
    let v_base = tile.batch * v.stride(0) + tile.kv_head * v.stride(1);
    #[unroll]
    for i in 0..comptime!(ROWS * pass.head_dim / 8 / CONSUMERS) {
        let e = UNIT_POS as usize + i * CONSUMERS;
        let (r, c) = tile_vector(e);
        let to = swizzled(r, c, ROWS);
        if key_present(mask, tile, k0 + r, pass.masked) != 0 {
            let p = keys.row(tile, k0 + r);
            buf[k_at + to] = k[(k_base + p * k.stride(2)) / nv + c];
            buf[v_at + to] = v[(v_base + p * v.stride(2)) / nv + c];
        } else {
            buf[k_at + to] = Vector::new(F::new(0.0));
            buf[v_at + to] = Vector::new(F::new(0.0));
        }
    }
}

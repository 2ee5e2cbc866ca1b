//! `dK/dV` of the backward on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a), head dims 64
//! and 128, warp-specialised like `super::forward`.
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
//! `super::backward_dq`'s job, or this kernel's with `fuse_dq` (`super::fused_dq`: `dSᵀ`
//! through shared memory into `dQ = dS·K`, added by f32 reductions). At head dim 128 the two
//! accumulators take 128 registers a unit, so a chunk's queries go in two halves of
//! `NARROW = 32`: `Sᵀ` and `dPᵀ` are `[64, 32]` (`m64n32k16`, 16 registers each) and the
//! gradient products contract over 32 queries — the same sums, in the same order within a
//! half.
//!
//! A cube is 288 units at head dim 64 and 384 at 128, where a producer warpgroup gives most of
//! its registers to the consumers (`setmaxnreg`: 40 a unit for it, 232 for them; launched,
//! each unit gets ptxas's 168). A producer warp fills the ring (`super::ring`) with chunks of
//! `CHUNK = 64` gathered query and `dO` rows and their `L` (base 2, `+inf` for a query that
//! sees no key or lies past the segment, so that its `p` is 0) and `Δ`; two consumer
//! warpgroups own 64 keys each of the cube's `ROWS = 128`, whose `K` and `V` rows they stage
//! once (zeros for keys that are not there, so `0 · NaN` cannot reach a gradient). A
//! warpgroup whose keys all follow a chunk's (or a half's) queries (causal) or lie past the
//! segment skips them; it still takes and releases every stage.
//!
//! Shapes: `q, dout: [batch, heads, n, d]`, `k, v: [batch, kv_heads, n, d]` read as 8-wide
//! vectors, `lse, delta: [batch, heads, n]` f32, `dk, dv: [batch, heads, n, d]` (per query
//! head; f32 accumulators, or the inputs' dtype when stored), `dq: [batch, heads, n, d]` f32
//! (`fuse_dq` only). Shared memory a cube: four stages of `2 · CHUNK · d` and the `2 · ROWS · d`
//! key and value rows, f16/bf16 — 96 KB at head dim 64, 192 KB at 128 — and with `fuse_dq` the
//! 16 KB `dS` tile ([`shared_bytes`]).

use cubecl::prelude::*;

use super::dkdv_step::{NARROW, dkdv_chunk};
use super::fused_dq::{DS_BYTES, DS_VECTORS, add_chunk_dq, zero_ds};
use super::registers::{RegisterSplit, consumer_registers, producer_registers};
use super::ring::{CONSUMERS, PRODUCERS, Ring, STAGES, copy_pair, sync_consumers, whole_chunk};
use super::schedule::serves;
use super::tiles::{plane_and_group, tile_vector, wg_rows_bytes};
use super::tma::{load_whole_chunk, map_address};
use super::wgmma::{Product, k_major, shared_address, swizzled};
use crate::addressing::{Rows, Tile, locate};
use crate::args::{GradOperands, Operands, Pass};
use crate::sm80::forward::{LOG2E, key_present};
use crate::sm80::grads::{warp_query_stats, write_key_grads};
use crate::sm80::mma::{CHUNK, P2, Walk, occupancy_hint, zero_tiles};

/// Keys per cube: two warpgroups of one `wgmma` M (64 rows) each.
pub(crate) const ROWS: usize = 128;
/// Whether the kernel at head dim `d` moves registers from a producer warpgroup to the
/// consumers (`setmaxnreg`): at 128, where the two accumulators alone take 128 registers a
/// unit. At 64 the kernel needs no more than the 168 a unit it launches with, and measured
/// slower with the move (`docs/benchmarks.md`, session 16).
pub(crate) fn shares_registers(d: usize) -> bool {
    d == 128
}

/// Units per cube at head dim `d`: two consumer warpgroups and the producer warp, or a whole
/// producer warpgroup (whose first warp fills the ring) where the kernel shares registers.
pub(crate) fn threads(d: usize) -> usize {
    CONSUMERS + if shares_registers(d) { 128 } else { PRODUCERS }
}

/// Whether the kernel serves head dim `d` (64 or 128).
pub(crate) fn serves_head_dim(d: usize) -> bool {
    d == 64 || d == 128
}

/// Shared memory of a cube at head dim `d`, in bytes: the ring's stages, the key and value
/// tiles, the stages' `L` and `Δ`, the ring's barriers, and the `dS` tile where `fuse_dq`.
pub(crate) fn shared_bytes(d: usize, fuse_dq: bool) -> usize {
    (2 * STAGES * CHUNK + 2 * ROWS) * d * 2
        + 2 * STAGES * CHUNK * 4
        + 16 * STAGES
        + if fuse_dq { DS_BYTES } else { 0 }
}

#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dkdv_wgmma<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dk: &mut Tensor<G>,
    dv: &mut Tensor<G>,
    dq: &mut Tensor<Vector<f32, P2>>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] bf16: bool,
    #[comptime] tma: bool,
    #[comptime] fuse_dq: bool,
    qmap: &TensorMap<F, Tiled>,
    gmap: &TensorMap<F, Tiled>,
) {
    let share = comptime!(shares_registers(pass.head_dim));
    // ptxas honours `setmaxnreg` only where it knows the registers at entry.
    occupancy_hint(comptime!(u32::from(share)));
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
    if !serves(&tile, &keys, k0) {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let (plane, group) = plane_and_group();

    // Stage s holds query rows at vector 2s·tv and dO rows at (2s + 1)·tv; the K and V tiles
    // (ROWS rows each) come last.
    let tv = comptime!(CHUNK * d / 8);
    let k_at = comptime!(2 * STAGES * tv);
    let v_at = comptime!(2 * STAGES * tv + ROWS * d / 8);
    let buf_len = comptime!(2 * STAGES * tv + 2 * ROWS * d / 8);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 1024usize);
    let mut lq = Shared::<[f32]>::new_slice(comptime!(STAGES * CHUNK));
    let mut dlt = Shared::<[f32]>::new_slice(comptime!(STAGES * CHUNK));
    let ds_len = comptime!(if fuse_dq { DS_VECTORS } else { 8 });
    let mut dsb = Shared::<[Vector<F, N>]>::new_aligned_slice(ds_len, 1024usize);
    let ring = Ring::new();
    // The barriers are armed for every unit; the producer starts on the ring while the
    // consumers stage the K and V tiles.
    sync_cube();

    let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &queries, pass.block, false);
    let mut i = 0usize;
    if unit >= CONSUMERS {
        if comptime!(share) {
            producer_registers(RegisterSplit::BALANCED);
        }
        // Bound once: `gpu_asm!` must get their values (`super::tma`).
        let qaddr = map_address::<F>(qmap);
        let gaddr = map_address::<F>(gmap);
        let stages = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
        let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
        let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);
        while walk.live() {
            ring.acquire(i);
            let first = walk.first(pass.block);
            fill_query_stage::<F, N>(
                &ring,
                i,
                io,
                grad,
                &mut buf[0..buf_len],
                &mut lq[0..comptime!(STAGES * CHUNK)],
                &mut dlt[0..comptime!(STAGES * CHUNK)],
                stages,
                qaddr,
                gaddr,
                &tile,
                &queries,
                first,
                l_base,
                d_base,
                pass,
                tma,
            );
            walk.advance(&io.runs, pass.block, false);
            i += 1;
        }
        terminate!();
    }
    if comptime!(share) {
        consumer_registers(RegisterSplit::BALANCED);
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
    // K-major K and V tiles (A of Sᵀ and dPᵀ), each warpgroup's 64 keys 64 rows into a panel;
    // K-major query and dO chunks (B of Sᵀ and dPᵀ) as the forward's keys; MN-major ones (B of
    // dV and dK) as its values.
    let wg = group as u32 * wg_rows_bytes();
    let dkt = k_major(base + comptime!((k_at * 16) as u32) + wg);
    let dvt = k_major(base + comptime!((v_at * 16) as u32) + wg);
    let st = comptime!(Product::over_head_dim(bf16, d));
    let grad_product = comptime!(Product::over_chunk(bf16));
    let narrow_grad = comptime!(Product {
        steps: (NARROW / 16) as u32,
        ..grad_product
    });

    let mut dk_acc = zero_tiles(comptime!(d / 8));
    let mut dv_acc = zero_tiles(comptime!(d / 8));
    let sl2 = io.scale * LOG2E;
    let kw0 = k0 + group * 64;
    let pw = plane % 4;
    let krow0 = kw0 + pw * 16;
    let ds_at = shared_address::<Vector<F, N>>(&dsb[0..ds_len]);
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
            dkdv_chunk::<F, N>(
                &mut dk_acc,
                &mut dv_acc,
                dkt,
                dvt,
                base,
                stage,
                &lq[0..comptime!(STAGES * CHUNK)],
                &dlt[0..comptime!(STAGES * CHUNK)],
                &mut dsb[0..ds_len],
                c0,
                kw0,
                krow0,
                sl2,
                io.neg_inf,
                group,
                pw,
                pass,
                st,
                grad_product,
                narrow_grad,
                fuse_dq,
            );
        }
        // `wgmma` has finished reading the stage (each call waits for its products).
        ring.release(i);
        // The fused dQ, unless every key of the cube follows the chunk's queries (causal).
        if comptime!(fuse_dq) && !(pass.causal && c0 + CHUNK <= k0) {
            if skip {
                zero_ds::<F, N>(&mut dsb[0..ds_len], 0usize, CHUNK, group);
            }
            add_chunk_dq::<F, N>(
                dq,
                io,
                &tile,
                &queries,
                ds_at,
                base + comptime!((k_at * 16) as u32),
                c0,
                group,
                pw,
                bf16,
            );
        }
        i += 1;
    }
    write_key_grads::<F, G, N>(
        &dk_acc, &dv_acc, dk, dv, io, &tile, &keys, krow0, pass, overwrite,
    );
}

/// Producer (one warp): chunk `i` of queries from `first` into its ring stage — the rows' `L`
/// and `Δ` into `lq`, `dlt` (two a lane), the query and `dO` rows by TMA where the chunk is
/// whole (and `tma`), else by the row copies — and published. `stages`: the ring's shared
/// address; `l_base`, `d_base`: the tile's head in `lse` and `delta`.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn fill_query_stage<F: Float, N: Size>(
    ring: &Ring,
    i: usize,
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    lq: &mut [f32],
    dlt: &mut [f32],
    stages: u32,
    qaddr: u64,
    gaddr: u64,
    tile: &Tile,
    queries: &Rows,
    first: usize,
    l_base: usize,
    d_base: usize,
    #[comptime] pass: Pass,
    #[comptime] tma: bool,
) {
    let d = comptime!(pass.head_dim);
    let tv = comptime!(CHUNK * d / 8);
    let s = i % STAGES;
    warp_query_stats(
        &grad.lse,
        &grad.delta,
        tile,
        l_base,
        d_base,
        first,
        io.neg_inf,
        lq,
        dlt,
        s * CHUNK,
        CHUNK,
    );
    let mut whole = false;
    if comptime!(tma) {
        whole = whole_chunk(tile, queries, first, false, false);
    }
    if whole {
        let dst = stages + comptime!((2 * tv * 16) as u32) * s as u32;
        load_whole_chunk(
            ring, i, qaddr, gaddr, dst, tile, queries, tile.head, first, d,
        );
    } else {
        copy_pair::<F, N>(
            &io.q,
            &grad.dout,
            &io.mask,
            buf,
            tile,
            queries,
            tile.head,
            first,
            s * comptime!(2 * tv),
            d,
            false,
            false,
        );
        ring.publish(i);
    }
}

/// Loads the cube's `ROWS` gathered key and value rows from `k0` into the K-major tiles at
/// vectors `k_at` and `v_at` (the consumer units, `CONSUMERS` of them; a plain load a vector);
/// the rows of keys that are not there (padding, past the segment) become zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_keys<F: Float, N: Size>(
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

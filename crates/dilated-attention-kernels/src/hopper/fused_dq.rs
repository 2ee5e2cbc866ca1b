//! `dQ` inside the Hopper `dK/dV` kernel (`Sm80Tuning::fused_dq`): FlashAttention's single
//! backward kernel on `wgmma`, so that `S` and `dP` are computed once per block pair instead of
//! once in `dK/dV` and again in `super::backward_dq` (five products instead of seven).
//!
//! For each chunk of `CHUNK = 64` queries that sees the cube's `ROWS = 128` keys:
//! - every consumer unit writes its part of `dSᵀ[128, 64]` (the scores `super::backward_dkdv`
//!   computes in registers, rounded to the inputs' dtype) transposed into the query-major tile
//!   `dS[64, 128]` by `stmatrix.trans`: row `q`, the cube's keys as two 64-column panels in the
//!   128-byte swizzled layout, warpgroup `g`'s keys in panel `g`;
//! - after a barrier of both consumer warpgroups, warpgroup `g` forms
//!   `dQ[64, 64g .. 64g + 64] = dS[64, 128] · K[128, 64g .. 64g + 64]` (`wgmma`, `dS` K-major
//!   from the tile, `K` MN-major from the staged key tile's panel `g`: contraction over all
//!   of the cube's keys);
//! - and adds `scale · dQ` to the query rows of real tokens of the f32 `dq: [batch, heads, n,
//!   d]` by paired f32 reductions (`red.global.add.v2.f32`, fire and forget: CubeCL's
//!   `fetch_add` lowers to an `atom` whose unused result ptxas still waits for): each unit
//!   holds two adjacent columns of a row per accumulator pair.
//!
//! A warpgroup whose keys all follow the chunk's (or a half's) queries (causal), or lie past
//! the segment, computes no scores but writes zeros into its columns of `dS`: both warpgroups
//! meet at every barrier of a chunk that any of the cube's keys see. Keys that are not there
//! have zero rows in the staged `K`, so their `dS` (finite: their `V` rows are zeros too) adds
//! nothing.

use cubecl::cmma::MatrixIdent;
use cubecl::prelude::*;

use super::backward_dkdv::ROWS;
use super::ring::sync_consumers;
use super::tiles::tiles_assign;
use super::wgmma::{PANEL_ROW, Product, k_major, mma_ss, mn_major, swizzled};
use crate::addressing::{Rows, Tile};
use crate::args::Operands;
use crate::sm80::mma::{CHUNK, P2, mma_def, tiles_as_a, zero_tiles};

/// 16-byte vectors of the `dS` tile: `CHUNK` rows of the cube's `ROWS` keys, in the 128-byte
/// swizzled layout of `super::wgmma::swizzled` (row `q`, key vector column `c`).
pub(crate) const DS_VECTORS: usize = CHUNK * ROWS / 8;

/// Bytes of the `dS` tile (what the fused `dQ` adds to a cube's shared memory).
pub(crate) const DS_BYTES: usize = DS_VECTORS * 16;

/// Writes the unit's `dSᵀ` of `steps` 16-query steps into `dS`: accumulator tiles
/// `tile0 + 2s, tile0 + 2s + 1` of `sd` hold its keys `g`, `g + 8` of its plane's 16 at
/// queries `q0 + 16s ..`, which `stmatrix.trans` stores as `dS` rows. `group` and `pw` are the
/// unit's warpgroup and its plane within it.
#[cube]
pub(crate) fn store_ds<F: Float, N: Size>(
    dsb: &mut [Vector<F, N>],
    sd: &Sequence<Array<Vector<f32, P2>>>,
    #[comptime] tile0: usize,
    #[comptime] steps: usize,
    #[comptime] q0: usize,
    group: usize,
    pw: usize,
) {
    let mma = mma_def::<F>();
    let lane = UNIT_POS_PLANE as usize;
    // Lane `8m + r` gives the address of row `r` of fragment matrix `m`: key half `m % 2`,
    // query half `m / 2` of the step.
    let (m8, r8) = (lane / 8, lane % 8);
    let c = group * 8 + pw * 2 + m8 % 2;
    #[unroll]
    for s in 0..steps {
        let a = tiles_as_a::<F>(sd, comptime!(tile0 / 2 + s));
        let q = q0 + s * 16 + (m8 / 2) * 8 + r8;
        let idx = swizzled(q, c, CHUNK);
        mma.store_matrix::<_, P2>(&mut dsb[idx..idx + 1], &a, MatrixIdent::A, 4usize, true);
    }
}

/// Zeros in warpgroup `group`'s columns of `dS` rows `q0 .. q0 + rows` (its 128 units, one
/// vector each per eight rows): the warpgroup has no scores there.
#[cube]
pub(crate) fn zero_ds<F: Float, N: Size>(
    dsb: &mut [Vector<F, N>],
    #[comptime] q0: usize,
    #[comptime] rows: usize,
    group: usize,
) {
    let u = UNIT_POS as usize % 128;
    #[unroll]
    for i in 0..comptime!(rows / 16) {
        let e = u + 128 * i;
        let idx = swizzled(q0 + e / 8, group * 8 + e % 8, CHUNK);
        dsb[idx] = Vector::new(F::new(0.0));
    }
}

/// The chunk's `dQ` from the finished `dS` tile (at shared address `ds_at`) and the staged key
/// tile (`k_at`: its first panel), added to `dq`: the barrier that makes every unit's `dS`
/// visible to `wgmma`, warpgroup `group`'s 64 columns of `dS · K`, a second barrier (no unit
/// may write the next chunk's `dS` before both warpgroups' products have read this one), then
/// the atomics for queries `c0 ..` that are tokens of the segment.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_chunk_dq<F: Float, N: Size>(
    dq: &mut Tensor<Vector<f32, P2>>,
    io: &Operands<Vector<F, N>>,
    tile: &Tile,
    queries: &Rows,
    ds_at: u32,
    k_at: u32,
    c0: usize,
    group: usize,
    pw: usize,
    #[comptime] bf16: bool,
) {
    sync_consumers();
    let product = comptime!(Product {
        bf16,
        steps: (ROWS / 16) as u32,
        a_panel: (CHUNK * PANEL_ROW) as u32,
        b_panel: 0,
        b_transposed: true,
        in_flight: false,
    });
    let panel = group as u32 * comptime!((ROWS * PANEL_ROW) as u32);
    let x = mma_ss(k_major(ds_at), mn_major(k_at + panel), product);
    sync_consumers();
    let mut acc = zero_tiles(8usize);
    tiles_assign(&mut acc, 0usize, x);
    let lane = UNIT_POS_PLANE as usize;
    let (g, t) = (lane / 4, lane % 4);
    let b0 = tile.batch * dq.stride(0) + tile.head * dq.stride(1);
    #[unroll]
    for h in 0..2usize {
        let tq = c0 + pw * 16 + g + 8 * h;
        if queries.holds(tq) {
            let at = b0 + queries.row(tile, tq) * dq.stride(2);
            #[unroll]
            for j in 0..8usize {
                let d = group * 64 + j * 8 + 2 * t;
                let x = acc.index(j)[h] * Vector::new(io.scale);
                red_add_pair(dq, (at + d) / 2, x.extract(0usize), x.extract(1usize));
            }
        }
    }
}

/// `dq[i] += (x, y)` as one paired f32 reduction in global memory (no result comes back).
#[cube]
fn red_add_pair(dq: &mut Tensor<Vector<f32, P2>>, i: usize, x: f32, y: f32) {
    let ptr = unsafe { dq.slice(i, i + 1).as_ptr_unchecked() };
    gpu_asm!(
        "{{ .reg .u64 g; cvta.to.global.u64 g, {p}; red.global.add.v2.f32 [g], {{{x}, {y}}}; }}",
        p = in(_) ptr,
        x = in(_) x,
        y = in(_) y,
    );
}

#[cfg(test)]
mod tests {
    use super::DS_BYTES;
    use crate::hopper::backward_dkdv::shared_bytes;

    /// The most shared memory a cube may opt into on the H100 and H200 (227 KiB).
    const HOPPER_SHARED: usize = 232_448;

    #[test]
    fn the_ds_tile_fits_beside_the_ring_at_both_head_dims() {
        for d in [64, 128] {
            let fused = shared_bytes(d, true);
            assert_eq!(fused - shared_bytes(d, false), DS_BYTES);
            assert!(fused <= HOPPER_SHARED, "head dim {d}: {fused} B");
        }
        // 64 rows of 128 keys in f16/bf16.
        assert_eq!(DS_BYTES, 16 * 1024);
    }
}

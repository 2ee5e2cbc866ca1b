//! What the Hopper kernels share about their tiles and registers: where a warpgroup's rows
//! and a unit's vectors sit in a swizzled tile, and the renaming of `wgmma` accumulators into
//! the manual-MMA family's 16×8 tiles and back, and of probabilities into register `A`
//! fragments (`super::wgmma`'s module docs hold the register layout).

use cubecl::prelude::*;

use super::forward::ROWS;
use super::wgmma::{Acc, Frags, PANEL_ROW};
use crate::sm80::mma::{P2, tiles_as_a};

/// Bytes from a panel's first row to a warpgroup's first (64 rows on).
#[cube]
pub(crate) fn wg_rows_bytes() -> u32 {
    comptime!((64 * PANEL_ROW) as u32)
}

/// Row and vector column of the `e`-th vector of a `ROWS`-row tile when units take vectors in
/// order: eight adjacent units share a row (one 128-byte panel row), panels one after another.
#[cube]
pub(crate) fn tile_vector(e: usize) -> (usize, usize) {
    let panel = e / comptime!(8 * ROWS);
    ((e / 8) % ROWS, panel * 8 + e % 8)
}

/// The accumulator registers of a 64×64 product as the manual-MMA family's eight 16×8 tiles
/// (the same registers, renamed), written into `tiles[at..at + 8]`.
#[cube]
pub(crate) fn tiles_assign(
    tiles: &mut Sequence<Array<Vector<f32, P2>>>,
    #[comptime] at: usize,
    x: Vector<f32, Acc>,
) {
    #[unroll]
    for j in 0..8usize {
        let a = tiles.index_mut(comptime!(at + j));
        #[unroll]
        for h in 0..2usize {
            let mut pair = Vector::<f32, P2>::new(0.0f32);
            pair.insert(0usize, x.extract(comptime!(4 * j + 2 * h)));
            pair.insert(1usize, x.extract(comptime!(4 * j + 2 * h + 1)));
            a[h] = pair;
        }
    }
}

/// The inverse of [`tiles_assign`](fn@tiles_assign).
#[cube]
pub(crate) fn tiles_into(
    tiles: &Sequence<Array<Vector<f32, P2>>>,
    #[comptime] at: usize,
) -> Vector<f32, Acc> {
    let mut x = Vector::<f32, Acc>::new(0.0f32);
    #[unroll]
    for j in 0..8usize {
        #[unroll]
        for h in 0..2usize {
            let pair = tiles.index(comptime!(at + j))[h];
            x.insert(comptime!(4 * j + 2 * h), pair.extract(0usize));
            x.insert(comptime!(4 * j + 2 * h + 1), pair.extract(1usize));
        }
    }
    x
}

/// The register `A` operand of `P·V`: the probabilities of the chunk's four 16-key steps,
/// rounded to `F`, two per `u32`.
#[cube]
pub(crate) fn p_fragments<F: Float>(s: &Sequence<Array<Vector<f32, P2>>>) -> Vector<u32, Frags> {
    p_fragments_from::<F>(s, 0usize, 4usize)
}

/// The register `A` operand of `steps` 16-wide k-steps whose columns start at tile `2 · kk0` of
/// `s`, rounded to `F`, two per `u32`; the fragments of the steps past `steps` are zeros (a
/// product of fewer steps never reads them).
#[cube]
pub(crate) fn p_fragments_from<F: Float>(
    s: &Sequence<Array<Vector<f32, P2>>>,
    #[comptime] kk0: usize,
    #[comptime] steps: usize,
) -> Vector<u32, Frags> {
    let mut frags = Vector::<u32, Frags>::new(0u32);
    #[unroll]
    for kk in 0..steps {
        let a = tiles_as_a::<F>(s, comptime!(kk0 + kk));
        #[unroll]
        for r in 0..4usize {
            frags.insert(comptime!(4 * kk + r), u32::reinterpret(a[r]));
        }
    }
    frags
}

/// Row (of the plane's 16) and vector column of a lane's `j`-th wide access: eight lanes a
/// row (one 128-byte panel row), four rows a step, then the next 64-column panel. The
/// epilogue and the forward's query staging both walk a plane's rows this way, so a lane
/// writes only the vectors it read itself.
#[cube]
pub(crate) fn plane_vector(lane: usize, #[comptime] j: usize) -> (usize, usize) {
    let (step, panel) = comptime!((j % 4, j / 4));
    (lane / 8 + 4 * step, lane % 8 + 8 * panel)
}

/// The unit's plane and warpgroup, `(UNIT_POS / 32, UNIT_POS / 128)`, broadcast from the plane's
/// first lane: the same values, but ptxas then knows them uniform over the plane and builds the
/// `wgmma` descriptors that depend on them in uniform registers, instead of per-thread ones
/// copied over (`R2UR`) for every product (CUTLASS reads its warp index the same way). The
/// forward's chunk loop loses 18 of 402 instructions at head dim 64 and 31 of 504 at 128
/// (session 22, its dumped C++ recompiled with NVRTC/ptxas 13.0).
#[cube]
pub(crate) fn plane_and_group() -> (usize, usize) {
    let unit = UNIT_POS;
    let plane = plane_broadcast(unit / 32, 0u32);
    let group = plane_broadcast(unit / 128, 0u32);
    (plane as usize, group as usize)
}

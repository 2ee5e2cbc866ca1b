//! The Hopper forward's epilogue: a plane's 16 normalised rows leave through shared memory as
//! whole 16-byte vectors.
//!
//! In the accumulator layout a lane holds two adjacent columns of two rows per 8-column tile,
//! so storing `out` from registers writes 4 bytes a lane and 8 bytes per row and sector (a
//! quarter of each 32-byte sector a store touches). Here each plane instead
//! 1. forms its rows `y = w_new · acc (+ w_old · out_prev)` in f32 and rounds them once to `F`
//!    (`crate::sm80::rows::row_weights`; with `merge` the previous rows come in the same way
//!    they leave, wide into shared memory and back by `ldmatrix`),
//! 2. writes them by `stmatrix` into its own 16 rows of the cube's query tile, which the
//!    warpgroup's products no longer read (the 128-byte swizzled layout of
//!    `super::wgmma::swizzled`, so the eight rows of one 8×8 matrix meet eight bank groups),
//! 3. reads them back as 16-byte vectors, eight lanes a row, and stores whole 128-byte rows.
//!
//! `lse` is written as before, one lane per row. Shapes: `out: [batch, heads, n, d]` as
//! `d / 8` vectors a row, `lse: [batch, heads, n]`; rows outside `queries` are not written.

use cubecl::cmma::MatrixIdent;
use cubecl::prelude::*;

use super::forward::ROWS;
use super::tiles::plane_vector;
use super::wgmma::swizzled;
use crate::addressing::{Rows, Tile};
use crate::sm80::mma::{P2, mma_def};
use crate::sm80::rows::row_weights;

/// Writes the plane's 16 rows from `prow0` (a gathered query index; row `prow0 - q0` of the
/// query tile at vector `at` of `buf`) and their lse; `acc` holds `dtiles` 8-column tiles,
/// `m`, `l` the running maximum and sum of rows `g` and `g + 8`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_rows_wide<F: Float, N: Size>(
    acc: &Sequence<Array<Vector<f32, P2>>>,
    m: &Array<f32>,
    l: &Array<f32>,
    out: &mut Tensor<Vector<F, N>>,
    lse: &mut Tensor<f32>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    prow0: usize,
    neg_inf: f32,
    at: usize,
    #[comptime] dtiles: usize,
    #[comptime] merge: bool,
) {
    let nv = N::value();
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    let row0 = prow0 - q0;
    let o_base = tile.batch * out.stride(0) + tile.head * out.stride(1);
    let o_row = out.stride(2);

    // Each row's weights; lane t = 0 writes its lse.
    let mut w_new = Array::<f32>::new(2usize);
    let mut w_old = Array::<f32>::new(2usize);
    #[unroll]
    for h in 0..2usize {
        let mut sum = l[h];
        sum += plane_shuffle_xor(sum, 1);
        sum += plane_shuffle_xor(sum, 2);
        let row = prow0 + g + 8 * h;
        let pq = queries.row(tile, row);
        let l_index = tile.batch * lse.stride(0) + tile.head * lse.stride(1) + pq * lse.stride(2);
        let mut prev = neg_inf;
        if comptime!(merge) {
            let mine = select(t == 0, lse[l_index], neg_inf);
            prev = plane_shuffle(mine, (4 * g) as u32);
        }
        let (wn, wo, value) = row_weights(sum, m[h], prev, neg_inf, merge);
        w_new[h] = wn;
        w_old[h] = wo;
        if queries.holds(row) && t == 0 {
            lse[l_index] = value;
        }
    }

    // The previous rows, wide into the tile (rows outside `queries` are left as they are:
    // they are never stored).
    if comptime!(merge) {
        #[unroll]
        for j in 0..comptime!(16 * dtiles / 32) {
            let (r, c) = plane_vector(lane, j);
            let row = prow0 + r;
            if queries.holds(row) {
                let pq = queries.row(tile, row);
                buf[at + swizzled(row0 + r, c, ROWS)] = out[(o_base + pq * o_row) / nv + c];
            }
        }
        sync_plane();
    }

    // y rounded once to `F`, two 8-column tiles (one 16×16 `A` fragment) per `stmatrix.x4`.
    let mma = mma_def::<F>();
    let (m8, r8) = (lane / 8, lane % 8);
    #[unroll]
    for kk in 0..comptime!(dtiles / 2) {
        let idx = at + swizzled(row0 + (m8 % 2) * 8 + r8, 2 * kk + m8 / 2, ROWS);
        let mut prev = Array::<Vector<F, P2>>::new(4usize);
        if comptime!(merge) {
            prev = mma.load_matrix::<_, P2>(&buf[idx..idx + 1], MatrixIdent::A, 4usize, false);
        }
        let mut y = Array::<Vector<F, P2>>::new(4usize);
        #[unroll]
        for f in 0..4usize {
            // Fragment f: tile 2kk + f / 2, row g + 8 (f % 2).
            let h = comptime!(f % 2);
            let x = acc.index(comptime!(2 * kk + f / 2))[h];
            let mut v = x * Vector::new(w_new[h]);
            if comptime!(merge) {
                v += Vector::<f32, P2>::cast_from(prev[f]) * Vector::new(w_old[h]);
            }
            y[f] = Vector::cast_from(v);
        }
        mma.store_matrix::<_, P2>(&mut buf[idx..idx + 1], &y, MatrixIdent::A, 4usize, false);
    }
    sync_plane();

    #[unroll]
    for j in 0..comptime!(16 * dtiles / 32) {
        let (r, c) = plane_vector(lane, j);
        let row = prow0 + r;
        if queries.holds(row) {
            let pq = queries.row(tile, row);
            out[(o_base + pq * o_row) / nv + c] = buf[at + swizzled(row0 + r, c, ROWS)];
        }
    }
}

//! Tensor-core backward (f16/bf16 through CubeCL `cmma`, 16×16×16 tiles, plane width 32).
//!
//! Same math, shapes and accumulation contract as `crate::portable::backward`; the dot products run on
//! the tensor cores. A cube of 2 planes owns 32 rows (16 per plane) and walks its layout row in
//! chunks of 32:
//! - `dQ` (rows = queries, chunks of keys): `S = Q·Kᵀ`, `dP = dO·Vᵀ` (`cmma`, f32) into shared
//!   memory; two lanes per row form `dS = P ∘ (dP − Δ)` with `P = e^{scale·S − L}` in the input
//!   dtype; `dQ += dS·K` into f32 accumulators kept in registers.
//! - `dK/dV` (rows = keys, chunks of the queries that see them, from the transposed layout):
//!   `Sᵀ = K·Qᵀ`, `dPᵀ = V·dOᵀ`; `dV += Pᵀ·dO`, then `dK += dSᵀ·Q` (the same shared tile holds
//!   `Pᵀ`, then `dSᵀ`).
//!
//! At the end each plane adds `scale · dQ` (or `scale · dK`, `dV`) to the f32 gradient buffers
//! one 16×16 tile at a time.
//!
//! Used where the forward's tensor-core kernel is (see `Strategy::Cmma`), when `q, k, v`
//! and `dout` have a contiguous head dim.

use cubecl::prelude::*;

/// Rows per cube (16 per plane).
pub(crate) const ROWS: usize = 32;
/// Columns (keys for `dQ`, queries for `dK/dV`) per chunk.
pub(crate) const COLS: usize = 32;
/// Planes per cube.
pub(crate) const PLANES: usize = 2;

/// Shared memory of a `dQ` or `dK/dV` cube in bytes (16-bit inputs): the cube's two row tiles
/// and a chunk's two (rows of `head_dim + 8`), the f32 score and `dP` tiles, the 16-bit
/// probability tile, and four per-row vectors of 4 bytes.
pub(crate) fn shared_bytes(head_dim: usize) -> usize {
    2 * (ROWS + COLS) * (head_dim + 8) * 2
        + 2 * ROWS * (COLS + 4) * 4
        + ROWS * (COLS + 8) * 2
        + (ROWS + 3 * COLS).max(COLS + 3 * ROWS) * 4
}

/// Adds `factor ·` a plane's accumulators (`head_dim / 16` tiles of its 16 rows) to `grad`,
/// row `base` (the lane pair's row), staging each tile in the plane's rows of `stage`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_tiles(
    accs: &Sequence<cmma::Matrix<f32>>,
    stage: &mut [f32],
    grad: &mut Tensor<f32>,
    base: usize,
    write: bool,
    factor: f32,
    plane: usize,
    lane: usize,
    #[comptime] head_dim: usize,
) {
    let sstr = comptime!(COLS + 4);
    let row = plane * 16 + lane / 2;
    let half = lane % 2;
    let step = grad.stride(3);
    #[unroll]
    for dt in 0..comptime!(head_dim / 16) {
        sync_plane();
        let end = stage.len();
        cmma::store(
            &mut stage[plane * 16 * sstr..end],
            &accs[dt],
            sstr as u32,
            cmma::MatrixLayout::RowMajor,
        );
        sync_plane();
        if write {
            #[unroll]
            for j in 0..8usize {
                let col = half * 8 + j;
                let at = base + (dt * 16 + col) * step;
                grad[at] += stage[row * sstr + col] * factor;
            }
        }
    }
}

//! What the backward kernels read and write per row, shared by the sm80 and Hopper `dQ` and
//! `dK/dV` kernels: a query's `(L, Δ)` and a plane's finished key gradients.
//!
//! Shapes: `lse, delta: [batch, heads, n]` f32; `dk, dv: [batch, heads, n, head_dim]` (f32
//! accumulators, or the inputs' dtype when stored).

use cubecl::prelude::*;

use super::forward::{LOG2E, key_present};
use super::mma::P2;
use crate::addressing::Rows;
use crate::args::{Operands, Pass};

/// `(L, Δ)` of gathered query `tq` of the tile's segment: `L` in base 2, `+inf` where the
/// query is past the segment or sees no key (so that its `p` is 0).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn query_stats(
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    tile: &crate::addressing::Tile,
    l_base: usize,
    d_base: usize,
    tq: usize,
    neg_inf: f32,
) -> (f32, f32) {
    let queries = Rows::queries(tile);
    let present = queries.holds(tq);
    let pq = queries.row(tile, tq);
    let l = lse[l_base + pq * lse.stride(2)];
    let l2 = select(present && l != neg_inf, l * LOG2E, -neg_inf);
    (l2, delta[d_base + pq * delta.stride(2)])
}

/// One warp's [`query_stats`] of the `rows` gathered queries from `first`, `rows / 32` a lane:
/// `L` into `ls[at + r]` and `Δ` into `ds[at + r]` for query `first + r` (the Hopper
/// producers' per-chunk and per-tile copies).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn warp_query_stats(
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    tile: &crate::addressing::Tile,
    l_base: usize,
    d_base: usize,
    first: usize,
    neg_inf: f32,
    ls: &mut [f32],
    ds: &mut [f32],
    at: usize,
    #[comptime] rows: usize,
) {
    let lane = UNIT_POS as usize % 32;
    #[unroll]
    for h in 0..comptime!(rows / 32) {
        let r = lane + 32 * h;
        let (l, dl) = query_stats(lse, delta, tile, l_base, d_base, first + r, neg_inf);
        ls[at + r] = l;
        ds[at + r] = dl;
    }
}

/// Writes (or adds, without `overwrite`) the `dK` (times `scale`) and `dV` rows of a plane's
/// 16 keys from `krow0` from its accumulator tiles (`head_dim / 8` of them; lane `4g + t` holds
/// keys `g`, `g + 8`, columns `8j + 2t ..`). A padded key gets no gradient (its sums are not
/// masked); with `overwrite` its zeros are written too, so that every real token's row is.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_key_grads<F: Float, G: Float, N: Size>(
    dk_acc: &Sequence<Array<Vector<f32, P2>>>,
    dv_acc: &Sequence<Array<Vector<f32, P2>>>,
    dk: &mut Tensor<G>,
    dv: &mut Tensor<G>,
    io: &Operands<Vector<F, N>>,
    tile: &crate::addressing::Tile,
    keys: &Rows,
    krow0: usize,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
) {
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    let (k_step, v_step) = (dk.stride(3), dv.stride(3));
    #[unroll]
    for h in 0..2usize {
        let key = krow0 + g + 8 * h;
        let present = key_present(&io.mask, tile, key, pass.masked) != 0;
        let mut write = present;
        if comptime!(overwrite) {
            write = keys.holds(key);
        }
        if write {
            let pk = keys.row(tile, key);
            let k_at = tile.batch * dk.stride(0) + tile.head * dk.stride(1) + pk * dk.stride(2);
            let v_at = tile.batch * dv.stride(0) + tile.head * dv.stride(1) + pk * dv.stride(2);
            let keep = select(present, 1.0f32, 0.0f32);
            #[unroll]
            for dt in 0..comptime!(pass.head_dim / 8) {
                let x = dk_acc.index(dt)[h];
                let y = dv_acc.index(dt)[h];
                let d = dt * 8 + 2 * t;
                let x0 = G::cast_from(x.extract(0usize) * io.scale * keep);
                let x1 = G::cast_from(x.extract(1usize) * io.scale * keep);
                let y0 = G::cast_from(y.extract(0usize) * keep);
                let y1 = G::cast_from(y.extract(1usize) * keep);
                if comptime!(overwrite) {
                    dk[k_at + d * k_step] = x0;
                    dk[k_at + (d + 1) * k_step] = x1;
                    dv[v_at + d * v_step] = y0;
                    dv[v_at + (d + 1) * v_step] = y1;
                } else {
                    dk[k_at + d * k_step] += x0;
                    dk[k_at + (d + 1) * k_step] += x1;
                    dv[v_at + d * v_step] += y0;
                    dv[v_at + (d + 1) * v_step] += y1;
                }
            }
        }
    }
}

//! The scores of the Hopper `dK/dV` kernel (`super::backward_dkdv`): from a unit's `Sᵀ` and
//! `dPᵀ` accumulators (keys are rows, a chunk's queries columns), `Pᵀ` and `dSᵀ` in place.
//!
//! `Pᵀ = 2^{log2(e)·scale·Sᵀ − L}` with `L` (base 2) per column, 0 for a causal-future query;
//! `dSᵀ = Pᵀ ∘ (dPᵀ − Δ)` with `Δ` per column. `L` and `Δ` come from the ring stage's shared
//! copies (`lq`, `dlt`: `STAGES · CHUNK` f32 each).

use cubecl::prelude::*;

use crate::sm80::mma::{P2, exp2_approx};

/// `Pᵀ` into tiles `0..tiles` of `sd` (which hold `Sᵀ`) and `dSᵀ` into tiles
/// `tiles..2·tiles` (which hold `dPᵀ`): the unit's scores of a chunk (head dim 64, 8 tiles) or
/// of a 32-query half of one (head dim 128, 4 tiles), its queries from chunk column `col0`
/// ([`grad_scores`](fn@grad_scores) on each pair; `masked`: the causal mask).
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(super) fn key_scores(
    sd: &mut Sequence<Array<Vector<f32, P2>>>,
    lq: &[f32],
    dlt: &[f32],
    cq0: usize,
    c0: usize,
    krow0: usize,
    col0: usize,
    sl2: f32,
    neg_inf: f32,
    #[comptime] tiles: usize,
    #[comptime] masked: bool,
) {
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    #[unroll]
    for j in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let key = krow0 + g + 8 * h;
            let (x, y) = grad_scores(
                sd.index(j)[h],
                sd.index(comptime!(j + tiles))[h],
                lq,
                dlt,
                cq0,
                c0,
                key,
                col0 + j * 8 + 2 * t,
                sl2,
                neg_inf,
                masked,
            );
            let sj = sd.index_mut(j);
            sj[h] = x;
            let dj = sd.index_mut(comptime!(j + tiles));
            dj[h] = y;
        }
    }
}

/// `Pᵀ` and `dSᵀ` of one accumulator pair: `x` holds `Sᵀ` and `y` `dPᵀ` of `key` at chunk
/// columns (queries) `col, col + 1`; returns `Pᵀ = 2^{log2(e)·scale·Sᵀ − L}` (0 for a
/// causal-future query where `masked`) and `dSᵀ = Pᵀ ∘ (dPᵀ − Δ)`, `L` and `Δ` read from the
/// stage's `lq`, `dlt` at `cq0 + col`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn grad_scores(
    x: Vector<f32, P2>,
    y: Vector<f32, P2>,
    lq: &[f32],
    dlt: &[f32],
    cq0: usize,
    c0: usize,
    key: usize,
    col: usize,
    sl2: f32,
    neg_inf: f32,
    #[comptime] masked: bool,
) -> (Vector<f32, P2>, Vector<f32, P2>) {
    let mut p = x;
    let mut ds = y;
    #[unroll]
    for c in 0..2usize {
        let mut xs = x.extract(c) * sl2;
        if comptime!(masked) {
            xs = select(key <= c0 + col + c, xs, neg_inf);
        }
        let pc = exp2_approx(xs - lq[cq0 + col + c]);
        p.insert(c, pc);
        ds.insert(c, pc * (y.extract(c) - dlt[cq0 + col + c]));
    }
    (p, ds)
}

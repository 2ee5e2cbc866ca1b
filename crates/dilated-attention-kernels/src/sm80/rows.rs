//! The per-row pieces of the manual-MMA forward (`sm80::forward`, `hopper::forward`), on the
//! FlashAttention-2 register layout of `mma.sync`'s 16×8 accumulators — which `wgmma`'s per
//! plane shares, so both families run the same masking, online softmax and epilogue.
//!
//! A plane holds `tiles` 16-row query tiles; lane `4g + t` owns rows `g`, `g + 8` of each.
//! `s` holds `tiles · keys / 8` score tiles (`keys`: `CHUNK`, or twice it), `acc` `tiles · head_dim / 8` output tiles; `m`,
//! `l` the running max (base 2, scaled) and per-lane partial sums, entry `2i + h` for row
//! `16i + g + 8h`.

use cubecl::prelude::*;

use super::mma::{P2, exp2_approx, scale_rows};
use crate::addressing::{Rows, Tile};

/// `ln(2)`: back from base-2 to natural log-sum-exp.
const LN2: f32 = std::f32::consts::LN_2;

/// Sets to `-inf` the scores of keys that are not there (`kvalid[kv0 + key] == 0`) and, with
/// `causal`, of keys after the row (gathered key `k0 + key` past row `prow0 + …`); `s` holds
/// `keys` columns (`CHUNK`, or two chunks' worth in the Hopper forward's wide variant).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mask_scores(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    prow0: usize,
    neg_inf: f32,
    #[comptime] tiles: usize,
    #[comptime] causal: bool,
    #[comptime] keys: usize,
) {
    let ctiles = comptime!(keys / 8);
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for j in 0..ctiles {
            #[unroll]
            for h in 0..2usize {
                let row = prow0 + i * 16 + g + 8 * h;
                let mut x = s.index(comptime!(i * ctiles + j))[h];
                #[unroll]
                for c in 0..2usize {
                    let key = j * 8 + 2 * t + c;
                    let mut ok = kvalid[kv0 + key] != 0;
                    if comptime!(causal) {
                        ok = ok && k0 + key <= row;
                    }
                    x.insert(c, select(ok, x.extract(c), neg_inf));
                }
                let sj = s.index_mut(comptime!(i * ctiles + j));
                sj[h] = x;
            }
        }
    }
}

/// How far (log2) a row max may pass the shift before a lazy softmax step moves it.
const LAZY: f32 = 8.0;

/// One chunk of the online softmax in base 2: row max over the 4 lanes of a row, `s` becomes
/// `P = 2^(x · sl2 - m)`, the partial sums `l` and the output tiles `acc` are rescaled to the
/// new max. With `lazy` a row's shift `m` only moves when the max passes it by more than
/// `LAZY` (or the row had no key before), and `acc` is only rescaled when a row of the plane
/// moved; the result does not depend on the shift. `s` holds `keys` columns.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn softmax_step(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    sl2: f32,
    neg_inf: f32,
    #[comptime] tiles: usize,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) {
    let mut alpha = Array::<f32>::new(comptime!(2 * tiles));
    let moved = softmax_probs(s, m, l, &mut alpha, sl2, neg_inf, tiles, lazy, keys);
    rescale(acc, &alpha, moved, dtiles, lazy);
}

/// [`softmax_step`](fn@softmax_step) without the rescale of `acc`: the factors go to `alpha`
/// (entry `2i + h` for row `16i + g + 8h`), and the result says whether a row's shift moved
/// (always true without `lazy`). For a caller whose `acc` is still being written by the
/// tensor cores; it applies them with [`rescale`](fn@rescale) once they are done.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn softmax_probs(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    alpha: &mut Array<f32>,
    sl2: f32,
    neg_inf: f32,
    #[comptime] tiles: usize,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) -> bool {
    let ctiles = comptime!(keys / 8);
    // Online softmax in base 2: row max over the 4 lanes of a row, sums kept per lane.
    let mut moved = false;
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let r = comptime!(2 * i + h);
            let mut mx = neg_inf;
            #[unroll]
            for j in 0..ctiles {
                let x = s.index(comptime!(i * ctiles + j))[h];
                mx = f32::max(mx, f32::max(x.extract(0usize), x.extract(1usize)));
            }
            mx *= sl2;
            mx = f32::max(mx, plane_shuffle_xor(mx, 1));
            mx = f32::max(mx, plane_shuffle_xor(mx, 2));
            let mut moves = true;
            if lazy {
                moves = m[r] == neg_inf || mx > m[r] + LAZY;
            }
            moved = moved || moves;
            let m_new = select(moves, f32::max(m[r], mx), m[r]);
            let shift = select(m_new == neg_inf, 0.0f32, m_new);
            alpha[r] = exp2_approx(m[r] - shift);
            m[r] = m_new;
            let mut sum = 0.0f32;
            #[unroll]
            for j in 0..ctiles {
                let mut x = s.index(comptime!(i * ctiles + j))[h];
                #[unroll]
                for c in 0..2usize {
                    let p = exp2_approx(x.extract(c) * sl2 - shift);
                    sum += p;
                    x.insert(c, p);
                }
                let sj = s.index_mut(comptime!(i * ctiles + j));
                sj[h] = x;
            }
            l[r] = l[r] * alpha[r] + sum;
        }
    }
    moved
}

/// Rescales the output tiles `acc` by the factors [`softmax_probs`](fn@softmax_probs) gave; with
/// `lazy`, only when a row of the plane moved its shift.
#[cube]
pub(crate) fn rescale(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    alpha: &Array<f32>,
    moved: bool,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
) {
    if lazy {
        if plane_any(moved) {
            scale_rows(acc, alpha, dtiles);
        }
    } else {
        scale_rows(acc, alpha, dtiles);
    }
}

/// A summary word naming no key: no value row was set to zeros.
pub(crate) const NO_KEY: u32 = u32::MAX;

/// Marks in `poison` (entry `2i + h` for row `16i + g + 8h`, as `m` and `l`) the rows at or
/// after gathered key `first_bad`: in a causal chunk every such row sees that key, whose value
/// row held a NaN or an infinity and was staged as zeros so that the rows before it stay
/// exact (`crate::hopper::ring::fill_stage`). `first_bad` past every row marks none.
#[cube]
pub(crate) fn mark_rows_from(
    poison: &mut Array<u32>,
    first_bad: usize,
    prow0: usize,
    #[comptime] tiles: usize,
) {
    let g = (UNIT_POS as usize % 32) / 4;
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let row = prow0 + i * 16 + g + 8 * h;
            if row >= first_bad {
                poison[comptime!(2 * i + h)] = 1u32;
            }
        }
    }
}

/// Sets the output tiles of every row a lane of the row marked ([`mark_rows_from`]) to `nan`:
/// the row saw a value that was not finite, so its output is NaN, as `P·V` in full precision
/// would have made it (here in every column). Every lane of the plane takes part.
#[cube]
pub(crate) fn nan_marked_rows(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    poison: &Array<u32>,
    nan: f32,
    #[comptime] tiles: usize,
    #[comptime] dtiles: usize,
) {
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let mut p = poison[comptime!(2 * i + h)];
            p |= plane_shuffle_xor(p, 1);
            p |= plane_shuffle_xor(p, 2);
            if p != 0 {
                #[unroll]
                for dt in 0..dtiles {
                    let a = acc.index_mut(comptime!(i * dtiles + dt));
                    a[h] = Vector::new(nan);
                }
            }
        }
    }
}

/// The epilogue: row sums across the 4 lanes of each row, then the normalised rows and their
/// log-sum-exp written (with `merge`, merged into what `out, lse` hold).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_rows<F: Float>(
    acc: &Sequence<Array<Vector<f32, P2>>>,
    m: &Array<f32>,
    l: &Array<f32>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    tile: &Tile,
    queries: &Rows,
    prow0: usize,
    neg_inf: f32,
    #[comptime] tiles: usize,
    #[comptime] dtiles: usize,
    #[comptime] merge: bool,
) {
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    // Row sums across the 4 lanes of each row, then normalise and write the rows.
    let o_step = out.stride(3);
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let r = comptime!(2 * i + h);
            let mut sum = l[r];
            sum += plane_shuffle_xor(sum, 1);
            sum += plane_shuffle_xor(sum, 2);
            let row = prow0 + i * 16 + g + 8 * h;
            let live = queries.holds(row);
            let pq = queries.row(tile, row);
            let l_index =
                tile.batch * lse.stride(0) + tile.head * lse.stride(1) + pq * lse.stride(2);
            // With `merge`, lane t = 0 reads the row's running lse and hands it to the other
            // three (outside the branch below: every lane of the plane takes part) before it
            // overwrites it.
            let mut prev = neg_inf;
            if comptime!(merge) {
                let mine = select(t == 0, lse[l_index], neg_inf);
                prev = plane_shuffle(mine, (4 * g) as u32);
            }
            // Uniform across the 4 lanes of a row (they skip or write together).
            if live {
                let o_base =
                    tile.batch * out.stride(0) + tile.head * out.stride(1) + pq * out.stride(2);
                let (w_new, w_old, value) = row_weights(sum, m[r], prev, neg_inf, merge);
                #[unroll]
                for dt in 0..dtiles {
                    let x = acc.index(comptime!(i * dtiles + dt))[h];
                    let d = dt * 8 + 2 * t;
                    let (o0, o1) = (o_base + d * o_step, o_base + (d + 1) * o_step);
                    let mut y0 = x.extract(0usize) * w_new;
                    let mut y1 = x.extract(1usize) * w_new;
                    if comptime!(merge) {
                        y0 += w_old * f32::cast_from(out[o0]);
                        y1 += w_old * f32::cast_from(out[o1]);
                    }
                    out[o0] = F::cast_from(y0);
                    out[o1] = F::cast_from(y1);
                }
                if t == 0 {
                    lse[l_index] = value;
                }
            }
        }
    }
}

/// A row's weights and log-sum-exp from its sum of `2^{x - m}` over the 4 lanes (`sum`), its
/// running maximum `m` (base 2) and, with `merge`, the lse `prev` already written for it:
/// `(w_new, w_old, lse)` with `out = w_new · acc + w_old · out_prev`,
/// `lse = log(e^prev + e^own)`; a row that saw no key (`sum = 0`) keeps what it had.
#[cube]
pub(crate) fn row_weights(
    sum: f32,
    m: f32,
    prev: f32,
    neg_inf: f32,
    #[comptime] merge: bool,
) -> (f32, f32, f32) {
    let empty = sum == 0.0f32;
    let own = select(
        empty,
        neg_inf,
        m * LN2 + f32::ln(select(empty, 1.0f32, sum)),
    );
    let mut w_new = select(empty, 0.0f32, 1.0f32 / select(empty, 1.0f32, sum));
    let mut w_old = 0.0f32;
    let mut value = own;
    if comptime!(merge) {
        let top = f32::max(prev, own);
        let shift = select(top == neg_inf, 0.0f32, top);
        let a = f32::exp(prev - shift);
        let b = f32::exp(own - shift);
        let total = a + b;
        let none = total == 0.0f32;
        let inv_total = select(none, 0.0f32, 1.0f32 / select(none, 1.0f32, total));
        w_old = a * inv_total;
        w_new *= b * inv_total;
        value = select(none, neg_inf, shift + f32::ln(select(none, 1.0f32, total)));
    }
    (w_new, w_old, value)
}

//! Portable forward of block-sparse dilated flash attention for one head class of one branch.
//!
//! Math: for a query token `i` of the class (segment `g`, gathered index `t_i`), over the key
//! blocks `kb` its row keeps,
//! `out_i = Σ_j e^{x_ij} v_j / Σ_j e^{x_ij}`, `lse_i = log Σ_j e^{x_ij}`, `x_ij = scale · q_i·k_j`,
//! with `j` running over the gathered keys `t_j ∈ [kb·B, (kb+1)·B)` of the same segment that are
//! real tokens, present in the padding mask and (causal) `t_j <= t_i`. A row with no key writes
//! `out = 0`, `lse = -inf`. Accumulation and softmax in f32; `out` in the input dtype.
//!
//! Shapes: `q, out: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]` (any
//! strides), `lse: [batch, heads, n]` f32, `mask: [batch, n]` u32 (1 = present).
//! Gathered token `t` of segment `g` is raw position `g·w + s + t·r`: rows are read with stride
//! `r · row_stride` (strided gather), never masked out of a dense segment.
//!
//! Grid: `x` = query-block rows of all segments (`segments · blocks_full`), `y` = the class's
//! heads (`head = s + r·y`), `z` = batch. One cube of `B` units per query block; unit `u` owns
//! query row `u`, keeps `q` and the accumulator in registers and walks the key blocks of its
//! row in chunks of `CHUNK` keys staged in shared memory.

use cubecl::prelude::*;

use super::CHUNK;
use super::finite::nan_or_pos_inf;
use super::stage::stage_keys;
use crate::addressing::{Rows, clamp_down, clamp_up, locate};
use crate::args::{Operands, Pass};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn block_sparse_forward<F: Float>(
    io: &Operands<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    #[comptime] pass: Pass,
    #[comptime] unroll: bool,
    #[comptime] windowed: bool,
) {
    let tile = locate(&io.params, CUBE_POS_X as usize, pass.block, windowed);
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || !queries.meet(tile.qb, pass.block) {
        terminate!();
    }
    let (qb, head, batch, csr_base) = (tile.qb, tile.head, tile.batch, tile.csr_base);

    let unit = UNIT_POS as usize;
    let tq = qb * pass.block + unit;
    let q_valid = queries.holds(tq);
    let pq = queries.row(&tile, tq);
    // Key blocks that meet the key window.
    let kb_first = keys.first_block(pass.block);
    let kb_end = keys.end_block(pass.block);

    // The query row, pre-scaled, and the accumulator, in registers.
    let mut qr = Array::<f32>::new(pass.head_dim);
    let mut acc = Array::<f32>::new(pass.head_dim);
    let q_base = batch * io.q.stride(0) + head * io.q.stride(1) + pq * io.q.stride(2);
    #[unroll]
    for d in 0..pass.head_dim {
        qr[d] = f32::cast_from(io.q[q_base + d * io.q.stride(3)]) * io.scale;
        acc[d] = 0.0f32;
    }
    let mut m = io.neg_inf;
    let mut l = 0.0f32;
    // Whether the row saw a score of NaN or +inf (a non-finite key row), which makes its
    // output NaN (`super::finite`).
    let mut poisoned = false;
    let mut s = Array::<f32>::new(CHUNK);

    let mut ks = Shared::<[f32]>::new_slice(CHUNK * pass.head_dim);
    let mut vs = Shared::<[f32]>::new_slice(CHUNK * pass.head_dim);
    let mut kvalid = Shared::<[u32]>::new_slice(CHUNK);

    let run_lo = io.blocks[csr_base + qb] as usize;
    let run_hi = io.blocks[csr_base + qb + 1] as usize;
    for run in run_lo..run_hi {
        let kb_lo = clamp_up(io.runs[2 * run] as usize, kb_first);
        let kb_hi = clamp_down(io.runs[2 * run + 1] as usize, kb_end);
        for kb in kb_lo..kb_hi {
            let mut c0 = 0usize;
            while c0 < pass.block {
                stage_keys(
                    &io.k,
                    &io.v,
                    &io.mask,
                    &mut ks[0..CHUNK * pass.head_dim],
                    &mut vs[0..CHUNK * pass.head_dim],
                    &mut kvalid[0..CHUNK],
                    &tile,
                    kb,
                    c0,
                    pass.head_dim,
                    pass.block,
                    pass.masked,
                );
                sync_cube();

                let mut chunk_max = io.neg_inf;
                for c in 0..CHUNK {
                    let tk = kb * pass.block + c0 + c;
                    let mut ok = kvalid[c] != 0;
                    if comptime!(pass.causal) {
                        ok = ok && tk <= tq;
                    }
                    let mut dot = 0.0f32;
                    #[unroll(unroll)]
                    for d in 0..pass.head_dim {
                        dot += qr[d] * ks[c * pass.head_dim + d];
                    }
                    let bad = nan_or_pos_inf(dot);
                    poisoned = poisoned || (ok && bad);
                    s[c] = select(ok && !bad, dot, io.neg_inf);
                    chunk_max = f32::max(chunk_max, s[c]);
                }
                let m_new = f32::max(m, chunk_max);
                if m_new != io.neg_inf {
                    let alpha = f32::exp(m - m_new);
                    l *= alpha;
                    #[unroll(unroll)]
                    for d in 0..pass.head_dim {
                        acc[d] *= alpha;
                    }
                    for c in 0..CHUNK {
                        // Keys this query does not see add nothing, not `0 · v` (which is NaN
                        // for a NaN value row).
                        if s[c] != io.neg_inf {
                            let p = f32::exp(s[c] - m_new);
                            l += p;
                            #[unroll(unroll)]
                            for d in 0..pass.head_dim {
                                acc[d] += p * vs[c * pass.head_dim + d];
                            }
                        }
                    }
                    m = m_new;
                }
                sync_cube();
                c0 += CHUNK;
            }
        }
    }

    if q_valid {
        let empty = l == 0.0f32;
        let inv = select(empty, 0.0f32, 1.0f32 / select(empty, 1.0f32, l));
        let o_base = batch * out.stride(0) + head * out.stride(1) + pq * out.stride(2);
        let o_step = out.stride(3);
        #[unroll]
        for d in 0..pass.head_dim {
            out[o_base + d * o_step] = F::cast_from(select(poisoned, io.nan, acc[d] * inv));
        }
        let l_index = batch * lse.stride(0) + head * lse.stride(1) + pq * lse.stride(2);
        let lse_row = select(empty, io.neg_inf, m + f32::ln(select(empty, 1.0f32, l)));
        lse[l_index] = select(poisoned, io.nan, lse_row);
    }
}

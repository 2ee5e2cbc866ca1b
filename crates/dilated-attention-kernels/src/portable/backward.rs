//! Portable backward of block-sparse dilated flash attention, one head class of one branch at a
//! time.
//!
//! The branches' outputs are merged as one softmax over the union of their keys, so with the
//! merged output `O` and log-sum-exp `L` every branch's backward is a plain flash backward:
//! `p_ij = e^{x_ij − L_i}`, `x_ij = scale · q_i·k_j`, `Δ_i = Σ_d dO_id · O_id − dL_i`,
//! `ds_ij = p_ij (dO_i·v_j − Δ_i)`, and
//! `dq_i += scale Σ_j ds_ij k_j`, `dk_j += scale Σ_i ds_ij q_i`, `dv_j += Σ_i p_ij dO_i`,
//! over the same (gathered, causal, masked) pairs as the forward. The `dL` term makes the
//! log-sum-exp output differentiable too; the weights of the branch merge are inside `p`.
//!
//! Shapes: `q, out, dout: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]`
//! (any strides), `lse, delta: [batch, heads, n]` f32, `mask: [batch, n]` u32.
//! The gradients accumulate (read–add–write) into contiguous f32 buffers
//! `dq, dk, dv: [batch, heads, n, head_dim]`, indexed by the **query** head: within a branch a
//! (head, token) pair belongs to one class, launches run in stream order, so no two units write
//! one element at once. The caller sums `dk, dv` over the query heads
//! that share a kv head.
//!
//! Kernels:
//! - `dQ`: the forward's grid (a cube per query block, a unit per query row), walking the
//!   query block's key blocks; keys and values staged in shared memory.
//! - `dK/dV`: a cube per key block, a unit per key row, walking the **transposed** layout (the
//!   query blocks that see the key block); queries, `dO`, `L` and `Δ` staged in shared memory.
//!
//! `Δ` comes from the shared prepass (`crate::delta`). A query row whose forward saw a NaN or
//! an infinity (`L` NaN or `+inf`, or `Δ` not finite) gets a NaN gradient, and so do the `dk`
//! of every key it sees and, unless only its `Δ` is not finite (`DK_POISONED`), their `dv`;
//! the arithmetic runs on finite stand-ins (`poisoned_row`).

use cubecl::prelude::*;

use super::CHUNK;
use super::finite::{is_neg_inf, not_finite};
use super::stage::stage_keys;
use crate::addressing::{Rows, clamp_down, clamp_up, locate};
use crate::args::{GradOperands, Operands, Pass};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil)] // CubeCL kernel code
pub(crate) fn backward_dq<F: Float>(
    io: &Operands<F>,
    grad: &GradOperands<F>,
    dq: &mut Tensor<f32>,
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
    let kb_first = keys.first_block(pass.block);
    let kb_end = keys.end_block(pass.block);

    let mut qr = Array::<f32>::new(pass.head_dim);
    let mut gr = Array::<f32>::new(pass.head_dim);
    let mut acc = Array::<f32>::new(pass.head_dim);
    let q_base = batch * io.q.stride(0) + head * io.q.stride(1) + pq * io.q.stride(2);
    let g_base =
        batch * grad.dout.stride(0) + head * grad.dout.stride(1) + pq * grad.dout.stride(2);
    #[unroll]
    for d in 0..pass.head_dim {
        qr[d] = f32::cast_from(io.q[q_base + d * io.q.stride(3)]) * io.scale;
        gr[d] = f32::cast_from(grad.dout[g_base + d * grad.dout.stride(3)]);
        acc[d] = 0.0f32;
    }
    let l_row =
        grad.lse[batch * grad.lse.stride(0) + head * grad.lse.stride(1) + pq * grad.lse.stride(2)];
    let delta_row = grad.delta
        [batch * grad.delta.stride(0) + head * grad.delta.stride(1) + pq * grad.delta.stride(2)];
    // A row with no key in any branch has `L = -inf` and no gradient; a row whose forward saw a
    // non-finite value gets NaN.
    let poisoned = q_valid && poisoned_row(l_row, delta_row);
    let live = q_valid && !poisoned && l_row != io.neg_inf;
    let l_safe = select(live, l_row, 0.0f32);

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

                for c in 0..CHUNK {
                    let tk = kb * pass.block + c0 + c;
                    let mut ok = live && kvalid[c] != 0;
                    if comptime!(pass.causal) {
                        ok = ok && tk <= tq;
                    }
                    let mut dot = 0.0f32;
                    let mut dp = 0.0f32;
                    #[unroll(unroll)]
                    for d in 0..pass.head_dim {
                        dot += qr[d] * ks[c * pass.head_dim + d];
                        dp += gr[d] * vs[c * pass.head_dim + d];
                    }
                    let p = select(ok, f32::exp(dot - l_safe), 0.0f32);
                    let ds = select(ok, p * (dp - delta_row), 0.0f32);
                    // Keys this query does not see add nothing (not `0 · k`, NaN for a NaN row).
                    #[unroll(unroll)]
                    for d in 0..pass.head_dim {
                        acc[d] += select(ok, ds * ks[c * pass.head_dim + d], 0.0f32);
                    }
                }
                sync_cube();
                c0 += CHUNK;
            }
        }
    }

    if q_valid {
        let base = batch * dq.stride(0) + head * dq.stride(1) + pq * dq.stride(2);
        #[unroll]
        for d in 0..pass.head_dim {
            let at = base + d * dq.stride(3);
            dq[at] = select(poisoned, io.nan, dq[at] + acc[d] * io.scale);
        }
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil)] // CubeCL kernel code
pub(crate) fn backward_dkdv<F: Float>(
    io: &Operands<F>,
    grad: &GradOperands<F>,
    dk: &mut Tensor<f32>,
    dv: &mut Tensor<f32>,
    #[comptime] pass: Pass,
    #[comptime] unroll: bool,
    #[comptime] windowed: bool,
) {
    // `qb` here is the key block; the transposed rows list the query blocks that see it.
    let tile = locate(&io.params, CUBE_POS_X as usize, pass.block, windowed);
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || !keys.meet(tile.qb, pass.block) {
        terminate!();
    }
    let (kb, head, kv_head, batch) = (tile.qb, tile.head, tile.kv_head, tile.batch);
    let csr_base = tile.csr_base;

    let unit = UNIT_POS as usize;
    let tk = kb * pass.block + unit;
    let k_valid = keys.holds(tk);
    let pk = keys.row(&tile, tk);
    let qb_first = queries.first_block(pass.block);
    let qb_end = queries.end_block(pass.block);
    let mut key_live = k_valid;
    if comptime!(pass.masked) {
        key_live = key_live && io.mask[batch * io.mask.stride(0) + pk * io.mask.stride(1)] != 0;
    }

    let mut kr = Array::<f32>::new(pass.head_dim);
    let mut vr = Array::<f32>::new(pass.head_dim);
    let mut dk_acc = Array::<f32>::new(pass.head_dim);
    let mut dv_acc = Array::<f32>::new(pass.head_dim);
    let k_base = batch * io.k.stride(0) + kv_head * io.k.stride(1) + pk * io.k.stride(2);
    let v_base = batch * io.v.stride(0) + kv_head * io.v.stride(1) + pk * io.v.stride(2);
    #[unroll]
    for d in 0..pass.head_dim {
        kr[d] = f32::cast_from(io.k[k_base + d * io.k.stride(3)]);
        vr[d] = f32::cast_from(io.v[v_base + d * io.v.stride(3)]);
        dk_acc[d] = 0.0f32;
        dv_acc[d] = 0.0f32;
    }

    // Staged queries (pre-scaled), their output gradients, `L` (0 for dead rows) and `Δ`.
    let mut qs = Shared::<[f32]>::new_slice(CHUNK * pass.head_dim);
    let mut gs = Shared::<[f32]>::new_slice(CHUNK * pass.head_dim);
    let mut ls = Shared::<[f32]>::new_slice(CHUNK);
    let mut ds_row = Shared::<[f32]>::new_slice(CHUNK);
    // 1: a live query, 0: none (padding, no key), `POISONED`: its forward saw a non-finite value.
    let mut qlive = Shared::<[u32]>::new_slice(CHUNK);
    // Whether a poisoned query sees this key: its gradients are then NaN (`dk` alone for a
    // `DK_POISONED` query).
    let mut key_poisoned = false;
    let mut dk_poisoned = false;

    let q_base = batch * io.q.stride(0) + head * io.q.stride(1);
    let g_base = batch * grad.dout.stride(0) + head * grad.dout.stride(1);
    let l_base = batch * grad.lse.stride(0) + head * grad.lse.stride(1);
    let d_base = batch * grad.delta.stride(0) + head * grad.delta.stride(1);
    let run_lo = io.blocks[csr_base + kb] as usize;
    let run_hi = io.blocks[csr_base + kb + 1] as usize;
    for run in run_lo..run_hi {
        let qb_lo = clamp_up(io.runs[2 * run] as usize, qb_first);
        let qb_hi = clamp_down(io.runs[2 * run + 1] as usize, qb_end);
        for qb in qb_lo..qb_hi {
            let mut c0 = 0usize;
            while c0 < pass.block {
                let mut e = unit;
                while e < CHUNK * pass.head_dim {
                    let c = e / pass.head_dim;
                    let d = e % pass.head_dim;
                    let tq = qb * pass.block + c0 + c;
                    let present = queries.holds(tq) && c0 + c < pass.block;
                    let pq = queries.row(&tile, tq);
                    qs[e] = f32::cast_from(io.q[q_base + pq * io.q.stride(2) + d * io.q.stride(3)])
                        * io.scale;
                    gs[e] = f32::cast_from(
                        grad.dout[g_base + pq * grad.dout.stride(2) + d * grad.dout.stride(3)],
                    );
                    if d == 0 {
                        let l = grad.lse[l_base + pq * grad.lse.stride(2)];
                        let delta = grad.delta[d_base + pq * grad.delta.stride(2)];
                        let bad = present && poisoned_row(l, delta);
                        // `dv` takes `P` and `dO` only: a row whose `L` and `dO` are finite (its
                        // `Δ` is not: a NaN output, from a NaN value it saw) still adds
                        // `P · dO` to `dv`; only its `dk` is NaN.
                        let mut dv_ok = bad && !not_finite(l);
                        if dv_ok {
                            let g_row = g_base + pq * grad.dout.stride(2);
                            for dd in 0..pass.head_dim {
                                let g = f32::cast_from(grad.dout[g_row + dd * grad.dout.stride(3)]);
                                dv_ok = dv_ok && !not_finite(g);
                            }
                        }
                        let ok = present && !bad && l != io.neg_inf;
                        qlive[c] = select(
                            dv_ok,
                            DK_POISONED,
                            select(bad, POISONED, select(ok, 1u32, 0u32)),
                        );
                        ls[c] = select(ok || dv_ok, l, 0.0f32);
                        ds_row[c] = select(ok, delta, 0.0f32);
                    }
                    e += pass.block;
                }
                sync_cube();

                for c in 0..CHUNK {
                    let tq = qb * pass.block + c0 + c;
                    let mut seen = key_live && qlive[c] != 0;
                    if comptime!(pass.causal) {
                        seen = seen && tk <= tq;
                    }
                    let bad = seen && qlive[c] == POISONED;
                    let dk_bad = seen && qlive[c] == DK_POISONED;
                    key_poisoned = key_poisoned || bad;
                    dk_poisoned = dk_poisoned || dk_bad;
                    let ok = seen && !bad && !dk_bad;
                    let mut dot = 0.0f32;
                    let mut dp = 0.0f32;
                    #[unroll(unroll)]
                    for d in 0..pass.head_dim {
                        dot += qs[c * pass.head_dim + d] * kr[d];
                        dp += gs[c * pass.head_dim + d] * vr[d];
                    }
                    let p = select(ok || dk_bad, f32::exp(dot - ls[c]), 0.0f32);
                    let ds = select(ok, p * (dp - ds_row[c]), 0.0f32);
                    // Queries that do not see this key add nothing (not `0 · q`).
                    #[unroll(unroll)]
                    for d in 0..pass.head_dim {
                        dv_acc[d] += select(ok || dk_bad, p * gs[c * pass.head_dim + d], 0.0f32);
                        dk_acc[d] += select(ok, ds * qs[c * pass.head_dim + d], 0.0f32);
                    }
                }
                sync_cube();
                c0 += CHUNK;
            }
        }
    }

    if k_valid {
        let k_at = batch * dk.stride(0) + head * dk.stride(1) + pk * dk.stride(2);
        let v_at = batch * dv.stride(0) + head * dv.stride(1) + pk * dv.stride(2);
        #[unroll]
        for d in 0..pass.head_dim {
            let dk_at = k_at + d * dk.stride(3);
            let dv_at = v_at + d * dv.stride(3);
            dk[dk_at] = select(key_poisoned || dk_poisoned, io.nan, dk[dk_at] + dk_acc[d]);
            dv[dv_at] = select(key_poisoned, io.nan, dv[dv_at] + dv_acc[d]);
        }
    }
}

/// `qlive`'s mark of a query whose forward saw a non-finite value: the `dk` and `dv` of every
/// key it sees are NaN.
const POISONED: u32 = 2;
/// `qlive`'s mark of a query whose `L` and `dO` are finite but whose `Δ` is not (its output is
/// NaN, through a NaN value it saw): `dS` is NaN, `P` is not, so the `dk` of every key it sees
/// is NaN and its `P · dO` still goes into their `dv`, as IEEE arithmetic has it.
const DK_POISONED: u32 = 3;

/// Whether a query row's forward saw a non-finite value: its `L` is NaN or `+inf`, or, for a
/// row with keys (`L ≠ −inf`; a row without keys has no gradient whatever its `dL`), its `Δ` is
/// not finite (a NaN output or upstream gradient). Tested on the bits (`super::finite`): on
/// lavapipe the NaN arithmetic of such a row came out as a zero gradient. The row's gradient
/// is then written as `Operands::nan`, and so are those of the keys it sees.
#[cube]
fn poisoned_row(l: f32, delta: f32) -> bool {
    !is_neg_inf(l) && (not_finite(l) || not_finite(delta))
}

//! The blockwise reference: exact attention over the layout with an online softmax, in plain
//! Burn tensor ops (so any device runs it and autodiff differentiates it).
//!
//! For each head class `(branch b, offset s)`:
//! 1. gather the class's tokens of every segment (positions `s, s + r, …`), padded to whole
//!    blocks: `q_g, k_g, v_g: [batch, class_heads, rows, block, head_dim]`, one row per query
//!    block of every segment;
//! 2. order the rows by their number of key blocks, longest first, so that "slot" `j` (the `j`-th
//!    key block of each row) is a prefix of rows; walk the slots in groups (as many as keep one
//!    step's scores under 2^24 values): for each group, gather every row's key blocks at once
//!    (a zero block where a row has fewer), compute `[.., rows, block, width · block]` scores
//!    in one product and update the running max, sum and accumulator of those rows;
//! 3. normalise, restore the row order and scatter back to token positions (`lse = -inf` and
//!    `out = 0` for tokens the class skips).
//!
//! The branches are then merged with [`merge_lse`](crate::merge::merge_lse). Peak memory is one
//! group's scores (at most 2^24 values) per class and step; nothing is `n × n`.

use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use super::Products;
use super::plan::{ClassPlan, ReferencePlan};
use crate::inputs::AttentionShape;
use crate::layout::BlockLayout;
use crate::merge::{finite_or_zero, merge_parts, safe_log};

/// Score values one step of [`class_attention`] may hold: groups of slots are cut so that
/// `rows · width · per_row` stays under it (64 MiB of f32 scores).
const SCORE_BUDGET: usize = 1 << 24;

/// Consecutive groups of `slots` (each the key blocks of a prefix of the rows, longest first)
/// whose scores, `rows · width · per_row` values with the group's first (largest) row count,
/// fit [`SCORE_BUDGET`]; at least one slot a group.
fn slot_groups(slots: &[(Vec<i64>, Vec<bool>)], per_row: usize) -> Vec<core::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < slots.len() {
        let rows = slots[start].0.len().max(1);
        let width = (SCORE_BUDGET / (rows * per_row).max(1)).max(1);
        let end = (start + width).min(slots.len());
        groups.push(start..end);
        start = end;
    }
    groups
}

fn ints(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn bools<const D: usize>(values: &[bool], shape: [usize; D], device: &Device) -> Tensor<D, Bool> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Blockwise reference attention.
///
/// - `q: [batch, heads, n_q, head_dim]`, `k, v: [batch, kv_heads, n_k, head_dim]`
/// - `mask: [batch, n_k]`, `true` = key padded (Burn's polarity)
///
/// Returns `out: [batch, heads, n_q, head_dim]` (dtype of `q`) and `lse: [batch, heads, n_q]`
/// (f32). With [`ReferencePlan::new`] `n_q = n_k = n` (inputs checked with
/// [`crate::inputs::check_inputs`]); with [`ReferencePlan::restricted`] the tensors hold the
/// plan's query and key rows.
pub fn reference_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<2, Bool>>,
    shape: AttentionShape,
    plan: &ReferencePlan,
    scale: f64,
) -> (Tensor<4>, Tensor<3>) {
    let AttentionShape {
        batch,
        heads,
        head_dim,
        ..
    } = shape;
    let dtype = q.dtype();
    let device = q.device();
    if plan.queries == 0 {
        return (
            Tensor::zeros([batch, heads, 0, head_dim], (&device, dtype)),
            Tensor::zeros([batch, heads, 0], (&device, DType::F32)),
        );
    }
    let products = Products::for_inputs(&device, dtype);
    let q = q.cast(DType::F32) * scale;
    let k = k.cast(DType::F32);
    let v = v.cast(DType::F32);
    let layout = &plan.layout;
    let mut parts = Vec::with_capacity(layout.branches.len());
    for branch in 0..layout.branches.len() {
        let mut outs = Vec::new();
        let mut lses = Vec::new();
        let mut head_order = Vec::new();
        for (class, cp) in layout.classes.iter().zip(&plan.classes) {
            if class.branch != branch {
                continue;
            }
            let (o, l) = class_attention(&q, &k, &v, mask.as_ref(), shape, cp, layout, products);
            outs.push(o);
            lses.push(l);
            head_order.extend(cp.heads.iter().copied());
        }
        let mut inverse = vec![0i64; heads];
        for (i, &h) in head_order.iter().enumerate() {
            inverse[h as usize] = i as i64;
        }
        let inverse = ints(&inverse, &device);
        parts.push((
            Tensor::cat(outs, 1).select(1, inverse.clone()),
            Tensor::cat(lses, 1).select(1, inverse),
        ));
    }
    let (out, lse) = merge_parts(parts);
    (out.cast(dtype), lse)
}

/// Attention of one head class; returns `out: [batch, class_heads, queries, head_dim]` (f32)
/// and `lse: [batch, class_heads, queries]`.
#[allow(clippy::too_many_arguments)]
fn class_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    shape: AttentionShape,
    cp: &ClassPlan,
    layout: &BlockLayout,
    products: Products,
) -> (Tensor<4>, Tensor<3>) {
    let AttentionShape {
        batch, head_dim: d, ..
    } = shape;
    let bs = layout.block_size;
    let device = q.device();
    let hc = cp.heads.len();
    let rows = cp.active;
    let n_out = cp.scatter.len();
    if rows == 0 {
        // The class selects none of the output queries.
        return (
            Tensor::zeros([batch, hc, n_out, d], (&device, DType::F32)),
            Tensor::full([batch, hc, n_out], f32::NEG_INFINITY, (&device, DType::F32)),
        );
    }
    let kv_heads: Vec<i64> = cp
        .heads
        .iter()
        .map(|&h| shape.kv_head(h as usize) as i64)
        .collect();
    let q_rows = q
        .clone()
        .select(1, ints(&cp.heads, &device))
        .select(2, ints(&cp.q_gather, &device))
        .reshape([batch, hc, rows, bs, d]);
    // Padding slots take no key (`hidden` below) and pass no gradient to the row they were
    // gathered from.
    let q_filler = bools(&cp.q_filler, [1, 1, rows, bs, 1], &device);
    let q_rows = q_rows.mask_fill(q_filler.clone().expand([batch, hc, rows, bs, d]), 0.0);

    // Every float tensor in f32, whatever the device's default float type.
    let f32_on = (&device, DType::F32);
    let mut m = Tensor::<5>::full([batch, hc, rows, bs, 1], f32::NEG_INFINITY, f32_on);
    let mut l = Tensor::<5>::zeros([batch, hc, rows, bs, 1], f32_on);
    let mut acc = Tensor::<5>::zeros([batch, hc, rows, bs, d], f32_on);
    if !cp.slots.is_empty() {
        let k_gather = ints(&cp.k_gather, &device);
        let blocks = |t: &Tensor<4>| {
            t.clone()
                .select(1, ints(&kv_heads, &device))
                .select(2, k_gather.clone())
                .reshape([batch, hc, cp.key_blocks, bs, d])
        };
        let (k_blocks, v_blocks) = (blocks(k), blocks(v));
        // Key validity per gathered slot (1 = a readable real token that is not padded), as
        // floats: gathers of bool tensors are not supported by every backend.
        let slots = cp.key_blocks * bs;
        let mut key_valid =
            Tensor::<2>::from_data(TensorData::new(cp.k_valid.clone(), [1, slots]), f32_on)
                .expand([batch, slots]);
        if let Some(mask) = mask {
            // `1 - padded` as floats: a gathered bool tensor (the ring's rows) may be typed `U8`,
            // which `bool_not` refuses on flex.
            let present = mask.clone().float().cast(DType::F32).neg().add_scalar(1.0);
            key_valid = key_valid * present.select(1, k_gather.clone());
        }
        let key_valid = key_valid.reshape([batch, cp.key_blocks, bs]);
        // Keys no query may see (padded, past the segment, outside a ring step) add nothing:
        // zero their rows, so that `0 · NaN` of a garbage row cannot reach a real output. One
        // zero block more serves the slots a row does not have.
        let unseen = key_valid
            .clone()
            .lower_elem(0.5)
            .reshape([batch, 1, cp.key_blocks, bs, 1])
            .expand([batch, hc, cp.key_blocks, bs, d]);
        let zero_block = || Tensor::<5>::zeros([batch, hc, 1, bs, d], f32_on);
        let k_blocks = Tensor::cat(
            vec![k_blocks.mask_fill(unseen.clone(), 0.0), zero_block()],
            2,
        );
        let v_blocks = Tensor::cat(vec![v_blocks.mask_fill(unseen, 0.0), zero_block()], 2);
        let key_valid = Tensor::cat(vec![key_valid, Tensor::zeros([batch, 1, bs], f32_on)], 1);
        let upper = layout.causal.then(|| {
            Tensor::<2, Bool>::tril_mask([bs, bs], 0, &device).reshape([1, 1, 1, bs, 1, bs])
        });
        // Slots are walked in groups: one gather, one product and one softmax step for as
        // many slots as keep the scores under `SCORE_BUDGET` values.
        for group in slot_groups(&cp.slots, batch * hc * bs * bs) {
            let (first, width) = (group.start, group.len());
            let rj = cp.slots[first].0.len();
            // Row `i`'s key block at slot `first + s`: `idx[i · width + s]`, the zero block where
            // the row has no such slot.
            let mut idx = vec![cp.key_blocks as i64; rj * width];
            let mut diagonal = vec![false; rj * width];
            for (s, (blocks, diag)) in cp.slots[group].iter().enumerate() {
                for (i, (&kb, &dg)) in blocks.iter().zip(diag).enumerate() {
                    idx[i * width + s] = kb;
                    diagonal[i * width + s] = dg;
                }
            }
            let idx = ints(&idx, &device);
            let gather = |t: &Tensor<5>| {
                t.clone()
                    .select(2, idx.clone())
                    .reshape([batch, hc, rj, width * bs, d])
            };
            let (kj, vj) = (gather(&k_blocks), gather(&v_blocks));
            let qj = q_rows.clone().slice_dim(2, 0..rj);
            let full = [batch, hc, rj, bs, width * bs];
            let mut hidden = key_valid
                .clone()
                .select(1, idx)
                .lower_elem(0.5)
                .reshape([batch, 1, rj, 1, width * bs])
                .expand(full);
            hidden = hidden.bool_or(q_filler.clone().slice_dim(2, 0..rj).expand(full));
            if let Some(upper) = &upper {
                let six = [batch, hc, rj, bs, width, bs];
                let diag = bools(&diagonal, [1, 1, rj, 1, width, 1], &device).expand(six);
                let within = diag.bool_and(upper.clone().expand(six)).reshape(full);
                hidden = hidden.bool_or(within);
            }
            // A causal diagonal block holds keys some of its queries may not see, and `0 · NaN`
            // or `0 · ∞` would carry a non-finite value of such a key's row to them (through
            // `P·V` forward, through `dS·K` backward): the products take the finite values
            // only, and a query that does see a non-finite value gets NaN — in its scores for
            // a key with a non-finite `k`, in the columns of `P·V` for a non-finite `v`.
            let guard = upper.is_some() && diagonal.contains(&true);
            let (kj, k_bad) = if guard {
                let bad = kj.clone().is_finite().bool_not();
                let key_bad = bad
                    .clone()
                    .any_dim(4)
                    .reshape([batch, hc, rj, 1, width * bs]);
                (kj.mask_fill(bad, 0.0), Some(key_bad.expand(full)))
            } else {
                (kj, None)
            };
            let mut scores = products.matmul(qj, kj.swap_dims(3, 4));
            if let Some(k_bad) = k_bad {
                scores = scores.mask_fill(k_bad, f32::NAN);
            }
            let scores = scores.mask_fill(hidden, f32::NEG_INFINITY);

            let m_old = m.clone().slice_dim(2, 0..rj);
            let m_new = m_old.clone().max_pair(scores.clone().max_dim(4)).detach();
            let shift = finite_or_zero(m_new.clone());
            let alpha = (m_old - shift.clone()).exp();
            let p = (scores - shift).exp();
            let l_new = l.clone().slice_dim(2, 0..rj) * alpha.clone() + p.clone().sum_dim(4);
            let pv = if guard {
                let bad = vj.clone().is_finite().bool_not();
                let seen = products
                    .matmul(p.clone(), bad.clone().float().cast(DType::F32))
                    .greater_elem(0.0);
                products
                    .matmul(p, vj.mask_fill(bad, 0.0))
                    .mask_fill(seen, f32::NAN)
            } else {
                products.matmul(p, vj)
            };
            let acc_new = acc.clone().slice_dim(2, 0..rj) * alpha + pv;
            let keep_tail = |new: Tensor<5>, old: Tensor<5>| {
                if rj == rows {
                    new
                } else {
                    Tensor::cat(vec![new, old.slice_dim(2, rj..rows)], 2)
                }
            };
            m = keep_tail(m_new, m);
            l = keep_tail(l_new, l);
            acc = keep_tail(acc_new, acc);
        }
    }
    let (log_l, empty) = safe_log(l.clone());
    let out = (acc / l.mask_fill(empty, 1.0)).reshape([batch, hc, rows * bs, d]);
    let lse = (log_l + finite_or_zero(m)).reshape([batch, hc, rows * bs]);

    // To output rows (a zero / -inf row for queries the class skips).
    let scatter = ints(&cp.scatter, &device);
    let out = Tensor::cat(
        vec![out, Tensor::zeros([batch, hc, 1, d], (&device, DType::F32))],
        2,
    )
    .select(2, scatter.clone());
    let lse = Tensor::cat(
        vec![
            lse,
            Tensor::full([batch, hc, 1], f32::NEG_INFINITY, (&device, DType::F32)),
        ],
        2,
    )
    .select(2, scatter);
    (out, lse)
}

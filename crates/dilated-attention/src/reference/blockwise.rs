//! The blockwise reference: exact attention over the layout with an online softmax, in plain
//! Burn tensor ops (so any device runs it and autodiff differentiates it).
//!
//! For each head class `(branch b, offset s)`:
//! 1. gather the class's tokens of every segment (positions `s, s + r, …`), padded to whole
//!    blocks: `q_g, k_g, v_g: [batch, class_heads, rows, block, head_dim]`, one row per query
//!    block of every segment;
//! 2. order the rows by their number of key blocks, longest first, so that "slot" `j` (the `j`-th
//!    key block of each row) is a prefix of rows; for each slot, gather one key block per row,
//!    compute `[.., rows_j, block, block]` scores and update the running max, sum and
//!    accumulator of those rows;
//! 3. normalise, restore the row order and scatter back to token positions (`lse = -inf` and
//!    `out = 0` for tokens the class skips).
//!
//! The branches are then merged with [`merge_lse`]. Peak memory is `O(n · block)` per head (one
//! slot's scores); nothing is `n × n`.

use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::inputs::AttentionShape;
use crate::layout::{BlockLayout, ClassLayout};
use crate::merge::{finite_or_zero, merge_lse, safe_log};

/// Host-side index plan of one head class, derived once from the layout.
#[derive(Debug, Clone)]
struct ClassPlan {
    /// Query heads of the class.
    heads: Vec<i64>,
    /// Query-block rows: `segments × blocks_per_segment`.
    rows: usize,
    /// Gathered token slots: `rows × block`; position of each slot (0 for padding slots).
    gather: Vec<i64>,
    /// Whether each gathered slot holds a real token.
    token_valid: Vec<bool>,
    /// Rows ordered by decreasing number of key blocks.
    order: Vec<i64>,
    /// Inverse of `order`.
    inverse: Vec<i64>,
    /// Per slot `j`: the key block of each of the first `rows_j` ordered rows, and whether it is
    /// the row's own (diagonal) block.
    slots: Vec<(Vec<i64>, Vec<bool>)>,
    /// For each token position: its gathered slot, or `rows × block` (a zero row) if skipped.
    scatter: Vec<i64>,
}

impl ClassPlan {
    fn new(class: &ClassLayout, n: usize, bs: usize) -> Self {
        let per_segment = class.full.blocks;
        let rows = class.num_segments * per_segment;
        let mut gather = vec![0i64; rows * bs];
        let mut token_valid = vec![false; rows * bs];
        let mut row_blocks: Vec<Vec<i64>> = vec![Vec::new(); rows];
        for seg in 0..class.num_segments {
            let shape = class.segment(seg);
            for t in 0..shape.tokens {
                let slot = seg * per_segment * bs + t;
                gather[slot] = class.position(seg, t) as i64;
                token_valid[slot] = true;
            }
            for q in 0..shape.blocks {
                row_blocks[seg * per_segment + q] = shape
                    .rows
                    .row(q)
                    .iter()
                    .map(|&k| (seg * per_segment) as i64 + k as i64)
                    .collect();
            }
        }
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by_key(|&r| core::cmp::Reverse(row_blocks[r].len()));
        let mut inverse = vec![0i64; rows];
        for (i, &r) in order.iter().enumerate() {
            inverse[r] = i as i64;
        }
        let depth = order.first().map_or(0, |&r| row_blocks[r].len());
        let slots = (0..depth)
            .map(|j| {
                order
                    .iter()
                    .take_while(|&&r| row_blocks[r].len() > j)
                    .map(|&r| (row_blocks[r][j], row_blocks[r][j] == r as i64))
                    .unzip()
            })
            .collect();
        let scatter = (0..n)
            .map(|i| match class.gathered(i) {
                Some((seg, t)) => (seg * per_segment * bs + t) as i64,
                None => (rows * bs) as i64,
            })
            .collect();
        Self {
            heads: class.heads.iter().map(|&h| h as i64).collect(),
            rows,
            gather,
            token_valid,
            order: order.into_iter().map(|r| r as i64).collect(),
            inverse,
            slots,
            scatter,
        }
    }
}

/// A layout together with the index plans the reference path needs; build it once per
/// `(n, heads)` and reuse it.
#[derive(Debug, Clone)]
pub struct ReferencePlan {
    /// The layout the plan was built from.
    pub layout: BlockLayout,
    classes: Vec<ClassPlan>,
}

impl ReferencePlan {
    /// Derives the index plans of `layout`.
    pub fn new(layout: BlockLayout) -> Self {
        let classes = layout
            .classes
            .iter()
            .map(|c| ClassPlan::new(c, layout.n, layout.block_size))
            .collect();
        Self { layout, classes }
    }
}

fn ints(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn bools<const D: usize>(values: &[bool], shape: [usize; D], device: &Device) -> Tensor<D, Bool> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Blockwise reference attention.
///
/// - `q: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]`
/// - `mask: [batch, n]`, `true` = key present
///
/// Returns `out: [batch, heads, n, head_dim]` (dtype of `q`) and `lse: [batch, heads, n]` (f32).
/// Inputs must have been checked with [`crate::inputs::check_inputs`]; `plan` must have been
/// built for `(n, heads)`.
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
        n,
        head_dim,
        ..
    } = shape;
    let dtype = q.dtype();
    let device = q.device();
    if n == 0 {
        return (
            Tensor::zeros([batch, heads, 0, head_dim], (&device, dtype)),
            Tensor::zeros([batch, heads, 0], (&device, DType::F32)),
        );
    }
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
            let (o, l) = class_attention(&q, &k, &v, mask.as_ref(), shape, cp, layout);
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
    let (out, lse) = merge_lse(parts);
    (out.cast(dtype), lse)
}

/// Attention of one head class; returns `out: [batch, class_heads, n, head_dim]` (f32) and
/// `lse: [batch, class_heads, n]`.
fn class_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    shape: AttentionShape,
    cp: &ClassPlan,
    layout: &BlockLayout,
) -> (Tensor<4>, Tensor<3>) {
    let AttentionShape {
        batch,
        n,
        head_dim: d,
        ..
    } = shape;
    let bs = layout.block_size;
    let device = q.device();
    let hc = cp.heads.len();
    let rows = cp.rows;
    if rows == 0 {
        // The class selects no token at all (every segment is shorter than its offset).
        return (
            Tensor::zeros([batch, hc, n, d], &device),
            Tensor::full([batch, hc, n], f32::NEG_INFINITY, &device),
        );
    }
    let kv_heads: Vec<i64> = cp
        .heads
        .iter()
        .map(|&h| shape.kv_head(h as usize) as i64)
        .collect();
    let gather = ints(&cp.gather, &device);
    let blocks = |t: &Tensor<4>, heads: &[i64]| {
        t.clone()
            .select(1, ints(heads, &device))
            .select(2, gather.clone())
            .reshape([batch, hc, rows, bs, d])
    };
    let q_rows = blocks(q, &cp.heads).select(2, ints(&cp.order, &device));
    let k_blocks = blocks(k, &kv_heads);
    let v_blocks = blocks(v, &kv_heads);

    // Key validity per gathered slot (1 = a real token that is not padded), as floats:
    // gathers of bool tensors are not supported by every backend. [batch, rows, block]
    let token_valid: Vec<f32> = cp
        .token_valid
        .iter()
        .map(|&v| f32::from(u8::from(v)))
        .collect();
    let mut key_valid =
        Tensor::<2>::from_data(TensorData::new(token_valid, [1, rows * bs]), &device)
            .expand([batch, rows * bs]);
    if let Some(mask) = mask {
        key_valid = key_valid * mask.clone().float().select(1, gather.clone());
    }
    let key_valid = key_valid.reshape([batch, rows, bs]);
    let upper = layout
        .causal
        .then(|| Tensor::<2, Bool>::tril_mask([bs, bs], 0, &device).reshape([1, 1, 1, bs, bs]));

    let mut m = Tensor::<5>::full([batch, hc, rows, bs, 1], f32::NEG_INFINITY, &device);
    let mut l = Tensor::<5>::zeros([batch, hc, rows, bs, 1], &device);
    let mut acc = Tensor::<5>::zeros([batch, hc, rows, bs, d], &device);
    for (key_blocks, diagonal) in &cp.slots {
        let rj = key_blocks.len();
        let idx = ints(key_blocks, &device);
        let kj = k_blocks.clone().select(2, idx.clone());
        let vj = v_blocks.clone().select(2, idx.clone());
        let qj = q_rows.clone().slice_dim(2, 0..rj);
        let full = [batch, hc, rj, bs, bs];
        let mut hidden = key_valid
            .clone()
            .select(1, idx)
            .lower_elem(0.5)
            .reshape([batch, 1, rj, 1, bs])
            .expand(full);
        if let Some(upper) = &upper {
            let diag = bools(diagonal, [1, 1, rj, 1, 1], &device).expand(full);
            hidden = hidden.bool_or(diag.bool_and(upper.clone().expand(full)));
        }
        let scores = qj
            .matmul(kj.swap_dims(3, 4))
            .mask_fill(hidden, f32::NEG_INFINITY);

        let m_old = m.clone().slice_dim(2, 0..rj);
        let m_new = m_old.clone().max_pair(scores.clone().max_dim(4)).detach();
        let shift = finite_or_zero(m_new.clone());
        let alpha = (m_old - shift.clone()).exp();
        let p = (scores - shift).exp();
        let l_new = l.clone().slice_dim(2, 0..rj) * alpha.clone() + p.clone().sum_dim(4);
        let acc_new = acc.clone().slice_dim(2, 0..rj) * alpha + p.matmul(vj);
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
    let (log_l, empty) = safe_log(l.clone());
    let out = acc / l.mask_fill(empty, 1.0);
    let lse = log_l + finite_or_zero(m);

    // Back to the layout's row order, then to token positions (a zero / -inf row for skipped
    // tokens).
    let inverse = ints(&cp.inverse, &device);
    let out = out
        .select(2, inverse.clone())
        .reshape([batch, hc, rows * bs, d]);
    let lse = lse.select(2, inverse).reshape([batch, hc, rows * bs]);
    let scatter = ints(&cp.scatter, &device);
    let out = Tensor::cat(vec![out, Tensor::zeros([batch, hc, 1, d], &device)], 2)
        .select(2, scatter.clone());
    let lse = Tensor::cat(
        vec![
            lse,
            Tensor::full([batch, hc, 1], f32::NEG_INFINITY, &device),
        ],
        2,
    )
    .select(2, scatter);
    debug_assert_eq!(out.dims(), [batch, hc, n, d]);
    (out, lse)
}

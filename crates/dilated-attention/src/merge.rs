//! The log-sum-exp merge of partial attention results.
//!
//! Each part `p` is the softmax attention of a query over one key set `K_p` (a branch, a ring
//! step, a chunk): `O_p = Σ_{j∈K_p} e^{x_j} v_j / Σ_{j∈K_p} e^{x_j}` and `lse_p = log Σ_{j∈K_p}
//! e^{x_j}`. Attention over the concatenation of the key sets is
//!
//! ```text
//! lse = log Σ_p e^{lse_p},        O = Σ_p e^{lse_p - lse} · O_p
//! ```
//!
//! A part with no keys has `lse_p = -inf` and weight 0; if no part has keys the result is `O = 0`,
//! `lse = -inf`. Everything is computed in f32 with plain tensor ops, so autodiff gives the exact
//! gradient of this formula (the running maximum is a detached constant, which does not change
//! the value or the gradient).

use burn::tensor::{DType, Tensor};

use crate::error::{AttentionError, Result};

/// Replaces `-inf` by 0 in a detached maximum, so that `x - m` stays finite-or-`-inf`.
pub(crate) fn finite_or_zero<const D: usize>(m: Tensor<D>) -> Tensor<D> {
    let inf = m.clone().is_inf();
    m.mask_fill(inf, 0.0)
}

/// `(log(l), l == 0)` with `log(0) = -inf` and a gradient of 0 there, never NaN.
pub(crate) fn safe_log<const D: usize>(l: Tensor<D>) -> (Tensor<D>, Tensor<D, burn::tensor::Bool>) {
    let empty = l.clone().equal_elem(0.0);
    let log = l.mask_fill(empty.clone(), 1.0).log();
    (log.mask_fill(empty.clone(), f32::NEG_INFINITY), empty)
}

/// Merges partial results of attention over disjoint key sets (or sets that should count twice).
///
/// - `parts`: `(out_p, lse_p)` with `out_p: [batch, heads, n, head_dim]` in any float dtype and
///   `lse_p: [batch, heads, n]` in f32, all of one shape.
///
/// Returns `(out, lse)`: `out: [batch, heads, n, head_dim]` in the dtype of the first part's
/// output, `lse: [batch, heads, n]` in f32. With a single part it is returned as it is. No part,
/// or parts of different shapes, are an error naming `parts`.
pub fn merge_lse(parts: Vec<(Tensor<4>, Tensor<3>)>) -> Result<(Tensor<4>, Tensor<3>)> {
    let Some((first_out, first_lse)) = parts.first() else {
        return Err(AttentionError::Invalid {
            field: "parts",
            rule: "at least one (out, lse) part to merge".into(),
        });
    };
    let (out_dims, lse_dims) = (first_out.dims(), first_lse.dims());
    if out_dims[..3] != lse_dims {
        return Err(AttentionError::ShapeMismatch {
            tensor: "parts",
            expected: format!("lse of shape {:?} (out's first three dims)", &out_dims[..3]),
            got: lse_dims.to_vec(),
        });
    }
    if let Some((o, l)) = parts
        .iter()
        .find(|(o, l)| o.dims() != out_dims || l.dims() != lse_dims)
    {
        return Err(AttentionError::ShapeMismatch {
            tensor: "parts",
            expected: format!("every part of shape {out_dims:?} / {lse_dims:?}"),
            got: [o.dims().to_vec(), l.dims().to_vec()].concat(),
        });
    }
    Ok(merge_parts(parts))
}

/// [`merge_lse`] for callers that hold at least one part of one shape.
pub(crate) fn merge_parts(mut parts: Vec<(Tensor<4>, Tensor<3>)>) -> (Tensor<4>, Tensor<3>) {
    if parts.len() <= 1
        && let Some(part) = parts.pop()
    {
        return part;
    }
    let dtype = parts[0].0.dtype();
    let (outs, lses): (Vec<_>, Vec<_>) = parts
        .into_iter()
        .map(|(o, l)| (o.cast(DType::F32), l.cast(DType::F32)))
        .unzip();
    // [parts, batch, heads, n]
    let lse = Tensor::stack::<4>(lses, 0);
    let m = finite_or_zero(lse.clone().max_dim(0).detach());
    let w = (lse - m.clone()).exp();
    let sum = w.clone().sum_dim(0);
    let (log_sum, empty) = safe_log(sum.clone());
    let total = (log_sum + m).squeeze_dim::<3>(0);
    let norm = w / sum.mask_fill(empty, 1.0);
    let weighted = outs.into_iter().enumerate().map(|(p, o)| {
        let weight = norm.clone().slice_dim(0, p..p + 1).squeeze_dim::<3>(0);
        o * weight.unsqueeze_dim::<4>(3)
    });
    let out = weighted
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| unreachable!("two parts or more here"));
    (out.cast(dtype), total)
}

//! The naive oracle: dense `[heads, n, n]` multiplicity matrix, plain softmax attention.
//!
//! `O_i = Σ_j c_ij e^{x_ij} v_j / Σ_j c_ij e^{x_ij}` where `c_ij` counts the branches that let `i`
//! see `j` (rules 1, 2 and 4 read pair by pair through [`BlockLayout::allows`]) and padded keys
//! get `c_ij = 0`. `O(n²)` memory: for tests with small `n` only.

use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use super::Products;
use crate::inputs::AttentionShape;
use crate::layout::BlockLayout;
use crate::merge::{finite_or_zero, safe_log};

/// `log(c_ij)` for every head (`-inf` where no branch allows the pair): `[heads · n · n]`.
pub fn log_multiplicity(layout: &BlockLayout) -> Vec<f32> {
    let n = layout.n;
    let mut out = vec![f32::NEG_INFINITY; layout.heads * n * n];
    for h in 0..layout.heads {
        for i in 0..n {
            for j in 0..n {
                let c = (0..layout.branches.len())
                    .filter(|&b| layout.allows(b, h, i, j))
                    .count();
                if c > 0 {
                    out[(h * n + i) * n + j] = (c as f32).ln();
                }
            }
        }
    }
    out
}

/// Naive attention under `layout`.
///
/// - `q: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]`
/// - `mask: [batch, n]`, `true` = key padded (Burn's polarity)
///
/// Returns `out: [batch, heads, n, head_dim]` (dtype of `q`) and `lse: [batch, heads, n]` (f32).
/// Inputs must have been checked with [`crate::inputs::check_inputs`].
pub fn naive_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<2, Bool>>,
    shape: AttentionShape,
    layout: &BlockLayout,
    scale: f64,
) -> (Tensor<4>, Tensor<3>) {
    let AttentionShape {
        batch, heads, n, ..
    } = shape;
    let dtype = q.dtype();
    let device = q.device();
    if n == 0 {
        let d = shape.head_dim;
        return (
            Tensor::zeros([batch, heads, 0, d], (&device, dtype)),
            Tensor::zeros([batch, heads, 0], (&device, DType::F32)),
        );
    }
    let kv_index: Vec<i64> = (0..heads).map(|h| shape.kv_head(h) as i64).collect();
    let kv_index = Tensor::<1, Int>::from_data(TensorData::new(kv_index, [heads]), &device);
    let products = Products::for_inputs(&device, dtype);
    let q = q.cast(DType::F32);
    let k = k.cast(DType::F32).select(1, kv_index.clone());
    let v = v.cast(DType::F32).select(1, kv_index);

    let bias = Tensor::<4>::from_data(
        TensorData::new(log_multiplicity(layout), [1, heads, n, n]),
        (&device, DType::F32),
    );
    let mut scores = products.matmul(q, k.swap_dims(2, 3)) * scale + bias;
    if let Some(mask) = mask {
        let padded = mask.reshape([batch, 1, 1, n]).expand([batch, heads, n, n]);
        scores = scores.mask_fill(padded, f32::NEG_INFINITY);
    }
    let m = finite_or_zero(scores.clone().max_dim(3).detach());
    let p = (scores - m.clone()).exp();
    let l = p.clone().sum_dim(3);
    let (log_l, empty) = safe_log(l.clone());
    let out = products.matmul(p, v) / l.mask_fill(empty, 1.0);
    let lse = (log_l + m).squeeze_dim::<3>(3);
    (out.cast(dtype), lse)
}

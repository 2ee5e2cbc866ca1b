//! LSE merge of `P` partial attention results (branches, ring steps, chunks).
//!
//! Per row `i` (a `(batch, head, query)` triple flattened) and column `c < head_dim`:
//! `m = max_p lse[p, i]` (0 if every part is `-inf`), `w_p = exp(lse[p, i] - m)`,
//! `out[i, c] = Σ_p w_p · parts[p, i, c] / Σ_p w_p` (0 if the sum is 0) and
//! `lse_out[i] = m + log Σ_p w_p` (`-inf` if the sum is 0). Accumulation in f32.
//!
//! Shapes: `parts: [P, rows, head_dim]`, `lse: [P, rows]` (f32), each part contiguous and
//! the parts any stride apart (so that each can start at an aligned offset of one buffer);
//! `out: [rows, head_dim]`, `lse_out: [rows]` (f32), contiguous; `parts` and `out` in the
//! attention dtype. One unit per output element.
//!
//! `-inf` reaches the kernel as a scalar argument: WGSL has no infinity literal, and CubeCL's
//! WGSL backend would emit an undefined `Inf` identifier for the constant.

use cubecl::prelude::*;

use crate::KernelError;
use crate::args::{AttnDtype, TensorRef};
use crate::launch::spread;

#[cube(launch)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
fn lse_merge_kernel<F: Float>(
    parts: &Tensor<F>,
    lse: &Tensor<f32>,
    out: &mut Tensor<F>,
    lse_out: &mut Tensor<f32>,
    num_parts: u32,
    head_dim: u32,
    neg_inf: f32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let row = pos / head_dim as usize;
    let mut m = neg_inf;
    for p in 0..num_parts as usize {
        m = f32::max(m, lse[p * lse.stride(0) + row]);
    }
    let shift = select(m == neg_inf, 0.0f32, m);
    let mut sum = 0.0f32;
    let mut acc = 0.0f32;
    for p in 0..num_parts as usize {
        let w = f32::exp(lse[p * lse.stride(0) + row] - shift);
        sum += w;
        acc += w * f32::cast_from(parts[p * parts.stride(0) + pos]);
    }
    let empty = sum == 0.0f32;
    out[pos] = F::cast_from(select(empty, 0.0f32, acc / select(empty, 1.0f32, sum)));
    if pos % head_dim as usize == 0 {
        lse_out[row] = select(empty, neg_inf, shift + f32::ln(select(empty, 1.0f32, sum)));
    }
}

/// Merges `P` parts on the device of `client`.
///
/// - `parts: [P, rows, head_dim]` in `dtype`, `lse: [P, rows]` f32 (each part contiguous,
///   parts any stride apart)
/// - `out: [rows, head_dim]` in `dtype`, `lse_out: [rows]` f32 (contiguous, written)
pub fn lse_merge(
    client: &Client,
    dtype: AttnDtype,
    parts: &TensorRef,
    lse: &TensorRef,
    out: &TensorRef,
    lse_out: &TensorRef,
) -> Result<(), KernelError> {
    let [num_parts, rows, head_dim] = match parts.shape() {
        &[p, r, d] if p > 0 && d > 0 => [p, r, d],
        other => {
            return Err(KernelError::shape(
                "parts",
                format!("[parts >= 1, rows, head_dim >= 1], got {other:?}"),
            ));
        }
    };
    TensorRef::expect_all_bindable(
        client,
        &[
            ("parts", Some(parts)),
            ("lse", Some(lse)),
            ("out", Some(out)),
            ("lse_out", Some(lse_out)),
        ],
    )?;
    lse.expect_shape("lse", &[num_parts, rows], "[parts, rows]")?;
    out.expect_shape("out", &[rows, head_dim], "[rows, head_dim]")?;
    lse_out.expect_shape("lse_out", &[rows], "[rows]")?;
    for (name, t, elem) in [
        ("parts", parts, dtype.size()),
        ("lse", lse, 4),
        ("out", out, dtype.size()),
        ("lse_out", lse_out, 4),
    ] {
        t.expect_elem(name, elem)?;
    }
    // Parts: each contiguous, and no closer than their size.
    let parts_ok = parts.strides()[1..] == [head_dim, 1] && parts.strides()[0] >= rows * head_dim;
    let lse_ok = lse.strides()[1] == 1 && lse.strides()[0] >= rows;
    for (name, ok) in [
        ("parts", parts_ok),
        ("lse", lse_ok),
        ("out", out.is_contiguous()),
        ("lse_out", lse_out.is_contiguous()),
    ] {
        if !ok {
            return Err(KernelError::shape(
                name,
                "contiguous parts that do not overlap",
            ));
        }
    }
    let total = rows * head_dim;
    if total == 0 {
        return Ok(());
    }
    let count = spread(client, total.div_ceil(256))?;
    macro_rules! launch {
        ($t:ty) => {
            lse_merge_kernel::launch::<$t>(
                client,
                count.clone(),
                CubeDim::new_1d(256),
                parts.arg(),
                lse.arg(),
                out.arg(),
                lse_out.arg(),
                num_parts as u32,
                head_dim as u32,
                f32::NEG_INFINITY,
            )
        };
    }
    match dtype {
        AttnDtype::F32 => launch!(f32),
        AttnDtype::F16 => launch!(half::f16),
        AttnDtype::BF16 => launch!(half::bf16),
    }
    Ok(())
}

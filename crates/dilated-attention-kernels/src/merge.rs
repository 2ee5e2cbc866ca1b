//! LSE merge of `P` partial attention results (branches, ring steps, chunks).
//!
//! Per row `i` (a `(batch, head, query)` triple flattened) and column `c < head_dim`:
//! `m = max_p lse[p, i]` (0 if every part is `-inf`), `w_p = exp(lse[p, i] - m)`,
//! `out[i, c] = Σ_p w_p · parts[p, i, c] / Σ_p w_p` (0 if the sum is 0) and
//! `lse_out[i] = m + log Σ_p w_p` (`-inf` if the sum is 0). Accumulation in f32.
//!
//! Shapes (contiguous): `parts: [P, rows, head_dim]`, `lse: [P, rows]` (f32),
//! `out: [rows, head_dim]`, `lse_out: [rows]` (f32). One unit per output element.
//!
//! `-inf` reaches the kernel as a scalar argument: WGSL has no infinity literal, and CubeCL's
//! WGSL backend would emit an undefined `Inf` identifier for the constant.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::KernelError;

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
    let rows = lse_out.len();
    let row = pos / head_dim as usize;
    let mut m = neg_inf;
    for p in 0..num_parts as usize {
        m = f32::max(m, lse[p * rows + row]);
    }
    let shift = select(m == neg_inf, 0.0f32, m);
    let mut sum = 0.0f32;
    let mut acc = 0.0f32;
    for p in 0..num_parts as usize {
        let w = f32::exp(lse[p * rows + row] - shift);
        sum += w;
        acc += w * f32::cast_from(parts[p * out.len() + pos]);
    }
    let empty = sum == 0.0f32;
    out[pos] = F::cast_from(select(empty, 0.0f32, acc / select(empty, 1.0f32, sum)));
    if pos % head_dim as usize == 0 {
        lse_out[row] = select(empty, neg_inf, shift + f32::ln(select(empty, 1.0f32, sum)));
    }
}

/// Merges `P` parts on the device of `client`.
///
/// - `parts`: handle of `[P, rows, head_dim]` f32, contiguous
/// - `lse`: handle of `[P, rows]` f32, contiguous
///
/// Returns handles of `out: [rows, head_dim]` and `lse_out: [rows]` (f32).
pub fn lse_merge_f32(
    client: &Client,
    parts: &Handle,
    lse: &Handle,
    num_parts: usize,
    rows: usize,
    head_dim: usize,
) -> Result<(Handle, Handle), KernelError> {
    if num_parts == 0 || head_dim == 0 {
        return Err(KernelError::Shape {
            arg: "parts",
            expected: "at least one part and head_dim >= 1".into(),
        });
    }
    let f = core::mem::size_of::<f32>();
    let out = client.empty(rows * head_dim * f);
    let lse_out = client.empty(rows.max(1) * f);
    let total = rows * head_dim;
    if total == 0 {
        return Ok((out, lse_out));
    }
    let arg = |h: &Handle, shape: Vec<usize>| {
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        // SAFETY: the handles hold at least `shape.product()` f32 values (checked by the
        // callers' sizes above and in `client.empty`).
        unsafe { TensorArg::from_raw_parts(h.clone(), strides.into(), shape.into()) }
    };
    let cube_dim = CubeDim::new_1d(256);
    let cubes = total.div_ceil(256) as u32;
    lse_merge_kernel::launch::<f32>(
        client,
        CubeCount::Static(cubes, 1, 1),
        cube_dim,
        arg(parts, vec![num_parts, rows, head_dim]),
        arg(lse, vec![num_parts, rows]),
        arg(&out, vec![rows, head_dim]),
        arg(&lse_out, vec![rows]),
        num_parts as u32,
        head_dim as u32,
        f32::NEG_INFINITY,
    );
    Ok((out, lse_out))
}

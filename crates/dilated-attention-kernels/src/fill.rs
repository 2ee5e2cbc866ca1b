//! `fill`: sets every element of a contiguous buffer to one value (`0` for the gradient
//! accumulators, `-inf` for a log-sum-exp that no key reached yet).
//!
//! Shape: any, contiguous, in the attention dtype or f32. One unit per element.

use cubecl::prelude::*;

use crate::KernelError;
use crate::args::{AttnDtype, TensorRef};

#[cube(launch)]
fn fill_kernel<F: Float>(out: &mut Tensor<F>, value: f32) {
    if ABSOLUTE_POS < out.len() {
        out[ABSOLUTE_POS] = F::cast_from(value);
    }
}

/// Sets every element of the contiguous `out` (elements of `dtype`) to `value`.
pub fn fill(
    client: &Client,
    dtype: AttnDtype,
    out: &TensorRef,
    value: f32,
) -> Result<(), KernelError> {
    out.expect_elem("out", dtype.size())?;
    if !out.is_contiguous() {
        return Err(KernelError::shape("out", "a contiguous buffer"));
    }
    let total: usize = out.shape().iter().product();
    if total == 0 {
        return Ok(());
    }
    let threads = 256u32;
    let (max_x, max_y, _) = client.properties().hardware.max_cube_count;
    let cubes = total.div_ceil(threads as usize);
    // Two grid dimensions, so that buffers past `max_x` cubes are covered.
    let x = cubes.min(max_x as usize);
    let y = cubes.div_ceil(x);
    if y > max_y as usize {
        return Err(KernelError::unsupported(
            "n",
            "a buffer larger than one launch's cubes cover",
        ));
    }
    let count = CubeCount::Static(x as u32, y as u32, 1);
    let dim = CubeDim::new_1d(threads);
    match dtype {
        AttnDtype::F32 => fill_kernel::launch::<f32>(client, count, dim, out.arg(), value),
        AttnDtype::F16 => fill_kernel::launch::<half::f16>(client, count, dim, out.arg(), value),
        AttnDtype::BF16 => fill_kernel::launch::<half::bf16>(client, count, dim, out.arg(), value),
    }
    Ok(())
}

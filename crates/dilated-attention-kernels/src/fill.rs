//! `fill`: sets every element of a contiguous buffer to one value (`0` for the gradient
//! accumulators, `-inf` for a log-sum-exp that no key reached yet).
//!
//! Shape: any, contiguous, in the attention dtype or f32. One unit per vector of 16 bytes (8
//! halves or 4 floats) where the length allows, else per element.

use cubecl::prelude::*;

use crate::KernelError;
use crate::args::{AttnDtype, TensorRef};
use crate::launch::spread;

#[cube(launch_unchecked)]
fn fill_kernel<F: Float, N: Size>(out: &mut Tensor<Vector<F, N>>, vectors: usize, value: f32) {
    if ABSOLUTE_POS < vectors {
        out[ABSOLUTE_POS] = Vector::new(F::cast_from(value));
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
    out.expect_bindable("out", client)?;
    if !out.is_contiguous() {
        return Err(KernelError::shape("out", "a contiguous buffer"));
    }
    let total: usize = out.shape().iter().product();
    if total == 0 {
        return Ok(());
    }
    // 16 bytes a unit where the length allows (WGSL vectors stop at 4 lanes).
    let width = (16 / dtype.size())
        .min(client.properties().hardware.max_vector_size)
        .max(1);
    let width = if total.is_multiple_of(width) {
        width
    } else {
        1
    };
    let vectors = total / width;
    let threads = 256u32;
    // Two grid dimensions, so that buffers past `max_x` cubes are covered.
    let count = spread(client, vectors.div_ceil(threads as usize))?;
    let dim = CubeDim::new_1d(threads);
    macro_rules! launch {
        ($t:ty) => {
            // SAFETY: `out` is contiguous and its handle holds its `total` elements
            // (`TensorRef::new`); units past `vectors` write nothing.
            unsafe {
                fill_kernel::launch_unchecked::<$t>(
                    client,
                    count,
                    dim,
                    width,
                    out.arg(),
                    vectors,
                    value,
                )
            }
        };
    }
    match dtype {
        AttnDtype::F32 => launch!(f32),
        AttnDtype::F16 => launch!(half::f16),
        AttnDtype::BF16 => launch!(half::bf16),
    }
    Ok(())
}

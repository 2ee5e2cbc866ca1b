//! Reference implementations in plain Burn tensor ops: they run on every device and autodiff
//! differentiates them.
//!
//! - [`naive_attention`]: dense multiplicity matrix, the oracle for small `n`;
//! - [`reference_attention`]: blockwise over the layout with an online softmax; the fallback on
//!   devices without kernels and the oracle of the kernels.

mod blockwise;
mod naive;
mod plan;

pub use blockwise::reference_attention;
pub use naive::{log_multiplicity, naive_attention};
pub use plan::ReferencePlan;

use burn::tensor::{DType, Device, Tensor};

/// How the reference path multiplies: in f32, or in f64 where the device's f32 products are
/// not f32-exact (Burn's CUDA matmul stages f32 operands as TF32, ~1e-3 relative error) and the
/// inputs are f32 — f32 in means f32 accuracy out. Half-precision inputs keep the device's f32
/// products: their own rounding is of the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Products {
    widen: bool,
}

impl Products {
    /// The products for inputs of `dtype` on `device`.
    pub(crate) fn for_inputs(device: &Device, dtype: DType) -> Self {
        #[cfg(feature = "cube")]
        let widen = dtype == DType::F32 && crate::kernel::f32_products_need_f64(device);
        #[cfg(not(feature = "cube"))]
        let widen = {
            let _ = (device, dtype);
            false
        };
        Self { widen }
    }

    /// `a · b` over the last two dims (f32 in, f32 out).
    pub(crate) fn matmul<const D: usize>(self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        if self.widen {
            a.cast(DType::F64)
                .matmul(b.cast(DType::F64))
                .cast(DType::F32)
        } else {
            a.matmul(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn widened_products_equal_f32_products_in_f32() {
        let device = Device::flex();
        device.seed(11);
        let a = Tensor::<3>::random([2, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<3>::random([2, 7, 3], Distribution::Normal(0.0, 1.0), &device);
        let plain = Products { widen: false }.matmul(a.clone(), b.clone());
        let wide = Products { widen: true }.matmul(a, b);
        assert_eq!(wide.dtype(), DType::F32);
        let diff = (plain - wide).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "max diff {diff}");
        // The CPU's f32 products are exact already.
        assert_eq!(
            Products::for_inputs(&device, DType::F32),
            Products { widen: false }
        );
    }
}

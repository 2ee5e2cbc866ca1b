//! The static configuration of a launch: dtype, head dim, block size, causality and scale.

use cubecl::prelude::*;

use crate::KernelError;

/// Head dims the kernels are compiled for.
pub const SUPPORTED_HEAD_DIMS: [usize; 4] = [32, 64, 96, 128];

/// Largest block size (the portable kernels run one unit per query row of a block).
pub const MAX_BLOCK: usize = 256;

/// Element type of the attention tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttnDtype {
    /// f32
    F32,
    /// f16
    F16,
    /// bf16
    BF16,
}

impl AttnDtype {
    /// The CubeCL element type.
    pub(crate) fn elem(self) -> cubecl::ir::ElemType {
        use cubecl::ir::{ElemType, FloatKind};
        ElemType::Float(match self {
            Self::F32 => FloatKind::F32,
            Self::F16 => FloatKind::F16,
            Self::BF16 => FloatKind::BF16,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// Static configuration of a launch, shared by the forward and the backward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelConfig {
    /// Element type of `q, k, v, out` (and `dout`).
    pub dtype: AttnDtype,
    /// Head dimension (one of [`SUPPORTED_HEAD_DIMS`]).
    pub head_dim: usize,
    /// Block size in gathered tokens (a power of two up to [`MAX_BLOCK`]).
    pub block: usize,
    /// Causal masking.
    pub causal: bool,
    /// Softmax scale (finite and positive).
    pub scale: f32,
}

impl KernelConfig {
    /// Checks what the kernels support, whatever the device.
    pub fn check(&self) -> Result<(), KernelError> {
        if !SUPPORTED_HEAD_DIMS.contains(&self.head_dim) {
            return Err(KernelError::unsupported(
                "head_dim",
                format!("the kernels are compiled for {SUPPORTED_HEAD_DIMS:?}"),
            ));
        }
        if !self.block.is_power_of_two() || self.block > MAX_BLOCK {
            return Err(KernelError::unsupported(
                "block_size",
                format!("the kernels take powers of two up to {MAX_BLOCK}"),
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(KernelError::unsupported(
                "scale",
                format!("must be finite and positive in f32, got {}", self.scale),
            ));
        }
        Ok(())
    }

    /// [`check`](Self::check), and that the runtime of `client` has the element type (WGSL,
    /// for one, has no bf16).
    pub fn check_on(&self, client: &Client) -> Result<(), KernelError> {
        self.check()?;
        if client.features().supports_type(self.dtype.elem()) {
            Ok(())
        } else {
            Err(KernelError::unsupported(
                "dtype",
                format!("this runtime has no {:?} kernels", self.dtype),
            ))
        }
    }
}

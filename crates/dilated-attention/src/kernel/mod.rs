//! Wiring of the CubeCL kernels (`dilated-attention-kernels`) into Burn.
//!
//! A call on a CubeCL device (wgpu, CUDA; with or without Burn's Fusion; tracked by autodiff or
//! not) is planned once (`KernelCall::plan`: the kernel family from the device's features,
//! the dtype, head dim, block size and window), then runs as one Burn operation
//! (`backend::KernelBackend`): the forward launches each head class of each branch and
//! merges the branches (in the kernel where the plan says so, else by the LSE merge kernel);
//! under autodiff the backward kernels run in `loss.backward()`. A call the kernels cannot
//! serve returns why ([`KernelUnavailable`](crate::error::KernelUnavailable)) before anything runs; the module then applies its
//! [`KernelPolicy`](crate::KernelPolicy).

mod autodiff;
mod backend;
mod chunks;
mod layout;
mod run;

use std::sync::Arc;

use burn::tensor::DType;
pub use dilated_attention_kernels::Window;
use dilated_attention_kernels::{Client, KernelConfig, KernelError, Plan};

use crate::execution::KernelStrategy;
use crate::inputs::AttentionShape;
use crate::layout::BlockLayout;

pub(crate) use autodiff::{attention, backward, f32_products_need_f64, path};
pub(crate) use chunks::MAX_ELEMENTS;
pub use chunks::{ChunkCase, ChunkCheck, chunked_launches};
pub(crate) use layout::DeviceLayoutCache;
pub use layout::KernelClassLayout;
pub use run::tensor_ref;

/// What a kernel call needs besides the tensors.
#[derive(Debug, Clone)]
pub(crate) struct KernelCall {
    /// The call's sizes (the whole sequence's `n`).
    pub shape: AttentionShape,
    /// The layout of the sequence.
    pub layout: Arc<BlockLayout>,
    /// Softmax scale.
    pub scale: f64,
    /// Device copies of the layout.
    pub cache: DeviceLayoutCache,
    /// The ring step's token ranges, if any (see [`Window`]).
    pub window: Option<Window>,
    /// A forced kernel family, if any.
    pub strategy: Option<KernelStrategy>,
    /// The elements a tensor of one launch may span ([`chunks::MAX_ELEMENTS`], the kernels'
    /// 32-bit offsets; smaller in tests): larger calls run in several launches
    /// (`chunks`).
    pub max_elements: usize,
}

impl KernelCall {
    /// The kernels' static configuration for tensors of `dtype`.
    pub fn config(&self, dtype: DType) -> Result<KernelConfig, KernelError> {
        let dtype = match dtype {
            DType::F32 => dilated_attention_kernels::AttnDtype::F32,
            DType::F16 => dilated_attention_kernels::AttnDtype::F16,
            DType::BF16 => dilated_attention_kernels::AttnDtype::BF16,
            other => {
                return Err(KernelError::Unsupported {
                    field: "dtype",
                    rule: format!("the kernels take f32, f16 and bf16, got {other:?}"),
                });
            }
        };
        let config = KernelConfig {
            dtype,
            head_dim: self.shape.head_dim,
            block: self.layout.block_size,
            causal: self.layout.causal,
            scale: self.scale as f32,
        };
        config.check()?;
        Ok(config)
    }

    /// The plan of this call for tensors of `dtype` on the device of `client`.
    pub fn plan(&self, client: &Client, dtype: DType) -> Result<Plan, KernelError> {
        if let Some(window) = self.window {
            window.check(self.shape.n)?;
        }
        dilated_attention_kernels::plan(
            client,
            &self.config(dtype)?,
            self.window.is_some(),
            self.strategy,
        )
    }
}

//! CubeCL kernels of block-sparse dilated flash attention.
//!
//! Plain CubeCL on raw handles, generic over the runtime a [`Client`] belongs to, so one source
//! runs on CUDA (C++ through NVRTC) and wgpu (WGSL; Vulkan, Metal, DX12, lavapipe). The core
//! crate `dilated-attention` owns the semantics and wires these kernels into Burn.
//!
//! Organised by level:
//! - [`args`]: what a launch takes — validated tensors ([`TensorRef`]), the static
//!   configuration ([`KernelConfig`]), a head class's layout ([`ClassArgs`]), a ring window;
//! - `addressing`: where a cube works, decoded once from the class parameters;
//! - [`strategy`]: which family serves a call, chosen once ([`plan`] → [`Plan`]);
//! - one folder per family, forward and backward inside: `portable`, `cmma`, `sm80`; and
//!   [`hopper`], whose warpgroup products are proved on the device but not yet an attention family;
//! - the launchers ([`forward_class`], [`backward_class`], [`delta`](fn@delta)), the LSE merge
//!   ([`merge::lse_merge`]) and [`fill`](fn@fill).
//!
//! Every public entry point checks its arguments against each other and returns a
//! [`KernelError`]; none can make a kernel read or write outside its buffers.
#![warn(missing_docs)]

mod addressing;
pub mod args;
mod cmma;
mod delta;
mod error;
mod fill;
pub mod hopper;
mod launch;
pub mod merge;
mod portable;
mod sm80;
pub mod strategy;
mod tuning;

pub use args::{AttnDtype, ClassArgs, ClassCsr, ClassParams, KernelConfig, TensorRef, Window};
pub use cubecl::prelude::Client;
pub use cubecl::server::Handle;
pub use delta::delta;
pub use error::KernelError;
pub use fill::fill;
pub use launch::{BackwardTensors, ForwardTensors, backward_class, forward_class};
pub use strategy::{Plan, Sm80Tuning, Strategy, f32_matmul_may_use_tf32, plan, supports_f64};

/// Reads a handle of f32 values back to the host.
pub fn read_f32(client: &Client, handle: &Handle) -> Result<Vec<f32>, KernelError> {
    let bytes = client
        .read_one(handle.clone())
        .map_err(|e| KernelError::Runtime {
            message: format!("{e:?}"),
        })?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Uploads f32 values.
pub fn upload_f32(client: &Client, values: &[f32]) -> Handle {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    client.create_from_slice(&bytes)
}

/// Uploads u32 values.
pub fn upload_u32(client: &Client, values: &[u32]) -> Handle {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    client.create_from_slice(&bytes)
}

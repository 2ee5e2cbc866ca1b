//! CubeCL kernels of block-sparse dilated flash attention.
//!
//! Plain CubeCL on raw handles, generic over the runtime a [`Client`] belongs to, so one source
//! runs on CUDA (C++ through NVRTC) and wgpu (WGSL; Vulkan, Metal, DX12, lavapipe). The core
//! crate `dilated-attention` owns the semantics and wires these kernels into Burn.
#![warn(missing_docs)]

pub mod backward;
mod backward_mma;
mod backward_tc;
mod error;
pub mod forward;
mod forward_mma;
mod forward_tc;
pub mod merge;
mod mma;

pub use cubecl::prelude::Client;
pub use cubecl::server::Handle;
pub use error::KernelError;

/// Reads a handle of f32 values back to the host.
pub fn read_f32(client: &Client, handle: &Handle) -> Result<Vec<f32>, KernelError> {
    let bytes = client
        .read_one(handle.clone())
        .map_err(|e| KernelError::Runtime {
            message: format!("{e:?}"),
        })?;
    Ok(bytemuck_f32(&bytes))
}

fn bytemuck_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
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

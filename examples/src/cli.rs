//! Command-line pieces the example binaries share.

use burn::prelude::*;

/// The device a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// Burn's CPU backend (flex): the reference path.
    Cpu,
    /// The default wgpu adapter (Vulkan, Metal, DX12; lavapipe on a machine without a GPU).
    Wgpu,
    /// CUDA device 0 (needs a build with `--features cuda` and the NVIDIA driver).
    Cuda,
    /// The default adapter pinned to Vulkan, kernels compiled to SPIR-V (needs a build with
    /// `--features vulkan`): the `cmma` kernels where the driver has cooperative matrices.
    Vulkan,
}

impl DeviceArg {
    /// The Burn device, or why it is not in this build.
    pub fn device(self) -> Result<Device, String> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Wgpu => Ok(Device::wgpu(DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0usize)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err("this build has no CUDA: rebuild with `--features cuda`".into()),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Ok(Device::vulkan(DeviceKind::DefaultDevice)),
            #[cfg(not(feature = "vulkan"))]
            Self::Vulkan => Err(NO_VULKAN.into()),
        }
    }

    /// The CubeCL device of the same runtime (`None` for the CPU).
    pub fn cube(self) -> Result<Option<cubecl::Device>, String> {
        match self {
            Self::Cpu => Ok(None),
            Self::Wgpu => Ok(Some(cubecl::Device::Wgpu(
                cubecl::wgpu::WgpuDevice::default(),
            ))),
            #[cfg(feature = "cuda")]
            Self::Cuda => cubecl::Device::cuda(0)
                .map(Some)
                .map_err(|e| format!("CUDA device 0: {e:?}")),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err("this build has no CUDA: rebuild with `--features cuda`".into()),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Ok(Some(cubecl::Device::Wgpu(
                cubecl::wgpu::WgpuDevice::default().on(cubecl::wgpu::WgpuBackend::Vulkan),
            ))),
            #[cfg(not(feature = "vulkan"))]
            Self::Vulkan => Err(NO_VULKAN.into()),
        }
    }
}

/// Why `--device vulkan` does not run in this build.
#[cfg(not(feature = "vulkan"))]
const NO_VULKAN: &str = "this build has no SPIR-V: rebuild with `--features vulkan`";

/// Parses a size like `4096`, `4k` or `1m`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match (t.strip_suffix('k'), t.strip_suffix('m')) {
        (Some(n), _) => (n, 1usize << 10),
        (_, Some(n)) => (n, 1 << 20),
        _ => (t.as_str(), 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|v| v.checked_mul(mul))
        .ok_or_else(|| format!("`{s}` is not a size like 4096, 4k or 1m"))
}

/// The float dtype of a command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// f32
    F32,
    /// f16
    F16,
    /// bf16
    Bf16,
}

impl DtypeArg {
    /// The Burn dtype.
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            Self::F32 => burn::tensor::DType::F32,
            Self::F16 => burn::tensor::DType::F16,
            Self::Bf16 => burn::tensor::DType::BF16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("four").is_err());
    }
}

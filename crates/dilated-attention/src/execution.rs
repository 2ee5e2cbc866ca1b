//! How a call runs: on the CubeCL kernels or the reference path, chosen by a policy and
//! visible before the call.
//!
//! [`KernelPolicy`] on the config says what to do when the kernels cannot serve a call;
//! [`KernelStrategy`] can force a kernel family; [`ExecutionPath`] is the answer to "which
//! path will this shape, dtype and device take", from
//! [`BlockSparseRingDilatedAttention::execution_path`](crate::BlockSparseRingDilatedAttention::execution_path).

use serde::{Deserialize, Serialize};

use crate::error::KernelUnavailable;

/// What a call does when the CubeCL kernels cannot serve it (another device, a head dim they
/// are not compiled for, bf16 on WGSL, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelPolicy {
    /// Run the reference path and log one warning with the reason (the default).
    #[default]
    Prefer,
    /// Return [`AttentionError::KernelUnavailable`](crate::AttentionError::KernelUnavailable)
    /// with the reason: no silent slow path.
    Require,
    /// Always run the reference path (exact, in Burn tensor ops, on any device).
    ReferenceOnly,
}

/// A kernel family to force instead of the automatic choice (for benchmarks and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelStrategy {
    /// Plain CubeCL, one unit per row: every runtime and dtype.
    Portable,
    /// Tensor cores through CubeCL's `cmma`: f16/bf16, head dim 32/64, blocks of 64/128.
    Cmma,
    /// `mma.sync` tensor-core kernels (CUDA sm_80+): f16/bf16, head dim 32/64/128, blocks of
    /// 64/128/256.
    Sm80(Sm80Tuning),
}

impl KernelStrategy {
    /// The family's name, as benchmark rows print it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Cmma => "cmma",
            Self::Sm80(_) => "sm80",
        }
    }
}

/// Tuning of [`KernelStrategy::Sm80`]; the defaults measured fastest on the H200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sm80Tuning {
    /// 16-row MMA tiles per plane of the forward (1 or 2). Default 2.
    pub forward_tiles: u8,
    /// 16-row MMA tiles per plane of the `dQ` kernel (1 or 2). Default 2.
    pub dq_tiles: u8,
    /// `dQ` inside the `dK/dV` kernel by f32 atomics (head dims 64/128, blocks 64/128, sm_90).
    /// Default off (measured slower).
    pub fused_dq: bool,
    /// Resident cubes per SM the forward asks registers for (0: no ask). Default 0.
    pub forward_min_blocks: u8,
    /// Resident cubes per SM the `dK/dV` kernel asks registers for (0: no ask). Default 3.
    pub dkdv_min_blocks: u8,
}

impl Default for Sm80Tuning {
    fn default() -> Self {
        Self {
            forward_tiles: 2,
            dq_tiles: 2,
            fused_dq: false,
            forward_min_blocks: 0,
            dkdv_min_blocks: 3,
        }
    }
}

/// The path a call takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionPath {
    /// The CubeCL kernels of this family.
    Kernels(KernelStrategy),
    /// The reference path in Burn tensor ops, and why.
    Reference(KernelUnavailable),
}

impl ExecutionPath {
    /// A short label: the kernel family, or `reference`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kernels(strategy) => strategy.name(),
            Self::Reference(_) => "reference",
        }
    }
}

#[cfg(feature = "cube")]
mod convert {
    use super::{KernelStrategy, Sm80Tuning};
    use dilated_attention_kernels as k;

    impl From<KernelStrategy> for k::Strategy {
        fn from(s: KernelStrategy) -> Self {
            match s {
                KernelStrategy::Portable => Self::Portable,
                KernelStrategy::Cmma => Self::Cmma,
                KernelStrategy::Sm80(t) => Self::Sm80(k::Sm80Tuning {
                    forward_tiles: t.forward_tiles,
                    dq_tiles: t.dq_tiles,
                    fused_dq: t.fused_dq,
                    forward_min_blocks: t.forward_min_blocks,
                    dkdv_min_blocks: t.dkdv_min_blocks,
                }),
            }
        }
    }

    impl From<k::Strategy> for KernelStrategy {
        fn from(s: k::Strategy) -> Self {
            match s {
                k::Strategy::Portable => Self::Portable,
                k::Strategy::Cmma => Self::Cmma,
                k::Strategy::Sm80(t) => Self::Sm80(Sm80Tuning {
                    forward_tiles: t.forward_tiles,
                    dq_tiles: t.dq_tiles,
                    fused_dq: t.fused_dq,
                    forward_min_blocks: t.forward_min_blocks,
                    dkdv_min_blocks: t.dkdv_min_blocks,
                }),
            }
        }
    }
}

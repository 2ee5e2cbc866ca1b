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

/// Tuning of [`KernelStrategy::Sm80`].
pub use dilated_attention_kernels::Sm80Tuning;
/// A kernel family to force instead of the automatic choice (for benchmarks and tests): the
/// kernels crate's [`Strategy`](dilated_attention_kernels::Strategy).
pub use dilated_attention_kernels::Strategy as KernelStrategy;

/// The kernels crate's plan for a call: the [`KernelStrategy`] that serves it and what follows
/// from it on the device (for one, whether the forward runs on Hopper's warpgroup MMA).
pub use dilated_attention_kernels::Plan as KernelPlan;

/// The path a call takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionPath {
    /// The CubeCL kernels, as planned for this call ([`KernelPlan::strategy`] is the family).
    Kernels(KernelPlan),
    /// The reference path in Burn tensor ops, and why.
    Reference(KernelUnavailable),
}

impl ExecutionPath {
    /// A short label: the kernels that run ([`KernelPlan::label`]), or `reference`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kernels(plan) => plan.label(),
            Self::Reference(_) => "reference",
        }
    }
}

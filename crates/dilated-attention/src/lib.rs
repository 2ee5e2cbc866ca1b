//! Block-sparse, dilated, ring attention for Burn.
//!
//! The crate is organised from configuration to execution:
//! [`pattern`] (branches and block layout config) → [`layout`] (the blocks a sequence length
//! induces) → [`schedule`] (the ring: which chunk meets which at which step) → [`merge`] (the
//! log-sum-exp merge) → [`reference`](mod@reference) (exact paths in plain Burn ops) → [`ring`] (sequence-parallel
//! execution) → `kernel` (the CubeCL kernels, feature `cube`) → [`module`] (the Burn modules). The semantics are normative and written out in
//! `docs/semantics.md`.
//!
//! ```
//! use burn::prelude::*;
//! use dilated_attention::BlockSparseRingDilatedAttentionConfig;
//!
//! # fn main() -> Result<(), dilated_attention::AttentionError> {
//! let device = Device::default();
//! let attention = BlockSparseRingDilatedAttentionConfig::new()
//!     .with_segment_lengths(vec![64, 128])
//!     .with_dilation_rates(vec![1, 2])
//!     .with_block_size(Some(16))
//!     .init(&device)?;
//! let q = Tensor::<4>::random([1, 4, 128, 32], burn::tensor::Distribution::Default, &device);
//! let out = attention.forward(q.clone(), q.clone(), q)?;
//! assert_eq!(out.dims(), [1, 4, 128, 32]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod cache;
pub mod error;
pub mod execution;
pub mod inputs;
#[cfg(feature = "cube")]
pub mod kernel;
pub mod layout;
pub mod merge;
pub mod module;
pub mod pattern;
pub mod reference;
pub mod ring;
pub mod schedule;

pub use cache::{DEFAULT_CACHE_BYTES, clear_caches};
pub use error::{AttentionError, KernelUnavailable, Result};
pub use execution::{ExecutionPath, KernelPlan, KernelPolicy, KernelStrategy, Sm80Tuning};
pub use inputs::AttentionShape;
pub use layout::{BlockLayout, LayoutStats};
pub use module::{
    AttentionFactoryConfig, AttentionKind, BlockSparseRingDilatedAttention,
    BlockSparseRingDilatedAttentionConfig, DilatedMhaInput, MultiHeadDilatedAttention,
    MultiHeadDilatedAttentionConfig,
};
pub use pattern::{Branch, DilatedPattern, PatternType, SparsePatternConfig};
pub use schedule::{Partition, RingSchedule, RingStep};

/// The README's code, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

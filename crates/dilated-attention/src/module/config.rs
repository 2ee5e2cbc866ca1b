//! [`BlockSparseRingDilatedAttentionConfig`]: the attention core's configuration (the Python
//! prototype's vocabulary), checked by `init`.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::BlockSparseRingDilatedAttention;
use super::setters::setters;
use crate::cache::DEFAULT_CACHE_BYTES;
use crate::error::AttentionError;
use crate::execution::{KernelPolicy, KernelStrategy};
use crate::pattern::{DilatedPattern, SparsePatternConfig};
use crate::schedule::{MAX_HOLDERS, Partition};

/// Configuration of [`BlockSparseRingDilatedAttention`].
///
/// A Burn [`Config`]: serde (JSON via `save`/`load`), every field optional in JSON with the
/// default stated below, unknown fields refused.
///
/// ```
/// use dilated_attention::BlockSparseRingDilatedAttentionConfig;
/// let config = BlockSparseRingDilatedAttentionConfig::new()
///     .with_segment_lengths(vec![1024, 2048, 4096])
///     .with_dilation_rates(vec![1, 2, 4])
///     .with_sparsity_ratio(Some(0.9))
///     .with_causal(true);
/// assert!(config.pattern().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockSparseRingDilatedAttentionConfig {
    /// Segment length `w_b` of each branch. Default: `[2048, 4096, 8192]`.
    pub segment_lengths: Vec<usize>,
    /// Dilation rate `r_b` of each branch, as many as `segment_lengths`. Default: `[1, 2, 4]`.
    pub dilation_rates: Vec<usize>,
    /// Shortcut: when set, overrides `sparse_config.sparsity_ratio`. Default: unset.
    pub sparsity_ratio: Option<f64>,
    /// Shortcut: when set, overrides `sparse_config.block_size`. Default: unset.
    pub block_size: Option<usize>,
    /// The full block layout config. Default: `dilated_sparse`, sparsity 0.9, block 64.
    pub sparse_config: SparsePatternConfig,
    /// Whether query `i` only sees keys `j <= i`. Default: `false`.
    pub causal: bool,
    /// Softmax scale, finite and positive in f32. Default: unset, meaning `1 / sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Holders of the ring on one device (sequence chunks, each processed against every
    /// visiting key/value chunk), at most 64. `1` disables the ring. Default: `1`.
    pub ring_size: usize,
    /// How the ring splits the sequence. Default: `zigzag` (balances causal work).
    pub ring_partition: Partition,
    /// What a call does when the CubeCL kernels cannot serve it. Default: `prefer` (the
    /// reference path and one logged warning).
    pub kernel_policy: KernelPolicy,
    /// A kernel family to force instead of the automatic choice. Default: unset.
    pub kernel_strategy: Option<KernelStrategy>,
    /// Budget of each of the module's plan caches (layouts, reference plans, ring plans, device
    /// layouts) in bytes; least recently used entries go first. Default: 256 MiB.
    pub cache_bytes: usize,
}

impl Default for BlockSparseRingDilatedAttentionConfig {
    fn default() -> Self {
        Self {
            segment_lengths: vec![2048, 4096, 8192],
            dilation_rates: vec![1, 2, 4],
            sparsity_ratio: None,
            block_size: None,
            sparse_config: SparsePatternConfig::default(),
            causal: false,
            scale: None,
            ring_size: 1,
            ring_partition: Partition::Zigzag,
            kernel_policy: KernelPolicy::Prefer,
            kernel_strategy: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl Config for BlockSparseRingDilatedAttentionConfig {}

setters!(BlockSparseRingDilatedAttentionConfig {
    /// Sets `segment_lengths`.
    with_segment_lengths: segment_lengths: Vec<usize>;
    /// Sets `dilation_rates`.
    with_dilation_rates: dilation_rates: Vec<usize>;
    /// Sets the `sparsity_ratio` shortcut.
    with_sparsity_ratio: sparsity_ratio: Option<f64>;
    /// Sets the `block_size` shortcut.
    with_block_size: block_size: Option<usize>;
    /// Sets `sparse_config`.
    with_sparse_config: sparse_config: SparsePatternConfig;
    /// Sets `causal`.
    with_causal: causal: bool;
    /// Sets `scale`.
    with_scale: scale: Option<f64>;
    /// Sets `ring_size`.
    with_ring_size: ring_size: usize;
    /// Sets `ring_partition`.
    with_ring_partition: ring_partition: Partition;
    /// Sets `kernel_policy`.
    with_kernel_policy: kernel_policy: KernelPolicy;
    /// Sets `kernel_strategy`.
    with_kernel_strategy: kernel_strategy: Option<KernelStrategy>;
    /// Sets `cache_bytes`.
    with_cache_bytes: cache_bytes: usize;
});

impl BlockSparseRingDilatedAttentionConfig {
    /// The default configuration (see each field).
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated pattern this config describes (shortcuts applied).
    pub fn pattern(&self) -> crate::Result<DilatedPattern> {
        let mut sparse = self.sparse_config.clone();
        if let Some(s) = self.sparsity_ratio {
            sparse.sparsity_ratio = s;
        }
        if let Some(bs) = self.block_size {
            sparse.block_size = bs;
        }
        DilatedPattern::new(
            &self.segment_lengths,
            &self.dilation_rates,
            sparse,
            self.causal,
        )
    }

    /// Checks everything but the pattern: the scale and the ring.
    pub(crate) fn check(&self) -> crate::Result<()> {
        if let Some(s) = self.scale {
            check_scale(s)?;
        }
        if self.ring_size == 0 {
            return Err(AttentionError::ZeroValue {
                field: "ring_size".into(),
            });
        }
        if self.ring_size > MAX_HOLDERS {
            return Err(AttentionError::Invalid {
                field: "ring_size",
                rule: format!("at most {MAX_HOLDERS} holders, got {}", self.ring_size),
            });
        }
        Ok(())
    }

    /// Builds the module after checking the whole config. No tensor is allocated, so `device`
    /// is only recorded for symmetry with Burn's `init` methods.
    pub fn init(&self, _device: &Device) -> crate::Result<BlockSparseRingDilatedAttention> {
        let pattern = self.pattern()?;
        self.check()?;
        Ok(self.build(pattern))
    }

    /// The module of `pattern` with this config's scale, ring, policy and caches.
    pub(crate) fn build(&self, pattern: DilatedPattern) -> BlockSparseRingDilatedAttention {
        BlockSparseRingDilatedAttention::from_pattern(pattern, self.scale)
            .with_ring(self.ring_size, self.ring_partition)
            .with_kernel_policy(self.kernel_policy)
            .with_kernel_strategy(self.kernel_strategy)
            .with_cache_bytes(self.cache_bytes)
    }
}

/// A scale must be finite and positive, also once rounded to f32 (the kernels' type).
pub(crate) fn check_scale(s: f64) -> crate::Result<f64> {
    if s.is_finite() && s > 0.0 && (s as f32).is_finite() && (s as f32) > 0.0 {
        Ok(s)
    } else {
        Err(AttentionError::InvalidScale { value: s })
    }
}

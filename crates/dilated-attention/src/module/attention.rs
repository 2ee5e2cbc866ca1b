//! [`BlockSparseRingDilatedAttention`]: the attention core as a Burn module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AttentionError;
use crate::inputs::{AttentionShape, check_inputs};
use crate::layout::BlockLayout;
use crate::pattern::{DilatedPattern, SparsePatternConfig};
use crate::reference::{ReferencePlan, reference_attention};
use crate::ring::{RingKernels, RingOutput, RingPlan, ring_attention};
use crate::schedule::Partition;

/// Configuration of [`BlockSparseRingDilatedAttention`] (the old prototype's vocabulary).
///
/// A Burn [`Config`]: serde (JSON via `save`/`load`), every field optional in JSON with the
/// default stated below.
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
    /// Softmax scale. Default: unset, meaning `1 / sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Holders of the ring on one device (sequence chunks, each processed against every
    /// visiting key/value chunk). `1` disables the ring. Default: `1`.
    pub ring_size: usize,
    /// How the ring splits the sequence. Default: `zigzag` (balances causal work).
    pub ring_partition: Partition,
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
        }
    }
}

impl Config for BlockSparseRingDilatedAttentionConfig {}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        impl BlockSparseRingDilatedAttentionConfig {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            })*
        }
    };
}

setters! {
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
}

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

    /// Builds the module after checking the whole config. No tensor is allocated, so `device`
    /// is only recorded for symmetry with Burn's `init` methods.
    pub fn init(&self, _device: &Device) -> crate::Result<BlockSparseRingDilatedAttention> {
        let pattern = self.pattern()?;
        if let Some(s) = self.scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(AttentionError::InvalidScale { value: s });
        }
        if self.ring_size == 0 {
            return Err(AttentionError::ZeroValue {
                field: "ring_size".into(),
            });
        }
        Ok(
            BlockSparseRingDilatedAttention::from_pattern(pattern, self.scale)
                .with_ring(self.ring_size, self.ring_partition),
        )
    }
}

/// Layouts (with their index plans) already built, by `(n, heads)`. Shared by clones of a
/// module, whose pattern is the same.
#[derive(Debug, Clone, Default)]
#[allow(clippy::type_complexity)]
pub(crate) struct LayoutCache {
    plans: Arc<Mutex<HashMap<(usize, usize), Arc<ReferencePlan>>>>, // by (n, heads)
    enabled: bool,
}

impl LayoutCache {
    fn new(enabled: bool) -> Self {
        Self {
            plans: Arc::default(),
            enabled,
        }
    }

    fn get(
        &self,
        pattern: &DilatedPattern,
        n: usize,
        heads: usize,
    ) -> crate::Result<Arc<ReferencePlan>> {
        let build = || -> crate::Result<Arc<ReferencePlan>> {
            Ok(Arc::new(ReferencePlan::new(BlockLayout::new(
                pattern, n, heads,
            )?)))
        };
        if !self.enabled {
            return build();
        }
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = plans.get(&(n, heads)) {
            return Ok(plan.clone());
        }
        let plan = build()?;
        plans.insert((n, heads), plan.clone());
        Ok(plan)
    }

    fn len(&self) -> usize {
        self.plans.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// Ring plans already built, by `(n, heads, holders, partition)`.
#[derive(Debug, Clone, Default)]
#[allow(clippy::type_complexity)]
pub(crate) struct RingCache {
    plans: Arc<Mutex<HashMap<(usize, usize, usize, Partition), Arc<RingPlan>>>>,
}

impl RingCache {
    fn get(
        &self,
        layout: &BlockLayout,
        holders: usize,
        partition: Partition,
    ) -> crate::Result<Arc<RingPlan>> {
        let key = (layout.n, layout.heads, holders, partition);
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = plans.get(&key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(RingPlan::new(layout, holders, partition)?);
        plans.insert(key, plan.clone());
        Ok(plan)
    }
}

/// Block-sparse, dilated, multi-branch attention (LongNet semantics, `docs/semantics.md`).
///
/// Stateless apart from its configuration: it has no parameters. The layout of each sequence
/// length is built on first use and cached.
#[derive(Module, Debug)]
pub struct BlockSparseRingDilatedAttention {
    #[module(skip)]
    pattern: DilatedPattern,
    scale: Option<f64>,
    #[module(skip)]
    cache: LayoutCache,
    use_kernels: bool,
    ring_size: usize,
    #[module(skip)]
    ring_partition: Partition,
    #[module(skip)]
    ring_cache: RingCache,
    #[cfg(feature = "cube")]
    #[module(skip)]
    device_cache: crate::kernel::DeviceLayoutCache,
}

impl BlockSparseRingDilatedAttention {
    /// A module for a validated pattern; `scale = None` means `1 / sqrt(head_dim)`.
    pub fn from_pattern(pattern: DilatedPattern, scale: Option<f64>) -> Self {
        Self {
            pattern,
            scale,
            cache: LayoutCache::new(true),
            use_kernels: true,
            ring_size: 1,
            ring_partition: Partition::Zigzag,
            ring_cache: RingCache::default(),
            #[cfg(feature = "cube")]
            device_cache: Default::default(),
        }
    }

    /// The same module run as a ring of `holders` chunks on one device (`1` disables it).
    pub fn with_ring(mut self, holders: usize, partition: Partition) -> Self {
        self.ring_size = holders.max(1);
        self.ring_partition = partition;
        self
    }

    /// The same module restricted to the reference path (no CubeCL kernels).
    pub fn without_kernels(mut self) -> Self {
        self.use_kernels = false;
        self
    }

    /// The same module without a layout cache (every call rebuilds its layout).
    pub fn without_cache(mut self) -> Self {
        self.cache = LayoutCache::new(false);
        self
    }

    /// The pattern in effect.
    pub fn pattern(&self) -> &DilatedPattern {
        &self.pattern
    }

    /// Number of layouts in the cache.
    pub fn cached_layouts(&self) -> usize {
        self.cache.len()
    }

    /// The layout used at length `n` with `heads` query heads (from the cache).
    pub fn layout(&self, n: usize, heads: usize) -> crate::Result<BlockLayout> {
        Ok(self.cache.get(&self.pattern, n, heads)?.layout.clone())
    }

    /// The kernels' view of one call.
    #[cfg(feature = "cube")]
    fn call(
        &self,
        shape: AttentionShape,
        scale: f64,
        plan: &Arc<ReferencePlan>,
    ) -> crate::kernel::Call {
        crate::kernel::Call {
            shape,
            plan: plan.clone(),
            scale,
            cache: self.device_cache.clone(),
            window: None,
        }
    }

    /// How a ring step runs: through the kernels restricted to the step's token windows where
    /// they serve the call (`None` sends every step to the reference path).
    fn ring_steps(
        &self,
        shape: AttentionShape,
        scale: f64,
        plan: &Arc<ReferencePlan>,
    ) -> RingKernels {
        #[cfg(feature = "cube")]
        if self.use_kernels {
            let call = self.call(shape, scale, plan);
            return Some(Box::new(move |q, k, v, mask, queries, keys| {
                let window = crate::kernel::Window {
                    q_start: queries.start,
                    q_end: queries.end,
                    k_start: keys.start,
                    k_end: keys.end,
                };
                let call = crate::kernel::Call {
                    window: Some(window),
                    ..call.clone()
                };
                crate::kernel::attention(q, k, v, mask, &call)
            }));
        }
        let _ = (shape, scale, plan);
        None
    }

    /// Checks the inputs and returns their sizes, the scale and the cached layout plan.
    fn prepare(
        &self,
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<2, Bool>>,
    ) -> crate::Result<(AttentionShape, f64, Arc<ReferencePlan>)> {
        let shape = check_inputs(q, k, v, mask)?;
        let scale = shape.scale(self.scale)?;
        let plan = self.cache.get(&self.pattern, shape.n, shape.heads)?;
        Ok((shape, scale, plan))
    }

    /// Attention output.
    ///
    /// - `q: [batch, heads, n, head_dim]`
    /// - `k, v: [batch, kv_heads, n, head_dim]`, `heads % kv_heads == 0`
    ///
    /// Returns `[batch, heads, n, head_dim]` in the dtype of `q`.
    pub fn forward(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> crate::Result<Tensor<4>> {
        Ok(self.forward_with_lse(q, k, v, None)?.0)
    }

    /// Attention output with a key padding mask `mask: [batch, n]` (`true` = key present).
    pub fn forward_masked(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> crate::Result<Tensor<4>> {
        Ok(self.forward_with_lse(q, k, v, mask)?.0)
    }

    /// Attention output and the log-sum-exp of every query.
    ///
    /// Returns `(out, lse)`: `out: [batch, heads, n, head_dim]` (dtype of `q`),
    /// `lse: [batch, heads, n]` (f32; `-inf` for a query that sees no key, whose output is 0).
    pub fn forward_with_lse(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> crate::Result<(Tensor<4>, Tensor<3>)> {
        let (shape, scale, plan) = self.prepare(&q, &k, &v, mask.as_ref())?;
        if self.ring_size > 1 && shape.n >= self.ring_size {
            let device = q.device();
            let devices = vec![device.clone(); self.ring_size];
            let ring = self
                .ring_cache
                .get(&plan.layout, self.ring_size, self.ring_partition)?;
            let steps = self.ring_steps(shape, scale, &plan);
            return Ok(ring_attention(
                q,
                k,
                v,
                mask,
                shape,
                &ring,
                scale,
                &devices,
                steps.as_deref(),
            )?
            .gather(&device));
        }
        #[cfg(feature = "cube")]
        if self.use_kernels
            && let Ok(result) =
                crate::kernel::attention(&q, &k, &v, mask.as_ref(), &self.call(shape, scale, &plan))
        {
            return Ok(result);
        }
        Ok(reference_attention(q, k, v, mask, shape, &plan, scale))
    }

    /// Attention through the ring across `devices`: holder `r` computes the queries it owns
    /// (by the module's `ring_partition`) on `devices[r]` while the key/value chunks travel
    /// around the ring. Inputs live on one device; the output stays distributed
    /// ([`RingOutput::gather`] collects it). Autodiff flows back through the transfers.
    pub fn forward_ring(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
        devices: &[Device],
    ) -> crate::Result<RingOutput> {
        let (shape, scale, plan) = self.prepare(&q, &k, &v, mask.as_ref())?;
        if devices.is_empty() || devices.len() > shape.n.max(1) {
            return Err(AttentionError::Invalid {
                field: "devices",
                rule: format!(
                    "between 1 and n = {} devices, got {}",
                    shape.n,
                    devices.len()
                ),
            });
        }
        let ring = self
            .ring_cache
            .get(&plan.layout, devices.len(), self.ring_partition)?;
        let steps = self.ring_steps(shape, scale, &plan);
        ring_attention(
            q,
            k,
            v,
            mask,
            shape,
            &ring,
            scale,
            devices,
            steps.as_deref(),
        )
    }

    /// The ring schedule this module would run with `holders` holders at length `n`.
    pub fn ring_schedule(
        &self,
        n: usize,
        heads: usize,
        holders: usize,
    ) -> crate::Result<crate::RingSchedule> {
        let plan = self.cache.get(&self.pattern, n, heads)?;
        Ok(self
            .ring_cache
            .get(&plan.layout, holders, self.ring_partition)?
            .schedule
            .clone())
    }

    /// [`forward_with_lse`](Self::forward_with_lse) through the CubeCL kernels only: an
    /// [`AttentionError::KernelUnavailable`] says why they cannot run (another device, an
    /// unsupported head dim, ...) instead of falling back to the reference path. On an autodiff
    /// device the call is recorded so that `backward()` runs the backward kernels.
    #[cfg(feature = "cube")]
    pub fn forward_kernels(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> crate::Result<(Tensor<4>, Tensor<3>)> {
        let (shape, scale, plan) = self.prepare(&q, &k, &v, mask.as_ref())?;
        crate::kernel::attention(&q, &k, &v, mask.as_ref(), &self.call(shape, scale, &plan))
            .map_err(|reason| AttentionError::KernelUnavailable { reason })
    }

    /// Gradients of [`forward_with_lse`](Self::forward_with_lse) through the CubeCL backward
    /// kernels, given what the forward saw and returned.
    ///
    /// - `q, k, v, mask`: the forward's inputs (shapes as there);
    /// - `out: [batch, heads, n, head_dim]`, `lse: [batch, heads, n]`: the forward's results;
    /// - `dout: [batch, heads, n, head_dim]`: gradient of the loss with respect to `out`;
    /// - `dlse: [batch, heads, n]`: gradient with respect to `lse`, if the loss uses it.
    ///
    /// Returns `(dq, dk, dv)` in the shapes and dtype of `q, k, v` (`dk, dv` summed over the
    /// query heads of each kv head). Tensors must live on a CubeCL device without autodiff
    /// tracking; otherwise [`AttentionError::KernelUnavailable`] says why.
    #[cfg(feature = "cube")]
    #[allow(clippy::too_many_arguments)]
    pub fn backward_kernels(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
        out: Tensor<4>,
        lse: Tensor<3>,
        dout: Tensor<4>,
        dlse: Option<Tensor<3>>,
    ) -> crate::Result<(Tensor<4>, Tensor<4>, Tensor<4>)> {
        let (shape, scale, plan) = self.prepare(&q, &k, &v, mask.as_ref())?;
        let expect = |name: &'static str, got: Vec<usize>, want: Vec<usize>| {
            if got == want {
                Ok(())
            } else {
                Err(AttentionError::ShapeMismatch {
                    tensor: name,
                    expected: format!("{want:?}"),
                    got,
                })
            }
        };
        let rows = vec![shape.batch, shape.heads, shape.n];
        expect("out", out.dims().to_vec(), q.dims().to_vec())?;
        expect("dout", dout.dims().to_vec(), q.dims().to_vec())?;
        expect("lse", lse.dims().to_vec(), rows.clone())?;
        if let Some(dlse) = &dlse {
            expect("dlse", dlse.dims().to_vec(), rows)?;
        }
        let saved = crate::kernel::SavedForward {
            q,
            k,
            v,
            mask,
            out,
            lse,
        };
        crate::kernel::try_backward(
            &saved,
            dout,
            dlse,
            shape,
            &plan.layout,
            scale,
            &self.device_cache,
            None,
        )
        .map_err(|reason| AttentionError::KernelUnavailable { reason })
    }
}

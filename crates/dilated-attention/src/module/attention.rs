//! [`BlockSparseRingDilatedAttention`]: the attention core as a Burn module.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use burn::tensor::DType;

use super::caches::Caches;
use super::config::check_scale;
use crate::cache::DEFAULT_CACHE_BYTES;
use crate::error::{AttentionError, KernelUnavailable};
use crate::execution::{ExecutionPath, KernelPlan, KernelPolicy, KernelStrategy};
use crate::inputs::{AttentionShape, check_inputs};
use crate::layout::BlockLayout;
use crate::pattern::DilatedPattern;
use crate::reference::reference_attention;
use crate::ring::{RingOutput, RingRunner, ring_attention};
use crate::schedule::{MAX_HOLDERS, Partition};

/// Block-sparse, dilated, multi-branch attention (LongNet semantics, `docs/semantics.md`).
///
/// Stateless apart from its configuration: it has no parameters. The layout of each sequence
/// length is built on first use and cached (see
/// [`cache_bytes`](crate::BlockSparseRingDilatedAttentionConfig::cache_bytes)). On a CubeCL
/// device the call runs the kernels; where they cannot serve it, the
/// [`KernelPolicy`] decides ([`execution_path`](Self::execution_path) says beforehand).
#[derive(Module, Debug)]
pub struct BlockSparseRingDilatedAttention {
    #[module(skip)]
    pattern: DilatedPattern,
    #[module(skip)]
    scale: Option<f64>,
    #[module(skip)]
    caches: Caches,
    #[module(skip)]
    policy: KernelPolicy,
    #[module(skip)]
    strategy: Option<KernelStrategy>,
    #[module(skip)]
    ring_size: usize,
    #[module(skip)]
    ring_partition: Partition,
    #[module(skip)]
    warned: Warned,
}

/// The result of a call without a query row (`batch = 0` or `n = 0`): `out` like `q` (derived
/// from it, so that autodiff still reaches `q`), `lse` of shape `[batch, heads, n]`.
fn empty_result(q: &Tensor<4>, shape: AttentionShape) -> Option<(Tensor<4>, Tensor<3>)> {
    (shape.batch == 0 || shape.n == 0).then(|| {
        let lse = Tensor::full(
            [shape.batch, shape.heads, shape.n],
            f32::NEG_INFINITY,
            (&q.device(), DType::F32),
        );
        (q.clone().mul_scalar(0.0), lse)
    })
}

/// The reasons already logged by a module (one warning per reason).
#[derive(Debug, Clone, Default)]
struct Warned(Arc<Mutex<HashSet<String>>>);

impl BlockSparseRingDilatedAttention {
    /// A module for a validated pattern; `scale = None` means `1 / sqrt(head_dim)`.
    pub fn from_pattern(pattern: DilatedPattern, scale: Option<f64>) -> Self {
        Self {
            pattern,
            scale,
            caches: Caches::new(DEFAULT_CACHE_BYTES),
            policy: KernelPolicy::Prefer,
            strategy: None,
            ring_size: 1,
            ring_partition: Partition::Zigzag,
            warned: Warned::default(),
        }
    }

    /// The same module run as a ring of `holders` chunks on one device (`1` disables it; at
    /// most 64, which `init` checks).
    pub fn with_ring(mut self, holders: usize, partition: Partition) -> Self {
        self.ring_size = holders.clamp(1, MAX_HOLDERS);
        self.ring_partition = partition;
        self
    }

    /// The same module with another kernel policy.
    pub fn with_kernel_policy(mut self, policy: KernelPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The same module with a forced kernel family (`None`: the automatic choice).
    pub fn with_kernel_strategy(mut self, strategy: Option<KernelStrategy>) -> Self {
        self.strategy = strategy;
        self
    }

    /// The same module restricted to the reference path (policy `ReferenceOnly`).
    pub fn without_kernels(self) -> Self {
        self.with_kernel_policy(KernelPolicy::ReferenceOnly)
    }

    /// The same module with fresh caches of `bytes` each (0: nothing is kept, every call
    /// rebuilds its layout).
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.caches = Caches::new(bytes);
        self
    }

    /// The same module without a layout cache (every call rebuilds its layout).
    pub fn without_cache(self) -> Self {
        self.with_cache_bytes(0)
    }

    /// The pattern in effect.
    pub fn pattern(&self) -> &DilatedPattern {
        &self.pattern
    }

    /// The kernel policy in effect.
    pub fn kernel_policy(&self) -> KernelPolicy {
        self.policy
    }

    /// Number of layouts in the cache.
    pub fn cached_layouts(&self) -> usize {
        self.caches.layouts()
    }

    /// Host bytes the module's plan caches hold (layouts, reference plans, ring plans), each
    /// bounded by [`cache_bytes`](crate::BlockSparseRingDilatedAttentionConfig::cache_bytes).
    pub fn cached_bytes(&self) -> usize {
        self.caches.bytes()
    }

    /// The layout used at length `n` with `heads` query heads (from the cache).
    pub fn layout(&self, n: usize, heads: usize) -> crate::Result<Arc<BlockLayout>> {
        self.caches.layout(&self.pattern, n, heads)
    }

    /// The path a call with inputs of `shape` and `dtype` on `device` takes, without running
    /// it: the kernel family, or the reference path and why.
    pub fn execution_path(
        &self,
        shape: AttentionShape,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<ExecutionPath> {
        let scale = shape.scale(self.scale)?;
        let layout = self.layout(shape.n, shape.heads)?;
        Ok(match self.plan(shape, scale, &layout, dtype, device) {
            Ok(plan) => ExecutionPath::Kernels(plan),
            Err(reason) => ExecutionPath::Reference(reason),
        })
    }

    /// The kernels' plan for the call, or why none serves it.
    #[allow(unused_variables)]
    fn plan(
        &self,
        shape: AttentionShape,
        scale: f64,
        layout: &Arc<BlockLayout>,
        dtype: DType,
        device: &Device,
    ) -> Result<KernelPlan, KernelUnavailable> {
        if self.policy == KernelPolicy::ReferenceOnly {
            return Err(KernelUnavailable::ReferenceOnly);
        }
        #[cfg(feature = "cube")]
        {
            let call = self.call(shape, scale, layout, None);
            crate::kernel::path(device, dtype, &call)
        }
        #[cfg(not(feature = "cube"))]
        Err(KernelUnavailable::NotBuilt)
    }

    /// Applies the policy to a call the kernels cannot serve: `Ok` runs the reference path.
    fn fallback(&self, reason: KernelUnavailable) -> crate::Result<()> {
        match self.policy {
            KernelPolicy::ReferenceOnly => Ok(()),
            KernelPolicy::Require => Err(AttentionError::KernelUnavailable { reason }),
            KernelPolicy::Prefer => {
                let text = reason.to_string();
                let mut warned = self.warned.0.lock().unwrap_or_else(|e| e.into_inner());
                if warned.insert(text.clone()) {
                    match reason {
                        KernelUnavailable::NotCubeDevice { .. } | KernelUnavailable::NotBuilt => {
                            log::info!("dilated attention runs the reference path: {text}")
                        }
                        _ => log::warn!("dilated attention runs the reference path: {text}"),
                    }
                }
                Ok(())
            }
        }
    }

    /// The kernels' view of one call.
    #[cfg(feature = "cube")]
    fn call(
        &self,
        shape: AttentionShape,
        scale: f64,
        layout: &Arc<BlockLayout>,
        window: Option<crate::kernel::Window>,
    ) -> crate::kernel::KernelCall {
        crate::kernel::KernelCall {
            shape,
            layout: layout.clone(),
            scale,
            cache: self.caches.device.clone(),
            window,
            strategy: self.strategy,
            max_elements: crate::kernel::MAX_ELEMENTS,
        }
    }

    /// Checks the inputs and returns their sizes, the scale and the cached layout.
    fn prepare(
        &self,
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<2, Bool>>,
    ) -> crate::Result<(AttentionShape, f64, Arc<BlockLayout>)> {
        let shape = check_inputs(q, k, v, mask)?;
        let scale = check_scale(shape.scale(self.scale)?)?;
        let layout = self.layout(shape.n, shape.heads)?;
        Ok((shape, scale, layout))
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

    /// Attention output with a key padding mask `mask: [batch, n]`, `true` = padded (Burn's
    /// polarity, as `burn::nn::attention::generate_padding_mask` makes it).
    pub fn forward_masked(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> crate::Result<Tensor<4>> {
        Ok(self.forward_with_lse(q, k, v, mask)?.0)
    }

    /// Attention output and the log-sum-exp of every query (`mask` as in
    /// [`forward_masked`](Self::forward_masked)).
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
        let (shape, scale, layout) = self.prepare(&q, &k, &v, mask.as_ref())?;
        if let Some(empty) = empty_result(&q, shape) {
            return Ok(empty);
        }
        if self.ring_size > 1 && shape.n >= self.ring_size {
            let device = q.device();
            let devices = vec![device.clone(); self.ring_size];
            return Ok(self
                .ring(q, k, v, mask, (shape, scale, &layout), &devices)?
                .gather(&device));
        }
        if let Some(result) = self.try_kernels(&q, &k, &v, mask.as_ref(), shape, scale, &layout)? {
            return Ok(result);
        }
        let plan = self.caches.reference(&layout);
        Ok(reference_attention(q, k, v, mask, shape, &plan, scale))
    }

    /// The kernels' result, `None` where the policy sends the call to the reference path.
    #[allow(clippy::too_many_arguments, unused_variables)]
    fn try_kernels(
        &self,
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<2, Bool>>,
        shape: AttentionShape,
        scale: f64,
        layout: &Arc<BlockLayout>,
    ) -> crate::Result<Option<(Tensor<4>, Tensor<3>)>> {
        if self.policy == KernelPolicy::ReferenceOnly {
            return Ok(None);
        }
        #[cfg(feature = "cube")]
        let result =
            crate::kernel::attention(q, k, v, mask, &self.call(shape, scale, layout, None));
        #[cfg(not(feature = "cube"))]
        let result = Err::<(Tensor<4>, Tensor<3>), _>(KernelUnavailable::NotBuilt);
        match result {
            Ok(result) => Ok(Some(result)),
            Err(reason) => self.fallback(reason).map(|()| None),
        }
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
        let (shape, scale, layout) = self.prepare(&q, &k, &v, mask.as_ref())?;
        if devices.is_empty() || devices.len() > shape.n.max(1) || devices.len() > MAX_HOLDERS {
            return Err(AttentionError::Invalid {
                field: "devices",
                rule: format!(
                    "between 1 and min(n, {MAX_HOLDERS}) = {} devices, got {}",
                    shape.n.clamp(1, MAX_HOLDERS),
                    devices.len()
                ),
            });
        }
        self.ring(q, k, v, mask, (shape, scale, &layout), devices)
    }

    /// The ring over `devices` with this module's kernels, policy and caches.
    fn ring(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
        (shape, scale, layout): (AttentionShape, f64, &Arc<BlockLayout>),
        devices: &[Device],
    ) -> crate::Result<RingOutput> {
        let ring = self
            .caches
            .ring(layout, devices.len(), self.ring_partition)?;
        #[cfg(feature = "cube")]
        let call = self.call(shape, scale, layout, None);
        #[cfg(feature = "cube")]
        let step = move |q: &Tensor<4>,
                         k: &Tensor<4>,
                         v: &Tensor<4>,
                         mask: Option<&Tensor<2, Bool>>,
                         queries: std::ops::Range<usize>,
                         keys: std::ops::Range<usize>| {
            let window = crate::kernel::Window {
                q_start: queries.start,
                q_end: queries.end,
                k_start: keys.start,
                k_end: keys.end,
            };
            let call = crate::kernel::KernelCall {
                window: Some(window),
                ..call.clone()
            };
            crate::kernel::attention(q, k, v, mask, &call)
        };
        #[cfg(feature = "cube")]
        let kernels: Option<&crate::ring::StepKernel> =
            (self.policy != KernelPolicy::ReferenceOnly).then_some(&step);
        #[cfg(not(feature = "cube"))]
        let kernels: Option<&crate::ring::StepKernel> = {
            if self.policy != KernelPolicy::ReferenceOnly {
                self.fallback(KernelUnavailable::NotBuilt)?;
            }
            None
        };
        let fallback = |reason| self.fallback(reason);
        let reference_plan =
            |r: usize, s: usize| Ok(self.caches.step_reference(layout, &ring, (r, s)));
        let runner = RingRunner {
            kernels,
            fallback: &fallback,
            reference_plan: &reference_plan,
        };
        ring_attention(q, k, v, mask, shape, &ring, scale, devices, &runner)
    }

    /// The ring schedule this module would run with `holders` holders at length `n`.
    pub fn ring_schedule(
        &self,
        n: usize,
        heads: usize,
        holders: usize,
    ) -> crate::Result<crate::RingSchedule> {
        if holders == 0 || holders > MAX_HOLDERS {
            return Err(AttentionError::Invalid {
                field: "holders",
                rule: format!("between 1 and {MAX_HOLDERS}, got {holders}"),
            });
        }
        let layout = self.layout(n, heads)?;
        Ok(self
            .caches
            .ring(&layout, holders, self.ring_partition)?
            .schedule
            .clone())
    }

    /// [`forward_with_lse`](Self::forward_with_lse) through the CubeCL kernels only, whatever
    /// the policy: an [`AttentionError::KernelUnavailable`] says why they cannot run instead
    /// of falling back to the reference path. On an autodiff device the call is recorded so
    /// that `backward()` runs the backward kernels.
    #[cfg(feature = "cube")]
    pub fn forward_kernels(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> crate::Result<(Tensor<4>, Tensor<3>)> {
        let (shape, scale, layout) = self.prepare(&q, &k, &v, mask.as_ref())?;
        if let Some(empty) = empty_result(&q, shape) {
            return Ok(empty);
        }
        crate::kernel::attention(
            &q,
            &k,
            &v,
            mask.as_ref(),
            &self.call(shape, scale, &layout, None),
        )
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
        let (shape, scale, layout) = self.prepare(&q, &k, &v, mask.as_ref())?;
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
        crate::kernel::backward(
            [q, k, v, out, dout],
            mask.as_ref(),
            lse,
            dlse,
            &self.call(shape, scale, &layout, None),
        )
        .map_err(|reason| AttentionError::KernelUnavailable { reason })
    }
}

//! A self-check of the chunked launches on a device: a small call run with a launch limit that
//! forces the 8M-token shape of chunking (heads folded into the batch, then one launch per
//! batch of the folded tensors) against the same call in one launch. Used by the unit tests
//! (wgpu, f32) and by the device probe (CUDA, f16/bf16, where the kernels store gradients
//! straight into views of the whole ones), so both run exactly this comparison.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};

use dilated_attention_kernels::KernelError;

use super::super::{KernelCall, attention};
use super::{MAX_ELEMENTS, chunking};
use crate::error::AttentionError;
use crate::inputs::AttentionShape;
use crate::{BlockLayout, DilatedPattern};

/// What [`chunked_launches`] compares.
#[derive(Debug, Clone, Copy)]
pub struct ChunkCase {
    /// Float type of `q`, `k`, `v`.
    pub dtype: DType,
    /// Key/value heads (of 4 query heads): 4, 2 or 1.
    pub kv_heads: usize,
    /// Whether about a fifth of the keys are padded (`mask`).
    pub masked: bool,
    /// Head dim.
    pub head_dim: usize,
    /// Tokens.
    pub n: usize,
    /// Block size of the seed layout.
    pub block: usize,
}

/// Largest differences of the chunked call from the one-launch call, each over the largest
/// magnitude of the one-launch value (`NaN` where only one side is NaN): `[out, lse, dq, dk, dv]`,
/// and how many launches the chunked call took.
#[derive(Debug, Clone, Copy)]
pub struct ChunkCheck {
    /// Relative differences of `out`, `lse`, `dq`, `dk`, `dv`.
    pub relative: [f32; 5],
    /// Launches of the chunked call (per pass).
    pub launches: usize,
}

/// Runs `case` (batch 2, 4 query heads, the seed layout) twice on `device` through the kernels
/// under autodiff — in one launch, and with a launch limit of two heads' elements, so that the
/// heads are folded into the batch in chunks of two and each of the four folded batches is its
/// own launch — and compares `out`, `lse` and the gradients of a random linear loss of both.
pub fn chunked_launches(device: &Device, case: ChunkCase) -> Result<ChunkCheck, AttentionError> {
    let (b, h, n, d) = (2, 4, case.n, case.head_dim);
    let kv = case.kv_heads;
    let pattern = DilatedPattern::seed(case.block, false);
    let mut call = KernelCall {
        shape: AttentionShape {
            batch: b,
            heads: h,
            kv_heads: kv,
            n,
            head_dim: d,
        },
        layout: Arc::new(BlockLayout::new(&pattern, n, h)?),
        scale: 1.0 / (d as f64).sqrt(),
        cache: Default::default(),
        window: None,
        strategy: None,
        max_elements: 2 * n * d,
    };
    let launches = chunking(&call, [b, h, n, d], [kv, n])
        .map_err(AttentionError::Kernel)?
        .map_or(1, |c| c.ranges(b).count());
    let ad = device.clone().autodiff();
    let draw = |heads: usize| {
        Tensor::<4>::random([b, heads, n, d], Distribution::Normal(0.0, 1.0), &ad).to_data()
    };
    let (q, k, v, r) = (draw(h), draw(kv), draw(kv), draw(h));
    let mask = case.masked.then(|| {
        Tensor::<2>::random([b, n], Distribution::Uniform(0.0, 1.0), &ad).lower_equal_elem(0.2)
    });
    let mut run = |max: usize| -> Result<[Vec<f32>; 5], AttentionError> {
        call.max_elements = max;
        let leaf = |x: &TensorData| {
            Tensor::<4>::from_data(x.clone(), &ad)
                .cast(case.dtype)
                .require_grad()
        };
        let (q, k, v) = (leaf(&q), leaf(&k), leaf(&v));
        let (out, lse) = attention(&q, &k, &v, mask.as_ref(), &call)
            .map_err(|reason| AttentionError::KernelUnavailable { reason })?;
        let weights = Tensor::<4>::from_data(r.clone(), &ad);
        let loss = (out.clone().cast(DType::F32) * weights).sum() + lse.clone().sum();
        let grads = loss.backward();
        let failed = |what: &str, e: &dyn std::fmt::Debug| {
            AttentionError::Kernel(KernelError::Runtime {
                message: format!("reading back {what}: {e:?}"),
            })
        };
        let read = |what: &str, t: Tensor<4>| {
            t.cast(DType::F32)
                .try_to_vec_as::<f32>()
                .map_err(|e| failed(what, &e))
        };
        let grad = |what: &str, t: &Tensor<4>| {
            let g = t.grad(&grads).ok_or_else(|| failed(what, &"no gradient"))?;
            read(what, g)
        };
        Ok([
            read("out", out.inner())?,
            read("lse", lse.inner().unsqueeze_dim(3))?,
            grad("dq", &q)?,
            grad("dk", &k)?,
            grad("dv", &v)?,
        ])
    };
    let whole = run(MAX_ELEMENTS)?;
    let chunked = run(2 * n * d)?;
    let relative = std::array::from_fn(|i| relative_difference(&whole[i], &chunked[i]));
    Ok(ChunkCheck { relative, launches })
}

/// `max |a - b| / max |a|`, NaN-aware: NaN on both sides agrees, NaN on one side gives NaN.
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    let scale = a
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let e = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() && y.is_nan() {
                0.0
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) });
    e / scale.max(f32::MIN_POSITIVE)
}

//! What every check of the probe shares: reading tensors, rounding inputs to a dtype, error
//! measures, the gradients of a path, and FlashAttention's same-precision yardstick.

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use dilated_attention::{
    AttentionShape, BlockLayout, BlockSparseRingDilatedAttention, ExecutionPath,
};

/// The probe's context: the device under test, the CPU device of the f32/f64 truth.
pub struct Probe {
    pub device: Device,
    pub cpu: Device,
    /// Lines over a bar, reported at the end (the probe goes on to the other checks).
    pub over: Vec<String>,
    /// The element types the checks may use (`--dtypes`; `None`: all).
    pub only: Option<Vec<DType>>,
    /// `strategies`: the families checked per case (`--families`; `None`: all).
    pub families: Option<usize>,
    /// `strategies`: only these families (indices into its list), at blocks of 128 and both
    /// head dims (`--pick`; overrides `families`).
    pub pick: Option<Vec<usize>>,
}

impl Probe {
    /// Standard-normal `shape` on the CPU.
    pub fn randn<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &self.cpu)
    }

    /// Whether the kernels serve `dtype` on the device (WGSL has no bf16): a module's
    /// execution path for a small call says so; prints why not.
    pub fn has(&self, dtype: DType) -> bool {
        let module = BlockSparseRingDilatedAttention::from_pattern(
            dilated_attention::DilatedPattern::seed(64, false),
            None,
        );
        let shape = AttentionShape {
            batch: 1,
            heads: 1,
            kv_heads: 1,
            n: 64,
            head_dim: 64,
        };
        match module.execution_path(shape, dtype, &self.device) {
            Ok(ExecutionPath::Kernels(_)) => true,
            other => {
                println!("{dtype:?}: no kernels on this device ({other:?}), skipped");
                false
            }
        }
    }

    /// The dtypes of `list` the kernels serve on the device (and `--dtypes` allows).
    pub fn dtypes(&self, list: &[DType]) -> Vec<DType> {
        list.iter()
            .copied()
            .filter(|d| self.only.as_ref().is_none_or(|only| only.contains(d)))
            .filter(|&d| self.has(d))
            .collect()
    }

    /// Records a line over a bar.
    pub fn miss(&mut self, line: String) {
        println!("over the bar: {line}");
        self.over.push(line);
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // NaN wins (`f32::max` would drop it): a NaN anywhere is the largest error there is.
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, e| {
            if m.is_nan() || e.is_nan() {
                f32::NAN
            } else {
                m.max(e)
            }
        })
}

/// `max |a - b| / max(1, max |b|)`.
pub fn rel(a: &[f32], b: &[f32]) -> f32 {
    max_abs_diff(a, b) / b.iter().fold(1.0f32, |m, v| m.max(v.abs()))
}

pub fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32).try_to_vec_as::<f32>().expect("readable")
}

/// `f()`, its wall time printed after `label` (a slow step of a check shows where it is).
pub fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let value = f();
    println!("  [{label}: {:.1} s]", start.elapsed().as_secs_f64());
    value
}

/// `t` rounded to `dtype` and back to f32: the inputs every precision sees.
pub fn quantised(t: &Tensor<4>, dtype: DType) -> Tensor<4> {
    t.clone().cast(dtype).cast(DType::F32)
}

/// `t` on `device` in `dtype`.
pub fn on_device(t: &Tensor<4>, device: &Device, dtype: DType) -> Tensor<4> {
    t.clone().to_device(device).cast(dtype)
}

/// A padding mask in Burn's polarity (`true` = padded) where `keep <= 0.2`, on `device`.
pub fn padded(keep: &Tensor<2>, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2>::from_data(keep.to_data(), device).lower_equal_elem(0.2)
}

/// The implementation whose gradients [`grads`] takes.
#[derive(Clone, Copy)]
pub enum Path<'a> {
    /// The module's kernels.
    Kernels,
    /// The module's reference path (f32 inside, only inputs and outputs rounded).
    Reference,
    /// FlashAttention's yardstick under this layout ([`dense_same_dtype`]).
    DenseSameDtype(&'a BlockLayout),
}

/// `(dq, dk, dv)` of `Σ out · r` for `[q, k, v, r]` through `path` on `dev` in `dtype`, keys
/// padded where `keep <= 0.2` if given.
pub fn grads(
    module: &BlockSparseRingDilatedAttention,
    dev: &Device,
    dtype: DType,
    path: Path,
    inputs: [&Tensor<4>; 4],
    keep: Option<&Tensor<2>>,
) -> [Vec<f32>; 3] {
    let ad = dev.clone().autodiff();
    let [q, k, v, r] = inputs.map(|t| {
        Tensor::<4>::from_data(t.to_data(), (&ad, DType::F32))
            .cast(dtype)
            .detach()
    });
    let [q, k, v] = [q, k, v].map(|t| t.require_grad());
    // Masks are built on each device (bool tensors do not move between backends).
    let mask = keep.map(|t| padded(t, &ad));
    let out = match path {
        Path::Kernels => {
            module
                .forward_kernels(q.clone(), k.clone(), v.clone(), mask)
                .expect("the kernels run these inputs")
                .0
        }
        Path::Reference => module
            .clone()
            .without_kernels()
            .forward_masked(q.clone(), k.clone(), v.clone(), mask)
            .expect("valid inputs"),
        Path::DenseSameDtype(layout) => {
            dense_same_dtype(q.clone(), k.clone(), v.clone(), layout, keep)
        }
    };
    let g = (out * r).cast(DType::F32).sum().backward();
    [q, k, v].map(|t| read(t.grad(&g).expect("gradient")))
}

/// FlashAttention's yardstick, its `attention_ref` without upcasting: dense attention in the
/// inputs' dtype throughout (scores, softmax and both products rounded to it; Burn's
/// `attention_fallback`), with `log c_ij` of `layout` added to the scores (`-inf` where no
/// branch allows the pair or the key is padded: `keep <= 0.2`).
///
/// `q: [1, heads, n, d]`, `k, v: [1, kv_heads, n, d]` (GQA: `kv_heads` divides `heads`),
/// `keep: [1, n]`; returns `out: [1, heads, n, d]`.
pub fn dense_same_dtype(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    layout: &BlockLayout,
    keep: Option<&Tensor<2>>,
) -> Tensor<4> {
    use burn::tensor::module::attention_fallback;
    use burn::tensor::{Int, TensorData};
    let [_, heads, n, _] = q.dims();
    let kv_heads = k.dims()[1];
    let (device, dtype) = (q.device(), q.dtype());
    let mut bias = dilated_attention::reference::log_multiplicity(layout);
    if let Some(keep) = keep {
        let keep = read(keep.clone());
        for row in bias.chunks_mut(n) {
            for (b, &kj) in row.iter_mut().zip(&keep) {
                if kj <= 0.2 {
                    *b = f32::NEG_INFINITY;
                }
            }
        }
    }
    let bias = Tensor::<4>::from_data(
        TensorData::new(bias, [1, heads, n, n]),
        (&device, DType::F32),
    )
    .cast(dtype);
    let group: Vec<i64> = (0..heads)
        .map(|h| (h / (heads / kv_heads)) as i64)
        .collect();
    let group = Tensor::<1, Int>::from_data(TensorData::new(group, [heads]), &device);
    attention_fallback(
        q,
        k.select(1, group.clone()),
        v.select(1, group),
        None,
        Some(bias),
        Default::default(),
    )
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::prelude::*;
use burn::tensor::Distribution;

/// The plain CPU device, seeded.
pub fn cpu(seed: u64) -> Device {
    let device = Device::flex();
    device.seed(seed);
    device
}

/// Standard-normal tensor.
pub fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Random `q: [batch, heads, n, head_dim]` and `k, v: [batch, kv_heads, n, head_dim]` from
/// `[batch, heads, kv_heads, n, head_dim]`.
pub fn qkv([batch, heads, kv_heads, n, head_dim]: [usize; 5], device: &Device) -> [Tensor<4>; 3] {
    [
        randn([batch, heads, n, head_dim], device),
        randn([batch, kv_heads, n, head_dim], device),
        randn([batch, kv_heads, n, head_dim], device),
    ]
}

/// One kernel test: `pattern` over batch-2 inputs of these sizes, seeded, with or without a
/// padding mask.
#[derive(Debug, Clone)]
pub struct Case {
    pub pattern: dilated_attention::DilatedPattern,
    pub n: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub masked: bool,
    pub seed: u64,
}

impl Case {
    /// The batch of every case.
    pub const BATCH: usize = 2;

    /// The shape sweeps' case: branches `w × r` over `dilated_sparse` blocks of `block` at
    /// sparsity 0.5, a padding mask, seeded by `n`.
    #[allow(clippy::too_many_arguments)]
    pub fn dilated(
        w: &[usize],
        r: &[usize],
        block: usize,
        causal: bool,
        n: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        let sparse = sparse(dilated_attention::PatternType::DilatedSparse, block, 0.5);
        Self {
            pattern: dilated_attention::DilatedPattern::new(w, r, sparse, causal).unwrap(),
            n,
            heads,
            kv_heads,
            head_dim,
            masked: true,
            seed: n as u64,
        }
    }

    /// Random `q, k, v` (see [`qkv`]).
    pub fn qkv(&self, device: &Device) -> [Tensor<4>; 3] {
        qkv(
            [
                Self::BATCH,
                self.heads,
                self.kv_heads,
                self.n,
                self.head_dim,
            ],
            device,
        )
    }

    /// The case's padding mask on `device` (built there: Burn 0.22 cannot move a bool tensor
    /// to wgpu), or `None`.
    pub fn mask(&self, device: &Device) -> Option<Tensor<2, Bool>> {
        self.masked
            .then(|| padding_mask(Self::BATCH, self.n, device))
    }

    /// The module of the case's pattern.
    pub fn module(&self) -> dilated_attention::BlockSparseRingDilatedAttention {
        dilated_attention::BlockSparseRingDilatedAttention::from_pattern(self.pattern.clone(), None)
    }

    /// What a failure message names.
    pub fn what(&self) -> String {
        format!(
            "{:?} n={} heads={}/{} d={} mask={}",
            self.pattern, self.n, self.heads, self.kv_heads, self.head_dim, self.masked
        )
    }
}

/// Reads a float tensor as f32.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().expect("readable tensor")
}

/// A key padding mask `[batch, n]` in Burn's polarity (`true` = padded) with a pseudo-random
/// ~25 % of keys padded; batch 0 keeps all.
pub fn padding_mask(batch: usize, n: usize, device: &Device) -> Tensor<2, Bool> {
    let data: Vec<bool> = (0..batch * n)
        .map(|i| i >= n && (i * 2_654_435_761usize) % 97 < 24)
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, n]), device)
}

/// Asserts `max |a - b| <= tol · max(1, max |b|)` and no NaN anywhere.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let scale = b.iter().fold(
        1.0f32,
        |m, x| if x.is_finite() { m.max(x.abs()) } else { m },
    );
    let mut worst = 0.0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            !x.is_nan() && !y.is_nan(),
            "{what}: NaN at {i} ({x} vs {y})"
        );
        if x.is_infinite() || y.is_infinite() {
            assert_eq!(x, y, "{what}: infinite mismatch at {i}");
            continue;
        }
        worst = worst.max((x - y).abs());
    }
    assert!(
        worst <= tol * scale,
        "{what}: max abs error {worst} > {tol} · {scale}"
    );
}

/// The wgpu device (lavapipe in CI), if a Vulkan/Metal/DX adapter answers.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Option<Device> {
    std::panic::catch_unwind(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        let _ = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        device
    })
    .ok()
}

/// The wgpu device for a GPU test, or `None` to skip it: without a Vulkan adapter the test
/// prints one line and returns. With `DILATED_ATTENTION_REQUIRE_GPU=1` (CI, which installs
/// lavapipe) a missing adapter fails the test instead.
#[cfg(feature = "wgpu")]
pub fn gpu() -> Option<Device> {
    static DEVICE: std::sync::OnceLock<Option<Device>> = std::sync::OnceLock::new();
    let device = DEVICE.get_or_init(wgpu_device).clone();
    if device.is_none() {
        if std::env::var("DILATED_ATTENTION_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!(
                "no wgpu adapter and DILATED_ATTENTION_REQUIRE_GPU=1 (install mesa-vulkan-drivers for lavapipe)"
            );
        }
        eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    }
    device
}

/// A sparse config of `kind` with a fixed seed; `Custom` gets a small fixed block list.
pub fn sparse(
    kind: dilated_attention::PatternType,
    block: usize,
    sparsity: f64,
) -> dilated_attention::SparsePatternConfig {
    let cfg = dilated_attention::SparsePatternConfig::new(kind)
        .with_block_size(block)
        .with_sparsity_ratio(sparsity)
        .with_seed(3);
    match kind {
        dilated_attention::PatternType::Custom => {
            cfg.with_custom_blocks(vec![vec![(0, 0), (1, 0), (2, 2), (3, 1)]; 2])
        }
        _ => cfg,
    }
}

/// `Σ out · R + Σ finite(lse) · S`: a loss that touches every output and every finite lse.
pub fn loss(out: Tensor<4>, lse: Tensor<3>, r: &Tensor<4>, s: &Tensor<3>) -> Tensor<1> {
    let inf = lse.clone().is_inf();
    (out * r.clone()).sum() + (lse.mask_fill(inf, 0.0) * s.clone()).sum()
}

/// The ring tests' presets at length `n`: `seed` (dilated blocks 1, 2, 4 of `seed_block`) or
/// LongNet `[n/4, n/2, n] × [1, 2, 4]` over the block pattern `longnet`.
pub fn ring_preset(
    name: &str,
    n: usize,
    causal: bool,
    seed_block: usize,
    longnet: dilated_attention::SparsePatternConfig,
) -> dilated_attention::DilatedPattern {
    match name {
        "seed" => dilated_attention::DilatedPattern::seed(seed_block, causal),
        _ => {
            dilated_attention::DilatedPattern::new(&[n / 4, n / 2, n], &[1, 2, 4], longnet, causal)
                .unwrap()
        }
    }
}

/// `t` (`k` or `v`) with row `key` of every kv head set to `value`.
pub fn poison_key(t: Tensor<4>, key: usize, value: f32) -> Tensor<4> {
    let [b, kv, n, d] = t.dims();
    let device = t.device();
    let row = Tensor::<1, Int>::arange(0..n as i64, &device)
        .equal_elem(key as i64)
        .reshape([1, 1, n, 1])
        .expand([b, kv, n, d]);
    t.mask_fill(row, value)
}

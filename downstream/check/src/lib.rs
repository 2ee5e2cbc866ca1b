//! The downstream check: what a Burn user does with the library, on the device named by the
//! first argument (`wgpu`, the default, or `cuda`), with Fusion on or off as the binary's Burn
//! features have it.
//!
//! 1. `execution_path` says the kernels serve the call, and the policy is `require`, so any
//!    call they could not serve would be an error, not a quiet fall back.
//! 2. The core's forward (`out`, `lse`) and its backward (`dq`, `dk`, `dv` through autodiff)
//!    equal the reference path's on the same device: random inputs, GQA, causal, a padding
//!    mask in Burn's polarity; max abs error ≤ 1e-4 of the values' scale for the forward and
//!    2e-4 for the gradients (f32; the kernel tests' tolerance, the reference here runs on the
//!    GPU too).
//! 3. The multi-head layer on cross-attention inputs, forward and backward, against the same
//!    layer on the reference path.

use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use dilated_attention::{
    AttentionShape, BlockSparseRingDilatedAttention, BlockSparseRingDilatedAttentionConfig,
    DilatedMhaInput, ExecutionPath, KernelPolicy, MultiHeadDilatedAttentionConfig,
    SparsePatternConfig,
};

type Check = Result<(), String>;

/// Runs the check on the device the first argument names; `fusion` is whether the binary's
/// Burn has Fusion on.
pub fn main(fusion: bool) -> ExitCode {
    let start = Instant::now();
    let name = std::env::args().nth(1).unwrap_or_else(|| "wgpu".into());
    match check(fusion, &name) {
        Ok(()) => {
            println!(
                "downstream check passed in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("downstream check FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0usize)),
        other => Err(format!(
            "unknown device {other:?} (wgpu, or cuda with --features cuda)"
        )),
    }
}

/// The check on device `name` (`wgpu`, or `cuda` with the `cuda` feature); `fusion` is
/// whether this build's Burn has Fusion on.
pub fn check(fusion: bool, name: &str) -> Check {
    let cube = std::any::type_name::<burn::backend::Cube>();
    let fused = cube.contains("Fusion");
    println!("burn::backend::Cube = {cube}");
    if fused != fusion {
        return Err(format!(
            "expected Fusion {}, got {cube}",
            if fusion { "on" } else { "off" }
        ));
    }
    let device = device(name)?;
    device.seed(7);
    core_forward_backward(&device)?;
    multihead_cross_attention(&device)?;
    Ok(())
}

fn config() -> BlockSparseRingDilatedAttentionConfig {
    BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![64, 128])
        .with_dilation_rates(vec![1, 2])
        .with_sparse_config(SparsePatternConfig::default().with_sparsity_ratio(0.5))
        .with_block_size(Some(16))
        .with_causal(true)
        .with_kernel_policy(KernelPolicy::Require)
}

/// `max |a - b| / max(1, max |b|)`, or an error on NaN or a length mismatch.
fn error(a: Tensor<1>, b: Tensor<1>, what: &str) -> Result<f32, String> {
    let read = |t: Tensor<1>| {
        t.try_to_vec_as::<f32>()
            .map_err(|e| format!("{what}: {e:?}"))
    };
    let (a, b) = (read(a)?, read(b)?);
    if a.len() != b.len() {
        return Err(format!("{what}: {} vs {} values", a.len(), b.len()));
    }
    let mut worst = 0.0f32;
    let mut scale = 1.0f32;
    for (x, y) in a.iter().zip(&b) {
        if x.is_nan() || y.is_nan() {
            return Err(format!("{what}: NaN ({x} vs {y})"));
        }
        if x.is_infinite() || y.is_infinite() {
            if x != y {
                return Err(format!("{what}: {x} vs {y}"));
            }
            continue;
        }
        worst = worst.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    Ok(worst / scale)
}

fn expect_close<const D: usize>(a: Tensor<D>, b: Tensor<D>, tol: f32, what: &str) -> Check {
    let e = error(a.flatten(0, D - 1), b.flatten(0, D - 1), what)?;
    println!("  {what:<28} max error {e:.2e} (bound {tol:.0e})");
    if e <= tol {
        Ok(())
    } else {
        Err(format!("{what}: error {e} > {tol}"))
    }
}

fn core_forward_backward(device: &Device) -> Check {
    let (batch, heads, kv_heads, n, d) = (2, 4, 2, 200, 32);
    let kernels = config().init(device).map_err(|e| e.to_string())?;
    let reference: BlockSparseRingDilatedAttention = kernels.clone().without_kernels();
    let shape = AttentionShape {
        batch,
        heads,
        kv_heads,
        n,
        head_dim: d,
    };
    let path = kernels
        .execution_path(shape, DType::F32, device)
        .map_err(|e| e.to_string())?;
    println!("core: {path:?}");
    if !matches!(path, ExecutionPath::Kernels(_)) {
        return Err(format!("the kernels do not serve the call: {path:?}"));
    }
    let randn =
        |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let (q, k, v) = (
        randn([batch, heads, n, d]),
        randn([batch, kv_heads, n, d]),
        randn([batch, kv_heads, n, d]),
    );
    let r = randn([batch, heads, n, d]);
    let s = Tensor::<3>::random([batch, heads, n], Distribution::Normal(0.0, 1.0), device);
    // Burn's polarity: true = padded. Batch 0 keeps every key; batch 1 pads every fifth.
    let padded: Vec<bool> = (0..batch * n).map(|i| i >= n && i % 5 == 0).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(padded, [batch, n]), device);

    let (o, l) = kernels
        .forward_with_lse(q.clone(), k.clone(), v.clone(), Some(mask.clone()))
        .map_err(|e| e.to_string())?;
    let (o_ref, l_ref) = reference
        .forward_with_lse(q.clone(), k.clone(), v.clone(), Some(mask.clone()))
        .map_err(|e| e.to_string())?;
    expect_close(o, o_ref, 1e-4, "core out")?;
    expect_close(l, l_ref, 1e-4, "core lse")?;

    let grads_of = |module: &BlockSparseRingDilatedAttention| -> Result<Vec<Tensor<4>>, String> {
        let [qa, ka, va] = [&q, &k, &v].map(|t| t.clone().autodiff().require_grad());
        let (o, l) = module
            .forward_with_lse(qa.clone(), ka.clone(), va.clone(), Some(mask.clone()))
            .map_err(|e| e.to_string())?;
        let finite = l.clone().is_finite();
        let loss = (o * r.clone().autodiff()).sum()
            + (l.mask_fill(finite.bool_not(), 0.0) * s.clone().autodiff()).sum();
        let grads = loss.backward();
        [qa, ka, va]
            .iter()
            .map(|t| t.grad(&grads).ok_or_else(|| "no gradient".to_string()))
            .collect()
    };
    let (got, want) = (grads_of(&kernels)?, grads_of(&reference)?);
    for (name, (g, w)) in ["core dq", "core dk", "core dv"]
        .iter()
        .zip(got.into_iter().zip(want))
    {
        expect_close(g, w, 2e-4, name)?;
    }
    Ok(())
}

fn multihead_cross_attention(device: &Device) -> Check {
    let (batch, seq, width, heads) = (2, 96, 64, 2);
    let ad = device.clone().autodiff();
    let layer = MultiHeadDilatedAttentionConfig::new(width, heads)
        .with_kv_heads(Some(1))
        .with_sub_layer_norm(true)
        .with_attention(config().with_block_size(Some(16)))
        .init(&ad)
        .map_err(|e| e.to_string())?;
    let mut reference = layer.clone();
    reference.attention = reference.attention.without_kernels();
    let x = |seed: u64| {
        ad.seed(seed);
        Tensor::<3>::random([batch, seq, width], Distribution::Normal(0.0, 1.0), &ad).require_grad()
    };
    let (query, memory) = (x(1), x(2));
    let padded: Vec<bool> = (0..batch * seq)
        .map(|i| i % seq >= seq - 7 && i >= seq)
        .collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(padded, [batch, seq]), &ad);
    let run = |layer: &dilated_attention::MultiHeadDilatedAttention| -> Result<(Tensor<3>, Tensor<3>, Tensor<3>), String> {
        let input = DilatedMhaInput::new(query.clone(), memory.clone(), memory.clone()).mask_pad(mask.clone());
        let out = layer.forward(input).map_err(|e| e.to_string())?;
        let grads = (out.clone() * out.clone()).sum().backward();
        let dq = query.grad(&grads).ok_or("no query gradient")?;
        let dm = memory.grad(&grads).ok_or("no memory gradient")?;
        Ok((out.inner(), Tensor::from_inner(dq), Tensor::from_inner(dm)))
    };
    let (o, dq, dm) = run(&layer)?;
    let (o_ref, dq_ref, dm_ref) = run(&reference)?;
    expect_close(o, o_ref, 1e-4, "multi-head out")?;
    expect_close(dq, dq_ref, 2e-4, "multi-head d query")?;
    expect_close(dm, dm_ref, 2e-4, "multi-head d key/value")?;
    Ok(())
}

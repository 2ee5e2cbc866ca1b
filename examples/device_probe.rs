//! Proves a runtime end to end: a CubeCL kernel of ours, Burn ops, Burn autodiff and the
//! attention module, each checked against the CPU (flex) backend on random inputs.
//!
//! `cargo run --example device_probe [--features cuda] -- [cuda|wgpu]`

use burn::prelude::*;
use burn::tensor::Distribution;
use dilated_attention::BlockSparseRingDilatedAttentionConfig;
use dilated_attention_kernels::forward::{AttnDtype, ForwardConfig, tensor_cores_apply};
use dilated_attention_kernels::merge::lse_merge_f32;
use dilated_attention_kernels::{read_f32, upload_f32};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().expect("readable")
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "wgpu".into());
    let (cube, device) = match which.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => (
            cubecl::Device::cuda(0).expect("a CUDA device"),
            Device::cuda(0),
        ),
        _ => (
            cubecl::Device::Wgpu(cubecl::wgpu::WgpuDevice::default()),
            Device::wgpu(DeviceKind::DefaultDevice),
        ),
    };
    let client = cube.client();
    let props = client.properties();
    println!(
        "runtime {which}: plane size {}..{}, shared memory {} B, cmma configs {}",
        props.hardware.plane_size_min,
        props.hardware.plane_size_max,
        props.hardware.max_shared_memory_size,
        client.features().matmul.cmma.len()
    );

    for mma in client.features().matmul.cmma.iter() {
        println!("  cmma {mma:?}");
    }
    for dtype in [AttnDtype::F16, AttnDtype::BF16] {
        let config = ForwardConfig {
            dtype,
            head_dim: 64,
            block: 128,
            causal: false,
            scale: 0.125,
        };
        println!(
            "tensor-core forward for {dtype:?}: {}",
            tensor_cores_apply(&client, &config)
        );
    }

    // 1. Our CubeCL kernel: merge of 3 random parts.
    let (p, rows, d) = (3, 1000, 64);
    let parts: Vec<f32> = (0..p * rows * d)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let lse: Vec<f32> = (0..p * rows)
        .map(|i| ((i * 104729) % 997) as f32 / 100.0 - 5.0)
        .collect();
    let (out, _) = lse_merge_f32(
        &client,
        &upload_f32(&client, &parts),
        &upload_f32(&client, &lse),
        p,
        rows,
        d,
    )
    .expect("merge launch");
    let out = read_f32(&client, &out).expect("merge result");
    let mut worst = 0.0f32;
    for r in 0..rows {
        let m = (0..p)
            .map(|q| lse[q * rows + r])
            .fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = (0..p).map(|q| (lse[q * rows + r] - m).exp()).collect();
        let s: f32 = w.iter().sum();
        for c in 0..d {
            let o: f32 = (0..p)
                .map(|q| w[q] * parts[(q * rows + r) * d + c])
                .sum::<f32>()
                / s;
            worst = worst.max((o - out[r * d + c]).abs());
        }
    }
    println!("cubecl lse_merge kernel: max abs err {worst:.2e}");
    assert!(worst < 1e-5);

    // 2. Burn ops and autodiff against flex.
    let cpu = Device::flex();
    cpu.seed(3);
    // Unit-scale logits: CUDA matmuls may run f32 through TF32 tensor cores (~1e-3 relative).
    let a = Tensor::<2>::random(
        [256, 128],
        Distribution::Normal(0.0, 1.0 / 128f64.sqrt()),
        &cpu,
    );
    let b = Tensor::<2>::random([128, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let run = |dev: &Device| {
        let a = a.clone().to_device(dev).autodiff().require_grad();
        let b = b.clone().to_device(dev).autodiff().require_grad();
        let y = burn::tensor::activation::softmax(a.clone().matmul(b.clone()), 1);
        let grads = (y.clone() * y.clone()).sum().backward();
        (
            read(y),
            read(a.grad(&grads).unwrap()),
            read(b.grad(&grads).unwrap()),
        )
    };
    let (y0, ga0, gb0) = run(&cpu);
    let (y1, ga1, gb1) = run(&device);
    let errs = [
        max_abs_diff(&y0, &y1),
        max_abs_diff(&ga0, &ga1),
        max_abs_diff(&gb0, &gb1),
    ];
    println!("burn matmul+softmax+autodiff vs flex: max abs err {errs:?}");
    assert!(errs.iter().all(|&e| e < 5e-3));

    // 3. The attention module (reference path in Burn ops) against flex.
    let attention = BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![256, 512, 1024])
        .with_dilation_rates(vec![1, 2, 4])
        .with_block_size(Some(64))
        .with_sparsity_ratio(Some(0.5))
        .with_causal(true)
        .init(&device)
        .expect("valid config");
    let q = Tensor::<4>::random([1, 8, 1024, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let k = Tensor::<4>::random([1, 8, 1024, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let v = Tensor::<4>::random([1, 8, 1024, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let on = |dev: &Device| {
        let (o, l) = attention
            .forward_with_lse(
                q.clone().to_device(dev),
                k.clone().to_device(dev),
                v.clone().to_device(dev),
                None,
            )
            .expect("valid inputs");
        (read(o), read(l))
    };
    let (o0, l0) = on(&cpu);
    let (o1, l1) = on(&device);
    let errs = [max_abs_diff(&o0, &o1), max_abs_diff(&l0, &l1)];
    println!("attention module (reference path) vs flex: max abs err {errs:?}");
    assert!(errs.iter().all(|&e| e < 1e-3));
    // 4. f16 / bf16 through the kernels (tensor cores where the runtime has them) against the f32
    //    reference on the same quantised inputs; a dense single branch is also run through Burn's
    //    own attention op in the same dtype, the "same-precision naive" yardstick.
    use burn::tensor::DType;
    use burn::tensor::module::attention as burn_attention;
    use dilated_attention::{
        BlockSparseRingDilatedAttention, DilatedPattern, PatternType, SparsePatternConfig,
    };
    let n = 2048;
    let presets = [
        (
            "seed",
            DilatedPattern::single(
                SparsePatternConfig::new(PatternType::DilatedSparse)
                    .with_block_size(64)
                    .with_block_dilation_rates(vec![1, 2, 4]),
                false,
            ),
        ),
        (
            "longnet-causal",
            DilatedPattern::new(
                &[512, 1024, 2048],
                &[1, 2, 4],
                SparsePatternConfig::new(PatternType::Dense).with_block_size(64),
                true,
            )
            .unwrap(),
        ),
        (
            "dense",
            DilatedPattern::single(
                SparsePatternConfig::new(PatternType::Dense).with_block_size(128),
                false,
            ),
        ),
    ];
    let q = Tensor::<4>::random([1, 8, n, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let k = Tensor::<4>::random([1, 8, n, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let v = Tensor::<4>::random([1, 8, n, 64], Distribution::Normal(0.0, 1.0), &cpu);
    for dtype in [DType::F16, DType::BF16] {
        let quant = |t: &Tensor<4>| t.clone().cast(dtype).cast(DType::F32);
        let (qq, kq, vq) = (quant(&q), quant(&k), quant(&v));
        for (name, pattern) in &presets {
            let module = BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
            let reference = read(
                module
                    .clone()
                    .without_kernels()
                    .forward(qq.clone(), kq.clone(), vq.clone())
                    .unwrap(),
            );
            let to = |t: &Tensor<4>| t.clone().to_device(&device).cast(dtype);
            let ours = read(
                module
                    .forward_kernels(to(&qq), to(&kq), to(&vq), None)
                    .expect("the kernels run these inputs")
                    .0
                    .cast(DType::F32),
            );
            let err = max_abs_diff(&ours, &reference);
            let mut line = format!("{dtype:?} {name}: kernel max abs err {err:.2e}");
            if *name == "dense" {
                let naive =
                    burn_attention(to(&qq), to(&kq), to(&vq), None, None, Default::default());
                let naive_err = max_abs_diff(&read(naive.cast(DType::F32)), &reference);
                line += &format!(
                    ", burn attention ({dtype:?}) {naive_err:.2e}, ratio {:.2}",
                    err / naive_err
                );
            }
            println!("{line}");
            assert!(err.is_finite() && err < 5e-2, "{line}");
        }
    }
    println!("device probe passed on {which}");
}

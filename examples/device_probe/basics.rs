//! `basics`: our LSE merge kernel against the host, Burn's ops and autodiff against the CPU,
//! and the module's reference path on the device against the CPU.

use burn::prelude::*;
use burn::tensor::Distribution;
use dilated_attention::BlockSparseRingDilatedAttentionConfig;
use dilated_attention_kernels::merge::lse_merge;
use dilated_attention_kernels::{AttnDtype, TensorRef, read_f32, upload_f32};

use super::support::{Probe, max_abs_diff, read};

pub fn run(p: &mut Probe, cube: &cubecl::Device) {
    merge_kernel(cube);
    burn_ops(p);
    reference_module(p);
}

/// The merge of 3 random parts against the host.
fn merge_kernel(cube: &cubecl::Device) {
    let client = cube.client();
    let (parts_n, rows, d) = (3, 1000, 64);
    let parts: Vec<f32> = (0..parts_n * rows * d)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let lse: Vec<f32> = (0..parts_n * rows)
        .map(|i| ((i * 104729) % 997) as f32 / 100.0 - 5.0)
        .collect();
    let tensor = |values: &[f32], shape: Vec<usize>| {
        TensorRef::contiguous("t", upload_f32(&client, values), shape, 4).expect("sizes")
    };
    let out = tensor(&vec![f32::NAN; rows * d], vec![rows, d]);
    let lse_out = tensor(&vec![f32::NAN; rows], vec![rows]);
    lse_merge(
        &client,
        AttnDtype::F32,
        &tensor(&parts, vec![parts_n, rows, d]),
        &tensor(&lse, vec![parts_n, rows]),
        &out,
        &lse_out,
    )
    .expect("merge launch");
    let out = read_f32(&client, out.handle()).expect("merge result");
    let mut worst = 0.0f32;
    for r in 0..rows {
        let m = (0..parts_n)
            .map(|q| lse[q * rows + r])
            .fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = (0..parts_n)
            .map(|q| (lse[q * rows + r] - m).exp())
            .collect();
        let s: f32 = w.iter().sum();
        for c in 0..d {
            let o: f32 = (0..parts_n)
                .map(|q| w[q] * parts[(q * rows + r) * d + c])
                .sum::<f32>()
                / s;
            worst = worst.max((o - out[r * d + c]).abs());
        }
    }
    println!("cubecl lse_merge kernel: max abs err {worst:.2e}");
    assert!(worst < 1e-5);
}

/// Matmul, softmax and autodiff against the CPU.
fn burn_ops(p: &Probe) {
    // Unit-scale logits: CUDA matmuls may run f32 through TF32 tensor cores (~1e-3 relative).
    let a = Tensor::<2>::random(
        [256, 128],
        Distribution::Normal(0.0, 1.0 / 128f64.sqrt()),
        &p.cpu,
    );
    let b = Tensor::<2>::random([128, 64], Distribution::Normal(0.0, 1.0), &p.cpu);
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
    let (y0, ga0, gb0) = run(&p.cpu);
    let (y1, ga1, gb1) = run(&p.device);
    let errs = [
        max_abs_diff(&y0, &y1),
        max_abs_diff(&ga0, &ga1),
        max_abs_diff(&gb0, &gb1),
    ];
    println!("burn matmul+softmax+autodiff vs flex: max abs err {errs:?}");
    assert!(errs.iter().all(|&e| e < 5e-3));
}

/// The module's reference path in Burn ops on the device against the CPU.
fn reference_module(p: &Probe) {
    let attention = BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![256, 512, 1024])
        .with_dilation_rates(vec![1, 2, 4])
        .with_block_size(Some(64))
        .with_sparsity_ratio(Some(0.5))
        .with_causal(true)
        .init(&p.device)
        .expect("valid config")
        .without_kernels();
    let [q, k, v] = [0; 3].map(|_| p.randn([1, 8, 1024, 64]));
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
    let (o0, l0) = on(&p.cpu);
    let (o1, l1) = on(&p.device);
    let errs = [max_abs_diff(&o0, &o1), max_abs_diff(&l0, &l1)];
    println!("attention module (reference path) vs flex: max abs err {errs:?}");
    assert!(errs.iter().all(|&e| e < 1e-3));
}

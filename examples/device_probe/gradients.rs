//! Gradient checks through the backward kernels (autodiff), against the f32 reference's
//! autodiff on the CPU on the same rounded inputs:
//! - `gradients`: seed and LongNet, GQA 8/4 and one class over every row (stored gradients),
//!   blocks 64 and 128, f32/f16/bf16 — f16/bf16 within 2× of the reference path in the dtype;
//! - `edge-gradients`: the forward's edge cases, ours within 2× of dense attention in the
//!   dtype throughout (FlashAttention's yardstick; the reference path, f32 inside, reported);
//! - `finite-differences`: the directional derivative along a random direction (f32).

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, KernelPolicy, KernelStrategy, Sm80Tuning,
};

use super::forward::{EDGE, edge_module};
use super::support::{Path, Probe, grads, max_abs_diff, quantised, read, timed};

pub fn presets(p: &mut Probe) {
    let n = 1024;
    let q = p.randn([1, 8, n, 64]);
    let [k, v] = [0; 2].map(|_| p.randn([1, 4, n, 64]));
    let r = p.randn([1, 8, n, 64]);
    // Eight kv heads: one class over every row, where the kernels store their gradients
    // instead of adding them to zero-filled buffers.
    let [k8, v8] = [0; 2].map(|_| p.randn([1, 8, n, 64]));
    let seed = DilatedPattern::seed(64, false);
    let longnet = DilatedPattern::longnet(1024, 64, true).unwrap();
    let seed128 = DilatedPattern::seed(128, false);
    let longnet128 = DilatedPattern::longnet(1024, 128, true).unwrap();
    for dtype in p.dtypes(&[DType::F32, DType::F16, DType::BF16]) {
        let quant = |t: &Tensor<4>| quantised(t, dtype);
        let (qq, k4, v4, k8, v8) = (quant(&q), quant(&k), quant(&v), quant(&k8), quant(&v8));
        // Blocks of 128 first: on sm_90 they run the Hopper kernels, and a short call on a
        // fresh machine (minutes of NVRTC) should reach them.
        let cases = [
            ("seed block 128 (8 kv heads, stored)", &seed128, &k8, &v8),
            ("longnet-causal block 128 (GQA 8/4)", &longnet128, &k4, &v4),
            ("seed (GQA 8/4)", &seed, &k4, &v4),
            ("seed (8 kv heads, stored)", &seed, &k8, &v8),
            ("longnet-causal (GQA 8/4)", &longnet, &k4, &v4),
        ];
        for (name, pattern, kq, vq) in cases {
            let module = BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
            let inputs = [&qq, kq, vq, &r];
            let truth = grads(&module, &p.cpu, DType::F32, Path::Reference, inputs, None);
            let ours = grads(&module, &p.device, dtype, Path::Kernels, inputs, None);
            let naive = grads(&module, &p.device, dtype, Path::Reference, inputs, None);
            let mut line = format!("{dtype:?} {name} gradients:");
            let mut ok = true;
            for (i, g) in ["dq", "dk", "dv"].iter().enumerate() {
                let e = max_abs_diff(&ours[i], &truth[i]);
                let e_naive = max_abs_diff(&naive[i], &truth[i]);
                line += &format!(" {g} {e:.2e} (same-dtype reference path {e_naive:.2e})");
                ok &= e.is_finite() && (dtype == DType::F32 || e <= 2.0 * e_naive);
            }
            // The manual-MMA backward on the same inputs, where the Hopper one serves the
            // default: says whether an error belongs to the Hopper kernels or to the draw.
            if dtype != DType::F32 && pattern.sparse.block_size == 128 {
                line += &sm80_backward_line(&module, &p.device, dtype, inputs, &truth);
            }
            println!("{line}");
            if !ok {
                p.miss(line);
            }
        }
    }
}

/// The errors of the manual-MMA backward (forced, the Hopper forward kept) on `inputs`, or
/// why it did not run.
fn sm80_backward_line(
    module: &BlockSparseRingDilatedAttention,
    device: &Device,
    dtype: DType,
    inputs: [&Tensor<4>; 4],
    truth: &[Vec<f32>; 3],
) -> String {
    let sm80 = module
        .clone()
        .with_kernel_policy(KernelPolicy::Require)
        .with_kernel_strategy(Some(KernelStrategy::Sm80(Sm80Tuning {
            wgmma_backward: false,
            ..Sm80Tuning::default()
        })));
    let g = grads(&sm80, device, dtype, Path::Kernels, inputs, None);
    let e: Vec<String> = ["dq", "dk", "dv"]
        .iter()
        .zip(g.iter().zip(truth))
        .map(|(name, (a, b))| format!("{name} {:.2e}", max_abs_diff(a, b)))
        .collect();
    format!(" | manual-MMA backward: {}", e.join(" "))
}

pub fn edge(p: &mut Probe, lengths: Option<&[usize]>) {
    for (n, hd, block, causal, masked) in EDGE {
        if lengths.is_some_and(|l| !l.contains(&n)) {
            continue;
        }
        let module = edge_module(block, causal);
        let (q, r) = (p.randn([1, 8, n, hd]), p.randn([1, 8, n, hd]));
        let [k, v] = [0; 2].map(|_| p.randn([1, 2, n, hd]));
        let keep = Tensor::<2>::random([1, n], Distribution::Uniform(0.0, 1.0), &p.cpu);
        let keep = masked.then_some(&keep);
        for dtype in p.dtypes(&[DType::F16, DType::BF16]) {
            let quant = |t: &Tensor<4>| quantised(t, dtype);
            let (qq, kq, vq, rq) = (quant(&q), quant(&k), quant(&v), quant(&r));
            let inputs = [&qq, &kq, &vq, &rq];
            let truth = timed("f32 truth on the CPU", || {
                grads(&module, &p.cpu, DType::F32, Path::Reference, inputs, keep)
            });
            let ours = timed("ours", || {
                grads(&module, &p.device, dtype, Path::Kernels, inputs, keep)
            });
            let naive = timed("reference path", || {
                grads(&module, &p.device, dtype, Path::Reference, inputs, keep)
            });
            let layout = module.layout(n, 8).expect("valid layout");
            let dense = timed("dense in the dtype", || {
                let path = Path::DenseSameDtype(&layout);
                grads(&module, &p.device, dtype, path, inputs, keep)
            });
            let mut line = format!(
                "{dtype:?} edge gradients n={n} d={hd} block={block} causal={causal} mask={masked}:"
            );
            let mut ok = true;
            for (i, g) in ["dq", "dk", "dv"].iter().enumerate() {
                let e = max_abs_diff(&ours[i], &truth[i]);
                let e_naive = max_abs_diff(&naive[i], &truth[i]);
                let e_dense = max_abs_diff(&dense[i], &truth[i]);
                line += &format!(
                    " {g} {e:.2e} (dense in {dtype:?} {e_dense:.2e}; reference path, f32 inside, \
                     {e_naive:.2e})"
                );
                if !(e.is_finite() && e <= 2.0 * e_dense.max(1e-3)) {
                    line += &format!(" [{g} over 2x: ratio {:.2}]", e / e_dense);
                    ok = false;
                }
            }
            println!("{line}");
            if !ok {
                p.miss(line);
            }
        }
    }
}

/// The directional derivative along a random direction `u` equals `<dq, u>` (f32, kernels).
pub fn finite_differences(p: &mut Probe) {
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::longnet(1024, 64, true).unwrap(),
        None,
    );
    let n = 256;
    let [q, u, w] = [0; 3].map(|_| p.randn([1, 8, n, 64]));
    let [k, v] = [0; 2].map(|_| p.randn([1, 4, n, 64]));
    let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &p.device);
    let loss_at = |eps: f32| {
        let qe = on(&q) + on(&u) * eps;
        let out = module.forward_kernels(qe, on(&k), on(&v), None).unwrap().0;
        f64::from((out * on(&w)).sum().into_scalar::<f32>())
    };
    let ad = p.device.clone().autodiff();
    let qa = Tensor::<4>::from_data(q.to_data(), &ad).require_grad();
    let on_ad = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad);
    let out = module
        .forward_kernels(qa.clone(), on_ad(&k), on_ad(&v), None)
        .unwrap()
        .0;
    let g = (out * on_ad(&w)).sum().backward();
    let analytic: f64 = read(qa.grad(&g).unwrap())
        .iter()
        .zip(read(u.clone()))
        .map(|(a, b)| f64::from(*a) * f64::from(b))
        .sum();
    let eps = 1e-2;
    let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * f64::from(eps));
    let rel = (numeric - analytic).abs() / analytic.abs().max(1.0);
    let line = format!(
        "finite differences (f32, longnet-causal, n={n}): <dq, u> {analytic:.4}, numeric \
         {numeric:.4}, rel err {rel:.1e}"
    );
    println!("{line}");
    if rel >= 1e-2 {
        p.miss(line);
    }
}

//! Ring checks:
//! - `ring`: the ring on one device (`P` holders, its steps on the windowed kernels) in
//!   f16/bf16 at n = 3824 with 5 heads, causal and not: within 2.5 × the error of the
//!   unchunked kernels + 2e-3, both against the f32 reference on the CPU;
//! - `ring-steps n:heads,...`: LongNet causal, zigzag, forward and gradients of the ring
//!   against the unchunked kernels (the same bound, against the f32 kernels), every step on
//!   the kernels, and the f16 times of both.

use burn::prelude::*;
use burn::tensor::DType;
use dilated_attention::{BlockSparseRingDilatedAttention, DilatedPattern, Partition};
use dilated_attention_examples::timing::median_ms;

use super::support::{Probe, max_abs_diff, on_device, quantised, read, rel};

pub fn chunked(p: &mut Probe) {
    let device = p.device.clone();
    let n = 3824;
    let [q, k, v] = [0; 3].map(|_| p.randn([1, 5, n, 64]));
    for dtype in p.dtypes(&[DType::F16, DType::BF16]) {
        let quant = |t: &Tensor<4>| quantised(t, dtype);
        let (qq, kq, vq) = (quant(&q), quant(&k), quant(&v));
        let to = |t: &Tensor<4>| on_device(t, &device, dtype);
        for causal in [false, true] {
            let presets = [
                ("seed", DilatedPattern::seed(128, causal)),
                ("longnet", DilatedPattern::longnet(n, 64, causal).unwrap()),
            ];
            for (name, pattern) in presets {
                let plain = BlockSparseRingDilatedAttention::from_pattern(pattern, None);
                let truth = read(
                    plain
                        .clone()
                        .without_kernels()
                        .forward(qq.clone(), kq.clone(), vq.clone())
                        .unwrap(),
                );
                let single = read(plain.forward(to(&qq), to(&kq), to(&vq)).unwrap());
                let e_single = max_abs_diff(&single, &truth);
                for (holders, partition) in [(2, Partition::Zigzag), (4, Partition::Contiguous)] {
                    let ring = plain.clone().with_ring(holders, partition);
                    let got = read(ring.forward(to(&qq), to(&kq), to(&vq)).unwrap());
                    let e = max_abs_diff(&got, &truth);
                    let line = format!(
                        "{dtype:?} ring {name} causal={causal} P={holders} {partition:?}: {e:.2e} \
                         (unchunked kernels {e_single:.2e})"
                    );
                    println!("{line}");
                    if e > 2.5 * e_single + 2e-3 {
                        p.miss(line);
                    }
                }
            }
        }
    }
}

/// The ring's steps through the windowed kernels at length `n` with `h` heads (see the
/// module docs); `quick`: f16 at `P = 2` only, and times at `P = 1, 2`.
pub fn steps(p: &mut Probe, n: usize, h: usize, quick: bool) {
    let device = p.device.clone();
    let d = 64;
    let [q, k, v, r] = [0; 4].map(|_| p.randn([1, h, n, d]).to_device(&device));
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::longnet(n, 64, true).expect("valid preset"),
        None,
    )
    .with_ring(1, Partition::Zigzag);
    // Forward and gradients of `Σ out · r` in `dtype`, unchunked (`holders = 1`) or through a
    // ring of `holders`; results in f32.
    let run = |dtype: DType, holders: usize| {
        let ad = device.clone().autodiff();
        let [q, k, v] = [&q, &k, &v]
            .map(|t| Tensor::<4>::from_data(t.clone().cast(dtype).into_data(), &ad).require_grad());
        let (out, steps) = if holders == 1 {
            let (o, _) = module
                .forward_kernels(q.clone(), k.clone(), v.clone(), None)
                .expect("kernels serve the call");
            (o, (0, 0))
        } else {
            let ring = module
                .forward_ring(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    &vec![ad.clone(); holders],
                )
                .expect("ring");
            let steps = (ring.kernel_steps, ring.reference_steps);
            (ring.gather(&ad).0, steps)
        };
        let rr = Tensor::<4>::from_data(r.clone().cast(dtype).into_data(), &ad);
        let grads = (out.clone().cast(DType::F32) * rr.cast(DType::F32))
            .sum()
            .backward();
        let g = [&q, &k, &v].map(|t| read(t.grad(&grads).expect("grad")));
        (read(out), g, steps)
    };
    let (o32, g32, _) = run(DType::F32, 1);
    let cases: &[(DType, usize)] = if quick {
        &[(DType::F16, 2)]
    } else {
        &[(DType::F16, 2), (DType::F16, 4), (DType::BF16, 4)]
    };
    for &(dtype, holders) in cases {
        if !p.has(dtype) {
            continue;
        }
        let (o16, g16, _) = run(dtype, 1);
        let (o, g, (kernel_steps, reference_steps)) = run(dtype, holders);
        let mut line = format!(
            "ring n={n} heads={h} P={holders} zigzag {dtype:?}: {kernel_steps} kernel steps, \
             {reference_steps} reference steps; rel err vs f32 kernels (ring / unchunked):"
        );
        let mut ok = reference_steps == 0;
        for (name, ring, single, want) in [
            ("out", &o, &o16, &o32),
            ("dq", &g[0], &g16[0], &g32[0]),
            ("dk", &g[1], &g16[1], &g32[1]),
            ("dv", &g[2], &g16[2], &g32[2]),
        ] {
            let (e_ring, e_single) = (rel(ring, want), rel(single, want));
            ok &= e_ring <= 2.5 * e_single + 2e-3;
            line += &format!(" {name} {e_ring:.2e}/{e_single:.2e}");
        }
        println!("{line}");
        if !ok {
            p.miss(line);
        }
    }
    // Times, forward and forward+backward, f16, without autodiff for the forward.
    let [q16, k16, v16, r16] = [&q, &k, &v, &r].map(|t| t.clone().cast(DType::F16));
    let iters = 9;
    let holders: &[usize] = if quick { &[1, 2] } else { &[1, 2, 4] };
    for &holders in holders {
        let forward = |q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>| {
            if holders == 1 {
                module
                    .forward_kernels(q.clone(), k.clone(), v.clone(), None)
                    .unwrap()
                    .0
            } else {
                let devices = vec![q.device(); holders];
                module
                    .forward_ring(q.clone(), k.clone(), v.clone(), None, &devices)
                    .unwrap()
                    .gather(&q.device())
                    .0
            }
        };
        let fwd = median_ms(&device, iters, || {
            let _ = forward(&q16, &k16, &v16);
        })
        .expect("timed runs");
        let fwdbwd = median_ms(&device, iters, || {
            let [q, k, v] = [&q16, &k16, &v16].map(|t| t.clone().autodiff().require_grad());
            let out = forward(&q, &k, &v);
            let grads = (out * r16.clone().autodiff()).sum().backward();
            let _ = q.grad(&grads);
        })
        .expect("timed runs");
        println!(
            "ring n={n} heads={h} P={holders} f16 times: forward {fwd:.2} ms, forward+backward \
             {fwdbwd:.2} ms (median of {iters})"
        );
    }
}

//! Times the attention module on a device: the seed layout and the LongNet preset, median of
//! many runs after warm-up, device-synchronised. Prints one JSON object per row.
//!
//! `cargo run --release --example kernel_bench [--features cuda] -- <cuda|wgpu> <f32|f16|bf16> <sizes,...> [iters] [fwd|fwdbwd|both] [longnet block]`
//!
//! `fwdbwd` times the forward and `out.backward()` (seeded with ones, the gradient of
//! `out.sum()` without the reduction) on an autodiff device (the backward kernels); `phases`
//! splits a step with `out.sum()` into its parts (forward, loss, backward; the backward also
//! without the final sync, i.e. the host's enqueue time), each synchronised.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use dilated_attention::{BlockSparseRingDilatedAttention, DilatedPattern};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("wgpu", String::as_str);
    let dtype = match args.get(2).map_or("f16", String::as_str) {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        _ => DType::F16,
    };
    let sizes: Vec<usize> = args
        .get(3)
        .map_or("4096,16384", String::as_str)
        .split(',')
        .map(|s| {
            s.trim_end_matches(['k', 'K'])
                .parse::<usize>()
                .expect("size")
                * if s.ends_with(['k', 'K']) { 1024 } else { 1 }
        })
        .collect();
    let iters: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20);
    let modes: &[&str] = match args.get(5).map_or("fwd", String::as_str) {
        "fwdbwd" => &["fwdbwd"],
        "both" => &["fwd", "fwdbwd"],
        "phases" => &["phases"],
        _ => &["fwd"],
    };
    let longnet_block: usize = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(128);
    let device = match backend {
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        "flex" | "cpu" => Device::flex(),
        _ => Device::wgpu(DeviceKind::DefaultDevice),
    };
    let (b, h, d) = (1, 8, 64);
    for &n in &sizes {
        // What the module's output buffers cost alone (zeros + -inf fill per branch).
        let mut alloc = Vec::new();
        for i in 0..(iters + 3) {
            let start = Instant::now();
            let o = Tensor::<4>::zeros([b, h, n, d], (&device, dtype));
            let l = Tensor::<3>::full([b, h, n], f32::NEG_INFINITY, (&device, DType::F32));
            device.sync().expect("sync");
            if i >= 3 {
                alloc.push(start.elapsed().as_secs_f64() * 1e3);
            }
            drop((o, l));
        }
        alloc.sort_by(f64::total_cmp);
        println!(
            "{{\"impl\":\"alloc-only\",\"n\":{n},\"median_ms\":{:.3}}}",
            alloc[alloc.len() / 2]
        );
        let presets = [
            ("seed", DilatedPattern::seed(128, false)),
            (
                "longnet",
                DilatedPattern::longnet(n, longnet_block, false).expect("valid preset"),
            ),
        ];
        for (name, pattern) in presets {
            let module = BlockSparseRingDilatedAttention::from_pattern(pattern, None);
            let stats = module.layout(n, h).expect("layout").stats();
            for &mode in modes {
                if mode == "phases" {
                    phases(&module, &device, dtype, [b, h, n, d], iters, name);
                    continue;
                }
                let grad = mode == "fwdbwd";
                let dev = if grad {
                    device.clone().autodiff()
                } else {
                    device.clone()
                };
                let make = || {
                    let t = Tensor::<4>::random(
                        [b, h, n, d],
                        Distribution::Normal(0.0, 1.0),
                        (&dev, dtype),
                    );
                    if grad { t.require_grad() } else { t }
                };
                let (q, k, v) = (make(), make(), make());
                let run = || {
                    let (o, _) = module
                        .forward_kernels(q.clone(), k.clone(), v.clone(), None)
                        .expect("the kernels run these inputs");
                    if grad {
                        let g = o.backward();
                        drop(g);
                    } else {
                        drop(o);
                    }
                };
                for _ in 0..3 {
                    run();
                }
                device.sync().expect("sync");
                let mut times = Vec::with_capacity(iters);
                for _ in 0..iters {
                    let start = Instant::now();
                    run();
                    device.sync().expect("sync");
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
                times.sort_by(f64::total_cmp);
                let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
                let median = pct(0.5);
                let work = if grad { 3.5 } else { 1.0 };
                let tflops =
                    work * 4.0 * d as f64 * stats.active_pairs as f64 / (median * 1e-3) / 1e12;
                println!(
                    "{{\"impl\":\"ours\",\"backend\":\"{backend}\",\"dtype\":\"{dtype:?}\",\"n\":{n},\"pattern\":\"{name}\",\
                     \"mode\":\"{mode}\",\"density\":{:.6},\"median_ms\":{median:.3},\"p10_ms\":{:.3},\"p90_ms\":{:.3},\"tflops\":{tflops:.2}}}",
                    stats.density,
                    pct(0.1),
                    pct(0.9)
                );
            }
        }
    }
}

/// The parts of one training step, each followed by a device sync, as medians over `iters`:
/// where the time of `fwdbwd` goes between kernels, Burn's glue and the host.
fn phases(
    module: &BlockSparseRingDilatedAttention,
    device: &Device,
    dtype: DType,
    shape: [usize; 4],
    iters: usize,
    name: &str,
) {
    let ad = device.clone().autodiff();
    let make =
        || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), (&ad, dtype)).require_grad();
    let (q, k, v) = (make(), make(), make());
    let mut parts: [Vec<f64>; 5] = Default::default();
    for i in 0..iters + 3 {
        let t0 = Instant::now();
        let (o, _) = module
            .forward_kernels(q.clone(), k.clone(), v.clone(), None)
            .expect("the kernels run these inputs");
        device.sync().expect("sync");
        let t1 = Instant::now();
        let loss = o.sum();
        device.sync().expect("sync");
        let t2 = Instant::now();
        let grads = loss.backward();
        let t3 = Instant::now();
        device.sync().expect("sync");
        let t4 = Instant::now();
        drop(grads);
        device.sync().expect("sync");
        let t5 = Instant::now();
        if i >= 3 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            parts[0].push(ms(t0, t1));
            parts[1].push(ms(t1, t2));
            parts[2].push(ms(t2, t3));
            parts[3].push(ms(t2, t4));
            parts[4].push(ms(t4, t5));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [f, l, e, bw, dr] = &mut parts;
    println!(
        "{{\"impl\":\"phases\",\"pattern\":\"{name}\",\"n\":{},\"forward_ms\":{:.3},\"loss_ms\":{:.3},\"backward_enqueue_ms\":{:.3},\"backward_ms\":{:.3},\"drop_ms\":{:.3}}}",
        shape[2],
        med(f),
        med(l),
        med(e),
        med(bw),
        med(dr)
    );
}

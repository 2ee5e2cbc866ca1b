//! Times the attention module on a device: the seed layout and the LongNet preset, median of
//! many runs after warm-up, device-synchronised. Prints one JSON object per row.
//!
//! `cargo run --release --example kernel_bench [--features cuda] -- <cuda|wgpu> <f32|f16|bf16> <sizes,...> [iters] [fwd|fwdbwd|both] [longnet block]`
//!
//! `fwdbwd` times the forward and `out.sum().backward()` on an autodiff device (the backward
//! kernels).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, PatternType, SparsePatternConfig,
};

fn seed(block: usize) -> DilatedPattern {
    DilatedPattern::single(
        SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_size(block)
            .with_block_dilation_rates(vec![1, 2, 4]),
        false,
    )
}

fn longnet(n: usize, block: usize) -> DilatedPattern {
    DilatedPattern::new(
        &[n / 4, n / 2, n],
        &[1, 2, 4],
        SparsePatternConfig::new(PatternType::Dense).with_block_size(block),
        false,
    )
    .expect("valid preset")
}

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
        _ => &["fwd"],
    };
    let longnet_block: usize = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(64);
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
        for (name, pattern) in [("seed", seed(128)), ("longnet", longnet(n, longnet_block))] {
            let module = BlockSparseRingDilatedAttention::from_pattern(pattern, None);
            let stats = module.layout(n, h).expect("layout").stats();
            for &mode in modes {
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
                        let g = o.cast(DType::F32).sum().backward();
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

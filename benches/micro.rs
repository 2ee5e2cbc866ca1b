//! Micro-benchmarks of the host-side and merge pieces: building the block layout, the ring
//! schedule, and the LSE merge (Burn ops on the CPU backend).
//!
//! `cargo bench -p dilated-attention --bench micro` (release; `-- <filter>` runs the cases whose
//! name contains the filter). Each case prints the median and p10/p90 of its wall time over
//! repeated runs after one warm-up run; the merge cases read their result back, so they time
//! the whole computation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::tensor::{DType, Device, Distribution, Tensor};
use dilated_attention::merge::merge_lse;
use dilated_attention::{BlockLayout, DilatedPattern, Partition, RingSchedule};

/// The benchmarks' `seed` preset (block 128, not causal).
fn seed() -> DilatedPattern {
    DilatedPattern::seed(128, false)
}

/// The `longnet` preset with dense blocks of 64, causal or not.
fn longnet(n: usize, causal: bool) -> DilatedPattern {
    DilatedPattern::longnet(n, 64, causal).expect("valid preset")
}

/// Runs `f` once to warm up, then until `budget` is spent (at least 5, at most 200 runs), and
/// prints the median and the 10th/90th percentiles.
fn bench<T>(name: &str, filter: &Option<String>, budget: Duration, mut f: impl FnMut() -> T) {
    if filter.as_ref().is_some_and(|s| !name.contains(s.as_str())) {
        return;
    }
    black_box(f());
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 5 || (started.elapsed() < budget && times.len() < 200) {
        let t = Instant::now();
        black_box(f());
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<40} {:>10.3} ms   p10 {:>10.3}   p90 {:>10.3}   ({} runs)",
        at(0.5),
        at(0.1),
        at(0.9),
        times.len()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let budget = Duration::from_secs(2);
    let heads = 8;

    println!("{:<40} {:>13}", "case", "median");
    for n in [32_768, 131_072] {
        let k = n / 1024;
        bench(&format!("layout/seed/{k}k"), &filter, budget, || {
            BlockLayout::new(&seed(), n, heads).expect("layout")
        });
        bench(&format!("layout/longnet/{k}k"), &filter, budget, || {
            BlockLayout::new(&longnet(n, false), n, heads).expect("layout")
        });
        bench(
            &format!("layout/longnet-causal/{k}k"),
            &filter,
            budget,
            || BlockLayout::new(&longnet(n, true), n, heads).expect("layout"),
        );
    }
    for p in [2, 8] {
        let n = 32_768;
        let layout = BlockLayout::new(&longnet(n, true), n, heads).expect("layout");
        for (partition, label) in [
            (Partition::Contiguous, "contiguous"),
            (Partition::Zigzag, "zigzag"),
        ] {
            bench(
                &format!("schedule/longnet-causal/32k/P{p}/{label}"),
                &filter,
                budget,
                || RingSchedule::new(&layout, p, partition, heads, 64, 2).expect("schedule"),
            );
        }
    }

    let device = Device::flex();
    for (parts, n) in [(3, 4096), (3, 16_384), (8, 4096)] {
        let shape = [1, heads, n, 64];
        let inputs: Vec<(Tensor<4>, Tensor<3>)> = (0..parts)
            .map(|_| {
                (
                    Tensor::random(shape, Distribution::Normal(0.0, 1.0), (&device, DType::F32)),
                    Tensor::random(
                        [1, heads, n],
                        Distribution::Normal(0.0, 3.0),
                        (&device, DType::F32),
                    ),
                )
            })
            .collect();
        bench(
            &format!("merge/cpu/{parts}x{}k", n / 1024),
            &filter,
            budget,
            || {
                let (out, lse) = merge_lse(inputs.clone());
                (out.into_data(), lse.into_data())
            },
        );
    }
}

//! Micro-benchmarks of the host-side and merge pieces on the CPU, on criterion: building the
//! block layout of every pattern type (128K to 16M tokens), the ring schedule, and the LSE
//! merge (Burn ops on the CPU backend, results read back).
//!
//! `cargo bench -p dilated-attention --bench micro [-- <filter>]`

use std::hint::black_box;

use burn::tensor::{DType, Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dilated_attention::merge::merge_lse;
use dilated_attention::{
    BlockLayout, DilatedPattern, Partition, PatternType, RingSchedule, SparsePatternConfig,
};

const HEADS: usize = 8;

/// The `longnet` preset with dense blocks of 64, causal or not.
fn longnet(n: usize, causal: bool) -> DilatedPattern {
    DilatedPattern::longnet(n, 64, causal).expect("valid preset")
}

/// Branches of 2K, 4K and 8K tokens at rates 1, 2 and 4 (LongNet's shape with a fixed segment
/// length) over blocks of 64 of `kind`, 95 % sparse, causal. Fixed segments keep the layout
/// O(n): one branch over the whole of a 16M sequence would hold O(n²) block pairs (dense:
/// 3.4e10, more memory than the machine has; 95 % sparse: 1.7e9).
fn segmented(kind: PatternType) -> DilatedPattern {
    let mut sparse = SparsePatternConfig::new(kind)
        .with_block_size(64)
        .with_sparsity_ratio(0.95);
    if kind == PatternType::Custom {
        sparse = sparse.with_custom_blocks(vec![(0..32).map(|b| (b, b)).collect(); 3]);
    }
    DilatedPattern::new(&[2048, 4096, 8192], &[1, 2, 4], sparse, true).expect("valid pattern")
}

fn layouts(c: &mut Criterion) {
    let mut group = c.benchmark_group("layout");
    group.sample_size(10);
    for n in [1 << 17, 1 << 20] {
        for (name, pattern) in [
            ("seed", DilatedPattern::seed(128, false)),
            ("longnet", longnet(n, false)),
            ("longnet-causal", longnet(n, true)),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter(|| BlockLayout::new(black_box(&pattern), n, HEADS).expect("layout"))
            });
        }
    }
    // Every pattern type at 16M tokens (fixed segments): the layout must build in well under a
    // second.
    let n = 1 << 24;
    for kind in PatternType::ALL {
        let pattern = segmented(kind);
        group.bench_with_input(BenchmarkId::new(format!("{kind:?}"), n), &n, |b, &n| {
            b.iter(|| BlockLayout::new(black_box(&pattern), n, HEADS).expect("layout"))
        });
    }
    group.finish();
}

fn schedules(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule");
    let n = 32_768;
    let layout = BlockLayout::new(&longnet(n, true), n, HEADS).expect("layout");
    for p in [2, 8] {
        for partition in [Partition::Contiguous, Partition::Zigzag] {
            group.bench_function(format!("longnet-causal/32k/P{p}/{partition:?}"), |b| {
                b.iter(|| RingSchedule::new(&layout, p, partition, HEADS, 64, 2).expect("schedule"))
            });
        }
    }
    group.finish();
}

fn merges(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    group.sample_size(10);
    let device = Device::flex();
    for (parts, n) in [(3, 4096), (3, 16_384), (8, 4096)] {
        let inputs: Vec<(Tensor<4>, Tensor<3>)> = (0..parts)
            .map(|_| {
                let normal = |std| Distribution::Normal(0.0, std);
                (
                    Tensor::random([1, HEADS, n, 64], normal(1.0), (&device, DType::F32)),
                    Tensor::random([1, HEADS, n], normal(3.0), (&device, DType::F32)),
                )
            })
            .collect();
        group.bench_function(format!("cpu/{parts}x{}k", n / 1024), |b| {
            b.iter(|| {
                let (out, lse) = merge_lse(inputs.clone()).expect("parts of one shape");
                (out.into_data(), lse.into_data())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, layouts, schedules, merges);
criterion_main!(benches);

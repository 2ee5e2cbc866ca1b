//! Micro-benchmarks of the host-side and merge pieces on the CPU, on divan: building the block
//! layout of every pattern type (128K to 16M tokens), the ring schedule, and the LSE merge
//! (Burn ops on the CPU backend, results read back).
//!
//! `cargo bench -p dilated-attention --bench micro [-- <filter>]`

use burn::tensor::{DType, Device, Distribution, Tensor};
use dilated_attention::merge::merge_lse;
use dilated_attention::{
    BlockLayout, DilatedPattern, Partition, PatternType, RingSchedule, SparsePatternConfig,
};
use divan::{Bencher, black_box};

const HEADS: usize = 8;

fn main() {
    divan::main();
}

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

/// Times the layout of `pattern` at `n` tokens.
fn layout_of(bencher: Bencher, pattern: DilatedPattern, n: usize) {
    bencher.bench(|| BlockLayout::new(black_box(&pattern), n, HEADS).expect("layout"));
}

mod layout {
    use super::*;

    /// The seed preset (one whole-sequence branch, block offsets 0, ±1, ±2, ±4).
    #[divan::bench(args = [1 << 17, 1 << 20], sample_count = 10)]
    fn seed(bencher: Bencher, n: usize) {
        layout_of(bencher, DilatedPattern::seed(128, false), n);
    }

    /// The LongNet preset, bidirectional.
    #[divan::bench(args = [1 << 17, 1 << 20], sample_count = 10)]
    fn longnet(bencher: Bencher, n: usize) {
        layout_of(bencher, super::longnet(n, false), n);
    }

    /// The LongNet preset, causal.
    #[divan::bench(args = [1 << 17, 1 << 20], sample_count = 10)]
    fn longnet_causal(bencher: Bencher, n: usize) {
        layout_of(bencher, super::longnet(n, true), n);
    }

    /// Every pattern type at 16M tokens over fixed segments: each must build in well under a
    /// second.
    #[divan::bench(args = PatternType::ALL, sample_count = 5)]
    fn every_type_16m(bencher: Bencher, kind: PatternType) {
        layout_of(bencher, segmented(kind), 1 << 24);
    }
}

/// The ring schedule of causal LongNet at 32K tokens over `p` holders, both partitions.
#[divan::bench(args = [2, 8])]
fn schedule(bencher: Bencher, p: usize) {
    let n = 32_768;
    let layout = BlockLayout::new(&longnet(n, true), n, HEADS).expect("layout");
    bencher.bench(|| {
        [Partition::Contiguous, Partition::Zigzag].map(|partition| {
            RingSchedule::new(&layout, p, partition, HEADS, 64, 2).expect("schedule")
        })
    });
}

/// The LSE merge of `parts` random parts of `[1, 8, n, 64]` on the CPU backend.
#[divan::bench(args = [(3, 4096), (3, 16_384), (8, 4096)], sample_count = 10)]
fn merge(bencher: Bencher, (parts, n): (usize, usize)) {
    let device = Device::flex();
    let inputs: Vec<(Tensor<4>, Tensor<3>)> = (0..parts)
        .map(|_| {
            let normal = |std| Distribution::Normal(0.0, std);
            (
                Tensor::random([1, HEADS, n, 64], normal(1.0), (&device, DType::F32)),
                Tensor::random([1, HEADS, n], normal(3.0), (&device, DType::F32)),
            )
        })
        .collect();
    bencher.bench(|| {
        let (out, lse) = merge_lse(inputs.clone()).expect("parts of one shape");
        (out.into_data(), lse.into_data())
    });
}

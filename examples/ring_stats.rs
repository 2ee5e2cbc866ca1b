//! Ring schedule statistics for the seed and LongNet presets (causal): per partition and ring
//! size, the imbalance factor (max / mean work), skipped steps and the bytes the visiting
//! chunks must move (only the gathered rows vs whole chunks).
//!
//! `cargo run --example ring_stats -- --n 32k` (8 heads, head_dim 64, f16).

use clap::Parser;
use dilated_attention::{
    BlockLayout, DilatedPattern, Partition, PatternType, RingSchedule, SparsePatternConfig,
};
use dilated_attention_examples::cli::parse_size;

/// Ring schedule statistics of the seed and LongNet presets.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Sequence length in tokens (`32k`, `65536`, ...).
    #[arg(long, value_parser = parse_size, default_value = "32k")]
    n: usize,
}

fn main() {
    let n = Args::parse().n;
    let heads = 8;
    let seed = DilatedPattern::single(
        SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_size(128)
            .with_block_dilation_rates(vec![1, 2, 4]),
        true,
    );
    let longnet = DilatedPattern::new(
        &[n / 4, n / 2, n],
        &[1, 2, 4],
        SparsePatternConfig::new(PatternType::Dense).with_block_size(64),
        true,
    )
    .expect("valid preset");
    println!(
        "| preset (causal) | n | P | partition | imbalance | skipped steps | bytes needed / full |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|");
    for (name, pattern) in [("seed", seed), ("longnet", longnet)] {
        let layout = BlockLayout::new(&pattern, n, heads).expect("layout");
        for p in [2, 4, 8] {
            for part in [Partition::Contiguous, Partition::Zigzag, Partition::Striped] {
                let s = RingSchedule::new(&layout, p, part, heads, 64, 2).expect("schedule");
                let (needed, full) = s.bytes_moved();
                println!(
                    "| {name} | {n} | {p} | {part:?} | {:.3} | {} of {} | {:.3} |",
                    s.imbalance(),
                    s.skipped_steps(),
                    p * p,
                    needed as f64 / full.max(1) as f64
                );
            }
        }
    }
}

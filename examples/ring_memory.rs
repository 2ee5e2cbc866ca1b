//! Peak attention memory and time of the ring on one device as the ring size grows.
//!
//! `cargo run --example ring_memory [--features cuda] -- --device cuda --n 8k`
//! Peak = the allocator's reserved bytes after the call, pools cleaned before it.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, Partition, PatternType, SparsePatternConfig,
};
use dilated_attention_examples::cli::{DeviceArg, parse_size};

/// Peak memory and time of the ring on one device by ring size.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Sequence length in tokens (`8k`, `16384`, ...).
    #[arg(long, value_parser = parse_size, default_value = "8k")]
    n: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let (n, backend) = (args.n, format!("{:?}", args.device).to_lowercase());
    let device = args.device.device()?;
    let pattern = DilatedPattern::new(
        &[n / 4, n / 2, n],
        &[1, 2, 4],
        SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_size(64)
            .with_sparsity_ratio(0.9),
        true,
    )
    .expect("valid preset");
    let (b, h, d) = (1, 8, 64);
    let q = Tensor::<4>::random([b, h, n, d], Distribution::Normal(0.0, 1.0), &device);
    let k = Tensor::<4>::random([b, h, n, d], Distribution::Normal(0.0, 1.0), &device);
    let v = Tensor::<4>::random([b, h, n, d], Distribution::Normal(0.0, 1.0), &device);
    let inputs = 3 * b * h * n * d * 4;
    println!(
        "| backend | n | ring size | peak reserved MiB (inputs {:.0} MiB) | ms |",
        inputs as f64 / 1048576.0
    );
    println!("|---|---:|---:|---:|---:|");
    for p in [1, 2, 4, 8] {
        let module = BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None)
            .without_kernels()
            .with_ring(p, Partition::Zigzag);
        // Warm-up builds the plans and the kernels' code.
        let _ = module
            .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
            .expect("inputs");
        let _ = device.sync();
        device.memory_cleanup();
        let start = Instant::now();
        let (o, l) = module
            .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
            .expect("inputs");
        let _ = device.sync();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let peak = device.memory_pool_usage().map(|u| u.bytes_reserved);
        drop((o, l));
        println!(
            "| {backend} | {n} | {p} | {} | {ms:.1} |",
            peak.map_or("–".into(), |b| format!("{:.0}", b as f64 / 1048576.0))
        );
    }
    Ok(())
}

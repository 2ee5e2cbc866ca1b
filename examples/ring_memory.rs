//! Peak attention memory and time of the ring on one device as the ring size grows.
//!
//! `cargo run --example ring_memory [--features cuda] -- <cuda|wgpu|cpu> [n]`
//! Peak = the allocator's reserved bytes after the call, pools cleaned before it.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, Partition, PatternType, SparsePatternConfig,
};

fn main() {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "cpu".into());
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8192);
    let device = match backend.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        "wgpu" => Device::wgpu(DeviceKind::DefaultDevice),
        _ => Device::flex(),
    };
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
}

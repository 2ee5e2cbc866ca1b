//! The reference at the CPU size: n = 16384, 8 heads, head_dim 64, against an f64
//! per-row oracle on sampled queries (rules read through `BlockLayout::allows`).

mod common;

use burn::prelude::*;
use common::{cpu, randn};
use dilated_attention::{BlockLayout, DilatedPattern, PatternType, SparsePatternConfig};
use rstest::rstest;

fn seed_pattern(causal: bool) -> DilatedPattern {
    let sparse = SparsePatternConfig::new(PatternType::DilatedSparse)
        .with_block_size(128)
        .with_block_dilation_rates(vec![1, 2, 4]);
    DilatedPattern::single(sparse, causal)
}

fn longnet_pattern(n: usize, causal: bool) -> DilatedPattern {
    let sparse = SparsePatternConfig::new(PatternType::DilatedSparse)
        .with_block_size(64)
        .with_sparsity_ratio(0.95);
    DilatedPattern::new(&[n / 4, n / 2, n], &[1, 2, 4], sparse, causal).unwrap()
}

#[rstest]
#[case::seed(false)]
#[case::longnet_causal(true)]
fn reference_at_16k_matches_f64_rows(#[case] longnet: bool) {
    let n = 16384;
    let (heads, d) = (8, 64);
    let pattern = if longnet {
        longnet_pattern(n, true)
    } else {
        seed_pattern(false)
    };
    let device = cpu(30);
    let q = randn([1, heads, n, d], &device);
    let k = randn([1, heads, n, d], &device);
    let v = randn([1, heads, n, d], &device);
    let module =
        dilated_attention::BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
    let (out, lse) = module
        .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
        .unwrap();

    let layout = BlockLayout::new(&pattern, n, heads).unwrap();
    let read = |t: Tensor<4>| t.try_to_vec_as::<f32>().unwrap();
    let (q, k, v, out) = (read(q), read(k), read(v), read(out));
    let lse = lse.try_to_vec_as::<f32>().unwrap();
    fn row(x: &[f32], n: usize, d: usize, h: usize, i: usize) -> &[f32] {
        &x[(h * n + i) * d..(h * n + i + 1) * d]
    }
    let scale = 1.0 / (d as f64).sqrt();
    for s in 0..24 {
        let (h, i) = (s % heads, (s * 7919 + 13) % n);
        let mut weights = Vec::new();
        for j in 0..n {
            let count = (0..pattern.branches.len())
                .filter(|&b| layout.allows(b, h, i, j))
                .count();
            if count > 0 {
                let x: f64 = row(&q, n, d, h, i)
                    .iter()
                    .zip(row(&k, n, d, h, j))
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                weights.push((j, count as f64, x * scale));
            }
        }
        let m = weights.iter().fold(f64::NEG_INFINITY, |m, w| m.max(w.2));
        let z: f64 = weights.iter().map(|w| w.1 * (w.2 - m).exp()).sum();
        let expect_lse = m + z.ln();
        let got_lse = lse[h * n + i] as f64;
        assert!(
            (got_lse - expect_lse).abs() < 1e-4 * (1.0 + expect_lse.abs()),
            "lse h={h} i={i}"
        );
        for c in 0..d {
            let o: f64 = weights
                .iter()
                .map(|w| w.1 * (w.2 - m).exp() * row(&v, n, d, h, w.0)[c] as f64)
                .sum::<f64>()
                / z;
            let got = row(&out, n, d, h, i)[c] as f64;
            assert!(
                (got - o).abs() < 1e-4,
                "out h={h} i={i} c={c}: {got} vs {o}"
            );
        }
    }
}

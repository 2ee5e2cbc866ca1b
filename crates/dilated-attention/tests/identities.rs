//! Degenerate identities and numerical stability of the reference path.

mod common;

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use common::{assert_close, cpu, qkv, randn, values};
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, PatternType, SparsePatternConfig,
};
use rstest::rstest;

fn dense(causal: bool, block: usize) -> BlockSparseRingDilatedAttention {
    let sparse = SparsePatternConfig::new(PatternType::Dense).with_block_size(block);
    BlockSparseRingDilatedAttention::from_pattern(DilatedPattern::single(sparse, causal), None)
}

#[rstest]
#[case(false, 100, 16)]
#[case(true, 100, 16)]
#[case(false, 64, 64)]
#[case(true, 33, 8)]
fn one_dense_branch_equals_burns_attention(
    #[case] causal: bool,
    #[case] n: usize,
    #[case] block: usize,
) {
    let device = cpu(1);
    let q = randn([2, 4, n, 32], &device);
    let k = randn([2, 4, n, 32], &device);
    let v = randn([2, 4, n, 32], &device);
    let ours = dense(causal, block)
        .forward(q.clone(), k.clone(), v.clone())
        .unwrap();
    let options = AttentionModuleOptions {
        is_causal: causal,
        ..Default::default()
    };
    let burn = attention(q, k, v, None, None, options);
    assert_close(
        &values(ours),
        &values(burn),
        1e-5,
        "dense vs burn attention",
    );
}

#[test]
fn fully_masked_rows_give_zero_and_neg_inf() {
    let device = cpu(2);
    let [q, k, v] = qkv([2, 3, 3, 40, 16], &device);
    // Batch 1 has no key at all.
    let mask: Vec<bool> = (0..80).map(|i| i >= 40).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [2, 40]), &device);
    let (out, lse) = dense(false, 8)
        .forward_with_lse(q, k, v, Some(mask))
        .unwrap();
    let out = values(out.slice_dim(0, 1..2));
    let lse = values(lse.slice_dim(0, 1..2));
    assert!(out.iter().all(|&x| x == 0.0), "masked rows must be 0");
    assert!(
        lse.iter().all(|&x| x == f32::NEG_INFINITY),
        "masked lse must be -inf"
    );
}

#[test]
fn rows_a_branch_skips_get_the_other_branch_alone() {
    // Branch (8, 2) skips odd positions for head 0; branch (n, 1) sees everything.
    let device = cpu(3);
    let n = 32;
    let [q, k, v] = qkv([1, 1, 1, n, 8], &device);
    let sparse = SparsePatternConfig::new(PatternType::Dense).with_block_size(4);
    let both = DilatedPattern::new(&[8, n], &[2, 1], sparse.clone(), false).unwrap();
    let only_full = DilatedPattern::new(&[n], &[1], sparse, false).unwrap();
    let a = BlockSparseRingDilatedAttention::from_pattern(both, None)
        .forward(q.clone(), k.clone(), v.clone())
        .unwrap();
    let b = BlockSparseRingDilatedAttention::from_pattern(only_full, None)
        .forward(q, k, v)
        .unwrap();
    // Position 1 (odd): only the full branch sees it.
    assert_close(
        &values(a.clone().slice_dim(2, 1..2)),
        &values(b.clone().slice_dim(2, 1..2)),
        1e-6,
        "skipped row",
    );
    // Position 2 (even): both branches contribute, so it differs.
    let (x, y) = (values(a.slice_dim(2, 2..3)), values(b.slice_dim(2, 2..3)));
    assert!(x.iter().zip(&y).any(|(x, y)| (x - y).abs() > 1e-4));
}

#[test]
fn permuting_keys_in_one_dense_branch_changes_nothing() {
    let device = cpu(4);
    let n = 50;
    let [q, k, v] = qkv([1, 2, 2, n, 16], &device);
    let perm: Vec<i64> = (0..n as i64).map(|i| (i * 17 + 3) % n as i64).collect();
    let perm = Tensor::<1, Int>::from_data(TensorData::new(perm, [n]), &device);
    let module = dense(false, 8);
    let a = module.forward(q.clone(), k.clone(), v.clone()).unwrap();
    let b = module
        .forward(q, k.select(2, perm.clone()), v.select(2, perm))
        .unwrap();
    assert_close(&values(a), &values(b), 1e-5, "permuted keys");
}

#[rstest]
fn extreme_scales_stay_finite(#[values(1e-4, 1e-2, 1.0, 1e2, 1e4)] s: f32) {
    let device = cpu(5);
    let pattern = DilatedPattern::new(
        &[16, 64],
        &[1, 2],
        SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_size(8)
            .with_sparsity_ratio(0.5),
        true,
    )
    .unwrap();
    let module = BlockSparseRingDilatedAttention::from_pattern(pattern, None);
    let (q, k, v) = (
        randn([1, 4, 64, 16], &device) * s,
        randn([1, 4, 64, 16], &device) * s,
        randn([1, 4, 64, 16], &device) * s,
    );
    let (out, lse) = module.forward_with_lse(q, k, v, None).unwrap();
    assert!(values(out).iter().all(|x| x.is_finite()), "scale {s}");
    assert!(values(lse).iter().all(|x| x.is_finite()), "scale {s}");
}

#[test]
fn zero_inputs_give_zero_output() {
    let device = cpu(6);
    let z = Tensor::<4>::zeros([1, 2, 30, 8], &device);
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::new(
            &[8, 16],
            &[1, 2],
            SparsePatternConfig::default().with_block_size(4),
            true,
        )
        .unwrap(),
        None,
    );
    let out = module.forward(z.clone(), z.clone(), z).unwrap();
    assert!(values(out).iter().all(|&x| x == 0.0));
}

//! Unit tests of the block layout: each pattern type's rows, head classes and tails, exact
//! stats, transposition, the empty sequence.

use super::*;
use crate::pattern::{PatternType, SparsePatternConfig};
use rstest::rstest;

fn pattern(w: &[usize], r: &[usize], sparse: SparsePatternConfig, causal: bool) -> DilatedPattern {
    DilatedPattern::new(w, r, sparse, causal).unwrap()
}

/// The layout of one branch over all `n` tokens with blocks of one token: `kind` at
/// sparsity 0.5.
fn one_token_blocks(kind: PatternType, n: usize, causal: bool) -> BlockLayout {
    let sparse = SparsePatternConfig::new(kind)
        .with_block_size(1)
        .with_sparsity_ratio(0.5);
    BlockLayout::new(&pattern(&[n], &[1], sparse, causal), n, 1).unwrap()
}

fn rows_of(layout: &BlockLayout, class: usize) -> Vec<Vec<u32>> {
    let rows = &layout.classes[class].full.rows;
    (0..rows.rows()).map(|q| rows.row(q).to_vec()).collect()
}

#[test]
fn seed_layout_has_offsets_0_1_2_4_and_its_density() {
    let sparse = SparsePatternConfig::new(PatternType::DilatedSparse)
        .with_block_size(128)
        .with_block_dilation_rates(vec![1, 2, 4]);
    let n = 128 * 1024;
    let layout = BlockLayout::new(&DilatedPattern::single(sparse, false), n, 8).unwrap();
    let rows = rows_of(&layout, 0);
    assert_eq!(rows[0], vec![0, 1, 2, 4]);
    assert_eq!(rows[10], vec![6, 8, 9, 10, 11, 12, 14]);
    let stats = layout.stats();
    // 7 blocks per interior row: 7 · 128 / 131072 ≈ 0.0068 (the issue's figure).
    assert!((stats.density - 0.0068).abs() < 1e-4, "{}", stats.density);
    assert_eq!(stats.max_row_blocks, 7);
}

#[rstest]
#[case(PatternType::LocalWindow)]
#[case(PatternType::DilatedSparse)]
#[case(PatternType::GlobalLocal)]
#[case(PatternType::Random)]
fn every_row_keeps_its_diagonal_and_the_budget(#[case] kind: PatternType) {
    for causal in [false, true] {
        for sparsity in [0.0, 0.5, 0.9] {
            let sparse = SparsePatternConfig::new(kind)
                .with_block_size(4)
                .with_sparsity_ratio(sparsity);
            let layout = BlockLayout::new(&pattern(&[64], &[1], sparse, causal), 64, 1).unwrap();
            for (q, row) in rows_of(&layout, 0).iter().enumerate() {
                let candidates = if causal { q + 1 } else { 16 };
                assert!(row.contains(&(q as u32)), "{kind:?} row {q}: {row:?}");
                assert!(
                    row.len() >= budget(sparsity, candidates),
                    "{kind:?} {row:?}"
                );
                assert!(row.iter().all(|&k| (k as usize) < candidates));
                if kind != PatternType::GlobalLocal {
                    assert_eq!(row.len(), budget(sparsity, candidates));
                }
            }
        }
    }
}

#[test]
fn budget_counts_as_the_issue_says() {
    assert_eq!(budget(0.9, 10), 1);
    assert_eq!(budget(0.9, 11), 2);
    assert_eq!(budget(0.5, 7), 4);
    assert_eq!(budget(0.0, 7), 7);
    assert_eq!(budget(0.99, 3), 1);
}

#[test]
fn local_window_is_nearest_first() {
    let layout = one_token_blocks(PatternType::LocalWindow, 8, false);
    assert_eq!(rows_of(&layout, 0)[4], vec![2, 3, 4, 5]);
    assert_eq!(rows_of(&layout, 0)[0], vec![0, 1, 2, 3]);
}

#[test]
fn global_rows_see_everything() {
    let sparse = SparsePatternConfig::new(PatternType::GlobalLocal)
        .with_block_size(1)
        .with_sparsity_ratio(0.9)
        .with_global_blocks(2);
    let layout = BlockLayout::new(&pattern(&[10], &[1], sparse, false), 10, 1).unwrap();
    let rows = rows_of(&layout, 0);
    assert_eq!(rows[1].len(), 10);
    assert_eq!(rows[7], vec![0, 1, 7]);
}

#[test]
fn random_is_reproducible_and_seeded() {
    let make = |seed| {
        let sparse = SparsePatternConfig::new(PatternType::Random)
            .with_block_size(1)
            .with_sparsity_ratio(0.75)
            .with_seed(seed);
        rows_of(
            &BlockLayout::new(&pattern(&[64], &[1], sparse, false), 64, 1).unwrap(),
            0,
        )
    };
    assert_eq!(make(7), make(7));
    assert_ne!(make(7), make(8));
}

#[test]
fn custom_pairs_are_validated_and_kept() {
    let sparse = SparsePatternConfig::new(PatternType::Custom)
        .with_block_size(4)
        .with_custom_blocks(vec![vec![(0, 0), (3, 1), (3, 3)]]);
    let layout = BlockLayout::new(&pattern(&[16], &[1], sparse.clone(), false), 32, 1).unwrap();
    assert_eq!(
        rows_of(&layout, 0),
        vec![vec![0], vec![], vec![], vec![1, 3]]
    );
    let bad = sparse.with_custom_blocks(vec![vec![(4, 0)]]);
    let err = BlockLayout::new(&pattern(&[16], &[1], bad, false), 32, 1).unwrap_err();
    assert_eq!(
        err,
        AttentionError::CustomBlockOutOfRange {
            branch: 0,
            query_block: 4,
            key_block: 0,
            blocks: 4
        }
    );
}

#[test]
fn classes_follow_head_offsets_and_tails() {
    // n = 100, w = 32, r = 4: 4 segments (the last has 4 tokens), offsets 0..4.
    let sparse = SparsePatternConfig::new(PatternType::Dense).with_block_size(2);
    let layout = BlockLayout::new(&pattern(&[32], &[4], sparse, false), 100, 6).unwrap();
    assert_eq!(layout.classes.len(), 4);
    let c1 = &layout.classes[1];
    assert_eq!(c1.heads, vec![1, 5]);
    assert_eq!((c1.num_segments, c1.full.tokens, c1.full.blocks), (4, 8, 4));
    let tail = c1.tail.as_ref().unwrap();
    assert_eq!((tail.len, tail.tokens, tail.blocks), (4, 1, 1));
    assert_eq!(c1.position(3, 0), 97);
    assert_eq!(c1.gathered(97), Some((3, 0)));
    assert_eq!(c1.gathered(98), None);
    // Offset 3 with a tail of 4 tokens: only position 99.
    assert_eq!(layout.classes[3].tail.as_ref().unwrap().tokens, 1);
}

#[test]
fn stats_count_causal_pairs_exactly() {
    let sparse = SparsePatternConfig::new(PatternType::Dense).with_block_size(4);
    let layout = BlockLayout::new(&pattern(&[10], &[1], sparse, true), 10, 2).unwrap();
    let stats = layout.stats();
    assert_eq!(stats.active_pairs, 2 * 55);
    assert_eq!(stats.active_blocks, 2 * 6);
    assert_eq!(stats.block_density, 1.0);
}

#[test]
fn first_heads_is_the_layout_of_fewer_heads() {
    for kind in PatternType::ALL {
        let mut sparse = SparsePatternConfig::new(kind)
            .with_block_size(8)
            .with_sparsity_ratio(0.5);
        if kind == PatternType::Custom {
            sparse = sparse.with_custom_blocks(vec![vec![(0, 0), (2, 1)]; 3]);
        }
        let p = pattern(&[32, 64, 200], &[1, 2, 4], sparse, true);
        let eight = BlockLayout::new(&p, 200, 8).unwrap();
        for heads in [4, 8] {
            let fewer = BlockLayout::new(&p, 200, heads).unwrap();
            assert_eq!(eight.first_heads(heads), Some(fewer), "{kind:?} {heads}");
        }
        assert_eq!(eight.first_heads(2), None, "rate 4 needs chunks of 4");
        assert_eq!(eight.first_heads(12), None);
    }
}

#[test]
fn transpose_inverts_rows() {
    let layout = one_token_blocks(PatternType::Random, 12, true);
    let rows = &layout.classes[0].full.rows;
    let t = rows.transpose();
    for q in 0..rows.rows() {
        for k in 0..rows.rows() {
            assert_eq!(rows.contains(q, k), t.contains(k, q));
        }
    }
}

#[test]
fn empty_sequence_has_no_segments() {
    let layout = BlockLayout::new(
        &pattern(&[8], &[2], SparsePatternConfig::default(), false),
        0,
        2,
    )
    .unwrap();
    assert!(layout.classes.iter().all(|c| c.num_segments == 0));
    assert_eq!(layout.stats().active_pairs, 0);
}

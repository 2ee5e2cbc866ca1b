//! The blockwise reference and the module equal the naive oracle over a parameter matrix.
//!
//! rstest enumerates `n × pattern type × causal × mask` (every value of each); heads, kv heads,
//! head dim, branches, sparsity and block size cycle with the case so that every value of those
//! is covered too without a full Cartesian product. Tolerance: max abs error ≤ 1e-5 relative to
//! the output scale (f32), lse likewise.

mod common;

use common::{assert_close, cpu, padding_mask, qkv, values};
use dilated_attention::inputs::check_inputs;
use dilated_attention::reference::naive_attention;
use dilated_attention::{BlockLayout, DilatedPattern, PatternType, SparsePatternConfig};
use rstest::rstest;

const HEADS: [(usize, usize); 5] = [(1, 1), (4, 2), (5, 5), (8, 1), (8, 8)];
const HEAD_DIMS: [usize; 3] = [8, 32, 64];
const SPARSITY: [f64; 3] = [0.0, 0.5, 0.9];
const BLOCKS: [usize; 3] = [4, 16, 64];

fn branches(i: usize, n: usize) -> (Vec<usize>, Vec<usize>) {
    match i % 4 {
        0 => (vec![4], vec![1]),
        1 => (vec![8, 16], vec![1, 2]),
        2 => (vec![16, 32, 64], vec![1, 2, 4]),
        _ => (vec![n.max(1)], vec![1]),
    }
}

/// Blocks of the largest segment of each branch at length `n` (custom pairs must stay below).
fn branch_blocks(w: &[usize], r: &[usize], n: usize, block: usize) -> Vec<usize> {
    w.iter()
        .zip(r)
        .map(|(&w, &r)| w.min(n).max(1).div_ceil(r).div_ceil(block))
        .collect()
}

fn sparse_config(
    kind: PatternType,
    sparsity: f64,
    block: usize,
    blocks: &[usize],
) -> SparsePatternConfig {
    let cfg = SparsePatternConfig::new(kind)
        .with_sparsity_ratio(sparsity)
        .with_block_size(block)
        .with_seed(11);
    match kind {
        PatternType::GlobalLocal => cfg.with_global_blocks(1),
        PatternType::Custom => cfg.with_custom_blocks(
            blocks
                .iter()
                .map(|&nb| {
                    [(0, 0), (1, 0), (1, 1), (2, 0), (0, 1), (3, 3)]
                        .into_iter()
                        .filter(|&(q, k)| q < nb && k < nb)
                        .collect()
                })
                .collect(),
        ),
        _ => cfg,
    }
}

#[rstest]
fn reference_equals_naive(
    #[values(0, 1, 17, 64, 100, 256, 1000)] n: usize,
    #[values(
        PatternType::Dense,
        PatternType::LocalWindow,
        PatternType::DilatedSparse,
        PatternType::GlobalLocal,
        PatternType::Random,
        PatternType::Custom
    )]
    kind: PatternType,
    #[values(false, true)] causal: bool,
    #[values(false, true)] masked: bool,
) {
    let case = n + kind as usize * 7 + causal as usize * 3 + masked as usize * 5;
    let (heads, kv_heads) = HEADS[case % HEADS.len()];
    let head_dim = HEAD_DIMS[case % HEAD_DIMS.len()];
    // Keep the O(n²) oracle affordable at n = 1000.
    let head_dim = if n >= 1000 {
        head_dim.min(32)
    } else {
        head_dim
    };
    let (w, r) = branches(case, n);
    let block = BLOCKS[(case / 2) % BLOCKS.len()];
    let sparsity = SPARSITY[(case / 3) % SPARSITY.len()];
    let pattern = DilatedPattern::new(
        &w,
        &r,
        sparse_config(kind, sparsity, block, &branch_blocks(&w, &r, n, block)),
        causal,
    )
    .expect("valid pattern");
    let what = format!(
        "n={n} {kind:?} causal={causal} mask={masked} heads={heads}/{kv_heads} d={head_dim} \
         w={w:?} r={r:?} block={block} sparsity={sparsity}"
    );

    let device = cpu(case as u64);
    let batch = 2;
    let [q, k, v] = qkv([batch, heads, kv_heads, n, head_dim], &device);
    let mask = masked.then(|| padding_mask(batch, n, &device));

    let module =
        dilated_attention::BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
    let (out, lse) = module
        .forward_with_lse(q.clone(), k.clone(), v.clone(), mask.clone())
        .expect("valid inputs");
    assert_eq!(out.dims(), [batch, heads, n, head_dim], "{what}");
    assert_eq!(lse.dims(), [batch, heads, n], "{what}");

    let shape = check_inputs(&q, &k, &v, mask.as_ref()).unwrap();
    let layout = BlockLayout::new(&pattern, n, heads).unwrap();
    let scale = 1.0 / (head_dim as f64).sqrt();
    let (out_ref, lse_ref) = naive_attention(q, k, v, mask, shape, &layout, scale);
    assert_close(&values(out), &values(out_ref), 1e-5, &format!("out {what}"));
    assert_close(&values(lse), &values(lse_ref), 1e-5, &format!("lse {what}"));
}

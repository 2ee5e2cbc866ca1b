//! Which key blocks each query block of a segment keeps, by pattern type (the rules of
//! `docs/semantics.md`). A row costs what it keeps: candidates are walked outwards from the
//! diagonal, random draws use a sparse Fisher–Yates, custom pairs are bucketed once.

use std::collections::BTreeSet;

use super::{BlockRows, SegmentShape};
use crate::pattern::{PatternType, SparsePatternConfig};

/// `max(1, ceil((1 - sparsity) · candidates))`, robust to the rounding of `1 - sparsity`.
pub(super) fn budget(sparsity: f64, candidates: usize) -> usize {
    let keep = ((1.0 - sparsity) * candidates as f64 - 1e-9).ceil() as usize;
    keep.clamp(1, candidates.max(1))
}

pub(super) fn segment_shape(
    sparse: &SparsePatternConfig,
    causal: bool,
    branch: usize,
    offset: usize,
    len: usize,
    tokens: usize,
) -> SegmentShape {
    let blocks = tokens.div_ceil(sparse.block_size);
    let rows = match (&sparse.custom_blocks, sparse.pattern_type) {
        // Custom pairs, bucketed by query block in one pass.
        (Some(custom), PatternType::Custom) => {
            let mut rows = vec![Vec::new(); blocks];
            for &(q, k) in &custom[branch] {
                if q < blocks && k < blocks && !(causal && k > q) {
                    rows[q].push(k as u32);
                }
            }
            BlockRows::from_rows(rows)
        }
        _ => BlockRows::from_rows(
            (0..blocks).map(|q| select_row(sparse, causal, branch, offset, blocks, q)),
        ),
    };
    SegmentShape {
        len,
        tokens,
        blocks,
        rows,
    }
}

/// The key blocks kept by query block `q` of a segment with `nb` blocks.
fn select_row(
    sparse: &SparsePatternConfig,
    causal: bool,
    branch: usize,
    offset: usize,
    nb: usize,
    q: usize,
) -> Vec<u32> {
    let hi = if causal { q + 1 } else { nb };
    let keep = budget(sparse.sparsity_ratio, hi);
    // Candidates by distance to the diagonal, the lower block first on ties, walked outwards
    // from `q` so that a row costs what it keeps, not what it could have kept.
    let nearest = || {
        let reach = q.max(hi.saturating_sub(q + 1));
        (0..=reach).flat_map(move |dist| {
            let below = (dist <= q && q - dist < hi).then(|| q - dist);
            let above = (dist > 0 && q + dist < hi).then_some(q + dist);
            below.into_iter().chain(above)
        })
    };
    let take = |first: Vec<usize>, keep: usize| -> Vec<u32> {
        let mut chosen = BTreeSet::new();
        for k in first.into_iter().chain(nearest()) {
            if chosen.len() >= keep {
                break;
            }
            chosen.insert(k as u32);
        }
        chosen.into_iter().collect()
    };
    match sparse.pattern_type {
        PatternType::Dense => (0..hi as u32).collect(),
        PatternType::LocalWindow => take(vec![q], keep),
        PatternType::DilatedSparse => {
            let offsets: Vec<usize> = match &sparse.block_dilation_rates {
                Some(rates) => rates.clone(),
                None => (0..usize::BITS)
                    .map(|p| 1usize << p)
                    .take_while(|&d| d < nb)
                    .collect(),
            };
            let mut first = vec![q];
            for d in offsets {
                // Checked: an offset past every block (up to `usize::MAX`) selects nothing.
                for k in [q.checked_sub(d), q.checked_add(d)].into_iter().flatten() {
                    if k < hi {
                        first.push(k);
                    }
                }
            }
            match &sparse.block_dilation_rates {
                Some(_) => first.into_iter().map(|k| k as u32).collect(),
                None => take(first, keep),
            }
        }
        PatternType::GlobalLocal => {
            let g = sparse.global_blocks.min(hi);
            if q < sparse.global_blocks {
                (0..hi as u32).collect()
            } else {
                let first: Vec<usize> = core::iter::once(q).chain(0..g).collect();
                let keep = keep.max(first.len());
                take(first, keep)
            }
        }
        PatternType::Random => {
            let mut rng = SplitMix64::new(
                sparse.seed ^ mix(&[branch as u64, offset as u64, nb as u64, q as u64]),
            );
            // Partial Fisher–Yates over the candidates other than `q` (`0..hi` without `q`,
            // in order), on a sparse view of the array: only the swapped slots are stored, so
            // a row costs `O(keep)`; the draw is the one a dense array would give.
            let others = hi - usize::from(q < hi);
            let slot = |i: usize| if i < q { i } else { i + 1 };
            let mut swapped: std::collections::HashMap<usize, usize> = Default::default();
            let mut drawn = Vec::with_capacity(keep);
            for i in 0..(keep - 1).min(others) {
                let j = i + (rng.next() % (others - i) as u64) as usize;
                let at_j = swapped.get(&j).copied().unwrap_or_else(|| slot(j));
                let at_i = swapped.get(&i).copied().unwrap_or_else(|| slot(i));
                swapped.insert(j, at_i);
                drawn.push(at_j);
            }
            drawn.push(q);
            drawn.into_iter().map(|k| k as u32).collect()
        }
        // Bucketed by `segment_shape`.
        PatternType::Custom => Vec::new(),
    }
}

fn mix(words: &[u64]) -> u64 {
    words.iter().fold(0x9E37_79B9_7F4A_7C15, |h, &w| {
        SplitMix64::new(h ^ w.wrapping_mul(0xA24B_AED4_963E_E407)).next()
    })
}

/// A tiny, well-mixed PRNG, so the `random` layout is reproducible on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

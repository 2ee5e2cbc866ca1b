//! The ring schedule: which query chunk meets which key/value chunk at which step.
//!
//! The sequence is split among `P` holders ([`Partition`]). Each holder keeps its query tokens;
//! key/value chunks travel around the ring, so at step `t` holder `r` sees the chunk of holder
//! `(r - t) mod P`. For every holder and step the schedule counts, from the block layout, the
//! block pairs and token pairs that meet there (a step with none is skipped), the bytes of the
//! visiting chunk that the step really needs (only the gathered rows of the dilated branches),
//! and each holder's total work, whose `max / mean` is the imbalance factor.

use serde::{Deserialize, Serialize};

use crate::error::{AttentionError, Result};
use crate::layout::BlockLayout;

/// Most holders a ring may have.
pub const MAX_HOLDERS: usize = 64;

/// How the tokens are split among the holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// Holder `r` owns `[r·n/P, (r+1)·n/P)`.
    Contiguous,
    /// `2P` equal chunks; holder `r` owns chunks `r` and `2P - 1 - r` (balances causal work).
    Zigzag,
    /// Token `i` belongs to holder `i mod P`.
    Striped,
}

impl Partition {
    /// The holder of token `i` among `p` holders of a sequence of `n` tokens; `None` without
    /// holders or for a token past the sequence.
    pub fn owner(self, i: usize, n: usize, p: usize) -> Option<usize> {
        (p > 0 && i < n).then(|| self.owner_of(i, n, p))
    }

    /// [`owner`](Self::owner) for `p >= 1` and `i < n`.
    pub(crate) fn owner_of(self, i: usize, n: usize, p: usize) -> usize {
        match self {
            Self::Contiguous => (i * p / n.max(1)).min(p - 1),
            Self::Zigzag => {
                let c = (i * 2 * p / n.max(1)).min(2 * p - 1);
                if c < p { c } else { 2 * p - 1 - c }
            }
            Self::Striped => i % p,
        }
    }
}

/// One step of one holder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RingStep {
    /// Step index `t`.
    pub step: usize,
    /// The holder computing (its query tokens).
    pub holder: usize,
    /// The holder whose key/value chunk visits at this step: `(holder - step) mod P`.
    pub kv_owner: usize,
    /// Block pairs with at least one token pair here (summed over heads).
    pub active_blocks: u64,
    /// Token pairs computed here (summed over heads and branches).
    pub pairs: u64,
    /// Bytes of the visiting chunk this step needs: its key tokens that some query of the holder
    /// sees in some branch, times `kv_heads · head_dim · 2 (k and v) · element size`.
    pub bytes_needed: u64,
    /// Bytes of the whole visiting chunk (what a plain ring moves).
    pub bytes_full: u64,
}

impl RingStep {
    /// Whether the step has nothing to compute.
    pub fn skipped(&self) -> bool {
        self.pairs == 0
    }
}

/// The schedule of a layout over `P` holders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingSchedule {
    /// Sequence length.
    pub n: usize,
    /// Number of holders `P`.
    pub holders: usize,
    /// How tokens are split.
    pub partition: Partition,
    /// `steps[holder][step]`.
    pub steps: Vec<Vec<RingStep>>,
}

impl RingSchedule {
    /// Builds the schedule of `layout` over `holders` holders; `kv_heads`, `head_dim` and
    /// `elem_bytes` only scale the byte counts.
    pub fn new(
        layout: &BlockLayout,
        holders: usize,
        partition: Partition,
        kv_heads: usize,
        head_dim: usize,
        elem_bytes: usize,
    ) -> Result<Self> {
        if holders == 0 {
            return Err(AttentionError::ZeroValue {
                field: "ring_size".into(),
            });
        }
        let (n, p, bs) = (layout.n, holders, layout.block_size);
        // needed[j] below has bit r set when a query of holder r sees key j (P <= 64); checked
        // before anything of size P² is allocated.
        if p > MAX_HOLDERS {
            return Err(AttentionError::Invalid {
                field: "ring_size",
                rule: format!("at most {MAX_HOLDERS} holders, got {p}"),
            });
        }
        let owner: Vec<usize> = (0..n).map(|i| partition.owner_of(i, n, p)).collect();
        let mut pairs = vec![0u64; p * p];
        let mut blocks = vec![0u64; p * p];
        let mut needed = vec![0u64; n];
        for class in &layout.classes {
            let h = class.heads.len() as u64;
            for seg in 0..class.num_segments {
                let shape = class.segment(seg);
                let tokens_of = |b: usize| {
                    (b * bs..((b + 1) * bs).min(shape.tokens)).map(move |t| class.position(seg, t))
                };
                let hist = |b: usize| {
                    let mut hist = vec![0u64; p];
                    for i in tokens_of(b) {
                        hist[owner[i]] += 1;
                    }
                    hist
                };
                let hists: Vec<Vec<u64>> = (0..shape.blocks).map(hist).collect();
                for qb in 0..shape.blocks {
                    let q_mask = hists[qb]
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .fold(0u64, |m, (r, _)| m | (1 << r));
                    for &kb in shape.rows.row(qb) {
                        let kb = kb as usize;
                        let mut here = vec![0u64; p * p];
                        if layout.causal && kb == qb {
                            let qs: Vec<usize> = tokens_of(qb).collect();
                            for (a, &i) in qs.iter().enumerate() {
                                for &j in &qs[..=a] {
                                    here[owner[i] * p + owner[j]] += 1;
                                }
                            }
                        } else if !layout.causal || kb < qb {
                            for (rq, &cq) in hists[qb].iter().enumerate() {
                                for (rk, &ck) in hists[kb].iter().enumerate() {
                                    here[rq * p + rk] += cq * ck;
                                }
                            }
                        }
                        for (cell, &c) in here.iter().enumerate() {
                            pairs[cell] += h * c;
                            blocks[cell] += h * u64::from(c > 0);
                        }
                        for j in tokens_of(kb) {
                            needed[j] |= q_mask;
                        }
                    }
                }
            }
        }
        let row_bytes = (kv_heads * head_dim * 2 * elem_bytes) as u64;
        let mut chunk_tokens = vec![0u64; p];
        let mut needed_tokens = vec![0u64; p * p];
        for (j, &mask) in needed.iter().enumerate() {
            chunk_tokens[owner[j]] += 1;
            for r in 0..p {
                if mask & (1 << r) != 0 {
                    needed_tokens[r * p + owner[j]] += 1;
                }
            }
        }
        let steps = (0..p)
            .map(|r| {
                (0..p)
                    .map(|t| {
                        let s = (r + p - t) % p;
                        RingStep {
                            step: t,
                            holder: r,
                            kv_owner: s,
                            active_blocks: blocks[r * p + s],
                            pairs: pairs[r * p + s],
                            bytes_needed: needed_tokens[r * p + s] * row_bytes,
                            bytes_full: chunk_tokens[s] * row_bytes,
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            n,
            holders: p,
            partition,
            steps,
        })
    }

    /// Token pairs each holder computes.
    pub fn work(&self) -> Vec<u64> {
        self.steps
            .iter()
            .map(|s| s.iter().map(|st| st.pairs).sum())
            .collect()
    }

    /// `max / mean` of the holders' work (1 is perfect balance).
    pub fn imbalance(&self) -> f64 {
        let work = self.work();
        let total: u64 = work.iter().sum();
        if total == 0 {
            return 1.0;
        }
        let max = *work.iter().max().expect("at least one holder") as f64;
        max * work.len() as f64 / total as f64
    }

    /// Steps with nothing to compute, over all holders.
    pub fn skipped_steps(&self) -> usize {
        self.steps.iter().flatten().filter(|s| s.skipped()).count()
    }

    /// `(needed, full)` bytes moved over the whole ring (step 0 moves nothing: the holder's
    /// own chunk).
    pub fn bytes_moved(&self) -> (u64, u64) {
        self.steps
            .iter()
            .flatten()
            .filter(|s| s.step > 0)
            .fold((0, 0), |(a, b), s| (a + s.bytes_needed, b + s.bytes_full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{DilatedPattern, PatternType, SparsePatternConfig};
    use rstest::rstest;

    fn layout(w: &[usize], r: &[usize], kind: PatternType, causal: bool, n: usize) -> BlockLayout {
        let sparse = SparsePatternConfig::new(kind)
            .with_block_size(8)
            .with_sparsity_ratio(0.5);
        BlockLayout::new(&DilatedPattern::new(w, r, sparse, causal).unwrap(), n, 5).unwrap()
    }

    #[rstest]
    fn partitions_own_every_token_once(
        #[values(Partition::Contiguous, Partition::Zigzag, Partition::Striped)] part: Partition,
        #[values(1, 2, 3, 8)] p: usize,
    ) {
        let n = 100;
        let mut count = vec![0; p];
        for i in 0..n {
            count[part.owner(i, n, p).unwrap()] += 1;
        }
        assert_eq!(count.iter().sum::<usize>(), n);
        assert!(count.iter().all(|&c| c >= n / p - 2), "{part:?} {count:?}");
    }

    #[rstest]
    fn every_active_pair_is_computed_exactly_once(
        #[values(Partition::Contiguous, Partition::Zigzag, Partition::Striped)] part: Partition,
        #[values(1, 2, 4, 8)] p: usize,
        #[values(false, true)] causal: bool,
    ) {
        let l = layout(
            &[32, 64, 200],
            &[1, 2, 4],
            PatternType::DilatedSparse,
            causal,
            200,
        );
        let s = RingSchedule::new(&l, p, part, 5, 64, 2).unwrap();
        assert_eq!(s.work().iter().sum::<u64>(), l.stats().active_pairs);
        for (r, steps) in s.steps.iter().enumerate() {
            let owners: std::collections::BTreeSet<usize> =
                steps.iter().map(|st| st.kv_owner).collect();
            assert_eq!(owners.len(), p, "holder {r} meets every chunk once");
            for st in steps {
                assert_eq!(st.skipped(), st.active_blocks == 0);
                assert!(st.bytes_needed <= st.bytes_full);
            }
        }
    }

    #[test]
    fn a_token_level_check_of_one_step() {
        // Brute force over token pairs with BlockLayout::allows.
        let l = layout(&[24, 60], &[1, 3], PatternType::Random, true, 60);
        let (p, part) = (3, Partition::Zigzag);
        let s = RingSchedule::new(&l, p, part, 1, 1, 1).unwrap();
        for (r, steps) in s.steps.iter().enumerate() {
            for st in steps {
                let mut pairs = 0u64;
                for h in 0..l.heads {
                    for i in (0..60).filter(|&i| part.owner(i, 60, p) == Some(r)) {
                        for j in (0..60).filter(|&j| part.owner(j, 60, p) == Some(st.kv_owner)) {
                            pairs += (0..l.branches.len())
                                .filter(|&b| l.allows(b, h, i, j))
                                .count() as u64;
                        }
                    }
                }
                assert_eq!(st.pairs, pairs, "holder {r} step {}", st.step);
            }
        }
    }

    #[test]
    fn zigzag_balances_causal_work() {
        let l = layout(&[1024], &[1], PatternType::Dense, true, 1024);
        for p in [2, 4, 8] {
            let contiguous = RingSchedule::new(&l, p, Partition::Contiguous, 1, 64, 2).unwrap();
            let zigzag = RingSchedule::new(&l, p, Partition::Zigzag, 1, 64, 2).unwrap();
            assert!(contiguous.imbalance() > 1.3, "{}", contiguous.imbalance());
            assert!(zigzag.imbalance() < 1.1, "{}", zigzag.imbalance());
        }
    }

    #[test]
    fn dilated_steps_need_fewer_bytes_and_empty_steps_are_skipped() {
        // Local segments of 64 over 4 contiguous chunks of 64: only step 0 has work.
        let l = layout(&[64], &[4], PatternType::Dense, false, 256);
        let s = RingSchedule::new(&l, 4, Partition::Contiguous, 2, 64, 2).unwrap();
        assert_eq!(s.skipped_steps(), 4 * 3);
        assert_eq!(s.bytes_moved().0, 0);
        // One branch (256, 4) over striped holders: heads 0..5 select offsets 0..3, so every
        // key is needed, but a branch (256, 4) with one head reads a quarter of each chunk.
        let one_head = BlockLayout::new(
            &DilatedPattern::new(
                &[256],
                &[4],
                SparsePatternConfig::new(PatternType::Dense).with_block_size(8),
                false,
            )
            .unwrap(),
            256,
            1,
        )
        .unwrap();
        let s = RingSchedule::new(&one_head, 4, Partition::Contiguous, 1, 64, 2).unwrap();
        let (needed, full) = s.bytes_moved();
        assert_eq!(needed * 4, full);
    }

    #[test]
    fn zero_holders_is_an_error() {
        let l = layout(&[32], &[1], PatternType::Dense, false, 32);
        let err = RingSchedule::new(&l, 0, Partition::Zigzag, 1, 1, 1).unwrap_err();
        assert_eq!(err.field(), "ring_size");
    }
}

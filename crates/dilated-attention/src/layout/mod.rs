//! The block layout a [`DilatedPattern`] induces at a given sequence length.
//!
//! For every branch `b` and every head class `s = h mod r_b` in use, tokens of each segment are
//! gathered (`t = ((i mod w_b) - s) / r_b`) and cut into blocks of `block_size`. Every segment of
//! the same length has the same blocks, so a class stores one [`SegmentShape`] for its full
//! segments and one for the partial tail segment. Rows are compressed (CSR-like) lists of key
//! blocks per query block, sorted ascending.

use serde::{Deserialize, Serialize};

use crate::error::{AttentionError, Result};
use crate::pattern::{Branch, DilatedPattern};

mod rows;
mod select;

pub use rows::BlockRows;
#[cfg(test)]
use select::budget;
use select::segment_shape;

/// The blocks of one segment, in the gathered coordinates of its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentShape {
    /// Raw tokens in the segment (`w_b`, or fewer for the tail segment).
    pub len: usize,
    /// Gathered tokens: positions `s, s + r, s + 2r, …` below `len`.
    pub tokens: usize,
    /// Number of blocks: `ceil(tokens / block_size)`.
    pub blocks: usize,
    /// The kept block pairs.
    pub rows: BlockRows,
}

/// The layout of one branch for one head class `s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassLayout {
    /// Index of the branch in the pattern.
    pub branch: usize,
    /// The branch offset `s` shared by the class's heads.
    pub offset: usize,
    /// The query heads of the class (`h mod r_b == s`), ascending.
    pub heads: Vec<usize>,
    /// Segment length in effect (`min(w_b, n)`).
    pub segment_length: usize,
    /// Dilation rate `r_b`.
    pub dilation_rate: usize,
    /// Number of segments, the tail included.
    pub num_segments: usize,
    /// Shape of a full segment.
    pub full: SegmentShape,
    /// Shape of the last, partial segment when `n` is not a multiple of the segment length.
    pub tail: Option<SegmentShape>,
}

impl ClassLayout {
    /// The shape of segment `segment`.
    pub fn segment(&self, segment: usize) -> &SegmentShape {
        match &self.tail {
            Some(tail) if segment + 1 == self.num_segments => tail,
            _ => &self.full,
        }
    }

    /// The raw token position of gathered token `t` in segment `segment`.
    pub fn position(&self, segment: usize, t: usize) -> usize {
        segment * self.segment_length + self.offset + t * self.dilation_rate
    }

    /// Whether this class gathers every token of every one of `heads` query heads (dilation 1,
    /// offset 0, all heads): its kernels then write every row of `out`, `lse` and the
    /// gradients, so buffers need no fill beforehand.
    pub(crate) fn covers_every_row(&self, heads: usize) -> bool {
        self.dilation_rate == 1 && self.offset == 0 && self.heads.len() == heads
    }

    /// Where raw token `i` lands in this class: `(segment, t)`, or `None` if the class skips it.
    pub fn gathered(&self, i: usize) -> Option<(usize, usize)> {
        let segment = i / self.segment_length;
        let local = i % self.segment_length;
        (local >= self.offset && (local - self.offset).is_multiple_of(self.dilation_rate))
            .then(|| (segment, (local - self.offset) / self.dilation_rate))
    }
}

/// Counts that state what a layout really computes, for benchmarks and docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayoutStats {
    /// Sequence length.
    pub n: usize,
    /// Query heads.
    pub heads: usize,
    /// Kept block pairs, summed over heads, segments and branches.
    pub active_blocks: u64,
    /// Block pairs that rules 1–2 allow (what a `dense` layout would keep), same sums.
    pub candidate_blocks: u64,
    /// Query–key token pairs computed, summed over heads and branches (a pair in two branches
    /// counts twice). Attention FLOPs are `4 · head_dim · active_pairs`.
    pub active_pairs: u64,
    /// `active_pairs / (heads · n²)`: the density against dense, non-causal attention.
    pub density: f64,
    /// `active_blocks / candidate_blocks`.
    pub block_density: f64,
    /// Longest row of key blocks over all classes.
    pub max_row_blocks: usize,
}

/// The block layout of a pattern at sequence length `n` for `heads` query heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockLayout {
    /// Sequence length.
    pub n: usize,
    /// Query heads.
    pub heads: usize,
    /// Block edge in gathered tokens.
    pub block_size: usize,
    /// Whether rule 2 (`j <= i`) applies.
    pub causal: bool,
    /// The branches of the pattern.
    pub branches: Vec<Branch>,
    /// One entry per (branch, head class in use), branch-major, offsets ascending.
    pub classes: Vec<ClassLayout>,
}

impl BlockLayout {
    /// Builds the layout of `pattern` at length `n` for `heads` query heads.
    ///
    /// Fails if the pattern is invalid, `heads` is 0, or a `custom` pair lies outside the
    /// blocks of its branch's largest segment at this `n`.
    pub fn new(pattern: &DilatedPattern, n: usize, heads: usize) -> Result<Self> {
        pattern.validate()?;
        if heads == 0 {
            return Err(AttentionError::ZeroValue {
                field: "heads".into(),
            });
        }
        let sparse = &pattern.sparse;
        let bs = sparse.block_size;
        let mut classes = Vec::new();
        for (bi, branch) in pattern.branches.iter().enumerate() {
            let w = branch.segment_length.min(n).max(1);
            let r = branch.dilation_rate;
            if let Some(custom) = &sparse.custom_blocks {
                let blocks = gathered_tokens(w, 0, r).div_ceil(bs);
                if let Some(&(q, k)) = custom[bi]
                    .iter()
                    .find(|&&(q, k)| q >= blocks || k >= blocks)
                {
                    return Err(AttentionError::CustomBlockOutOfRange {
                        branch: bi,
                        query_block: q,
                        key_block: k,
                        blocks,
                    });
                }
            }
            let num_segments = n.div_ceil(w);
            let tail_len = n % w;
            for s in 0..r.min(heads) {
                let heads_of_class: Vec<usize> = (s..heads).step_by(r).collect();
                let shape = |len: usize| {
                    segment_shape(
                        sparse,
                        pattern.causal,
                        bi,
                        s,
                        len,
                        gathered_tokens(len, s, r),
                    )
                };
                classes.push(ClassLayout {
                    branch: bi,
                    offset: s,
                    heads: heads_of_class,
                    segment_length: w,
                    dilation_rate: r,
                    num_segments,
                    full: shape(w),
                    tail: (tail_len > 0).then(|| shape(tail_len)),
                });
            }
        }
        Ok(Self {
            n,
            heads,
            block_size: bs,
            causal: pattern.causal,
            branches: pattern.branches.clone(),
            classes,
        })
    }

    /// Host bytes the layout holds (its block rows).
    pub fn host_bytes(&self) -> usize {
        let rows = |r: &BlockRows| 4 * (r.row_ptr.len() + r.cols.len());
        self.classes
            .iter()
            .map(|c| {
                rows(&c.full.rows)
                    + c.tail.as_ref().map_or(0, |t| rows(&t.rows))
                    + 8 * c.heads.len()
                    + size_of::<ClassLayout>()
            })
            .sum::<usize>()
            + size_of::<Self>()
    }

    /// The layout of this one's first `heads` query heads — what [`new`](Self::new) builds for
    /// `heads` — where `heads` is at most `self.heads` and a multiple of every branch's
    /// dilation rate (then every head class keeps heads, and head `j` of a chunk of `heads`
    /// starting at a multiple of `heads` falls into the class of head `j`); `None` otherwise.
    pub(crate) fn first_heads(&self, heads: usize) -> Option<BlockLayout> {
        let divides = self
            .branches
            .iter()
            .all(|b| heads.is_multiple_of(b.dilation_rate));
        if heads == 0 || heads > self.heads || !divides {
            return None;
        }
        let mut layout = self.clone();
        layout.heads = heads;
        for class in &mut layout.classes {
            class.heads.retain(|&h| h < heads);
        }
        Some(layout)
    }

    /// Real block and token-pair counts and the density against dense attention.
    pub fn stats(&self) -> LayoutStats {
        let mut active_blocks = 0u64;
        let mut candidate_blocks = 0u64;
        let mut active_pairs = 0u64;
        let mut max_row_blocks = 0;
        for class in &self.classes {
            let h = class.heads.len() as u64;
            for seg in 0..class.num_segments {
                let shape = class.segment(seg);
                let nb = shape.blocks as u64;
                active_blocks += h * shape.rows.nnz() as u64;
                candidate_blocks += h * if self.causal {
                    nb * (nb + 1) / 2
                } else {
                    nb * nb
                };
                max_row_blocks = max_row_blocks.max(shape.rows.max_row());
                for q in 0..shape.blocks {
                    for &k in shape.rows.row(q) {
                        active_pairs += h * self.block_pairs(shape, q, k as usize);
                    }
                }
            }
        }
        let dense = (self.heads as f64) * (self.n as f64) * (self.n as f64);
        LayoutStats {
            n: self.n,
            heads: self.heads,
            active_blocks,
            candidate_blocks,
            active_pairs,
            density: if dense > 0.0 {
                active_pairs as f64 / dense
            } else {
                0.0
            },
            block_density: if candidate_blocks > 0 {
                active_blocks as f64 / candidate_blocks as f64
            } else {
                0.0
            },
            max_row_blocks,
        }
    }

    /// Token pairs inside block pair `(q, k)` of a segment that rules 1–2 allow.
    fn block_pairs(&self, shape: &SegmentShape, q: usize, k: usize) -> u64 {
        let bs = self.block_size;
        let len = |b: usize| (shape.tokens - b * bs).min(bs) as u64;
        let (rows, cols) = (len(q), len(k));
        match (self.causal, k.cmp(&q)) {
            (true, core::cmp::Ordering::Equal) => rows * (rows + 1) / 2,
            (true, core::cmp::Ordering::Greater) => 0,
            _ => rows * cols,
        }
    }

    /// Whether branch `branch` lets query `i` of head `head` see key `j` (rules 1, 2 and 4;
    /// padding, rule 3, depends on the input). The direct reading of `docs/semantics.md`, used
    /// by the naive oracle.
    pub fn allows(&self, branch: usize, head: usize, i: usize, j: usize) -> bool {
        let r = self.branches[branch].dilation_rate;
        let Some(class) = self
            .classes
            .iter()
            .find(|c| c.branch == branch && c.offset == head % r)
        else {
            return false;
        };
        if self.causal && j > i {
            return false;
        }
        match (class.gathered(i), class.gathered(j)) {
            (Some((si, ti)), Some((sj, tj))) if si == sj => class
                .segment(si)
                .rows
                .contains(ti / self.block_size, tj / self.block_size),
            _ => false,
        }
    }
}

/// Positions `s, s + r, …` below `len`.
fn gathered_tokens(len: usize, s: usize, r: usize) -> usize {
    if len > s { (len - s).div_ceil(r) } else { 0 }
}

impl crate::cache::CacheSize for BlockLayout {
    fn cache_bytes(&self) -> usize {
        self.host_bytes()
    }
}

#[cfg(test)]
mod tests;

//! The sparse pattern: which branches `(w_b, r_b)` exist and which block layout each branch keeps.
//!
//! A [`DilatedPattern`] is pure configuration (serde-serialisable, validated by
//! [`DilatedPattern::validate`]); [`crate::layout`] turns it into the blocks of a given sequence
//! length. The rules are written out in `docs/semantics.md`.

use serde::{Deserialize, Serialize};

use crate::error::{AttentionError, Result};

/// Largest supported `block_size`.
pub const MAX_BLOCK_SIZE: usize = 1024;

/// One branch of the pattern: tokens are split into segments of `segment_length`, and inside a
/// segment every `dilation_rate`-th token takes part (starting at `head % dilation_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Branch {
    /// Segment length `w_b` (tokens). A segment longer than the sequence covers all of it.
    pub segment_length: usize,
    /// Dilation rate `r_b`: one token in `r_b` of each segment takes part.
    pub dilation_rate: usize,
}

impl Branch {
    /// A branch `(w, r)`.
    pub fn new(segment_length: usize, dilation_rate: usize) -> Self {
        Self {
            segment_length,
            dilation_rate,
        }
    }

    /// The branch offset of head `head`: `s = head mod r` (LongNet); `None` for a branch whose
    /// rate is 0 (which validation refuses).
    pub fn offset(&self, head: usize) -> Option<usize> {
        head.checked_rem(self.dilation_rate)
    }
}

/// How the blocks of a branch are chosen. See `docs/semantics.md` for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// Every candidate block; `sparsity_ratio` is ignored.
    Dense,
    /// The blocks nearest to the diagonal.
    LocalWindow,
    /// The diagonal, then block offsets ±1, ±2, ±4, … (or the explicit `block_dilation_rates`).
    #[default]
    DilatedSparse,
    /// The first `global_blocks` key blocks of the segment plus a local window; the global query
    /// blocks see every key block of their segment.
    GlobalLocal,
    /// The diagonal plus blocks drawn at random, reproducibly from `seed`.
    Random,
    /// The pairs listed in `custom_blocks`.
    Custom,
}

impl PatternType {
    /// Every pattern type, in declaration order.
    pub const ALL: [PatternType; 6] = [
        PatternType::Dense,
        PatternType::LocalWindow,
        PatternType::DilatedSparse,
        PatternType::GlobalLocal,
        PatternType::Random,
        PatternType::Custom,
    ];
}

/// The block layout of every branch: pattern type, budget and block size.
///
/// `sparsity_ratio` is the fraction of candidate key blocks dropped in each query-block row
/// (0.9 keeps one block in ten); a row keeps `max(1, ceil((1 - sparsity_ratio) * candidates))`
/// blocks and always its diagonal block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparsePatternConfig {
    /// How blocks are chosen. Default: `dilated_sparse`.
    pub pattern_type: PatternType,
    /// Fraction of candidate key blocks dropped per row, in `[0, 1)`. Default: `0.9`.
    pub sparsity_ratio: f64,
    /// Block edge in gathered tokens; a power of two in `1..=1024`. Default: `64`.
    pub block_size: usize,
    /// `dilated_sparse` only: explicit block offsets; `[1, 2, 4]` keeps offsets 0, ±1, ±2, ±4 and
    /// overrides the budget. Default: none (offsets ±1, ±2, ±4, … until the budget is met).
    pub block_dilation_rates: Option<Vec<usize>>,
    /// `global_local` only: number of global blocks at the start of each segment. Default: `1`.
    pub global_blocks: usize,
    /// `random` only: seed of the draw. Default: `0`.
    pub seed: u64,
    /// `custom` only: for each branch, the `(query_block, key_block)` pairs kept in every segment,
    /// in the branch's gathered block coordinates. Default: none.
    pub custom_blocks: Option<Vec<Vec<(usize, usize)>>>,
}

impl Default for SparsePatternConfig {
    fn default() -> Self {
        Self {
            pattern_type: PatternType::DilatedSparse,
            sparsity_ratio: 0.9,
            block_size: 64,
            block_dilation_rates: None,
            global_blocks: 1,
            seed: 0,
            custom_blocks: None,
        }
    }
}

impl SparsePatternConfig {
    /// A config of the given type with the other fields at their defaults.
    pub fn new(pattern_type: PatternType) -> Self {
        Self {
            pattern_type,
            ..Self::default()
        }
    }

    /// Sets `sparsity_ratio`.
    pub fn with_sparsity_ratio(mut self, sparsity_ratio: f64) -> Self {
        self.sparsity_ratio = sparsity_ratio;
        self
    }

    /// Sets `block_size`.
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets `block_dilation_rates`.
    pub fn with_block_dilation_rates(mut self, rates: Vec<usize>) -> Self {
        self.block_dilation_rates = Some(rates);
        self
    }

    /// Sets `global_blocks`.
    pub fn with_global_blocks(mut self, global_blocks: usize) -> Self {
        self.global_blocks = global_blocks;
        self
    }

    /// Sets `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `custom_blocks` (one list of pairs per branch).
    pub fn with_custom_blocks(mut self, blocks: Vec<Vec<(usize, usize)>>) -> Self {
        self.custom_blocks = Some(blocks);
        self
    }

    /// Checks the fields that do not depend on the branches.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.sparsity_ratio) {
            return Err(AttentionError::SparsityOutOfRange {
                value: self.sparsity_ratio,
            });
        }
        if self.block_size == 0 {
            return Err(AttentionError::ZeroValue {
                field: "block_size".into(),
            });
        }
        if !self.block_size.is_power_of_two() || self.block_size > MAX_BLOCK_SIZE {
            return Err(AttentionError::UnsupportedBlockSize {
                block_size: self.block_size,
            });
        }
        if let Some(rates) = &self.block_dilation_rates {
            if self.pattern_type != PatternType::DilatedSparse {
                return Err(AttentionError::InvalidPatternOption {
                    field: "block_dilation_rates",
                    rule: "only applies to pattern_type dilated_sparse".into(),
                });
            }
            if let Some(i) = rates.iter().position(|&d| d == 0) {
                return Err(AttentionError::ZeroValue {
                    field: format!("block_dilation_rates[{i}]"),
                });
            }
        }
        match (self.pattern_type, &self.custom_blocks) {
            (PatternType::Custom, None) => Err(AttentionError::InvalidPatternOption {
                field: "custom_blocks",
                rule: "pattern_type custom needs one list of (query_block, key_block) pairs \
                       per branch"
                    .into(),
            }),
            (PatternType::Custom, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err(AttentionError::InvalidPatternOption {
                field: "custom_blocks",
                rule: "only applies to pattern_type custom".into(),
            }),
        }
    }
}

/// A full pattern: branches, block layout and causality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DilatedPattern {
    /// The branches `(w_b, r_b)`.
    pub branches: Vec<Branch>,
    /// The block layout shared by all branches.
    pub sparse: SparsePatternConfig,
    /// Whether query `i` only sees keys `j <= i`.
    pub causal: bool,
}

impl DilatedPattern {
    /// Builds and validates a pattern from the prototype's two lists.
    pub fn new(
        segment_lengths: &[usize],
        dilation_rates: &[usize],
        sparse: SparsePatternConfig,
        causal: bool,
    ) -> Result<Self> {
        if segment_lengths.len() != dilation_rates.len() {
            return Err(AttentionError::BranchLengthMismatch {
                segment_lengths: segment_lengths.len(),
                dilation_rates: dilation_rates.len(),
            });
        }
        let pattern = Self {
            branches: segment_lengths
                .iter()
                .zip(dilation_rates)
                .map(|(&w, &r)| Branch::new(w, r))
                .collect(),
            sparse,
            causal,
        };
        pattern.validate()?;
        Ok(pattern)
    }

    /// One branch covering the whole sequence, undilated: plain attention under `sparse`.
    pub fn single(sparse: SparsePatternConfig, causal: bool) -> Self {
        Self {
            branches: vec![Branch::new(usize::MAX, 1)],
            sparse,
            causal,
        }
    }

    /// The old Python prototype's layout, the benchmarks' `seed` preset: one branch over the
    /// whole sequence, `dilated_sparse` blocks of `block_size` with block offsets 0, ±1, ±2, ±4
    /// (`block_dilation_rates = [1, 2, 4]`).
    pub fn seed(block_size: usize, causal: bool) -> Self {
        Self::single(
            SparsePatternConfig::new(PatternType::DilatedSparse)
                .with_block_size(block_size)
                .with_block_dilation_rates(vec![1, 2, 4]),
            causal,
        )
    }

    /// LongNet's branches for `n` tokens, the benchmarks' `longnet` preset: segments
    /// `[n/4, n/2, n]` (at least 1) with dilation rates `[1, 2, 4]`, dense blocks of
    /// `block_size`.
    pub fn longnet(n: usize, block_size: usize, causal: bool) -> Result<Self> {
        Self::new(
            &[(n / 4).max(1), (n / 2).max(1), n.max(1)],
            &[1, 2, 4],
            SparsePatternConfig::new(PatternType::Dense).with_block_size(block_size),
            causal,
        )
    }

    /// Checks every rule that does not depend on the sequence length.
    pub fn validate(&self) -> Result<()> {
        if self.branches.is_empty() {
            return Err(AttentionError::NoBranches);
        }
        for (i, b) in self.branches.iter().enumerate() {
            if b.segment_length == 0 {
                return Err(AttentionError::ZeroValue {
                    field: format!("segment_lengths[{i}]"),
                });
            }
            if b.dilation_rate == 0 {
                return Err(AttentionError::ZeroValue {
                    field: format!("dilation_rates[{i}]"),
                });
            }
        }
        self.sparse.validate()?;
        if let Some(custom) = &self.sparse.custom_blocks
            && custom.len() != self.branches.len()
        {
            return Err(AttentionError::InvalidPatternOption {
                field: "custom_blocks",
                rule: format!(
                    "needs one list per branch ({} lists for {} branches)",
                    custom.len(),
                    self.branches.len()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn presets_have_the_documented_branches() {
        let seed = DilatedPattern::seed(128, true);
        assert_eq!(seed.branches, vec![Branch::new(usize::MAX, 1)]);
        assert_eq!(seed.sparse.pattern_type, PatternType::DilatedSparse);
        assert_eq!(seed.sparse.block_dilation_rates, Some(vec![1, 2, 4]));
        assert_eq!((seed.sparse.block_size, seed.causal), (128, true));
        let longnet = DilatedPattern::longnet(4096, 64, false).unwrap();
        let branches = [(1024, 1), (2048, 2), (4096, 4)].map(|(w, r)| Branch::new(w, r));
        assert_eq!(longnet.branches, branches.to_vec());
        assert_eq!(longnet.sparse.pattern_type, PatternType::Dense);
        assert_eq!((longnet.sparse.block_size, longnet.causal), (64, false));
    }

    #[test]
    fn mismatched_lists_are_rejected() {
        let err =
            DilatedPattern::new(&[8, 16], &[1], SparsePatternConfig::default(), false).unwrap_err();
        assert_eq!(
            err,
            AttentionError::BranchLengthMismatch {
                segment_lengths: 2,
                dilation_rates: 1
            }
        );
        assert_eq!(err.field(), "dilation_rates");
    }

    #[rstest]
    #[case(&[0], &[1], "segment_lengths[0]")]
    #[case(&[8, 16], &[1, 0], "dilation_rates[1]")]
    fn zero_values_are_rejected(#[case] w: &[usize], #[case] r: &[usize], #[case] field: &str) {
        let err = DilatedPattern::new(w, r, SparsePatternConfig::default(), false).unwrap_err();
        assert_eq!(
            err,
            AttentionError::ZeroValue {
                field: field.into()
            }
        );
        assert!(err.to_string().starts_with(field));
    }

    #[test]
    fn no_branches_is_rejected() {
        let err = DilatedPattern::new(&[], &[], SparsePatternConfig::default(), false).unwrap_err();
        assert_eq!(err, AttentionError::NoBranches);
    }

    #[rstest]
    #[case(-0.1)]
    #[case(1.0)]
    #[case(f64::NAN)]
    fn sparsity_outside_unit_interval_is_rejected(#[case] s: f64) {
        let err = SparsePatternConfig::default()
            .with_sparsity_ratio(s)
            .validate()
            .unwrap_err();
        assert!(matches!(err, AttentionError::SparsityOutOfRange { .. }));
        assert_eq!(err.field(), "sparsity_ratio");
    }

    #[rstest]
    #[case(0, "block_size")]
    #[case(48, "block_size")]
    #[case(2048, "block_size")]
    fn bad_block_sizes_are_rejected(#[case] bs: usize, #[case] field: &str) {
        let err = SparsePatternConfig::default()
            .with_block_size(bs)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), field);
    }

    #[test]
    fn pattern_options_must_fit_the_type() {
        let err = SparsePatternConfig::new(PatternType::LocalWindow)
            .with_block_dilation_rates(vec![1, 2])
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "block_dilation_rates");
        let err = SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_dilation_rates(vec![1, 0])
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "block_dilation_rates[1]");
        let err = SparsePatternConfig::new(PatternType::Custom)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "custom_blocks");
        let err = SparsePatternConfig::new(PatternType::Dense)
            .with_custom_blocks(vec![vec![(0, 0)]])
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "custom_blocks");
        let err = DilatedPattern::new(
            &[8, 16],
            &[1, 2],
            SparsePatternConfig::new(PatternType::Custom).with_custom_blocks(vec![vec![]]),
            false,
        )
        .unwrap_err();
        assert_eq!(err.field(), "custom_blocks");
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = SparsePatternConfig::new(PatternType::GlobalLocal)
            .with_sparsity_ratio(0.5)
            .with_global_blocks(2);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"global_local\""));
        let back: SparsePatternConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let partial: SparsePatternConfig =
            serde_json::from_str(r#"{"pattern_type":"local_window"}"#).unwrap();
        assert_eq!(partial.block_size, 64);
    }
}

//! The one error type of the crate: every invalid configuration or input is reported as an
//! [`AttentionError`] that names the offending field and the rule it broke.

use core::fmt;

/// Why a configuration or an input was rejected.
///
/// Each variant names the field (or tensor) at fault and the rule it broke, so the message can be
/// shown to a user as it is. [`AttentionError::field`] gives the field name alone.
#[derive(Debug, Clone, PartialEq)]
pub enum AttentionError {
    /// `segment_lengths` is empty: at least one branch is needed.
    NoBranches,
    /// `segment_lengths` and `dilation_rates` have different lengths.
    BranchLengthMismatch {
        /// Length of `segment_lengths`.
        segment_lengths: usize,
        /// Length of `dilation_rates`.
        dilation_rates: usize,
    },
    /// A value that must be at least 1 is 0 (`segment_lengths[i]`, `dilation_rates[i]`,
    /// `block_size`, `num_heads`, ...).
    ZeroValue {
        /// The field, with its index where it is a list entry (e.g. `dilation_rates[2]`).
        field: String,
    },
    /// `sparsity_ratio` is not a number in `[0, 1)`.
    SparsityOutOfRange {
        /// The value that was given.
        value: f64,
    },
    /// `block_size` is not supported (it must be a power of two between 1 and
    /// [`MAX_BLOCK_SIZE`](crate::pattern::MAX_BLOCK_SIZE)).
    UnsupportedBlockSize {
        /// The value that was given.
        block_size: usize,
    },
    /// A block layout option does not fit the chosen pattern (e.g. `block_dilation_rates` on a
    /// pattern other than `dilated_sparse`, or `custom` without `custom_blocks`).
    InvalidPatternOption {
        /// The option at fault.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// A pair of a `custom` layout lies outside the blocks of its branch.
    CustomBlockOutOfRange {
        /// Branch index.
        branch: usize,
        /// Query block of the pair.
        query_block: usize,
        /// Key block of the pair.
        key_block: usize,
        /// Number of blocks in the branch's largest segment at this sequence length.
        blocks: usize,
    },
    /// `scale` is not a finite positive number.
    InvalidScale {
        /// The value that was given.
        value: f64,
    },
    /// The number of query heads is not a multiple of the number of key/value heads.
    HeadsNotDivisible {
        /// Query heads.
        heads: usize,
        /// Key/value heads.
        kv_heads: usize,
    },
    /// A tensor has the wrong shape for its role.
    ShapeMismatch {
        /// The tensor (`q`, `k`, `v`, `mask`, `x`, ...).
        tensor: &'static str,
        /// The expected shape, in words (e.g. `[batch, kv_heads, n, head_dim] = [2, 4, 100, 64]`).
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// Two tensors that must share a dtype do not.
    DtypeMismatch {
        /// The tensor at fault.
        tensor: &'static str,
        /// The dtype of `q`.
        expected: String,
        /// Its dtype.
        got: String,
    },
    /// A tensor lives on another device than `q`.
    DeviceMismatch {
        /// The tensor at fault.
        tensor: &'static str,
    },
    /// A configuration value breaks a rule of its own (e.g. `embed_dim` not a multiple of
    /// `num_heads`).
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// The CubeCL kernels cannot run these inputs (only from `forward_kernels`; the other entry
    /// points fall back to the reference path).
    KernelUnavailable {
        /// Why.
        reason: String,
    },
    /// A JSON configuration could not be read.
    Json {
        /// The parser's message (it names the field and position).
        message: String,
    },
}

impl AttentionError {
    /// The name of the configuration field or tensor at fault.
    pub fn field(&self) -> String {
        match self {
            Self::NoBranches => "segment_lengths".into(),
            Self::BranchLengthMismatch { .. } => "dilation_rates".into(),
            Self::ZeroValue { field } => field.clone(),
            Self::SparsityOutOfRange { .. } => "sparsity_ratio".into(),
            Self::UnsupportedBlockSize { .. } => "block_size".into(),
            Self::InvalidPatternOption { field, .. } => (*field).into(),
            Self::CustomBlockOutOfRange { .. } => "custom_blocks".into(),
            Self::InvalidScale { .. } => "scale".into(),
            Self::HeadsNotDivisible { .. } => "kv_heads".into(),
            Self::ShapeMismatch { tensor, .. }
            | Self::DtypeMismatch { tensor, .. }
            | Self::DeviceMismatch { tensor } => (*tensor).into(),
            Self::Invalid { field, .. } => (*field).into(),
            Self::KernelUnavailable { .. } => "device".into(),
            Self::Json { .. } => "json".into(),
        }
    }
}

impl fmt::Display for AttentionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBranches => write!(f, "segment_lengths: at least one branch is required"),
            Self::BranchLengthMismatch {
                segment_lengths,
                dilation_rates,
            } => write!(
                f,
                "dilation_rates: must have as many entries as segment_lengths \
                 ({dilation_rates} != {segment_lengths})"
            ),
            Self::ZeroValue { field } => write!(f, "{field}: must be at least 1, got 0"),
            Self::SparsityOutOfRange { value } => {
                write!(f, "sparsity_ratio: must lie in [0, 1), got {value}")
            }
            Self::UnsupportedBlockSize { block_size } => write!(
                f,
                "block_size: must be a power of two in 1..={}, got {block_size}",
                crate::pattern::MAX_BLOCK_SIZE
            ),
            Self::InvalidPatternOption { field, rule } => write!(f, "{field}: {rule}"),
            Self::CustomBlockOutOfRange {
                branch,
                query_block,
                key_block,
                blocks,
            } => write!(
                f,
                "custom_blocks[{branch}]: pair ({query_block}, {key_block}) is out of range; \
                 the branch has {blocks} blocks per segment at this sequence length"
            ),
            Self::InvalidScale { value } => {
                write!(f, "scale: must be finite and positive, got {value}")
            }
            Self::HeadsNotDivisible { heads, kv_heads } => write!(
                f,
                "kv_heads: heads must be a multiple of kv_heads ({heads} % {kv_heads} != 0)"
            ),
            Self::ShapeMismatch {
                tensor,
                expected,
                got,
            } => write!(f, "{tensor}: expected shape {expected}, got {got:?}"),
            Self::DtypeMismatch {
                tensor,
                expected,
                got,
            } => write!(f, "{tensor}: dtype must match q ({expected}), got {got}"),
            Self::DeviceMismatch { tensor } => {
                write!(f, "{tensor}: must live on the same device as q")
            }
            Self::Invalid { field, rule } => write!(f, "{field}: {rule}"),
            Self::KernelUnavailable { reason } => {
                write!(f, "device: kernels unavailable, {reason}")
            }
            Self::Json { message } => write!(f, "json: {message}"),
        }
    }
}

impl std::error::Error for AttentionError {}

/// Shorthand for results of this crate.
pub type Result<T> = core::result::Result<T, AttentionError>;

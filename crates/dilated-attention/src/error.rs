//! The one error type of the crate: every invalid configuration or input is reported as an
//! [`AttentionError`] that names the offending field and the rule it broke.

/// Why a configuration or an input was rejected.
///
/// Each variant names the field (or tensor) at fault and the rule it broke, so the message can be
/// shown to a user as it is. [`AttentionError::field`] gives the field name alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AttentionError {
    /// `segment_lengths` is empty: at least one branch is needed.
    #[error("segment_lengths: at least one branch is required")]
    NoBranches,
    /// `segment_lengths` and `dilation_rates` have different lengths.
    #[error(
        "dilation_rates: must have as many entries as segment_lengths ({dilation_rates} != {segment_lengths})"
    )]
    BranchLengthMismatch {
        /// Length of `segment_lengths`.
        segment_lengths: usize,
        /// Length of `dilation_rates`.
        dilation_rates: usize,
    },
    /// A value that must be at least 1 is 0 (`segment_lengths[i]`, `dilation_rates[i]`,
    /// `block_size`, `num_heads`, ...).
    #[error("{field}: must be at least 1, got 0")]
    ZeroValue {
        /// The field, with its index where it is a list entry (e.g. `dilation_rates[2]`).
        field: String,
    },
    /// `sparsity_ratio` is not a number in `[0, 1)`.
    #[error("sparsity_ratio: must lie in [0, 1), got {value}")]
    SparsityOutOfRange {
        /// The value that was given.
        value: f64,
    },
    /// `block_size` is not supported (it must be a power of two between 1 and
    /// [`MAX_BLOCK_SIZE`](crate::pattern::MAX_BLOCK_SIZE)).
    #[error("block_size: must be a power of two in 1..={max}, got {block_size}", max = crate::pattern::MAX_BLOCK_SIZE)]
    UnsupportedBlockSize {
        /// The value that was given.
        block_size: usize,
    },
    /// A block layout option does not fit the chosen pattern (e.g. `block_dilation_rates` on a
    /// pattern other than `dilated_sparse`, or `custom` without `custom_blocks`).
    #[error("{field}: {rule}")]
    InvalidPatternOption {
        /// The option at fault.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// A pair of a `custom` layout lies outside the blocks of its branch.
    #[error(
        "custom_blocks[{branch}]: pair ({query_block}, {key_block}) is out of range; the branch has {blocks} blocks per segment at this sequence length"
    )]
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
    #[error("scale: must be finite and positive, got {value}")]
    InvalidScale {
        /// The value that was given.
        value: f64,
    },
    /// The number of query heads is not a multiple of the number of key/value heads.
    #[error("kv_heads: heads must be a multiple of kv_heads ({heads} % {kv_heads} != 0)")]
    HeadsNotDivisible {
        /// Query heads.
        heads: usize,
        /// Key/value heads.
        kv_heads: usize,
    },
    /// A tensor has the wrong shape for its role.
    #[error("{tensor}: expected shape {expected}, got {got:?}")]
    ShapeMismatch {
        /// The tensor (`q`, `k`, `v`, `mask`, `x`, ...).
        tensor: &'static str,
        /// The expected shape, in words (e.g. `[batch, kv_heads, n, head_dim] = [2, 4, 100, 64]`).
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// Two tensors that must share a dtype do not.
    #[error("{tensor}: dtype must match q ({expected}), got {got}")]
    DtypeMismatch {
        /// The tensor at fault.
        tensor: &'static str,
        /// The dtype of `q`.
        expected: String,
        /// Its dtype.
        got: String,
    },
    /// A tensor lives on another device than `q`.
    #[error("{tensor}: must live on the same device as q")]
    DeviceMismatch {
        /// The tensor at fault.
        tensor: &'static str,
    },
    /// A configuration value breaks a rule of its own (e.g. `embed_dim` not a multiple of
    /// `num_heads`).
    #[error("{field}: {rule}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// The CubeCL kernels cannot serve the call: returned under
    /// [`KernelPolicy::Require`](crate::KernelPolicy::Require) and by `forward_kernels`;
    /// under the default policy the call runs the reference path instead.
    #[error("kernels unavailable: {reason}")]
    KernelUnavailable {
        /// Why.
        reason: KernelUnavailable,
    },
    /// A kernel launch failed after the kernels had accepted the call (a runtime error).
    #[error("kernel: {0}")]
    Kernel(dilated_attention_kernels::KernelError),
    /// A JSON configuration could not be read.
    #[error("json: {message}")]
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
            Self::Kernel(_) => "device".into(),
            Self::Json { .. } => "json".into(),
        }
    }
}

/// Why the CubeCL kernels do not serve a call (see [`ExecutionPath`](crate::ExecutionPath)).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelUnavailable {
    /// The module's policy is [`ReferenceOnly`](crate::KernelPolicy::ReferenceOnly).
    #[error("the kernel policy is reference_only")]
    ReferenceOnly,
    /// The crate was built without a CubeCL runtime (features `wgpu` and `cuda` off).
    #[error("this build has no kernels (enable the `wgpu` or `cuda` feature)")]
    NotBuilt,
    /// The tensors do not live on a CubeCL device (wgpu, CUDA, ...).
    #[error("{device} is not a CubeCL device")]
    NotCubeDevice {
        /// The device, as Burn prints it.
        device: String,
    },
    /// A ring of one-token pieces (`striped`) has no windowed kernel.
    #[error("striped ring holders have no windowed kernel")]
    StripedRing,
    /// The kernels refuse the configuration or the inputs on this device.
    #[error(transparent)]
    Kernel(#[from] dilated_attention_kernels::KernelError),
}

/// Shorthand for results of this crate.
pub type Result<T> = core::result::Result<T, AttentionError>;

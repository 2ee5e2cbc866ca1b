//! The arguments every kernel family reads, as CubeCL launch structs: one definition of the
//! operands, the layout they are read through and the comptime shape of a pass, instead of the
//! same dozen parameters written out in every kernel's signature.
//!
//! Element type `T` is the float type (`F`, the portable kernels) or a vector of it
//! (`Vector<F, N>`, the tensor-core kernels, which read 8 halves at a time).

use cubecl::prelude::*;

/// What every pass reads: the attention operands, a head class's layout and the softmax scale.
///
/// - `q: [batch, heads, q_rows, head_dim]`, `k, v: [batch, kv_heads, k_rows, head_dim]`
/// - `mask: [batch, k_rows]` u32, 1 = key present (a stand-in of one element when unmasked)
/// - `blocks: [class segments · (blocks + 1)]` u32: the class's CSR row pointer over query
///   blocks (forward, `dQ`) or its column pointer over key blocks (`dK/dV`)
/// - `runs: [2 · runs]` u32: half-open ranges of blocks, indexed by `blocks`
/// - `params`: the class's parameter words (`addressing::locate` reads them)
/// - `scale`: the softmax scale; `neg_inf`: −∞ and `nan`: a quiet NaN, passed at run time so
///   that no kernel spells a non-finite literal and no compiler that assumes finite floats
///   (WGSL allows it) folds them
#[derive(CubeLaunch, CubeType)]
pub(crate) struct Operands<T: CubePrimitive> {
    pub q: OwnedTensor<T>,
    pub k: OwnedTensor<T>,
    pub v: OwnedTensor<T>,
    pub mask: OwnedTensor<u32>,
    pub blocks: OwnedTensor<u32>,
    pub runs: OwnedTensor<u32>,
    pub params: OwnedTensor<u32>,
    pub scale: f32,
    pub neg_inf: f32,
    pub nan: f32,
}

/// What the backward passes read besides [`Operands`].
///
/// - `dout: [batch, heads, q_rows, head_dim]`
/// - `lse, delta: [batch, heads, q_rows]` f32: the forward's log-sum-exp and
///   `Δ = rowsum(dout ∘ out)` (minus `dlse` where the log-sum-exp has a gradient)
#[derive(CubeLaunch, CubeType)]
pub(crate) struct GradOperands<T: CubePrimitive> {
    pub dout: OwnedTensor<T>,
    pub lse: OwnedTensor<f32>,
    pub delta: OwnedTensor<f32>,
}

/// The comptime shape of a pass: one compiled kernel per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Pass {
    /// Features per head.
    pub head_dim: usize,
    /// Block size in gathered tokens.
    pub block: usize,
    /// Whether a query sees only keys at or before its position.
    pub causal: bool,
    /// Whether `Operands::mask` is a real key mask (else a stand-in nobody reads).
    pub masked: bool,
}

//! Finiteness tests on a float's bits, for the portable kernels' NaN confinement.
//!
//! WGSL lets an implementation assume that no float is NaN or infinite, and lavapipe's compiler
//! does: it drops a NaN from a max, folds `−inf − −inf` to 0, and turned a float `is_nan` flag
//! and NaN arithmetic into finite results. Integer tests on the bits cannot be folded that way.
//! Where a test fires, the kernels write `Operands::nan`, a run-time value, rather than computing
//! a NaN.

use cubecl::prelude::*;

/// Exponent bits of an f32 (all ones: an infinity or a NaN).
const EXP: u32 = 0x7f80_0000;
/// The bits of `−inf`.
const NEG_INF: u32 = 0xff80_0000;

/// Whether `x` is NaN or an infinity of either sign (also what the tensor-core kernels test a
/// value row's entries with, `crate::hopper::ring`).
#[cube]
pub(crate) fn not_finite(x: f32) -> bool {
    (u32::reinterpret(x) & EXP) == EXP
}

/// Whether `x` is `−inf`.
#[cube]
pub(super) fn is_neg_inf(x: f32) -> bool {
    u32::reinterpret(x) == NEG_INF
}

/// Whether `x` is NaN or `+inf`: a score that makes IEEE softmax NaN for every row that sees it
/// (`+inf − +inf`, or NaN throughout), where `−inf` is a key given no weight, as a masked one.
#[cube]
pub(super) fn nan_or_pos_inf(x: f32) -> bool {
    not_finite(x) && !is_neg_inf(x)
}

//! Turns at the tensor cores for the forward's two consumer warpgroups (`Variant::turns`,
//! FlashAttention-3's ping-pong scheduling), for the overlapped steps of a moved cube: a
//! warpgroup waits for its turn, issues its step's products (`Q·Kᵀ` and the held step's `P·V`),
//! hands the turn to the other warpgroup, and only then waits for its products and runs its
//! softmax — so one warpgroup's exponentials run while the other's products fill the tensor
//! cores, instead of both issuing at once and both then sitting in the softmax.
//!
//! Named barriers 4 and 5, 256 units each: warpgroup `g` waits at `4 + g` (its 128 units) and
//! the other warpgroup arrives there (its 128, without waiting) when it hands over. Warpgroup 1
//! hands over once before its first turn, so warpgroup 0 goes first; the two then alternate.
//! Their turn counts must stay equal or a barrier never completes: both walk the same chunks
//! of the same tiles, and a warpgroup that skips a step (causal) still takes its turn. The last
//! hand-over of a launch is left unanswered, which a barrier allows.

use cubecl::prelude::*;

/// Warpgroup `group` (0 or 1) waits for its turn (named barrier `4 + group`); nothing unless
/// `on`.
#[cube]
pub(crate) fn take_turn(group: usize, #[comptime] on: bool) {
    if comptime!(on) {
        let id = 4u32 + group as u32;
        gpu_asm!("bar.sync {id}, 256;", id = in(_) id);
    }
}

/// Warpgroup `group` hands the turn to the other one (arrives at named barrier `5 - group`
/// without waiting); nothing unless `on`.
#[cube]
pub(crate) fn pass_turn(group: usize, #[comptime] on: bool) {
    if comptime!(on) {
        let id = 5u32 - group as u32;
        gpu_asm!("bar.arrive {id}, 256;", id = in(_) id);
    }
}

/// Before a consumer's first step: warpgroup 1 hands warpgroup 0 the first turn; nothing
/// unless `on`.
#[cube]
#[allow(clippy::collapsible_if)] // CubeCL kernel code: a comptime branch around a runtime one
pub(crate) fn first_turn(group: usize, #[comptime] on: bool) {
    if comptime!(on) {
        if group == 1 {
            pass_turn(1usize, true);
        }
    }
}

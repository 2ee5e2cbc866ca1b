//! Products left in flight across other work: a warpgroup issues its `wgmma` groups with
//! [`Product::in_flight`](super::wgmma::Product) set (the call commits them and returns at once)
//! and reads their results later through a settle call, which waits until at most `pending`
//! of its committed groups are still running and only then hands the registers on.
//!
//! The forward's pipelined step (FlashAttention-3's intra-warpgroup overlap) issues chunk `j`'s
//! `S = Q·Kᵀ` and chunk `j − 1`'s `O += P·V` back to back, settles `S` (`pending = 1`: the
//! `P·V` group may still run), runs the masks and softmax on `S` while the tensor cores finish
//! `P·V`, then settles `O` (`pending = 0`). ptxas keeps such a pipeline only while no
//! instruction writes a register an in-flight product reads or writes: the settle's copies come
//! after its wait, and `P` of chunk `j` is rounded from `S` after `O` is settled, never into the
//! registers the running `P·V` reads (else ptxas serialises every product of the kernel, its
//! warning C7513, which is what made session 12's first try 30 % slower).
//!
//! The second set of accumulators also needs registers: a model of the head-dim-64 step
//! compiled with two cubes an SM (`__launch_bounds__(288, 2)`, at most 112 registers a unit)
//! spills and is serialised (C7512, "insufficient register resources"), so the forward launches
//! one cube an SM with this step (`crate::launch::forward`).
//!
//! Plain C++ arithmetic may be moved across an inline-PTX block by the compiler; only the blocks
//! keep their order. So `P` is rounded by [`p_fragments_in_order`](fn@p_fragments_in_order),
//! one `cvt` block a pair, which stays after the settle of `O` before it.
//!
//! Every input is a scalar, as in `super::wgmma`: CubeCL hands a late-initialised vector to
//! inline PTX as a pointer to its storage.

use cubecl::prelude::*;

use super::ptx::settle_ptx;
use super::wgmma::{Acc, Acc2, Frags};
use crate::sm80::mma::P2;

/// The result `x` of an in-flight call (32 accumulator registers), once at most `pending` of
/// the warpgroup's committed groups are still running.
#[cube]
pub(crate) fn settle(x: Vector<f32, Acc>, #[comptime] pending: u32) -> Vector<f32, Acc> {
    let text = comptime!(settle_ptx(pending, 32));
    let out: Vector<f32, Acc>;
    gpu_asm!(
        "{text}",
        "// {d} {x0} {x1} {x2} {x3} {x4} {x5} {x6} {x7} {x8} {x9} {x10} {x11} {x12} {x13} {x14} {x15} {x16} {x17} {x18} {x19} {x20} {x21} {x22} {x23} {x24} {x25} {x26} {x27} {x28} {x29} {x30} {x31}",
        d = out(_) out,
        x0 = in(_) x.extract(0usize),
        x1 = in(_) x.extract(1usize),
        x2 = in(_) x.extract(2usize),
        x3 = in(_) x.extract(3usize),
        x4 = in(_) x.extract(4usize),
        x5 = in(_) x.extract(5usize),
        x6 = in(_) x.extract(6usize),
        x7 = in(_) x.extract(7usize),
        x8 = in(_) x.extract(8usize),
        x9 = in(_) x.extract(9usize),
        x10 = in(_) x.extract(10usize),
        x11 = in(_) x.extract(11usize),
        x12 = in(_) x.extract(12usize),
        x13 = in(_) x.extract(13usize),
        x14 = in(_) x.extract(14usize),
        x15 = in(_) x.extract(15usize),
        x16 = in(_) x.extract(16usize),
        x17 = in(_) x.extract(17usize),
        x18 = in(_) x.extract(18usize),
        x19 = in(_) x.extract(19usize),
        x20 = in(_) x.extract(20usize),
        x21 = in(_) x.extract(21usize),
        x22 = in(_) x.extract(22usize),
        x23 = in(_) x.extract(23usize),
        x24 = in(_) x.extract(24usize),
        x25 = in(_) x.extract(25usize),
        x26 = in(_) x.extract(26usize),
        x27 = in(_) x.extract(27usize),
        x28 = in(_) x.extract(28usize),
        x29 = in(_) x.extract(29usize),
        x30 = in(_) x.extract(30usize),
        x31 = in(_) x.extract(31usize),
    );
    out
}

/// [`settle`](fn@settle) for a pair of products issued together (64 registers).
#[cube]
pub(crate) fn settle_pair(x: Vector<f32, Acc2>, #[comptime] pending: u32) -> Vector<f32, Acc2> {
    let text = comptime!(settle_ptx(pending, 64));
    let out: Vector<f32, Acc2>;
    gpu_asm!(
        "{text}",
        "// {d} {x0} {x1} {x2} {x3} {x4} {x5} {x6} {x7} {x8} {x9} {x10} {x11} {x12} {x13} {x14} {x15} {x16} {x17} {x18} {x19} {x20} {x21} {x22} {x23} {x24} {x25} {x26} {x27} {x28} {x29} {x30} {x31} {x32} {x33} {x34} {x35} {x36} {x37} {x38} {x39} {x40} {x41} {x42} {x43} {x44} {x45} {x46} {x47} {x48} {x49} {x50} {x51} {x52} {x53} {x54} {x55} {x56} {x57} {x58} {x59} {x60} {x61} {x62} {x63}",
        d = out(_) out,
        x0 = in(_) x.extract(0usize),
        x1 = in(_) x.extract(1usize),
        x2 = in(_) x.extract(2usize),
        x3 = in(_) x.extract(3usize),
        x4 = in(_) x.extract(4usize),
        x5 = in(_) x.extract(5usize),
        x6 = in(_) x.extract(6usize),
        x7 = in(_) x.extract(7usize),
        x8 = in(_) x.extract(8usize),
        x9 = in(_) x.extract(9usize),
        x10 = in(_) x.extract(10usize),
        x11 = in(_) x.extract(11usize),
        x12 = in(_) x.extract(12usize),
        x13 = in(_) x.extract(13usize),
        x14 = in(_) x.extract(14usize),
        x15 = in(_) x.extract(15usize),
        x16 = in(_) x.extract(16usize),
        x17 = in(_) x.extract(17usize),
        x18 = in(_) x.extract(18usize),
        x19 = in(_) x.extract(19usize),
        x20 = in(_) x.extract(20usize),
        x21 = in(_) x.extract(21usize),
        x22 = in(_) x.extract(22usize),
        x23 = in(_) x.extract(23usize),
        x24 = in(_) x.extract(24usize),
        x25 = in(_) x.extract(25usize),
        x26 = in(_) x.extract(26usize),
        x27 = in(_) x.extract(27usize),
        x28 = in(_) x.extract(28usize),
        x29 = in(_) x.extract(29usize),
        x30 = in(_) x.extract(30usize),
        x31 = in(_) x.extract(31usize),
        x32 = in(_) x.extract(32usize),
        x33 = in(_) x.extract(33usize),
        x34 = in(_) x.extract(34usize),
        x35 = in(_) x.extract(35usize),
        x36 = in(_) x.extract(36usize),
        x37 = in(_) x.extract(37usize),
        x38 = in(_) x.extract(38usize),
        x39 = in(_) x.extract(39usize),
        x40 = in(_) x.extract(40usize),
        x41 = in(_) x.extract(41usize),
        x42 = in(_) x.extract(42usize),
        x43 = in(_) x.extract(43usize),
        x44 = in(_) x.extract(44usize),
        x45 = in(_) x.extract(45usize),
        x46 = in(_) x.extract(46usize),
        x47 = in(_) x.extract(47usize),
        x48 = in(_) x.extract(48usize),
        x49 = in(_) x.extract(49usize),
        x50 = in(_) x.extract(50usize),
        x51 = in(_) x.extract(51usize),
        x52 = in(_) x.extract(52usize),
        x53 = in(_) x.extract(53usize),
        x54 = in(_) x.extract(54usize),
        x55 = in(_) x.extract(55usize),
        x56 = in(_) x.extract(56usize),
        x57 = in(_) x.extract(57usize),
        x58 = in(_) x.extract(58usize),
        x59 = in(_) x.extract(59usize),
        x60 = in(_) x.extract(60usize),
        x61 = in(_) x.extract(61usize),
        x62 = in(_) x.extract(62usize),
        x63 = in(_) x.extract(63usize),
    );
    out
}

/// The register `A` operand of `P·V` from a chunk's probabilities `s` (as
/// `super::tiles::p_fragments`), each pair rounded by its own inline-PTX `cvt`: the blocks keep
/// their place after the settle call before them, so the registers `P` lands in are never
/// written while a product that reads the last chunk's `P` is in flight.
#[cube]
pub(crate) fn p_fragments_in_order(
    s: &Sequence<Array<Vector<f32, P2>>>,
    #[comptime] bf16: bool,
) -> Vector<u32, Frags> {
    p_fragments_in_order_at(s, 0usize, bf16)
}

/// [`p_fragments_in_order`](fn@p_fragments_in_order) of the 64 columns from column tile `at`
/// (0, or 8 for a wide step's second chunk).
#[cube]
pub(crate) fn p_fragments_in_order_at(
    s: &Sequence<Array<Vector<f32, P2>>>,
    #[comptime] at: usize,
    #[comptime] bf16: bool,
) -> Vector<u32, Frags> {
    let mut frags = Vector::<u32, Frags>::new(0u32);
    #[unroll]
    for kk in 0..4usize {
        #[unroll]
        for r in 0..4usize {
            // `tiles_as_a`'s order: rows g and g + 8 of column tile 2kk, then of 2kk + 1.
            let pair = s.index(comptime!(at + 2 * kk + r / 2))[comptime!(r % 2)];
            let lo = pair.extract(0usize);
            let hi = pair.extract(1usize);
            frags.insert(comptime!(4 * kk + r), round_pair(lo, hi, bf16));
        }
    }
    frags
}

/// `lo` and `hi` rounded to f16 (or bf16) and packed, `lo` in the low half.
#[cube]
fn round_pair(lo: f32, hi: f32, #[comptime] bf16: bool) -> u32 {
    // Operands as CubeCL numbers them: the result `$0`, then `hi` and `lo`.
    let text = comptime!(format!(
        "cvt.rn.{}x2.f32 $0, $1, $2;",
        if bf16 { "bf16" } else { "f16" }
    ));
    let out: u32;
    gpu_asm!(
        "{text}",
        "// {d} {h} {l}",
        d = out(_) out,
        h = in(_) hi,
        l = in(_) lo,
    );
    out
}

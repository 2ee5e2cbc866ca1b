//! The wide step with its products in flight (`Variant::wide` with `Variant::overlap`, which
//! needs `Variant::moved`'s registers): FlashAttention-3's 128-key step with its intra-warpgroup
//! overlap. A step issues `S[64, 128] = Q·Kᵀ` over its two chunks and the last step's
//! `O += P₀·V₀ + P₁·V₁` (one group, `super::chained`), settles `S` while `P·V` runs, masks it and
//! runs the online softmax, settles `O` and rescales it; the caller rounds `P` (two 64-column
//! halves) only then, with no product in flight (`super::pipelined`).
//!
//! Shapes per warpgroup: `S` 16 column tiles in the `mma.sync` layout, `O[64, d]` `d / 64`
//! panels of 32 accumulator registers, `P₀`, `P₁` 16 `u32` each; keys and values of a chunk at
//! shared addresses `kbase`, `kbase + T` and the next chunk's two tiles on (`T` a tile's bytes).

use cubecl::prelude::*;

use super::chained::{mma_rs_add_two, mma_rs_add_two_pair};
use super::pipelined::{settle, settle_pair};
use super::steps::{ScoreBounds, probs_chunk};
use super::tiles::{tiles_assign, tiles_into};
use super::turns::pass_turn;
use super::wgmma::{Acc, Acc2, Frags, PANEL_ROW, Product, half_of, k_major, mma_ss_pair, mn_major};
use crate::args::Pass;
use crate::sm80::mma::{CHUNK, P2};
use crate::sm80::rows::rescale;

/// The held step's `O + P₀·V₀ + P₁·V₁` (values at `vbase` and two tiles on) as one group,
/// waited for: `O`'s first panel, and at head dim 128 its second.
#[cube]
fn held_products(
    acc: &Sequence<Array<Vector<f32, P2>>>,
    held0: Vector<u32, Frags>,
    held1: Vector<u32, Frags>,
    vbase: u32,
    #[comptime] pass: Pass,
    #[comptime] pv: Product,
) -> (Vector<f32, Acc>, Vector<f32, Acc>) {
    let vnext = vbase + comptime!((4 * CHUNK * pass.head_dim) as u32);
    let panel = comptime!((CHUNK * PANEL_ROW) as u32);
    if comptime!(pass.head_dim == 128) {
        let o = mma_rs_add_two_pair(
            tiles_into(acc, 0usize),
            tiles_into(acc, 8usize),
            held0,
            held1,
            mn_major(vbase),
            mn_major(vbase + panel),
            mn_major(vnext),
            mn_major(vnext + panel),
            pv,
        );
        (half_of(o, 0usize), half_of(o, 1usize))
    } else {
        let o = mma_rs_add_two(
            tiles_into(acc, 0usize),
            held0,
            held1,
            mn_major(vbase),
            mn_major(vnext),
            pv,
        );
        (o, Vector::<f32, Acc>::new(0.0f32))
    }
}

/// `O += P₀·V₀ + P₁·V₁` for the held step, waited for: a step the warpgroup skips (causal)
/// hands its held step's product on this way.
#[cube]
pub(super) fn add_held(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    held0: Vector<u32, Frags>,
    held1: Vector<u32, Frags>,
    vbase: u32,
    #[comptime] pass: Pass,
    #[comptime] pv: Product,
) {
    let (o0, o1) = held_products(&*acc, held0, held1, vbase, pass, pv);
    tiles_assign(acc, 0usize, o0);
    if comptime!(pass.head_dim == 128) {
        tiles_assign(acc, 8usize, o1);
    }
}

/// One wide pipelined step: the two chunks whose keys start at `kbase` are scored while the
/// held step's `P·V` (probabilities `held0`, `held1`, values at `vbase`) runs. `s` comes back
/// as the step's probabilities.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn pipelined_wide_step(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    held0: Vector<u32, Frags>,
    held1: Vector<u32, Frags>,
    vbase: u32,
    dq: u64,
    kbase: u32,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    bounds: &ScoreBounds,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    group: usize,
    #[comptime] qk: Product,
    #[comptime] pv: Product,
    #[comptime] turns: bool,
) {
    let qk_async = comptime!(Product {
        in_flight: true,
        ..qk
    });
    let pv_async = comptime!(Product {
        in_flight: true,
        ..pv
    });
    let next = kbase + comptime!((4 * CHUNK * pass.head_dim) as u32);
    let vnext = vbase + comptime!((4 * CHUNK * pass.head_dim) as u32);
    let mut alpha = Array::<f32>::new(2usize);
    let sk = mma_ss_pair(dq, k_major(kbase), dq, k_major(next), qk_async);
    if comptime!(pass.head_dim == 128) {
        let panel = comptime!((CHUNK * PANEL_ROW) as u32);
        let o = mma_rs_add_two_pair(
            tiles_into(&*acc, 0usize),
            tiles_into(&*acc, 8usize),
            held0,
            held1,
            mn_major(vbase),
            mn_major(vbase + panel),
            mn_major(vnext),
            mn_major(vnext + panel),
            pv_async,
        );
        let moved = wide_probs_in_flight(
            s, m, l, &mut alpha, sk, kvalid, kv0, k0, bounds, group, pass, lazy, turns,
        );
        let o = settle_pair(o, 0u32);
        tiles_assign(acc, 0usize, half_of(o, 0usize));
        tiles_assign(acc, 8usize, half_of(o, 1usize));
        rescale(acc, &alpha, moved, dtiles, lazy);
    } else {
        let o = mma_rs_add_two(
            tiles_into(&*acc, 0usize),
            held0,
            held1,
            mn_major(vbase),
            mn_major(vnext),
            pv_async,
        );
        let moved = wide_probs_in_flight(
            s, m, l, &mut alpha, sk, kvalid, kv0, k0, bounds, group, pass, lazy, turns,
        );
        tiles_assign(acc, 0usize, settle(o, 0u32));
        rescale(acc, &alpha, moved, dtiles, lazy);
    }
}

/// With the held step's `P·V` still in flight: hands the tensor cores on (`super::turns`),
/// settles the step's scores `sk` (two chunks) into `s`, and runs their masks and online
/// softmax (`alpha` gets the rows' rescale factors); whether a row's shift moved.
#[cube]
#[allow(clippy::too_many_arguments)]
fn wide_probs_in_flight(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    alpha: &mut Array<f32>,
    sk: Vector<f32, Acc2>,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    bounds: &ScoreBounds,
    group: usize,
    #[comptime] pass: Pass,
    #[comptime] lazy: bool,
    #[comptime] turns: bool,
) -> bool {
    pass_turn(group, turns);
    let sk = settle_pair(sk, 1u32);
    tiles_assign(s, 0usize, half_of(sk, 0usize));
    tiles_assign(s, 8usize, half_of(sk, 1usize));
    probs_chunk(
        s,
        m,
        l,
        alpha,
        kvalid,
        kv0,
        k0,
        bounds,
        pass,
        lazy,
        comptime!(2 * CHUNK),
    )
}

/// `O += P₀·V₀ + P₁·V₁` for the held step, waited for, where `keep` (else `O` unchanged),
/// with no branch around the products: the last held step after the walk, for
/// `super::steps::add_pv_where`'s reason (ptxas serialises every product of a kernel with a
/// `wgmma` under a branch it cannot prove uniform).
#[cube]
pub(super) fn add_held_where(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    held0: Vector<u32, Frags>,
    held1: Vector<u32, Frags>,
    vbase: u32,
    keep: bool,
    #[comptime] pass: Pass,
    #[comptime] pv: Product,
) {
    let (o0, o1) = held_products(&*acc, held0, held1, vbase, pass, pv);
    #[unroll]
    for h in 0..comptime!(pass.head_dim / 64) {
        let before = tiles_into(&*acc, comptime!(8 * h));
        let o = if comptime!(h == 0) { o0 } else { o1 };
        let mut kept = Vector::<f32, Acc>::new(0.0f32);
        #[unroll]
        for i in 0..32usize {
            kept.insert(i, select(keep, o.extract(i), before.extract(i)));
        }
        tiles_assign(acc, comptime!(8 * h), kept);
    }
}

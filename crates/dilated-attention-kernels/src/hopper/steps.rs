//! A consumer warpgroup's step of the Hopper forward on staged chunks (`super::forward`): the
//! scores, their masks and online softmax, and `O += P·V` (which step a launch runs is its
//! `super::variant::Variant`).
//!
//! Shapes per warpgroup: `S[64, keys]` (`keys` = 64, or 128 for a wide step) and `O[64, d]`
//! as f32 accumulators in the `mma.sync` layout (`crate::sm80::rows`); `Q[64, d]`, `K[keys, d]`
//! and `V[keys, d]` in shared memory, 128-byte swizzled, read by descriptor.

use cubecl::prelude::*;

use super::pipelined::{settle, settle_pair};
use super::tiles::{p_fragments_from, tiles_assign, tiles_into};
use super::turns::pass_turn;
use super::wgmma::{
    Acc, Frags, PANEL_ROW, Product, half_of, k_major, mma_rs_add, mma_rs_add_pair, mma_ss,
    mma_ss_pair, mn_major,
};
use crate::args::Pass;
use crate::sm80::mma::{CHUNK, P2, zero_tiles};
use crate::sm80::rows::{mask_scores, rescale, softmax_probs};

/// What a warpgroup's steps need of its tile to mask and scale a chunk's scores.
#[derive(CubeType)]
pub(super) struct ScoreBounds {
    /// The tile's key window `[lo, hi)` (gathered key indices): keys outside it are masked.
    pub lo: usize,
    /// End of the key window.
    pub hi: usize,
    /// The plane's first query row (gathered), for the causal mask.
    pub prow0: usize,
    /// The softmax scale times log₂ e.
    pub sl2: f32,
    /// −∞ (a scalar argument: WGSL has no infinity literal).
    pub neg_inf: f32,
}

/// One wide step (`Variant::wide`): chunks in stages `kv0 / CHUNK` and the next, whose keys
/// and values start at shared address `kbase` and two tiles on: `S[64, 128] = Q·Kᵀ` as two
/// products issued together, the masks and the online softmax over its 128 columns, then
/// `O += P·V` one chunk at a time.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn wide_step<F: Float>(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    dq: u64,
    kbase: u32,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    bounds: &ScoreBounds,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] qk: Product,
    #[comptime] pv: Product,
    #[comptime] pv_pair: bool,
) {
    let tile_bytes = comptime!((CHUNK * pass.head_dim * 2) as u32);
    let next = kbase + comptime!(2 * tile_bytes);
    let mut s = zero_tiles(16usize);
    wide_scores(&mut s, dq, kbase, pass, qk);
    score_chunk(
        &mut s,
        m,
        l,
        acc,
        kvalid,
        kv0,
        k0,
        bounds,
        pass,
        dtiles,
        lazy,
        comptime!(2 * CHUNK),
    );
    let p0 = p_fragments_from::<F>(&s, 0usize, 4usize);
    add_pv(acc, p0, kbase + tile_bytes, pv, pass.head_dim, pv_pair);
    let p1 = p_fragments_from::<F>(&s, 4usize, 4usize);
    add_pv(acc, p1, next + tile_bytes, pv, pass.head_dim, pv_pair);
}

/// `S[64, 128] = Q·Kᵀ` over the two chunks whose keys start at `kbase` (and two tiles on), as
/// two products issued together and waited for: a wide step's scores.
#[cube]
pub(super) fn wide_scores(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    dq: u64,
    kbase: u32,
    #[comptime] pass: Pass,
    #[comptime] qk: Product,
) {
    let next = kbase + comptime!((4 * CHUNK * pass.head_dim) as u32);
    let sk = mma_ss_pair(dq, k_major(kbase), dq, k_major(next), qk);
    tiles_assign(s, 0usize, half_of(sk, 0usize));
    tiles_assign(s, 8usize, half_of(sk, 1usize));
}

/// `O[:, 64h..64h + 64] += P·V[:, 64h..64h + 64]` for each 64-column panel `h` of the value
/// tile at shared address `vbase`; with `pair` (head dim 128) both panels' products are issued
/// together and waited for once.
#[cube]
pub(super) fn add_pv(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    p: Vector<u32, Frags>,
    vbase: u32,
    #[comptime] pv: Product,
    #[comptime] d: usize,
    #[comptime] pair: bool,
) {
    if comptime!(pair && d == 128) {
        let panel = comptime!((CHUNK * PANEL_ROW) as u32);
        let o = mma_rs_add_pair(
            tiles_into(&*acc, 0usize),
            p,
            mn_major(vbase),
            tiles_into(&*acc, 8usize),
            p,
            mn_major(vbase + panel),
            pv,
        );
        tiles_assign(acc, 0usize, half_of(o, 0usize));
        tiles_assign(acc, 8usize, half_of(o, 1usize));
    } else {
        #[unroll]
        for h in 0..comptime!(d / 64) {
            let dv = mn_major(vbase + comptime!((h * CHUNK * PANEL_ROW) as u32));
            let o = mma_rs_add(tiles_into(&*acc, comptime!(8 * h)), p, dv, pv);
            tiles_assign(acc, comptime!(8 * h), o);
        }
    }
}

/// `O += P·V` where `keep`, else `O` unchanged — with no branch around the product: the
/// overlapped step's last held chunk after the walk. The product always runs (on whatever
/// `vbase` holds when nothing is held; its result is then dropped), and `keep` picks each
/// accumulator by a select. ptxas cannot tell that a branch on a loop-carried flag is uniform
/// over the warpgroup: a `wgmma` under such a branch after the loop made it serialise every
/// product of the kernel (C7518, "compiler-inserted WG.DP in divergent path"), which undid the
/// overlap (session 22, the kernel's dumped C++ recompiled with NVRTC/ptxas 13.0).
#[cube]
pub(super) fn add_pv_where(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    p: Vector<u32, Frags>,
    vbase: u32,
    keep: bool,
    #[comptime] pv: Product,
    #[comptime] d: usize,
) {
    #[unroll]
    for h in 0..comptime!(d / 64) {
        let before = tiles_into(&*acc, comptime!(8 * h));
        let dv = mn_major(vbase + comptime!((h * CHUNK * PANEL_ROW) as u32));
        let o = mma_rs_add(before, p, dv, pv);
        let mut kept = Vector::<f32, Acc>::new(0.0f32);
        #[unroll]
        for i in 0..32usize {
            kept.insert(i, select(keep, o.extract(i), before.extract(i)));
        }
        tiles_assign(acc, comptime!(8 * h), kept);
    }
}

/// The masks (where the chunk needs them: keys `k0..k0 + keys` against the key window
/// `lo..hi`, the padding flags from `kvalid[kv0..]`, causal rows from `prow0`) and the online
/// softmax step on a chunk's scores `s`, which become the probabilities; `acc` is rescaled.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn score_chunk(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    bounds: &ScoreBounds,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) {
    let mut alpha = Array::<f32>::new(2usize);
    let moved = probs_chunk(
        s, m, l, &mut alpha, kvalid, kv0, k0, bounds, pass, lazy, keys,
    );
    rescale(acc, &alpha, moved, dtiles, lazy);
}

/// [`score_chunk`](fn@score_chunk) without the rescale: the factors go to `alpha`, and the
/// result says whether a row's shift moved (`crate::sm80::rows::softmax_probs`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn probs_chunk(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    alpha: &mut Array<f32>,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    bounds: &ScoreBounds,
    #[comptime] pass: Pass,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) -> bool {
    let mut need = k0 < bounds.lo || k0 + keys > bounds.hi;
    if comptime!(pass.masked) {
        need = true;
    }
    if comptime!(pass.causal) {
        need = need || k0 + keys > bounds.prow0 + 1;
    }
    if need {
        mask_scores(
            s,
            kvalid,
            kv0,
            k0,
            bounds.prow0,
            bounds.neg_inf,
            1usize,
            pass.causal,
            keys,
        );
    }
    softmax_probs(
        s,
        m,
        l,
        alpha,
        bounds.sl2,
        bounds.neg_inf,
        1usize,
        lazy,
        keys,
    )
}

/// One pipelined step ([`Variant::overlap`]): the chunk whose keys start at shared address
/// `kbase` is scored while the last chunk's `O += P·V` (its probabilities `held`, its values
/// at `vbase`) runs. Issues `S = Q·Kᵀ` and then `P·V` without waiting
/// (`super::pipelined`), settles `S` with `P·V` still in flight, masks it and runs the
/// softmax, settles `O` and rescales it to the new row max. `s` comes back as the chunk's
/// probabilities; the caller rounds them into the next step's `held` (only now, with no
/// product in flight) and may release the last chunk's stage.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn pipelined_step(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    held: Vector<u32, Frags>,
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
    let mut alpha = Array::<f32>::new(2usize);
    let sk = mma_ss(dq, k_major(kbase), qk_async);
    if comptime!(pass.head_dim == 128) {
        // Both 64-column panels of `P·V` as one group.
        let panel = comptime!((CHUNK * PANEL_ROW) as u32);
        let o = mma_rs_add_pair(
            tiles_into(&*acc, 0usize),
            held,
            mn_major(vbase),
            tiles_into(&*acc, 8usize),
            held,
            mn_major(vbase + panel),
            pv_async,
        );
        let moved = probs_in_flight(
            s, m, l, &mut alpha, sk, kvalid, kv0, k0, bounds, group, pass, lazy, turns,
        );
        let o = settle_pair(o, 0u32);
        tiles_assign(acc, 0usize, half_of(o, 0usize));
        tiles_assign(acc, 8usize, half_of(o, 1usize));
        rescale(acc, &alpha, moved, dtiles, lazy);
    } else {
        let o = mma_rs_add(tiles_into(&*acc, 0usize), held, mn_major(vbase), pv_async);
        let moved = probs_in_flight(
            s, m, l, &mut alpha, sk, kvalid, kv0, k0, bounds, group, pass, lazy, turns,
        );
        tiles_assign(acc, 0usize, settle(o, 0u32));
        rescale(acc, &alpha, moved, dtiles, lazy);
    }
}

/// With the last chunk's `P·V` still in flight: hands the tensor cores on (`super::turns`),
/// settles the chunk's scores `sk` into `s`, and runs its masks and online softmax (`alpha`
/// gets the rows' rescale factors); whether a row's shift moved.
#[cube]
#[allow(clippy::too_many_arguments)]
fn probs_in_flight(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    alpha: &mut Array<f32>,
    sk: Vector<f32, Acc>,
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
    tiles_assign(s, 0usize, settle(sk, 1u32));
    probs_chunk(s, m, l, alpha, kvalid, kv0, k0, bounds, pass, lazy, CHUNK)
}

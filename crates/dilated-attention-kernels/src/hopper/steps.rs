//! A consumer warpgroup's step of the Hopper forward on staged chunks (`super::forward`): the
//! scores, their masks and online softmax, and `O += P·V`, and the comptime variants of that
//! step.
//!
//! Shapes per warpgroup: `S[64, keys]` (`keys` = 64, or 128 for a wide step) and `O[64, d]`
//! as f32 accumulators in the `mma.sync` layout (`crate::sm80::rows`); `Q[64, d]`, `K[keys, d]`
//! and `V[keys, d]` in shared memory, 128-byte swizzled, read by descriptor.

use cubecl::prelude::*;

use super::pipelined::{settle, settle_pair};
use super::registers::RegisterSplit;
use super::ring::{CONSUMERS, PRODUCERS};
use super::tiles::{p_fragments_from, tiles_assign, tiles_into};
use super::turns::pass_turn;
use super::wgmma::{
    Acc, Frags, PANEL_ROW, Product, half_of, k_major, mma_rs_add, mma_rs_add_pair, mma_ss,
    mma_ss_pair, mn_major,
};
use crate::Sm80Tuning;
use crate::args::Pass;
use crate::sm80::mma::{CHUNK, P2, zero_tiles};
use crate::sm80::rows::{mask_scores, rescale, softmax_probs};

/// Comptime variants of the forward (`crate::Sm80Tuning`'s experimental switches; all off by
/// default): its consumer loop, and how its producer loads whole chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    /// At head dim 128, both 64-column panels of `P·V` are issued together and waited for
    /// once (`mma_rs_add_pair`), instead of one product and one wait each.
    pub pv_pair: bool,
    /// A step takes two chunks (128 keys, two ring stages): both `Q·Kᵀ` products issued
    /// together, one softmax over 128 columns, then the two `P·V` halves — half the waits,
    /// fences, row reductions and rescales per key (FlashAttention-3's 128-key tile).
    pub wide: bool,
    /// A step issues its chunk's `Q·Kᵀ` and the last chunk's `P·V` together and runs the
    /// softmax while `P·V` is in the tensor cores ([`pipelined_step`](fn@pipelined_step),
    /// FlashAttention-3's intra-warpgroup overlap); each stage is released one step later.
    pub overlap: bool,
    /// The producer loads whole chunks by TMA (`super::tma`) from the launch's tensor maps.
    pub tma: bool,
    /// With `tma`: the producer loads whole query tiles by TMA too, one tile ahead into a
    /// second buffer (`super::query_tile`); otherwise the consumers stage them.
    pub queries: bool,
    /// With `queries`: the producer also hands the consumers each tile and each chunk's
    /// position (`super::forward_producer`); otherwise the consumers locate their tiles and
    /// walk the layout rows themselves.
    pub handoff: bool,
    /// The cube has a whole producer warpgroup (384 units, one cube an SM) whose planes give
    /// registers back to the consumers (`super::registers`); otherwise one
    /// producer warp (288 units).
    pub moved: bool,
    /// With `overlap`: the consumer warpgroups take turns issuing a step's products
    /// (`super::turns`).
    pub turns: bool,
}

impl Variant {
    /// The variant a plan with `tuning` launches for `pass`, where the producer may load whole
    /// chunks by TMA (`tma`: the launch has their tensor maps) and whole query tiles too
    /// (`queries`: it has theirs).
    pub(crate) fn of(tuning: &Sm80Tuning, pass: Pass, tma: bool, queries: bool) -> Self {
        let queries = tma && queries && tuning.tma_queries;
        // The wide overlapped step at head dim 128 under a causal mask needs more registers
        // than even the moved split gives (ptxas sm_90a: 420 bytes of spill and its products
        // serialised, C7512): the 64-key overlapped step serves there.
        let crowded = pass.causal && pass.head_dim >= 128;
        let wide =
            tuning.wide_chunks && !(crowded && tuning.register_move && tuning.overlap_softmax);
        // Both in one step only where the registers moved (`super::wide_overlap`).
        let overlap = tuning.overlap_softmax && (!wide || tuning.register_move);
        Self {
            pv_pair: tuning.paired_pv,
            wide,
            overlap,
            tma,
            queries,
            handoff: queries && tuning.handed_tiles,
            moved: tuning.register_move,
            turns: overlap && tuning.warpgroup_turns,
        }
    }

    /// Units per cube: the consumer warpgroups and the producer warp, or its warpgroup.
    pub(crate) fn threads(self) -> usize {
        CONSUMERS + if self.moved { 128 } else { PRODUCERS }
    }

    /// How a moved cube (`moved`) shares its registers at `head_dim`: the overlapped wide step
    /// at 128 holds `S[64, 128]`, `O[64, 128]` and the held `P` at once, and spills at
    /// [`RegisterSplit::BALANCED`]'s 232 (112 bytes, in its chunk loop) but not at
    /// [`RegisterSplit::LEAN_PRODUCER`]'s 240 (ptxas sm_90a on the dumped source).
    pub(crate) fn registers(self, head_dim: usize) -> RegisterSplit {
        if self.wide && self.overlap && head_dim >= 128 {
            RegisterSplit::LEAN_PRODUCER
        } else {
            RegisterSplit::BALANCED
        }
    }

    /// Cubes an SM may hold: one where a second set of accumulators (products in flight) or
    /// the moved registers need the register file, else two.
    pub(crate) fn per_sm_cap(self) -> u32 {
        if self.overlap || self.moved { 1 } else { 2 }
    }
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
    lo: usize,
    hi: usize,
    prow0: usize,
    sl2: f32,
    neg_inf: f32,
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
        lo,
        hi,
        prow0,
        sl2,
        neg_inf,
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
    lo: usize,
    hi: usize,
    prow0: usize,
    sl2: f32,
    neg_inf: f32,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) {
    let mut alpha = Array::<f32>::new(2usize);
    let moved = probs_chunk(
        s, m, l, &mut alpha, kvalid, kv0, k0, lo, hi, prow0, sl2, neg_inf, pass, lazy, keys,
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
    lo: usize,
    hi: usize,
    prow0: usize,
    sl2: f32,
    neg_inf: f32,
    #[comptime] pass: Pass,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) -> bool {
    let mut need = k0 < lo || k0 + keys > hi;
    if comptime!(pass.masked) {
        need = true;
    }
    if comptime!(pass.causal) {
        need = need || k0 + keys > prow0 + 1;
    }
    if need {
        mask_scores(
            s,
            kvalid,
            kv0,
            k0,
            prow0,
            neg_inf,
            1usize,
            pass.causal,
            keys,
        );
    }
    softmax_probs(s, m, l, alpha, sl2, neg_inf, 1usize, lazy, keys)
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
    lo: usize,
    hi: usize,
    prow0: usize,
    sl2: f32,
    neg_inf: f32,
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
        pass_turn(group, turns);
        tiles_assign(s, 0usize, settle(sk, 1u32));
        let moved = probs_chunk(
            s, m, l, &mut alpha, kvalid, kv0, k0, lo, hi, prow0, sl2, neg_inf, pass, lazy, CHUNK,
        );
        let o = settle_pair(o, 0u32);
        tiles_assign(acc, 0usize, half_of(o, 0usize));
        tiles_assign(acc, 8usize, half_of(o, 1usize));
        rescale(acc, &alpha, moved, dtiles, lazy);
    } else {
        let o = mma_rs_add(tiles_into(&*acc, 0usize), held, mn_major(vbase), pv_async);
        pass_turn(group, turns);
        tiles_assign(s, 0usize, settle(sk, 1u32));
        let moved = probs_chunk(
            s, m, l, &mut alpha, kvalid, kv0, k0, lo, hi, prow0, sl2, neg_inf, pass, lazy, CHUNK,
        );
        tiles_assign(acc, 0usize, settle(o, 0u32));
        rescale(acc, &alpha, moved, dtiles, lazy);
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// Head dim 64, blocks of 128, no masks.
    const PASS: Pass = Pass {
        head_dim: 64,
        block: 128,
        causal: false,
        masked: false,
    };

    #[test]
    fn the_default_tuning_launches_the_plain_cube() {
        // `tma_queries` is off by default: the query tiles stay with the consumers even where
        // the launch has their map.
        let v = Variant::of(&Sm80Tuning::default(), PASS, true, true);
        let plain = Variant {
            tma: true,
            ..Variant::default()
        };
        assert_eq!(v, plain);
        assert_eq!((v.threads(), v.per_sm_cap()), (288, 2));
    }

    #[rstest]
    #[case::no_tma(false, true, (false, false, false))]
    #[case::no_query_map(true, false, (true, false, false))]
    #[case::both(true, true, (true, true, true))]
    fn the_query_tiles_need_tma_and_the_handoff_needs_them(
        #[case] tma: bool,
        #[case] queries: bool,
        #[case] want: (bool, bool, bool),
    ) {
        let tuning = Sm80Tuning {
            tma_queries: true,
            handed_tiles: true,
            ..Sm80Tuning::default()
        };
        let v = Variant::of(&tuning, PASS, tma, queries);
        assert_eq!((v.tma, v.queries, v.handoff), want);
    }

    #[test]
    fn the_wide_step_takes_precedence_over_the_overlap() {
        let tuning = Sm80Tuning {
            wide_chunks: true,
            overlap_softmax: true,
            ..Sm80Tuning::default()
        };
        let v = Variant::of(&tuning, PASS, true, false);
        assert!(v.wide && !v.overlap);
        assert_eq!(v.per_sm_cap(), 2);
    }

    #[test]
    fn the_moved_registers_let_the_wide_step_overlap() {
        let tuning = Sm80Tuning {
            register_move: true,
            wide_chunks: true,
            overlap_softmax: true,
            ..Sm80Tuning::default()
        };
        let v = Variant::of(&tuning, PASS, true, false);
        assert!(v.moved && v.wide && v.overlap);
    }

    #[rstest]
    #[case::without_the_overlap(false, false, false)]
    #[case::overlap(false, true, true)]
    #[case::wide_overlap(true, true, true)]
    fn the_warpgroups_take_turns_only_in_an_overlapped_step(
        #[case] wide: bool,
        #[case] overlap: bool,
        #[case] turns: bool,
    ) {
        let tuning = Sm80Tuning {
            register_move: true,
            wide_chunks: wide,
            overlap_softmax: overlap,
            warpgroup_turns: true,
            ..Sm80Tuning::default()
        };
        assert_eq!(Variant::of(&tuning, PASS, true, false).turns, turns);
    }

    #[rstest]
    #[case::head_dim_64(64, false, true)]
    #[case::head_dim_64_causal(64, true, true)]
    #[case::head_dim_128(128, false, true)]
    #[case::head_dim_128_causal(128, true, false)]
    fn the_wide_overlapped_step_gives_way_only_where_it_would_serialise(
        #[case] head_dim: usize,
        #[case] causal: bool,
        #[case] wide: bool,
    ) {
        let tuning = Sm80Tuning {
            register_move: true,
            wide_chunks: true,
            overlap_softmax: true,
            ..Sm80Tuning::default()
        };
        let pass = Pass {
            head_dim,
            causal,
            ..PASS
        };
        let v = Variant::of(&tuning, pass, true, false);
        assert_eq!((v.wide, v.overlap, v.moved), (wide, true, true));
    }

    #[rstest]
    #[case::alone(false, false)]
    #[case::wide(true, false)]
    #[case::overlap(false, true)]
    fn moved_registers_take_a_producer_warpgroup_and_the_sm(
        #[case] wide: bool,
        #[case] overlap: bool,
    ) {
        let tuning = Sm80Tuning {
            register_move: true,
            wide_chunks: wide,
            overlap_softmax: overlap,
            ..Sm80Tuning::default()
        };
        let v = Variant::of(&tuning, PASS, true, false);
        assert!(v.moved);
        assert_eq!((v.threads(), v.per_sm_cap()), (384, 1));
    }
}

//! Which Hopper forward a launch runs: the comptime [`Variant`] a tuning's switches and the
//! pass (head dim, causal mask) select — its consumer step, its producer's loads, its cube's
//! units and registers.

use super::registers::RegisterSplit;
use super::ring::{CONSUMERS, PRODUCERS};
use crate::Sm80Tuning;
use crate::args::Pass;

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

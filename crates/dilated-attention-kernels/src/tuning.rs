//! Tuning of the sm80 family ([`crate::Strategy::Sm80`]): tiles per plane, registers asked
//! per SM, which kernels run on Hopper's warpgroup MMA, and the Hopper forward's experimental
//! switches. The defaults are what measured fastest; `docs/benchmarks.md` has the runs.

/// Tuning of the [`Strategy::Sm80`](crate::Strategy::Sm80) kernels. The defaults are what measured fastest on the
/// H200 (`docs/benchmarks.md`); in JSON every field is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sm80Tuning {
    /// 16-row MMA tiles per plane of the forward (1 or 2).
    pub forward_tiles: u8,
    /// 16-row MMA tiles per plane of the `dQ` kernel (1 or 2).
    pub dq_tiles: u8,
    /// `dQ` inside the `dK/dV` kernel by f32 atomics (FlashAttention's single backward
    /// kernel): served for head dims 64/128 where the device has `stmatrix` and paired f32
    /// atomic adds — on Hopper's `dK/dV` (`crate::hopper::fused_dq`, five products a block
    /// pair instead of seven), or on the manual-MMA one with blocks of 64 or 128 — otherwise
    /// `dQ` keeps its own kernel. Off by default: the manual-MMA form was no faster on the H200
    /// (`docs/design.md`), the Hopper form 6–24 % slower fwd+bwd on the H100 (session 27).
    pub fused_dq: bool,
    /// Resident cubes per SM the forward asks registers for (0: no ask).
    pub forward_min_blocks: u8,
    /// Resident cubes per SM the `dK/dV` kernel asks registers for (0: no ask).
    pub dkdv_min_blocks: u8,
    /// The forward on Hopper's warpgroup MMA (`wgmma`, `crate::hopper`) where it applies:
    /// CUDA sm_90+, f16/bf16, head dim 64 or 128, blocks of 128 or 256, not a ring window;
    /// elsewhere the manual-MMA forward serves. On by default (faster on the H200 from 16K up,
    /// `docs/benchmarks.md`).
    pub wgmma_forward: bool,
    /// The backward on Hopper's warpgroup MMA (`crate::hopper`) where it applies: CUDA
    /// sm_90+, f16/bf16, head dim 64 or 128, blocks of 128 or 256, not a ring window, `dQ` not
    /// fused; elsewhere the manual-MMA kernels serve. On by default (LongNet fwd+bwd 12–14 %
    /// faster on the H100 from 16K to 128K at head dim 64, `docs/benchmarks.md`).
    pub wgmma_backward: bool,
    /// The forward's online softmax moves a row's shift only when the row max passes it by
    /// more than 2^8 (`P ≤ 256` then, exact in f16/bf16), and a plane rescales its output
    /// tiles only when one of its rows moved — instead of every chunk. Off by default: on the
    /// H100 it made head-dim-128 LongNet 2–3 % faster and changed nothing else measurably
    /// (`docs/benchmarks.md`, session 19).
    pub lazy_rescale: bool,
    /// The Hopper forward on a persistent grid of at most this many cubes (`u32::MAX`, the
    /// default: as many as the SMs hold at once; 0: one cube a query tile). A cube serves every
    /// `G`-th tile of the launch, and its producer warp fetches the next tile's keys while the
    /// consumers write the last tile's rows (`crate::hopper::schedule`). On the H100 the
    /// persistent forward was as fast as or faster than one cube a tile at head dims 64 and 128,
    /// 64K and 128K tokens (`docs/benchmarks.md`, session 19). With `handed_dq` the cap holds
    /// for the `dQ` grid too.
    pub persistent_forward: u32,
    /// The Hopper forward at head dim 128 issues both 64-column panels of `P·V` together and
    /// waits once, instead of one product and one wait each. Experimental, off by default: no
    /// change beyond the spread on the H100 (session 20).
    pub paired_pv: bool,
    /// The Hopper forward takes two chunks (128 keys) a step: one softmax over both, half the
    /// waits, fences and row reductions per key (FlashAttention-3's 128-key tile). Off by
    /// default: 1.4–2.9× slower on the H100 at the default's registers, where its products
    /// spill and serialise (session 22); with `register_move` and `overlap_softmax`
    /// (FlashAttention-3's step) 14–20 % slower (session 29).
    pub wide_chunks: bool,
    /// The Hopper forward issues a chunk's `Q·Kᵀ` together with the last chunk's `P·V` and runs
    /// the chunk's softmax while `P·V` is still in the tensor cores (FlashAttention-3's
    /// intra-warpgroup overlap, `crate::hopper::pipelined`). With `wide_chunks` only where
    /// `register_move` is on too (a step of 128 keys then holds the last step's two chunks,
    /// `crate::hopper::wide_overlap`; at head dim 128 under a causal mask, where that step
    /// would serialise its products, the 64-key overlapped step serves instead); otherwise
    /// ignored with it. Off by default: slower on the H100 at one cube an SM (session 22), and
    /// with `register_move` and `warpgroup_turns` 2–9 % slower, 14–20 % with `wide_chunks` too
    /// (session 29).
    pub overlap_softmax: bool,
    /// The Hopper kernels' producers load a chunk whose 64 gathered rows all lie inside the
    /// segment (and, for keys, are all keys: every chunk but a segment's, window's or causal
    /// diagonal's edge, unmasked) with two TMA copies per 64 columns — keys and values for the
    /// forward and `dQ`, queries and `dO` for `dK/dV` — from tensor maps that see the dilated
    /// rows as a strided box (`crate::hopper::tma`), instead of the copies of
    /// `crate::hopper::ring`. Other chunks keep those. On by default: on the H100 (session 26)
    /// fwd+bwd at 128K went 5–9 % faster at head dims 64 and 128 and the forward 2–19 %, with
    /// the device probe's errors equal to the copies' to the digit.
    pub tma_loads: bool,
    /// With `tma_loads`, the Hopper forward's producer also loads each query tile whose 128
    /// rows all lie in the query window by TMA, one tile ahead into a second buffer
    /// (`crate::hopper::query_tile`; +16 KB shared at head dim 64, +32 KB at 128), instead of
    /// the consumers staging it at the start of the tile. Off by default until the device
    /// probe's `strategies` has passed on it (session 27: compiled, timed and checked against
    /// the f64 oracle only, `docs/benchmarks.md`).
    pub tma_queries: bool,
    /// With `tma_queries`, the Hopper forward's producer also hands the consumers each tile
    /// and each chunk's first key through shared memory (`crate::hopper::forward_producer`),
    /// so the consumers neither locate their tiles (`params` loads, divisions) nor walk the
    /// layout rows. Off by default until the device probe has passed on it: on the H100 6 %
    /// faster than the default over the head-dim-64 seed and LongNet forwards at 64K and 128K,
    /// the seed at 128K 16 % (session 29; not timed at head dim 128).
    pub handed_tiles: bool,
    /// The Hopper forward launches a whole producer warpgroup (384 units, one cube an SM)
    /// whose planes give registers back to the consumers (`setmaxnreg`: 40 a producer unit,
    /// 232 a consumer unit, as the head-dim-128 `dK/dV` does), instead of one producer warp
    /// and 288 units. Meant for `wide_chunks` and `overlap_softmax`, whose second sets of
    /// accumulators spilled or serialised the products at the default's registers (96 at head
    /// dim 64 with two cubes an SM, 168 at 128). Off by default: on the H100 4 % slower than
    /// the default at head dim 64 (one cube an SM instead of two) and 2 % faster at 128
    /// (session 29).
    pub register_move: bool,
    /// With `overlap_softmax`, the Hopper forward's two consumer warpgroups take turns issuing
    /// their steps' products (FlashAttention-3's ping-pong, `crate::hopper::turns`: one turn a
    /// step, `Q·Kᵀ` and the held `P·V` together), so one warpgroup's softmax runs while the
    /// other's products fill the tensor cores; ignored without the overlap. Off by default: on
    /// the H100 the moved wide overlapped step gained 3 % from them at head dim 64 and nothing
    /// at 128, and stayed 14–19 % behind the default (session 29).
    pub warpgroup_turns: bool,
    /// With `tma_loads`, the Hopper `dQ` kernel runs on a persistent grid (one cube an SM, as
    /// its registers allow) whose producer hands the consumers each tile, its `L` and `Δ` and
    /// each chunk's first key through shared memory, and loads a whole tile's `Q` and `dO` rows
    /// by TMA while the consumers finish the last tile (`crate::hopper::backward_dq_handed`;
    /// +34 KB shared at head dim 64, where a second tile buffer fits). The one-tile kernel
    /// spends about nine chunk steps a tile outside its chunk loop with nothing to hide them
    /// (`docs/notes.md`, session 30). Its grid takes the cap of `persistent_forward` (0: the
    /// one-tile kernel). Off by default: built without a GPU, not yet run.
    pub handed_dq: bool,
    /// The Hopper `dK/dV` kernel on a persistent grid (one cube an SM) whose producer hands
    /// the consumers each key tile and each query chunk's position through shared memory and
    /// runs on into the next tile's chunks while the consumers write the last tile's gradients
    /// (`crate::hopper::backward_dkdv_handed`); the consumers still stage `K` and `V`. Its grid
    /// takes the cap of `persistent_forward` (0: the one-tile kernel); not with `fused_dq`.
    /// Off by default: built without a GPU, not yet run.
    pub handed_dkdv: bool,
}

impl Default for Sm80Tuning {
    fn default() -> Self {
        Self {
            forward_tiles: 2,
            dq_tiles: 2,
            fused_dq: false,
            forward_min_blocks: 0,
            dkdv_min_blocks: 3,
            wgmma_forward: true,
            wgmma_backward: true,
            lazy_rescale: false,
            persistent_forward: u32::MAX,
            paired_pv: false,
            wide_chunks: false,
            overlap_softmax: false,
            tma_loads: true,
            tma_queries: false,
            handed_tiles: false,
            register_move: false,
            warpgroup_turns: false,
            handed_dq: false,
            handed_dkdv: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sm80Tuning;

    #[test]
    fn the_experimental_switches_are_off_by_default() {
        let t = Sm80Tuning::default();
        assert!(!t.paired_pv && !t.wide_chunks && !t.overlap_softmax && !t.lazy_rescale);
        assert!(!t.fused_dq && !t.tma_queries && !t.handed_tiles && !t.register_move);
        assert!(!t.warpgroup_turns && !t.handed_dq && !t.handed_dkdv);
        // Measured faster and exact on the GPU (session 26).
        assert!(t.tma_loads);
    }
}

//! The kernel families `strategies` forces, by index (`device_probe --pick i,j` and
//! `docs/bench/s29/raw/pick.py` name them so; append new ones at the end), and the order the
//! unpicked run checks them in at blocks of 128.

use dilated_attention::{KernelStrategy, Sm80Tuning};

/// Every family the probe checks: the portable, `cmma` and manual-MMA ones, then the Hopper
/// forward's and backward's switches one by one.
pub fn all() -> Vec<KernelStrategy> {
    // The sm80 family on manual MMA only, then its variants.
    let sm80 = Sm80Tuning {
        wgmma_forward: false,
        wgmma_backward: false,
        ..Sm80Tuning::default()
    };
    vec![
        KernelStrategy::Portable,
        KernelStrategy::Cmma,
        KernelStrategy::Sm80(sm80),
        KernelStrategy::Sm80(Sm80Tuning {
            forward_tiles: 1,
            dq_tiles: 1,
            ..sm80
        }),
        KernelStrategy::Sm80(Sm80Tuning {
            fused_dq: true,
            ..sm80
        }),
        KernelStrategy::Sm80(Sm80Tuning {
            wgmma_forward: true,
            ..sm80
        }),
        KernelStrategy::Sm80(Sm80Tuning {
            wgmma_forward: true,
            wgmma_backward: true,
            ..sm80
        }),
        // The forward's lazy rescaling, on the Hopper forward where it serves (blocks of 128)
        // and on the manual-MMA one (blocks of 64).
        KernelStrategy::Sm80(Sm80Tuning {
            lazy_rescale: true,
            ..Sm80Tuning::default()
        }),
        // The Hopper forward on a persistent grid of three cubes: every cube serves many tiles
        // (the ring's rounds run on across them), the last cube fewer than the others.
        KernelStrategy::Sm80(Sm80Tuning {
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The Hopper forward on a grid of one cube a tile (the default grid is persistent).
        KernelStrategy::Sm80(Sm80Tuning {
            persistent_forward: 0,
            ..Sm80Tuning::default()
        }),
        // 128 keys a step (with the paired `P·V` at head dim 128), persistent over three cubes.
        KernelStrategy::Sm80(Sm80Tuning {
            wide_chunks: true,
            paired_pv: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The softmax overlapping the warpgroup's own `P·V`, persistent over three cubes.
        KernelStrategy::Sm80(Sm80Tuning {
            overlap_softmax: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The same with lazy rescaling (its rescale then depends on the plane's vote).
        KernelStrategy::Sm80(Sm80Tuning {
            overlap_softmax: true,
            lazy_rescale: true,
            ..Sm80Tuning::default()
        }),
        // The producers' row copies for every chunk instead of whole chunks by TMA (the
        // default, which serves in the unmasked runs below: a key mask sends every chunk
        // through the copies), persistent over three cubes.
        KernelStrategy::Sm80(Sm80Tuning {
            tma_loads: false,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // `dQ` inside the Hopper `dK/dV` kernel (f32 atomics).
        KernelStrategy::Sm80(Sm80Tuning {
            fused_dq: true,
            ..Sm80Tuning::default()
        }),
        // The Hopper forward's query tiles by TMA, one tile ahead (the tail segment's last
        // tile, which reaches past the segment's tokens, keeps the consumers' staging).
        KernelStrategy::Sm80(Sm80Tuning {
            tma_queries: true,
            ..Sm80Tuning::default()
        }),
        // The same with the tiles and chunk positions handed by the producer.
        KernelStrategy::Sm80(Sm80Tuning {
            tma_queries: true,
            handed_tiles: true,
            ..Sm80Tuning::default()
        }),
        // 128 keys a step on a forward cube whose producer warpgroup moves its registers to
        // the consumers, persistent over three cubes.
        KernelStrategy::Sm80(Sm80Tuning {
            register_move: true,
            wide_chunks: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The overlapped softmax with the moved registers, persistent over three cubes.
        KernelStrategy::Sm80(Sm80Tuning {
            register_move: true,
            overlap_softmax: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The wide step overlapped (both switches, the moved registers), persistent over three
        // cubes.
        KernelStrategy::Sm80(Sm80Tuning {
            register_move: true,
            wide_chunks: true,
            overlap_softmax: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The same with the consumer warpgroups taking turns at the tensor cores, persistent
        // over three cubes (the turns run on across tiles).
        KernelStrategy::Sm80(Sm80Tuning {
            register_move: true,
            wide_chunks: true,
            overlap_softmax: true,
            warpgroup_turns: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // The moved 64-key overlapped step with turns.
        KernelStrategy::Sm80(Sm80Tuning {
            register_move: true,
            overlap_softmax: true,
            warpgroup_turns: true,
            ..Sm80Tuning::default()
        }),
        // The default step on the moved registers.
        KernelStrategy::Sm80(Sm80Tuning {
            register_move: true,
            ..Sm80Tuning::default()
        }),
        // `dQ` on a persistent grid, its tiles handed by the producer (23), over three cubes
        // (the forward's too): each serves many tiles, so its two tile buffers and their
        // barriers' phases turn over.
        KernelStrategy::Sm80(Sm80Tuning {
            handed_dq: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
        // `dK/dV` on a persistent grid, its key tiles handed by the producer (24), over three
        // cubes likewise.
        KernelStrategy::Sm80(Sm80Tuning {
            handed_dkdv: true,
            persistent_forward: 3,
            ..Sm80Tuning::default()
        }),
    ]
}

/// The unpicked run's order at blocks of 128 (indices into [`all`]): the query tiles by TMA
/// with and without the handoff, the handed `dQ` and `dK/dV` (to be made defaults once they pass) and the default (the
/// Hopper forward and backward, whole chunks by TMA) first, then the moved registers with the
/// wide and the overlapped steps (and their turns), the row copies and the experiments: a probe
/// that runs out of time has checked them.
pub const BLOCKS_128_ORDER: [usize; 21] = [
    16, 23, 24, 15, 6, 17, 19, 20, 18, 21, 22, 13, 14, 11, 12, 10, 2, 5, 7, 8, 9,
];

//! The forward on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a), head dim 64 or 128,
//! warp-specialised.
//!
//! Same math, shapes, grid and layout arguments as `crate::sm80::forward` (tiles = 1): a cube
//! owns 128 gathered query rows; for each row `i`,
//! `out_i = Σ_j 2^{x_ij - m_i} v_j / Σ_j 2^{x_ij - m_i}` and `lse_i = ln 2 · m_i + ln l_i`
//! with `x_ij = log2(e) · scale · q_i·k_j` over the row's active gathered keys.
//!
//! A cube is 288 units in three roles:
//! - **a producer warp** (units 256–287) walks the layout row and fills a ring of `STAGES`
//!   shared stages with chunks of `CHUNK = 64` gathered keys and values by `cp.async`
//!   (`super::ring`: a full and an empty mbarrier per stage, no cube-wide barrier in the loop);
//! - **two consumer warpgroups** (units 0–255) of 64 query rows each take every chunk in turn:
//!   1. `S[64, 64] = Q·Kᵀ`: one `wgmma` call of `d / 16` k-steps, both operands read from shared
//!      memory by descriptor;
//!   2. masks and the online softmax on `S` in registers — the accumulator layout per plane is
//!      `mma.sync`'s, so this is the manual-MMA forward's code (`crate::sm80::rows`);
//!   3. `O[64, d] += P·V`: `P` rounded from the `S` registers is the register `A` operand, `V`
//!      the MN-major `B` operand (`trans-b`), one call per 64 columns of the head dim;
//!
//!   then release the stage. The warpgroups run independently: one's softmax overlaps the
//!   other's products, and a warpgroup whose rows all precede a chunk (causal) skips it.
//!
//! With `Variant::moved` the cube is 384 units: the producer warp's warpgroup gives its
//! registers to the consumers (`setmaxnreg`: 40 / 232 a unit, 24 / 240 for the overlapped wide
//! step at head dim 128, `Variant::registers`) and the cube has its SM alone.
//!
//! Experimental [`Variant`]s (off by default; which step runs is `super::consume`'s choice):
//! `pv_pair`, where head dim 128 issues both `P·V` panels at once (no clear change on the
//! H100, session 20), `wide`, where a step takes two chunks, 128 keys (slower at the default's
//! registers, session 22), `overlap`, where a step issues its `Q·Kᵀ` with the last chunk's
//! `P·V` and runs its softmax while that product is in the tensor cores (`super::pipelined`;
//! slower at one cube an SM, session 22), and both together under `moved`
//! (`super::wide_overlap`; 14–20 % slower on the H100, session 29). `turns`: with `overlap`,
//! the warpgroups take turns issuing a step's products (`super::turns`, FlashAttention-3's
//! ping-pong; 3 % on that step at head dim 64, nothing at 128, session 29). Session 20's
//! turns, two a chunk around synchronous products, measured 5–9 % slower (`147bbff`).
//!
//! Tiles are in the 128-byte swizzled layout (`super::wgmma::swizzled`: 64-column panels of
//! 128-byte rows, a row's 16-byte vectors permuted by the row). The `cp.async` landings and
//! the query tile are generic-proxy writes; they are fenced to the async proxy
//! (`fence.proxy.async`) before the products read them: the query tile by its writers (each
//! plane stages its own 16 rows) before their warpgroup's named barrier
//! (`super::ring::sync_warpgroup`), each chunk by its consumers after their wait on the stage.
//!
//! With `Variant::queries` the producer loads each whole query tile by TMA one tile ahead into
//! a second buffer (`super::query_tile`); otherwise, and for a tile that reaches past the query
//! window, the consumers stage it themselves.
//!
//! Each plane's 16 finished rows leave through its rows of the query tile as whole 16-byte
//! vectors (`super::epilogue`). A cube serves one tile, or on a persistent grid every
//! `G`-th tile of the launch (`super::schedule`), the ring's chunk count running on across them.
//!
//! Needs f16/bf16, head dim `d` of 64 or 128, blocks of 128/256 and `q, k, v, out` read and
//! written as 8-wide vectors. `out: [batch, heads, n, d]`, `lse: [batch, heads, n]`. Shared
//! memory: 81 KB a cube at head dim 64 (two cubes an SM), 161 KB at 128 (one).

use cubecl::prelude::*;

use super::consume::{Held, consume, finish_held};
use super::epilogue::write_rows_wide;
use super::forward_producer::produce;
use super::query_tile::{
    HANDOFF, QUERY_BARRIERS, TILE_EMPTY, TILE_END, handed_chunk, handed_tile, query_ring,
    stage_plane_queries, whole_query_tile,
};
use super::registers::consumer_registers;
use super::ring::{CONSUMERS, FLAGS, PRODUCERS, Ring, STAGES, sync_warpgroup};
use super::schedule::{Schedule, serves, span, tile_at};
use super::steps::ScoreBounds;
use super::tiles::{plane_and_group, wg_rows_bytes};
use super::turns::first_turn;
pub(crate) use super::variant::Variant;
use super::wgmma::{Product, k_major, shared_address};
use crate::addressing::Rows;
use crate::args::{Operands, Pass};
use crate::sm80::forward::LOG2E;
use crate::sm80::mma::{CHUNK, Walk, occupancy_hint, zero_tiles};
use crate::sm80::rows::{mark_rows_from, nan_marked_rows};

pub(crate) use super::query_tile::ROWS;
/// Units per cube: two consumer warpgroups and the producer warp (`Variant::threads` for the
/// cube with a producer warpgroup).
pub(crate) const THREADS: usize = CONSUMERS + PRODUCERS;
/// Whether the forward serves head dim `d` (64 or 128).
pub(crate) fn serves_head_dim(d: usize) -> bool {
    matches!(d, 64 | 128)
}

/// Shared memory of a cube in bytes: the ring's stages of key and value chunks, the query tile
/// (two of them where the producer loads them by TMA, `super::query_tile`), the key flags, the
/// barriers.
pub(crate) fn shared_bytes(head_dim: usize, tma: bool) -> usize {
    let query_tiles = if tma { 2 } else { 1 };
    (2 * STAGES * CHUNK + query_tiles * ROWS) * head_dim * 2
        + FLAGS * 4
        + (2 * STAGES + QUERY_BARRIERS) * 8
        + HANDOFF * 4
        + 16
}

#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn block_sparse_forward_wgmma<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
    lse: &mut Tensor<f32>,
    #[comptime] pass: Pass,
    #[comptime] merge: bool,
    #[comptime] min_blocks: u32,
    #[comptime] windowed: bool,
    #[comptime] bf16: bool,
    #[comptime] lazy: bool,
    #[comptime] persistent: bool,
    #[comptime] variant: Variant,
    schedule: &Schedule,
    qmap: &TensorMap<F, Tiled>,
    kmap: &TensorMap<F, Tiled>,
    vmap: &TensorMap<F, Tiled>,
) {
    // `setmaxnreg` needs the registers at entry known: one cube an SM (`super::ring`).
    occupancy_hint(comptime!(if variant.moved { 1 } else { min_blocks }));
    let subtiles = comptime!(pass.block / ROWS);
    let d = comptime!(pass.head_dim);
    let dtiles = comptime!(d / 8);
    let unit = UNIT_POS as usize;
    let (plane, group) = plane_and_group();

    // Vectors of one key tile (64 rows of 8 vectors); stage s holds keys at 2s, values at
    // 2s + 1, the query tile (ROWS rows; two with `variant.queries`, `super::query_tile`)
    // comes last.
    let tv = comptime!(CHUNK * d / 8);
    let q_at = comptime!(2 * STAGES * tv);
    let qv = comptime!(ROWS * d / 8);
    let query_tiles = comptime!(if variant.queries { 2 } else { 1 });
    let buf_len = comptime!(2 * STAGES * tv + query_tiles * qv);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 1024usize);
    let mut kvalid = Shared::<[u32]>::new_slice(FLAGS);
    // The producer's handed tiles and chunk positions (`super::query_tile`, `variant.handoff`).
    let mut handoff = Shared::<[u32]>::new_slice(HANDOFF);
    let ring = Ring::new();
    let qtiles = query_ring(variant.queries);
    let base = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
    let tile_bytes = comptime!((tv * 16) as u32);
    // The barriers are armed for every unit; the producer starts on the ring while the
    // consumers stage the query tile.
    sync_cube();

    // Chunk `i` of the cube's walk, counted across its tiles: the ring's stage and round.
    let mut i = 0usize;
    // Tile `j` of the cube's walk, counted over the tiles it serves: the query buffer's index
    // and round (with `variant.queries`).
    let mut j = 0usize;
    let (first, step, end) = span(schedule, persistent);
    if unit >= CONSUMERS {
        produce::<F, N>(
            io,
            &mut buf[0..buf_len],
            &mut kvalid[0..FLAGS],
            &mut handoff[0..HANDOFF],
            &ring,
            &qtiles,
            base,
            schedule,
            qmap,
            kmap,
            vmap,
            pass,
            windowed,
            persistent,
            variant,
            q_at,
            qv,
        );
        terminate!();
    }
    if comptime!(variant.moved) {
        consumer_registers(comptime!(variant.registers(pass.head_dim)));
    }

    // K-major Q and K (each warpgroup's 64 query rows start 64 rows into a panel of the query
    // tile, `dq` below). MN-major V: its rows (keys) are the contraction.
    let qk = comptime!(Product::over_head_dim(bf16, d));
    let pv = comptime!(Product::over_chunk(bf16));
    let sl2 = io.scale * LOG2E;
    first_turn(group, variant.turns);

    // With `variant.handoff` the producer hands the tiles (the served ones, then an end
    // marker); otherwise each consumer works out its cube's tiles itself.
    let mut t = first;
    let mut more = comptime!(variant.handoff) || t < end;
    while more {
        if comptime!(variant.handoff) {
            qtiles.take(j);
        }
        let (tile, sub, flags) = if comptime!(variant.handoff) {
            handed_tile(&handoff[0..HANDOFF], j)
        } else {
            let (tile, sub) = tile_at(
                &io.params, schedule, t, subtiles, pass.block, windowed, persistent,
            );
            (tile, sub, 0u32)
        };
        let q0 = tile.qb * pass.block + sub * ROWS;
        let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
        let served = if comptime!(variant.handoff) {
            flags & TILE_END == 0u32
        } else {
            serves(&tile, &queries, q0)
        };
        if served {
            // The tile's query buffer (with `variant.queries` the second one for odd `j`),
            // staged by the consumers unless the producer loaded it.
            if comptime!(variant.queries && !variant.handoff) {
                qtiles.take(j);
            }
            let at = q_at + select(comptime!(variant.queries), qv * (j % 2), 0usize);
            let staged = comptime!(!variant.queries) || !whole_query_tile(&queries, q0);
            if staged {
                // Each plane stages its own 16 rows (no other plane reads them before the
                // barrier: the last tile's epilogue wrote through each plane's own rows too).
                stage_plane_queries::<F, N>(
                    &io.q,
                    &mut buf[0..buf_len],
                    &tile,
                    &queries,
                    q0,
                    at,
                    d,
                );
                sync_async_proxy_shared();
                sync_warpgroup(group);
            }
            let dq = k_major(base + at as u32 * 16u32 + group as u32 * wg_rows_bytes());

            let mut acc = zero_tiles(dtiles);
            let mut m = Array::<f32>::new(2usize);
            let mut l = Array::<f32>::new(2usize);
            m[0] = io.neg_inf;
            m[1] = io.neg_inf;
            l[0] = 0.0f32;
            l[1] = 0.0f32;
            let prow0 = q0 + group * 64 + (plane % 4) * 16;
            let last_row = q0 + group * 64 + 63;
            // Rows that see a key whose value row was not finite (causal diagonal chunks,
            // `super::ring::fill_stage`): they write NaN.
            let mut poison = Array::<u32>::new(2usize);
            poison[0] = 0u32;
            poison[1] = 0u32;
            // With `variant.handoff` the producer hands each chunk's position: no walk here.
            let mut walk = if comptime!(variant.handoff) {
                Walk::idle()
            } else {
                Walk::of_tile(&io.blocks, &io.runs, &tile, &keys, pass.block, windowed)
            };
            let mut live = if comptime!(variant.handoff) {
                flags & TILE_EMPTY == 0u32
            } else {
                walk.live()
            };

            let bounds = ScoreBounds {
                lo: keys.lo,
                hi: keys.hi,
                prow0,
                sl2,
                neg_inf: io.neg_inf,
            };
            // With `variant.overlap`: the chunk (or wide step) whose `P·V` goes with the next step.
            let mut held = Held::none(base);
            while live {
                let stage = i % STAGES;
                let k0 = if comptime!(variant.handoff) {
                    ring.take(i);
                    let (k0, last) = handed_chunk(&handoff[0..HANDOFF], i);
                    live = !last;
                    k0
                } else {
                    let k0 = walk.first(pass.block);
                    walk.advance(&io.runs, pass.block, windowed);
                    live = walk.live();
                    ring.take(i);
                    k0
                };
                if comptime!(variant.wide) {
                    // The block's next chunk, in the next stage: a block holds an even number
                    // of chunks, so every walk pairs up and a pair starts on an even stage.
                    ring.take(i + 1);
                    if comptime!(variant.handoff) {
                        let (_, last) = handed_chunk(&handoff[0..HANDOFF], i + 1);
                        live = !last;
                    } else {
                        walk.advance(&io.runs, pass.block, windowed);
                        live = walk.live();
                    }
                }
                // The landed chunk becomes visible to `wgmma`.
                sync_async_proxy_shared();
                if comptime!(pass.causal) {
                    // The producer's test of a diagonal chunk's values (`fill_stage`).
                    if k0 + CHUNK > q0 + 1 {
                        let bad = kvalid[STAGES * CHUNK + stage] as usize;
                        mark_rows_from(&mut poison, bad, prow0, 1usize);
                    }
                    if comptime!(variant.wide) {
                        let k1 = k0 + CHUNK;
                        if k1 + CHUNK > q0 + 1 {
                            let bad = kvalid[STAGES * CHUNK + (stage + 1) % STAGES] as usize;
                            mark_rows_from(&mut poison, bad, prow0, 1usize);
                        }
                    }
                }

                // The warpgroup's rows all precede the chunk's keys: nothing to add (causal).
                let skip = pass.causal && k0 > last_row;
                let kbase = base + comptime!(2 * tile_bytes) * stage as u32;
                consume::<F>(
                    &ring,
                    i,
                    skip,
                    &mut acc,
                    &mut m,
                    &mut l,
                    &mut held,
                    dq,
                    kbase,
                    &kvalid[0..FLAGS],
                    stage * CHUNK,
                    k0,
                    &bounds,
                    group,
                    pass,
                    dtiles,
                    lazy,
                    qk,
                    pv,
                    variant,
                    bf16,
                );
                i += comptime!(if variant.wide { 2usize } else { 1usize });
            }
            finish_held(&ring, &mut acc, &held, pass, pv, variant);
            if comptime!(pass.causal) {
                nan_marked_rows(&mut acc, &poison, io.nan, 1usize, dtiles);
            }
            // The warpgroup's products are done with its query rows, where its planes stage
            // `out`.
            sync_warpgroup(group);
            write_rows_wide::<F, N>(
                &acc,
                &m,
                &l,
                out,
                lse,
                &mut buf[0..buf_len],
                &tile,
                &queries,
                q0,
                prow0,
                io.neg_inf,
                at,
                dtiles,
                merge,
            );
            if comptime!(variant.queries) {
                // The epilogue's generic writes to the buffer come before the producer's next
                // TMA writes to it (async proxy).
                sync_async_proxy_shared();
                qtiles.release(j);
            }
            j += 1;
        }
        if comptime!(variant.handoff) {
            more = served;
        } else {
            t += step;
            more = t < end;
        }
    }
}

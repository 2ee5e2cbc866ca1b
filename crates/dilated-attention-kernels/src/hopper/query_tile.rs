//! The query tile of a Hopper cube: `ROWS` gathered query rows (or `dO` rows, which have their
//! shape) in the 128-byte swizzled layout (`super::wgmma::swizzled`, panels of `ROWS` rows),
//! staged by the consumers themselves or, in the forward with `Sm80Tuning::tma_queries`, by the
//! producer warp one tile ahead.
//!
//! **Staged by the consumers** ([`stage_queries`](fn@stage_queries),
//! [`stage_plane_queries`](fn@stage_plane_queries)): plain loads, eight units a row, one
//! 16-byte vector each, then `fence.proxy.async` and a barrier before `wgmma` reads them.
//!
//! **Loaded by the producer** (the forward, `Variant::queries`, `Sm80Tuning::tma_queries`): the
//! tile lives in one of two buffers, tile `j` of the cube's walk (counted over the tiles it
//! serves) in buffer `j mod 2`. The buffers are a ring of two ([`query_ring`](fn@query_ring),
//! `super::ring::Ring`), two mbarriers a buffer:
//! - `full[b]` (one arrival, lane 0 of the producer) completes when the producer has arrived
//!   *and*, for a whole tile, the TMA copies have landed (`mbarrier.arrive.expect_tx`);
//! - `empty[b]` (`CONSUMERS` arrivals) completes when both warpgroups have written their rows
//!   of `out` through the buffer (the epilogue stages `out` there).
//!
//! A whole tile — all `ROWS` rows inside the query window, hence `r`-strided rows of one
//! segment — comes as `ROWS / 64` boxes of 64 rows per 64-column panel from the gathering map
//! over `q` (`super::tma::gather_maps`, the keys' map shape: `[batch, heads, ⌈n / r⌉, r, d]`,
//! box `[1, 1, 64, 1, 64]`). For any other tile the producer arrives without copies and the
//! consumers stage the rows as above. Since the producer runs up to `STAGES` chunks ahead, the
//! next tile's queries land while the consumers still work on the last tile's chunks: the
//! consumers' tile prologue loses its dependent global loads.

use cubecl::prelude::*;

use super::ring::{CONSUMERS, Ring, STAGES};
use super::tiles::{plane_vector, tile_vector};
use super::tma::{arrive_expect_tx, load_box};
use super::wgmma::{PANEL_ROW, swizzled};
use crate::addressing::{Rows, Tile};
use crate::sm80::mma::CHUNK;

/// Query rows per cube: two warpgroups of one `wgmma` M (64 rows) each.
pub(crate) const ROWS: usize = 128;

/// Buffers of query tiles (`Variant::queries`): a ring of two (`super::ring::Ring`).
pub(crate) const QUERY_BUFFERS: usize = 2;
/// Words of the query buffers' barriers (`full[0..2]`, `empty[0..2]`), 8 bytes each.
pub(crate) const QUERY_BARRIERS: usize = 2 * QUERY_BUFFERS;

/// The query buffers' ring: tile `j` in buffer `j mod 2`; a `full` phase is one arrival (lane 0
/// of the producer, with the TMA bytes where the tile is whole), an `empty` phase the consumers'
/// after their epilogue. Its barriers are initialised only where the kernel `uses` them.
#[cube]
pub(crate) fn query_ring(#[comptime] uses: bool) -> Ring {
    Ring::with(QUERY_BUFFERS, 1u32, uses)
}

/// Words a query buffer's handed tile takes in the handoff words: the [`Tile`] fields, `sub`
/// and a flags word ([`TILE_EMPTY`], [`TILE_END`]).
const TILE_WORDS: usize = 32;
/// The flags word of a handed tile.
const FLAGS_WORD: usize = 16;
/// Words of the handoff (`Variant::queries`): a handed tile a query buffer, then one word a
/// ring stage, the stage's chunk position.
pub(crate) const HANDOFF: usize = 2 * TILE_WORDS + STAGES;
/// A handed tile whose layout row has no chunk.
pub(crate) const TILE_EMPTY: u32 = 1;
/// No tile: the cube's walk is over.
pub(crate) const TILE_END: u32 = 2;
/// A chunk position's mark of the tile's last chunk.
const LAST_CHUNK: u32 = 1u32 << 31;

/// Producer lane 0: tile `j` (and its part `sub`) into its buffer's handed words.
#[cube]
pub(crate) fn hand_tile(words: &mut [u32], j: usize, tile: &Tile, sub: usize, flags: u32) {
    let at = TILE_WORDS * (j % 2);
    words[at] = tile.qb as u32;
    words[at + 1] = tile.head as u32;
    words[at + 2] = tile.kv_head as u32;
    words[at + 3] = tile.batch as u32;
    words[at + 4] = tile.tokens as u32;
    words[at + 5] = tile.seg_blocks as u32;
    words[at + 6] = tile.dilation as u32;
    words[at + 7] = tile.seg_start as u32;
    words[at + 8] = tile.csr_base as u32;
    words[at + 9] = tile.q_lo as u32;
    words[at + 10] = tile.q_hi as u32;
    words[at + 11] = tile.k_lo as u32;
    words[at + 12] = tile.k_hi as u32;
    words[at + 13] = tile.q_origin as u32;
    words[at + 14] = tile.k_origin as u32;
    words[at + 15] = sub as u32;
    words[at + FLAGS_WORD] = flags;
}

/// Producer lane 0: the end marker in tile `j`'s handed words.
#[cube]
pub(crate) fn hand_end(words: &mut [u32], j: usize) {
    words[TILE_WORDS * (j % 2) + FLAGS_WORD] = TILE_END;
}

/// Consumer: handed tile `j` as `(tile, sub, flags)`.
#[cube]
pub(crate) fn handed_tile(words: &[u32], j: usize) -> (Tile, usize, u32) {
    let at = TILE_WORDS * (j % 2);
    let tile = Tile {
        qb: words[at] as usize,
        head: words[at + 1] as usize,
        kv_head: words[at + 2] as usize,
        batch: words[at + 3] as usize,
        tokens: words[at + 4] as usize,
        seg_blocks: words[at + 5] as usize,
        dilation: words[at + 6] as usize,
        seg_start: words[at + 7] as usize,
        csr_base: words[at + 8] as usize,
        q_lo: words[at + 9] as usize,
        q_hi: words[at + 10] as usize,
        k_lo: words[at + 11] as usize,
        k_hi: words[at + 12] as usize,
        q_origin: words[at + 13] as usize,
        k_origin: words[at + 14] as usize,
    };
    (tile, words[at + 15] as usize, words[at + FLAGS_WORD])
}

/// Producer lane 0: chunk `i`'s first gathered key and whether it is its tile's last.
#[cube]
pub(crate) fn hand_chunk(words: &mut [u32], i: usize, k0: usize, last: bool) {
    words[2 * TILE_WORDS + i % STAGES] = k0 as u32 | select(last, LAST_CHUNK, 0u32);
}

/// Consumer: chunk `i`'s first gathered key and whether it is its tile's last.
#[cube]
pub(crate) fn handed_chunk(words: &[u32], i: usize) -> (usize, bool) {
    let w = words[2 * TILE_WORDS + i % STAGES];
    ((w & !LAST_CHUNK) as usize, (w & LAST_CHUNK) != 0u32)
}

/// Whether the tile's `ROWS` gathered query rows from `q0` all lie inside the query window
/// (then they are one `dilation`-strided run of one segment).
#[cube]
pub(crate) fn whole_query_tile(queries: &Rows, q0: usize) -> bool {
    q0 >= queries.lo && q0 + ROWS <= queries.hi
}

/// Producer (one warp): tile `j`'s queries into its buffer at shared address `dst` — by TMA
/// from the map at `qaddr` where `whole`, else nothing — and its `full` barrier arrived on by
/// lane 0.
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn load_query_tile(
    tiles: &Ring,
    j: usize,
    qaddr: u64,
    dst: u32,
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    whole: bool,
    #[comptime] head_dim: usize,
) {
    if UNIT_POS as usize % 32 == 0 {
        let bar = tiles.full_address(j);
        if whole {
            arrive_expect_tx(bar, comptime!((ROWS * head_dim * 2) as u32));
            load_tile_boxes(qaddr, dst, bar, tile, queries, q0, head_dim);
        } else {
            tiles.arrive_full(j);
        }
    }
}

/// Producer lane 0: the `ROWS` gathered rows from `q0` (all inside `queries`) of the tensor
/// behind the gathering map at `map` (`q`, or `dO`, which has its shape) by TMA into the tile
/// at shared address `dst` (panels of `ROWS` rows of 128 bytes, `ROWS / CHUNK` boxes a panel),
/// their bytes completing on the barrier at `bar` (the caller arms it).
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn load_tile_boxes(
    map: u64,
    dst: u32,
    bar: u32,
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    #[comptime] head_dim: usize,
) {
    let row = tile.seg_start + q0 * tile.dilation - queries.origin;
    let g = (row / tile.dilation) as u32;
    let s = (row % tile.dilation) as u32;
    let (head, batch) = (tile.head as u32, tile.batch as u32);
    #[unroll]
    for h in 0..comptime!(head_dim / 64) {
        #[unroll]
        for half in 0..comptime!(ROWS / CHUNK) {
            // Panel h holds ROWS rows of 128 bytes; each box is CHUNK of them.
            let at = dst + comptime!((h * ROWS * PANEL_ROW + half * CHUNK * PANEL_ROW) as u32);
            let col = comptime!(64 * h as u32);
            let gj = g + comptime!((half * CHUNK) as u32);
            load_box(map, at, bar, col, s, gj, head, batch);
        }
    }
}

/// Loads the cube's `ROWS` gathered query rows of `q` (or of `dO`, which has its shape) from
/// `q0` into the swizzled tile at vector `at` (the consumer units, `CONSUMERS` of them, load;
/// eight adjacent units a row, a plain load a vector).
#[cube]
pub(crate) fn stage_queries<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    #[comptime] at: usize,
    #[comptime] head_dim: usize,
) {
    let nv = N::value();
    let base = tile.batch * q.stride(0) + tile.head * q.stride(1);
    #[unroll]
    for i in 0..comptime!(ROWS * head_dim / 8 / CONSUMERS) {
        let e = UNIT_POS as usize + i * CONSUMERS;
        let (r, c) = tile_vector(e);
        let p = queries.row(tile, q0 + r);
        buf[at + swizzled(r, c, ROWS)] = q[(base + p * q.stride(2)) / nv + c];
    }
}

/// Loads the calling plane's 16 rows (rows `16 · plane..` of the cube's `ROWS`) of the gathered
/// query tile from `q0` into the swizzled tile at vector `at`: 32 lanes, eight a row.
#[cube]
pub(crate) fn stage_plane_queries<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    at: usize,
    #[comptime] head_dim: usize,
) {
    let nv = N::value();
    let (plane, lane) = (UNIT_POS as usize / 32, UNIT_POS as usize % 32);
    let base = tile.batch * q.stride(0) + tile.head * q.stride(1);
    #[unroll]
    for j in 0..comptime!(head_dim / 16) {
        let (pr, c) = plane_vector(lane, j);
        let r = plane * 16 + pr;
        let p = queries.row(tile, q0 + r);
        buf[at + swizzled(r, c, ROWS)] = q[(base + p * q.stride(2)) / nv + c];
    }
}

//! Where a cube works, decoded once from a head class's parameters: [`Tile`] (its query
//! block, head, batch and segment), [`Rows`] (the tokens a tensor holds under a ring window)
//! and the parameter positions ([`param`]) that the host side (`ClassParams`) writes.
//!
//! Dilation is addressing only: gathered token `t` of segment `g` is raw position
//! `g·w + s + t·r` (segment length `w`, class offset `s`, dilation `r`), read as the strided
//! row `seg_start + t·r − origin` of its tensor. No kernel gathers or masks a dense segment.

use cubecl::prelude::*;

/// Positions of the class parameters in the `params` buffer a kernel reads.
pub(crate) mod param {
    /// Segment length `w` in raw tokens.
    pub const SEGMENT_LENGTH: usize = 0;
    /// Dilation rate `r`.
    pub const DILATION: usize = 1;
    /// Class offset `s` (first head, first selected token of a segment).
    pub const OFFSET: usize = 2;
    /// Segments over the sequence.
    pub const SEGMENTS: usize = 3;
    /// Blocks of a full segment.
    pub const BLOCKS_FULL: usize = 4;
    /// Selected tokens of a full segment.
    pub const TOKENS_FULL: usize = 5;
    /// Selected tokens of the tail segment (0: none).
    pub const TOKENS_TAIL: usize = 6;
    /// Query heads per key/value head.
    pub const GROUP: usize = 7;
    /// First raw query token of the window (0 without one).
    pub const Q_START: usize = 8;
    /// End of the raw query tokens of the window (`u32::MAX` without one).
    pub const Q_END: usize = 9;
    /// First raw key token of the window (0 without one).
    pub const K_START: usize = 10;
    /// End of the raw key tokens of the window (`u32::MAX` without one).
    pub const K_END: usize = 11;
    /// Words in all.
    pub const COUNT: usize = 12;
}

/// Where a cube works: its query-block row of a head class (grid `x` = row, `y` = the class's
/// head, `z` = batch), decoded from the class parameters.
///
/// A windowed launch (a ring step) reads query rows `q_origin..` and key rows `k_origin..` of
/// its tensors, which hold only the tokens of its windows: the gathered tokens of the segment
/// that fall in them are `[q_lo, q_hi)` and `[k_lo, k_hi)`, and token `t` sits at tensor row
/// `seg_start + t · dilation − origin`. Without a window they are `[0, tokens)` with origin 0.
#[derive(CubeType)]
pub(crate) struct Tile {
    /// Query block inside its segment.
    pub qb: usize,
    /// Query head.
    pub head: usize,
    /// Key/value head it reads.
    pub kv_head: usize,
    /// Batch index.
    pub batch: usize,
    /// Gathered tokens of its segment.
    pub tokens: usize,
    /// Blocks of its segment; a cube whose `qb` is past them has nothing to do.
    pub seg_blocks: usize,
    /// Dilation rate of the branch.
    pub dilation: usize,
    /// Raw position of gathered token 0 of its segment.
    pub seg_start: usize,
    /// First CSR row of its segment shape (full or tail).
    pub csr_base: usize,
    /// Gathered query tokens of the segment inside the query window: `[q_lo, q_hi)`.
    pub q_lo: usize,
    /// End of the query window in gathered tokens.
    pub q_hi: usize,
    /// Gathered key tokens of the segment inside the key window: `[k_lo, k_hi)`.
    pub k_lo: usize,
    /// End of the key window in gathered tokens.
    pub k_hi: usize,
    /// Raw position of the first row of the query tensors.
    pub q_origin: usize,
    /// Raw position of the first row of the key/value tensors.
    pub k_origin: usize,
}

/// The number of gathered tokens `t < tokens` of a segment whose raw position
/// `start + t · dilation` lies before raw position `at`.
#[cube]
pub(crate) fn tokens_before(at: usize, start: usize, dilation: usize, tokens: usize) -> usize {
    // ceil((at - start) / dilation) for at > start, without overflow at `at = u32::MAX`.
    let before = select(at > start, (at - start - 1) / dilation + 1, 0usize);
    select(before < tokens, before, tokens)
}

/// Decodes the class parameters (positions in [`param`]) for query-block row `row` of the
/// cube's class head (`CUBE_POS_Y`) and batch (`CUBE_POS_Z`); the window words are read only by
/// `windowed` kernels (see [`Tile`]).
#[cube]
pub(crate) fn locate(
    params: &Tensor<u32>,
    row: usize,
    #[comptime] block: usize,
    #[comptime] windowed: bool,
) -> Tile {
    locate_at(
        params,
        row,
        CUBE_POS_Y as usize,
        CUBE_POS_Z as usize,
        block,
        windowed,
    )
}

/// [`locate`](fn@locate) for the class's `class_head`-th head and batch `batch`, where a cube
/// serves more than one (a persistent grid).
#[cube]
#[allow(clippy::manual_div_ceil)] // CubeCL kernel code
pub(crate) fn locate_at(
    params: &Tensor<u32>,
    row: usize,
    class_head: usize,
    batch: usize,
    #[comptime] block: usize,
    #[comptime] windowed: bool,
) -> Tile {
    let seg_len = params[param::SEGMENT_LENGTH] as usize;
    let dilation = params[param::DILATION] as usize;
    let offset = params[param::OFFSET] as usize;
    let num_segments = params[param::SEGMENTS] as usize;
    let blocks_full = params[param::BLOCKS_FULL] as usize;
    let tokens_full = params[param::TOKENS_FULL] as usize;
    let tokens_tail = params[param::TOKENS_TAIL] as usize;
    let group = params[param::GROUP] as usize;
    let segment = row / blocks_full;
    let head = offset + dilation * class_head;
    let is_tail = segment + 1 == num_segments && tokens_tail > 0;
    let tokens = select(is_tail, tokens_tail, tokens_full);
    let seg_start = segment * seg_len + offset;
    // Without a window (known when the kernel is compiled) the bounds are the segment's.
    let mut q_origin = 0usize;
    let mut k_origin = 0usize;
    let mut q_lo = 0usize;
    let mut q_hi = tokens;
    let mut k_lo = 0usize;
    let mut k_hi = tokens;
    if comptime!(windowed) {
        q_origin = params[param::Q_START] as usize;
        k_origin = params[param::K_START] as usize;
        q_lo = tokens_before(q_origin, seg_start, dilation, tokens);
        q_hi = tokens_before(params[param::Q_END] as usize, seg_start, dilation, tokens);
        k_lo = tokens_before(k_origin, seg_start, dilation, tokens);
        k_hi = tokens_before(params[param::K_END] as usize, seg_start, dilation, tokens);
    }
    Tile {
        qb: row % blocks_full,
        head,
        kv_head: head / group,
        batch,
        tokens,
        seg_blocks: (tokens + block - 1) / block,
        dilation,
        seg_start,
        csr_base: select(is_tail, blocks_full + 1, 0usize),
        q_lo,
        q_hi,
        k_lo,
        k_hi,
        q_origin,
        k_origin,
    }
}

/// The gathered tokens `[lo, hi)` of a tile's segment that a tensor holds, from raw position
/// `origin` on: the tile's query window or its key window.
#[derive(CubeType)]
pub(crate) struct Rows {
    /// First gathered token inside.
    pub lo: usize,
    /// End of the gathered tokens inside.
    pub hi: usize,
    /// Raw position of the tensor's first row.
    pub origin: usize,
}

#[cube]
impl Rows {
    /// The query rows of `tile`.
    pub(crate) fn queries(tile: &Tile) -> Rows {
        Rows {
            lo: tile.q_lo,
            hi: tile.q_hi,
            origin: tile.q_origin,
        }
    }

    /// The key rows of `tile`.
    pub(crate) fn keys(tile: &Tile) -> Rows {
        Rows {
            lo: tile.k_lo,
            hi: tile.k_hi,
            origin: tile.k_origin,
        }
    }

    /// Whether gathered token `t` is inside.
    pub(crate) fn holds(&self, t: usize) -> bool {
        t >= self.lo && t < self.hi
    }

    /// The tensor row of gathered token `t`, or of the first token inside where `t` is not.
    pub(crate) fn row(&self, tile: &Tile, t: usize) -> usize {
        tile.seg_start + select(self.holds(t), t, self.lo) * tile.dilation - self.origin
    }

    /// The first block of `block` tokens that meets the rows.
    pub(crate) fn first_block(&self, #[comptime] block: usize) -> usize {
        self.lo / block
    }

    /// The end of the blocks that meet the rows (equal to `first_block`
    /// when there are none, so that a loop between the two runs no block).
    #[allow(clippy::manual_div_ceil)] // CubeCL kernel code
    pub(crate) fn end_block(&self, #[comptime] block: usize) -> usize {
        select(
            self.lo < self.hi,
            (self.hi + block - 1) / block,
            self.lo / block,
        )
    }

    /// Whether block `b` of `block` tokens holds some of the rows.
    pub(crate) fn meet(&self, b: usize, #[comptime] block: usize) -> bool {
        self.lo < self.hi && b * block < self.hi && b * block + block > self.lo
    }
}

/// `max(a, b)`.
#[cube]
pub(crate) fn clamp_up(a: usize, b: usize) -> usize {
    select(a > b, a, b)
}

/// `min(a, b)`.
#[cube]
pub(crate) fn clamp_down(a: usize, b: usize) -> usize {
    select(a < b, a, b)
}

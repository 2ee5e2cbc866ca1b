//! `dQ` of the backward on a persistent grid whose producer hands the consumers their tiles
//! (`Sm80Tuning::handed_dq`): the math, shapes and chunk step of `super::backward_dq`, on the
//! forward's schedule and handoff (`super::schedule`, `super::query_tile`).
//!
//! The one-tile `dQ` kernel runs one cube an SM (its 128 registers a unit), so everything a
//! cube does before its first chunk and after its last — locating the tile, walking its layout
//! row, loading `L` and `Δ`, staging `Q` and `dO`, the epilogue — leaves the tensor cores idle;
//! on the seed (14 chunks a tile) that costs about as much as nine chunks (`docs/notes.md`,
//! session 30). Here a cube serves every `G`-th tile of the launch (`super::schedule::span`),
//! and its producer warp, for each tile it serves, in order:
//! 1. takes a tile buffer (two at head dim 64, one at 128, where two do not fit: a ring of
//!    `tile_buffers`, `super::ring::Ring`), writes the tile's `L` and `Δ` (128 rows, four a
//!    lane) and, lane 0, the handed tile (`super::query_tile::hand_tile`) into shared memory,
//!    and loads a whole tile's `Q` and `dO` rows by TMA from the gathering maps over `q` and
//!    `dO` (`super::tma`); every lane then arrives on the buffer's `full` barrier (lane 0 with
//!    the bytes), which publishes its writes;
//! 2. fills the ring with the tile's key and value chunks as the one-tile kernel does, each
//!    chunk's first key and last-chunk mark handed with it.
//!
//! With one buffer (head dim 128) step 1 waits until the consumers have finished the last
//! tile, so there the tile's first `STAGES` chunks go out before it (the ring's stages free as
//! the consumers finish the last tile's chunks, and the buffer once they have all been taken:
//! neither wait can hold up the other).
//!
//! After its last tile it hands an end marker. The consumers take a tile, stage its rows
//! themselves where the tile is not whole (a segment's tail), run the chunk step
//! (`super::backward_dq::dq_chunk`) over the handed chunks, give the buffer back once their
//! products are done, and then add or store their `dQ` rows: the next tile's rows land while
//! they write. Shapes: as `super::backward_dq` (`q, dout: [batch, heads, n, d]`,
//! `k, v: [batch, kv_heads, n, d]`, `lse, delta: [batch, heads, n]`, `dq: [batch, heads, n, d]`).

use cubecl::prelude::*;

use super::backward_dq::dq_chunk;
use super::query_tile::{
    HANDOFF, ROWS, TILE_EMPTY, TILE_END, hand_chunk, hand_end, hand_tile, handed_chunk,
    handed_tile, load_tile_boxes, stage_plane_queries, whole_query_tile,
};
use super::ring::{CONSUMERS, PRODUCERS, Ring, STAGES, sync_warpgroup};
use super::schedule::{Schedule, serves, span, tile_at};
use super::tiles::{plane_and_group, wg_rows_bytes};
use super::tma::{arrive_expect_tx, fill_or_load, map_address};
use super::wgmma::{Product, k_major, shared_address};
use crate::addressing::{Rows, Tile};
use crate::args::{GradOperands, Operands, Pass};
use crate::sm80::backward_dq::write_query_grads;
use crate::sm80::forward::LOG2E;
use crate::sm80::grads::warp_query_stats;
use crate::sm80::mma::{CHUNK, Walk, zero_tiles};

/// Tile buffers (`Q` and `dO` rows, `ROWS` each) at head dim `d`: two where they fit beside the
/// ring (64: 128 KB a cube, which holds one cube an SM like its registers), else one.
pub(crate) fn tile_buffers(d: usize) -> usize {
    if d == 64 { 2 } else { 1 }
}

/// Shared memory of a cube at head dim `d`, in bytes: the ring's stages, the tile buffers, the
/// key flags, the handed words, `L` and `Δ` a buffer, and the barriers.
pub(crate) fn shared_bytes(d: usize) -> usize {
    let buffers = tile_buffers(d);
    (2 * STAGES * CHUNK + buffers * 2 * ROWS) * d * 2
        + STAGES * CHUNK * 4
        + HANDOFF * 4
        + buffers * 2 * ROWS * 4
        + 16 * (STAGES + buffers)
}

#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dq_handed<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dq: &mut Tensor<G>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] bf16: bool,
    #[comptime] tma: bool,
    schedule: &Schedule,
    qmap: &TensorMap<F, Tiled>,
    gmap: &TensorMap<F, Tiled>,
    kmap: &TensorMap<F, Tiled>,
    vmap: &TensorMap<F, Tiled>,
) {
    let d = comptime!(pass.head_dim);
    let buffers = comptime!(tile_buffers(pass.head_dim));
    let unit = UNIT_POS as usize;
    let (plane, group) = plane_and_group();

    // Stage s holds keys at vector 2s·tv and values at (2s + 1)·tv; tile buffer b holds its Q
    // rows at q_at + 2b·qv and its dO rows qv further.
    let tv = comptime!(CHUNK * d / 8);
    let qv = comptime!(ROWS * d / 8);
    let q_at = comptime!(2 * STAGES * tv);
    let buf_len = comptime!(2 * STAGES * tv + buffers * 2 * qv);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 1024usize);
    let mut kvalid = Shared::<[u32]>::new_slice(comptime!(STAGES * CHUNK));
    let mut handoff = Shared::<[u32]>::new_slice(HANDOFF);
    // L and Δ of each buffer's ROWS rows.
    let mut lstats = Shared::<[f32]>::new_slice(comptime!(buffers * ROWS));
    let mut dstats = Shared::<[f32]>::new_slice(comptime!(buffers * ROWS));
    let ring = Ring::new();
    let tiles = Ring::with(buffers, PRODUCERS as u32, true);
    let base = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
    // The barriers are armed for every unit.
    sync_cube();

    if unit >= CONSUMERS {
        produce(
            io,
            grad,
            &mut buf[0..buf_len],
            &mut kvalid[0..comptime!(STAGES * CHUNK)],
            &mut handoff[0..HANDOFF],
            &mut lstats[0..comptime!(buffers * ROWS)],
            &mut dstats[0..comptime!(buffers * ROWS)],
            &ring,
            &tiles,
            base,
            schedule,
            qmap,
            gmap,
            kmap,
            vmap,
            pass,
            tma,
        );
        terminate!();
    }

    let tile_bytes = comptime!((tv * 16) as u32);
    let sp = comptime!(Product::over_head_dim(bf16, d));
    let grad_product = comptime!(Product::over_chunk(bf16));
    let sl2 = io.scale * LOG2E;
    let g = (unit % 32) / 4;
    let wg = group as u32 * wg_rows_bytes();

    // Chunk `i` of the cube's walk and tile `j`, counted across its tiles.
    let mut i = 0usize;
    let mut j = 0usize;
    let mut more = true;
    while more {
        tiles.take(j);
        let (tile, sub, flags) = handed_tile(&handoff[0..HANDOFF], j);
        more = flags & TILE_END == 0u32;
        if more {
            let b = j % buffers;
            let q0 = tile.qb * pass.block + sub * ROWS;
            let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
            let at = q_at + 2 * qv * b;
            if comptime!(!tma) || !whole_query_tile(&queries, q0) {
                // The producer loaded nothing: each plane stages its own 16 rows of Q and dO
                // (a warpgroup's products read only its own rows).
                stage_plane_queries::<F, N>(
                    &io.q,
                    &mut buf[0..buf_len],
                    &tile,
                    &queries,
                    q0,
                    at,
                    d,
                );
                stage_plane_queries::<F, N>(
                    &grad.dout,
                    &mut buf[0..buf_len],
                    &tile,
                    &queries,
                    q0,
                    at + qv,
                    d,
                );
                sync_async_proxy_shared();
                sync_warpgroup(group);
            }
            let dqt = k_major(base + at as u32 * 16u32 + wg);
            let dgt = k_major(base + (at + qv) as u32 * 16u32 + wg);

            let prow0 = q0 + group * 64 + (plane % 4) * 16;
            let (first_row, last_row) = (q0 + group * 64, q0 + group * 64 + 63);
            // L (base 2; +inf for a row with no key or past the segment) and Δ of rows g and
            // g + 8, from the producer.
            let mut lrow = Array::<f32>::new(2usize);
            let mut drow = Array::<f32>::new(2usize);
            #[unroll]
            for h in 0..2usize {
                let r = prow0 - q0 + g + 8 * h;
                lrow[h] = lstats[ROWS * b + r];
                drow[h] = dstats[ROWS * b + r];
            }
            // A warpgroup whose rows all lie past the segment has nothing to add.
            let idle = first_row >= queries.hi;
            let mut acc = zero_tiles(comptime!(d / 8));
            let mut live = flags & TILE_EMPTY == 0u32;
            while live {
                let stage = i % STAGES;
                ring.take(i);
                let (k0, last) = handed_chunk(&handoff[0..HANDOFF], i);
                live = !last;
                // The landed chunk becomes visible to `wgmma`.
                sync_async_proxy_shared();
                // The warpgroup's rows all precede the chunk's keys: nothing to add (causal).
                let skip = idle || (pass.causal && k0 > last_row);
                if !skip {
                    let kbase = base + comptime!(2 * tile_bytes) * stage as u32;
                    dq_chunk::<F>(
                        &mut acc,
                        dqt,
                        dgt,
                        kbase,
                        &kvalid[0..comptime!(STAGES * CHUNK)],
                        stage,
                        k0,
                        &keys,
                        prow0,
                        &lrow,
                        &drow,
                        sl2,
                        io.neg_inf,
                        pass,
                        sp,
                        grad_product,
                    );
                }
                // `wgmma` has finished reading the stage (each call waits for its products).
                ring.release(i);
                i += 1;
            }
            // The products are done with the buffer (and the staging's generic writes come
            // before the producer's next TMA writes into it): the next tile's rows may land
            // while this one's `dQ` rows leave.
            sync_async_proxy_shared();
            tiles.release(j);
            write_query_grads::<G>(
                &acc, dq, &tile, &queries, prow0, io.scale, 1usize, d, overwrite,
            );
            j += 1;
        }
    }
}

/// Producer (one warp): for each tile the cube serves, its buffer (`L`, `Δ`, the handed tile,
/// `Q` and `dO` by TMA where the tile is whole), then its key and value chunks into the ring,
/// each chunk's position handed; after the last tile, the end marker.
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)] // CubeCL kernel code
fn produce<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    kvalid: &mut [u32],
    handoff: &mut [u32],
    lstats: &mut [f32],
    dstats: &mut [f32],
    ring: &Ring,
    tiles: &Ring,
    base: u32,
    schedule: &Schedule,
    qmap: &TensorMap<F, Tiled>,
    gmap: &TensorMap<F, Tiled>,
    kmap: &TensorMap<F, Tiled>,
    vmap: &TensorMap<F, Tiled>,
    #[comptime] pass: Pass,
    #[comptime] tma: bool,
) {
    let subtiles = comptime!(pass.block / ROWS);
    let d = comptime!(pass.head_dim);
    let buffers = comptime!(tile_buffers(pass.head_dim));
    let lane = UNIT_POS as usize % 32;
    // Bound once, never reassigned: `gpu_asm!` must get their values (`super::tma`).
    let qaddr = map_address::<F>(qmap);
    let gaddr = map_address::<F>(gmap);
    let kaddr = map_address::<F>(kmap);
    let vaddr = map_address::<F>(vmap);
    let (first, step, end) = span(schedule, true);
    let mut i = 0usize;
    let mut j = 0usize;
    let mut t = first;
    while t < end {
        let (tile, sub) = tile_at(&io.params, schedule, t, subtiles, pass.block, false, true);
        let q0 = tile.qb * pass.block + sub * ROWS;
        let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
        if serves(&tile, &queries, q0) {
            let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &keys, pass.block, false);
            let flags = select(walk.live(), 0u32, TILE_EMPTY);
            // Two buffers: the tile first, its rows land while the consumers finish the last
            // tile. One buffer (head dim 128): it frees only when the consumers have finished
            // the last tile, so the tile's first `STAGES` chunks go out before it.
            let ahead = comptime!(if buffers > 1 { 0usize } else { STAGES });
            let mut tiled = false;
            let mut n = 0usize;
            while walk.live() {
                if !tiled && n == ahead {
                    hand_and_load_tile::<F, N>(
                        grad, handoff, lstats, dstats, tiles, j, flags, &tile, sub, &queries, q0,
                        base, qaddr, gaddr, io.neg_inf, pass, tma,
                    );
                    tiled = true;
                }
                ring.acquire(i);
                let k0 = walk.first(pass.block);
                // Whether this chunk is the tile's last is known once the walk has moved on.
                walk.advance(&io.runs, pass.block, false);
                if lane == 0 {
                    hand_chunk(handoff, i, k0, !walk.live());
                }
                fill_or_load::<F, N>(
                    ring,
                    i,
                    &io.k,
                    &io.v,
                    &io.mask,
                    buf,
                    kvalid,
                    base,
                    kaddr,
                    vaddr,
                    &tile,
                    &keys,
                    k0,
                    false,
                    d,
                    pass.masked,
                    false,
                    tma,
                );
                i += 1;
                n += 1;
            }
            if !tiled {
                hand_and_load_tile::<F, N>(
                    grad, handoff, lstats, dstats, tiles, j, flags, &tile, sub, &queries, q0, base,
                    qaddr, gaddr, io.neg_inf, pass, tma,
                );
            }
            j += 1;
        }
        t += step;
    }
    // No tile left: the consumers stop at this marker.
    tiles.acquire(j);
    if lane == 0 {
        hand_end(handoff, j);
    }
    tiles.arrive_full(j);
}

/// Producer (one warp): tile `j`'s buffer — once the consumers have given it back — with
/// the tile's `L` and `Δ` (four rows a lane), the handed tile (lane 0, with `flags`) and, where
/// the tile is whole, its `Q` and `dO` rows by TMA; every lane arrives on the buffer's `full`
/// barrier (lane 0 with the copies' bytes).
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
fn hand_and_load_tile<F: Float, N: Size>(
    grad: &GradOperands<Vector<F, N>>,
    handoff: &mut [u32],
    lstats: &mut [f32],
    dstats: &mut [f32],
    tiles: &Ring,
    j: usize,
    flags: u32,
    tile: &Tile,
    sub: usize,
    queries: &Rows,
    q0: usize,
    base: u32,
    qaddr: u64,
    gaddr: u64,
    neg_inf: f32,
    #[comptime] pass: Pass,
    #[comptime] tma: bool,
) {
    let d = comptime!(pass.head_dim);
    let buffers = comptime!(tile_buffers(pass.head_dim));
    let qv = comptime!(ROWS * d / 8);
    let q_at = comptime!(2 * STAGES * CHUNK * d / 8);
    let lane = UNIT_POS as usize % 32;
    tiles.acquire(j);
    let b = j % buffers;
    let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
    let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);
    warp_query_stats(
        &grad.lse,
        &grad.delta,
        tile,
        l_base,
        d_base,
        q0,
        neg_inf,
        lstats,
        dstats,
        ROWS * b,
        ROWS,
    );
    let mut whole = false;
    if comptime!(tma) {
        whole = whole_query_tile(queries, q0);
    }
    if lane == 0 {
        hand_tile(handoff, j, tile, sub, flags);
        if whole {
            let dst = base + comptime!((q_at * 16) as u32) + (2 * qv * 16 * b) as u32;
            load_tiles(
                tiles.full_address(j),
                qaddr,
                gaddr,
                dst,
                tile,
                queries,
                q0,
                d,
            );
        } else {
            tiles.arrive_full(j);
        }
    } else {
        tiles.arrive_full(j);
    }
}

/// Producer lane 0: the tile's `ROWS` gathered `Q` and `dO` rows from `q0` (all inside the
/// query window) by TMA into the buffer at shared address `dst` (`Q`, then `dO` one tile on),
/// with its own arrival and their bytes on the barrier at `bar`.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
fn load_tiles(
    bar: u32,
    qaddr: u64,
    gaddr: u64,
    dst: u32,
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    #[comptime] head_dim: usize,
) {
    let tile_bytes = comptime!((ROWS * head_dim * 2) as u32);
    arrive_expect_tx(bar, comptime!(2 * tile_bytes));
    load_tile_boxes(qaddr, dst, bar, tile, queries, q0, head_dim);
    load_tile_boxes(gaddr, dst + tile_bytes, bar, tile, queries, q0, head_dim);
}

#[cfg(test)]
mod tests {
    use super::{shared_bytes, tile_buffers};
    use crate::hopper::schedule::resident_cubes;

    /// Hopper's shared memory a cube may take (227 KB of the SM's 228).
    const HOPPER_SHARED: usize = 227 * 1024;

    #[rstest::rstest]
    #[case(64, 2)]
    #[case(128, 1)]
    fn a_cube_fits_the_sm_with_its_tile_buffers(#[case] d: usize, #[case] buffers: usize) {
        assert_eq!(tile_buffers(d), buffers);
        assert!(
            shared_bytes(d) <= HOPPER_SHARED,
            "{} bytes",
            shared_bytes(d)
        );
        // One cube an SM, as the kernel's registers (142 at head dim 64, 167 at 128) allow.
        assert_eq!(resident_cubes(HOPPER_SHARED, shared_bytes(d), 1), 1);
    }
}

//! `dK/dV` of the backward on a persistent grid whose producer hands the consumers their
//! tiles (`Sm80Tuning::handed_dkdv`): the math, shapes and chunk step of
//! `super::backward_dkdv` (`super::dkdv_step::dkdv_chunk`), on the forward's schedule over the
//! transposed layout (tiles are key blocks; `super::schedule`) and its handoff
//! (`super::query_tile`).
//!
//! The one-tile `dK/dV` kernel runs one cube an SM (168 registers a unit): before its first
//! chunk a cube locates its tile, walks its layout row and stages its `K` and `V` rows while its
//! producer fills the ring from nothing; after its last, it writes `dk` and `dv` with the
//! tensor cores idle. Here a cube serves every `G`-th key tile of the launch, and its producer
//! hands each tile (a word ring of two, released by the consumers as soon as they have read
//! it) and then fills the ring with the tile's query chunks as the one-tile producer does
//! (`super::backward_dkdv::fill_query_stage`), each chunk's first query and last-chunk mark
//! handed with it — on into the next tile's chunks while the consumers write the last tile's
//! gradients and stage the next tile's keys. The consumers keep staging `K` and `V` (zeros for
//! padded keys, `super::backward_dkdv::stage_keys`), between two consumer barriers: the last
//! tile's products must be done with the rows first. Shapes: as `super::backward_dkdv`.

use cubecl::prelude::*;

use super::backward_dkdv::{ROWS, fill_query_stage, shares_registers, stage_keys};
use super::dkdv_step::{NARROW, dkdv_chunk};
use super::query_tile::{
    HANDOFF, TILE_EMPTY, TILE_END, hand_chunk, hand_end, hand_tile, handed_chunk, handed_tile,
};
use super::registers::{RegisterSplit, consumer_registers, producer_registers};
use super::ring::{CONSUMERS, PRODUCERS, Ring, STAGES, sync_consumers};
use super::schedule::{Schedule, serves, span, tile_at};
use super::tiles::{plane_and_group, wg_rows_bytes};
use super::tma::map_address;
use super::wgmma::{Product, k_major, shared_address};
use crate::addressing::Rows;
use crate::args::{GradOperands, Operands, Pass};
use crate::sm80::forward::LOG2E;
use crate::sm80::grads::write_key_grads;
use crate::sm80::mma::{CHUNK, Walk, occupancy_hint, zero_tiles};

/// Handed tiles in flight: a word ring of two (`super::query_tile::hand_tile`'s two slots).
const TILE_SLOTS: usize = 2;

/// Shared memory of a cube at head dim `d`, in bytes: the one-tile kernel's (unfused) and the
/// handed words and their barriers.
pub(crate) fn shared_bytes(d: usize) -> usize {
    super::backward_dkdv::shared_bytes(d, false) + HANDOFF * 4 + 16 * TILE_SLOTS
}

#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dkdv_handed<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dk: &mut Tensor<G>,
    dv: &mut Tensor<G>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] bf16: bool,
    #[comptime] tma: bool,
    schedule: &Schedule,
    qmap: &TensorMap<F, Tiled>,
    gmap: &TensorMap<F, Tiled>,
) {
    let share = comptime!(shares_registers(pass.head_dim));
    // ptxas honours `setmaxnreg` only where it knows the registers at entry.
    occupancy_hint(comptime!(u32::from(share)));
    let d = comptime!(pass.head_dim);
    let unit = UNIT_POS as usize;
    let (plane, group) = plane_and_group();

    // Stage s holds query rows at vector 2s·tv and dO rows at (2s + 1)·tv; the K and V tiles
    // (ROWS rows each) come last.
    let tv = comptime!(CHUNK * d / 8);
    let k_at = comptime!(2 * STAGES * tv);
    let v_at = comptime!(2 * STAGES * tv + ROWS * d / 8);
    let buf_len = comptime!(2 * STAGES * tv + 2 * ROWS * d / 8);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 1024usize);
    let mut lq = Shared::<[f32]>::new_slice(comptime!(STAGES * CHUNK));
    let mut dlt = Shared::<[f32]>::new_slice(comptime!(STAGES * CHUNK));
    // The chunk step's `dS` tile, unused without the fused dQ.
    let mut dsb = Shared::<[Vector<F, N>]>::new_aligned_slice(8usize, 1024usize);
    let mut handoff = Shared::<[u32]>::new_slice(HANDOFF);
    let ring = Ring::new();
    let tiles = Ring::with(TILE_SLOTS, PRODUCERS as u32, true);
    let base = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
    // The barriers are armed for every unit.
    sync_cube();

    if unit >= CONSUMERS {
        if comptime!(share) {
            // The producer walks many tiles: 56 registers, where 40 spilled its row copies.
            producer_registers(RegisterSplit::WIDE_PRODUCER);
        }
        produce(
            io,
            grad,
            &mut buf[0..buf_len],
            &mut lq[0..comptime!(STAGES * CHUNK)],
            &mut dlt[0..comptime!(STAGES * CHUNK)],
            &mut handoff[0..HANDOFF],
            &ring,
            &tiles,
            base,
            schedule,
            qmap,
            gmap,
            pass,
            tma,
        );
        terminate!();
    }
    if comptime!(share) {
        consumer_registers(RegisterSplit::WIDE_PRODUCER);
    }

    // K-major K and V tiles (A of Sᵀ and dPᵀ), each warpgroup's 64 keys 64 rows into a panel;
    // the stages' query and dO chunks as in the one-tile kernel.
    let wg = group as u32 * wg_rows_bytes();
    let dkt = k_major(base + comptime!((k_at * 16) as u32) + wg);
    let dvt = k_major(base + comptime!((v_at * 16) as u32) + wg);
    let st = comptime!(Product::over_head_dim(bf16, d));
    let grad_product = comptime!(Product::over_chunk(bf16));
    let narrow_grad = comptime!(Product {
        steps: (NARROW / 16) as u32,
        ..grad_product
    });
    let sl2 = io.scale * LOG2E;
    let pw = plane % 4;

    // Chunk `i` of the cube's walk and tile `j`, counted across its tiles.
    let mut i = 0usize;
    let mut j = 0usize;
    let mut more = true;
    while more {
        tiles.take(j);
        let (tile, sub, flags) = handed_tile(&handoff[0..HANDOFF], j);
        // The words are read: the slot may take tile `j + 2`.
        tiles.release(j);
        more = flags & TILE_END == 0u32;
        if more {
            let k0 = tile.qb * pass.block + sub * ROWS;
            let keys = Rows::keys(&tile);
            // The last tile's products are done with the K and V rows (each waited for its
            // own), then this tile's rows are staged and visible to `wgmma`.
            sync_consumers();
            stage_keys::<F, N>(
                &io.k,
                &io.v,
                &io.mask,
                &mut buf[0..buf_len],
                &tile,
                &keys,
                k0,
                k_at,
                v_at,
                pass,
            );
            sync_consumers();

            let mut dk_acc = zero_tiles(comptime!(d / 8));
            let mut dv_acc = zero_tiles(comptime!(d / 8));
            let kw0 = k0 + group * 64;
            let krow0 = kw0 + pw * 16;
            // A warpgroup whose keys all lie past the segment has nothing to add.
            let idle = kw0 >= keys.hi;
            let mut live = flags & TILE_EMPTY == 0u32;
            while live {
                let stage = i % STAGES;
                ring.take(i);
                let (c0, last) = handed_chunk(&handoff[0..HANDOFF], i);
                live = !last;
                // The landed chunk becomes visible to `wgmma`.
                sync_async_proxy_shared();
                // The warpgroup's keys all follow the chunk's queries: nothing to add (causal).
                let skip = idle || (pass.causal && c0 + CHUNK <= kw0);
                if !skip {
                    dkdv_chunk::<F, N>(
                        &mut dk_acc,
                        &mut dv_acc,
                        dkt,
                        dvt,
                        base,
                        stage,
                        &lq[0..comptime!(STAGES * CHUNK)],
                        &dlt[0..comptime!(STAGES * CHUNK)],
                        &mut dsb[0..8usize],
                        c0,
                        kw0,
                        krow0,
                        sl2,
                        io.neg_inf,
                        group,
                        pw,
                        pass,
                        st,
                        grad_product,
                        narrow_grad,
                        false,
                    );
                }
                // `wgmma` has finished reading the stage (each call waits for its products).
                ring.release(i);
                i += 1;
            }
            write_key_grads::<F, G, N>(
                &dk_acc, &dv_acc, dk, dv, io, &tile, &keys, krow0, pass, overwrite,
            );
            j += 1;
        }
    }
}

/// Producer (one warp): for each key tile the cube serves, the handed tile, then its query
/// chunks into the ring (`fill_query_stage`), each chunk's first query and last-chunk mark
/// handed with it; after the last tile, the end marker.
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)] // CubeCL kernel code
fn produce<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    lq: &mut [f32],
    dlt: &mut [f32],
    handoff: &mut [u32],
    ring: &Ring,
    tiles: &Ring,
    base: u32,
    schedule: &Schedule,
    qmap: &TensorMap<F, Tiled>,
    gmap: &TensorMap<F, Tiled>,
    #[comptime] pass: Pass,
    #[comptime] tma: bool,
) {
    let subtiles = comptime!(pass.block / ROWS);
    let lane = UNIT_POS as usize % 32;
    // Bound once, never reassigned: `gpu_asm!` must get their values (`super::tma`).
    let qaddr = map_address::<F>(qmap);
    let gaddr = map_address::<F>(gmap);
    let (first, step, end) = span(schedule, true);
    let mut i = 0usize;
    let mut j = 0usize;
    let mut t = first;
    while t < end {
        // Rows are keys: `tile.qb` is the key block, the transposed layout lists its query
        // blocks.
        let (tile, sub) = tile_at(&io.params, schedule, t, subtiles, pass.block, false, true);
        let k0 = tile.qb * pass.block + sub * ROWS;
        let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
        if serves(&tile, &keys, k0) {
            let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &queries, pass.block, false);
            tiles.acquire(j);
            if lane == 0 {
                let flags = select(walk.live(), 0u32, TILE_EMPTY);
                hand_tile(handoff, j, &tile, sub, flags);
            }
            tiles.arrive_full(j);
            let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
            let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);
            while walk.live() {
                ring.acquire(i);
                let c0 = walk.first(pass.block);
                // Whether this chunk is the tile's last is known once the walk has moved on.
                walk.advance(&io.runs, pass.block, false);
                if lane == 0 {
                    hand_chunk(handoff, i, c0, !walk.live());
                }
                fill_query_stage::<F, N>(
                    ring, i, io, grad, buf, lq, dlt, base, qaddr, gaddr, &tile, &queries, c0,
                    l_base, d_base, pass, tma,
                );
                i += 1;
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

#[cfg(test)]
mod tests {
    use super::shared_bytes;
    use crate::hopper::schedule::resident_cubes;

    /// Hopper's shared memory a cube may take (227 KB of the SM's 228).
    const HOPPER_SHARED: usize = 227 * 1024;

    #[rstest::rstest]
    fn a_cube_fits_the_sm(#[values(64, 128)] d: usize) {
        assert!(
            shared_bytes(d) <= HOPPER_SHARED,
            "{} bytes",
            shared_bytes(d)
        );
        // One cube an SM, as the kernel's registers (168 a unit) allow.
        assert_eq!(resident_cubes(HOPPER_SHARED, shared_bytes(d), 1), 1);
    }
}

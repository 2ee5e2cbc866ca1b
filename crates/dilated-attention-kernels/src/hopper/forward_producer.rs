//! The Hopper forward's producer warp (`super::forward`): for each query tile the cube serves,
//! the tile's queries (with `Variant::queries`) and then its chunks of keys and values into the
//! ring (`super::ring`, `super::tma`).
//!
//! With `Variant::handoff` (which needs `Variant::queries`) the producer also hands the
//! consumers what they would otherwise work out themselves (`super::query_tile`):
//! - the tile itself, its `Tile` fields and part, written with the query buffer's `full`
//!   arrival, so the consumers skip `tile_at`'s divisions and parameter loads;
//! - each chunk's first key and whether it is the tile's last, written with the chunk's `full`
//!   arrival, so the consumers do not walk the layout row;
//! - after its last tile, an end marker.
//!
//! Lane 0 writes every handed word before its own arrival on the barrier that publishes it; the
//! consumers read them after their wait and before their release, so the next round's write
//! cannot overtake the read. Shapes: as `super::forward` (`k, v: [batch, kv_heads, n, d]`,
//! `q: [batch, heads, n, d]`, 8-wide vectors).

use cubecl::prelude::*;

use super::query_tile::{
    ROWS, TILE_EMPTY, hand_chunk, hand_end, hand_tile, load_query_tile, whole_query_tile,
};
use super::registers::producer_registers;
use super::ring::Ring;
use super::schedule::{Schedule, serves, span, tile_at};
use super::tma::{fill_or_load, map_address};
use super::variant::Variant;
use crate::addressing::Rows;
use crate::args::{Operands, Pass};
use crate::sm80::mma::{CHUNK, Walk};

/// Producer (one warp; with `Variant::moved` its whole warpgroup gives registers back first):
/// fills the ring for every tile the cube serves, chunk `i` of the cube's
/// walk into stage `i % STAGES`. `buf` holds the stages and the query buffers (`q_at`, `qv`
/// vectors each) at shared address `base`; `handoff` the handed words.
#[cube]
#[allow(
    clippy::too_many_arguments,
    clippy::manual_is_multiple_of,
    clippy::collapsible_if // CubeCL kernel code: comptime branches around runtime ones
)]
pub(crate) fn produce<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    kvalid: &mut [u32],
    handoff: &mut [u32],
    ring: &Ring,
    qtiles: &Ring,
    base: u32,
    schedule: &Schedule,
    qmap: &TensorMap<F, Tiled>,
    kmap: &TensorMap<F, Tiled>,
    vmap: &TensorMap<F, Tiled>,
    #[comptime] pass: Pass,
    #[comptime] windowed: bool,
    #[comptime] persistent: bool,
    #[comptime] variant: Variant,
    #[comptime] q_at: usize,
    #[comptime] qv: usize,
) {
    if comptime!(variant.moved) {
        producer_registers(comptime!(variant.registers(pass.head_dim)));
    }
    let subtiles = comptime!(pass.block / ROWS);
    let d = comptime!(pass.head_dim);
    let lane0 = UNIT_POS as usize % 32 == 0;
    // Bound once, never reassigned: CubeCL hands a reassigned local to `gpu_asm!` as a pointer
    // to it, not its value (the maps are stand-ins where TMA is off).
    let qaddr = map_address::<F>(qmap);
    let kaddr = map_address::<F>(kmap);
    let vaddr = map_address::<F>(vmap);
    let (first, step, end) = span(schedule, persistent);
    let mut i = 0usize;
    let mut j = 0usize;
    let mut t = first;
    while t < end {
        let (tile, sub) = tile_at(
            &io.params, schedule, t, subtiles, pass.block, windowed, persistent,
        );
        let q0 = tile.qb * pass.block + sub * ROWS;
        let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
        if serves(&tile, &queries, q0) {
            let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &keys, pass.block, windowed);
            if comptime!(variant.queries) {
                // The tile and its queries first: they land while the consumers finish the
                // last tile's chunks.
                qtiles.acquire(j);
                if comptime!(variant.handoff) {
                    if lane0 {
                        let flags = select(walk.live(), 0u32, TILE_EMPTY);
                        hand_tile(handoff, j, &tile, sub, flags);
                    }
                }
                let dst = base
                    + comptime!((q_at * 16) as u32)
                    + comptime!((qv * 16) as u32) * (j % 2) as u32;
                let whole = whole_query_tile(&queries, q0);
                load_query_tile(qtiles, j, qaddr, dst, &tile, &queries, q0, whole, d);
            }
            while walk.live() {
                ring.acquire(i);
                let k0 = walk.first(pass.block);
                if comptime!(variant.handoff) {
                    // Whether this chunk is the tile's last is known once the walk has moved on.
                    walk.advance(&io.runs, pass.block, windowed);
                    if lane0 {
                        hand_chunk(handoff, i, k0, !walk.live());
                    }
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
                    k0 + CHUNK > q0 + 1,
                    d,
                    pass.masked,
                    pass.causal,
                    variant.tma,
                );
                if comptime!(!variant.handoff) {
                    walk.advance(&io.runs, pass.block, windowed);
                }
                i += 1;
            }
            j += 1;
        }
        t += step;
    }
    if comptime!(variant.handoff) {
        // No tile left: the consumers stop at this marker.
        qtiles.acquire(j);
        if lane0 {
            hand_end(handoff, j);
            qtiles.arrive_full(j);
        }
    }
}

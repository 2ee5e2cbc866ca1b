//! A consumer warpgroup's turn at one step of the Hopper forward's chunk loop (`super::forward`):
//! which step the [`Variant`] runs — the plain one, the wide one (`super::steps`), the
//! overlapped one with its held chunk (`super::pipelined`) or the wide overlapped one with its
//! held step (`super::wide_overlap`) — and which ring stages go back after it.
//!
//! Shapes per warpgroup: `S[64, keys]` and `O[64, d]` as f32 accumulators in the `mma.sync`
//! layout, `Q[64, d]` (descriptor `dq`), `K[keys, d]` and `V[keys, d]` in shared memory from
//! `kbase` (`keys` = 64, or 128 for a wide step).

use cubecl::prelude::*;

use super::pipelined::{p_fragments_in_order, p_fragments_in_order_at};
use super::ring::Ring;
use super::steps::{
    ScoreBounds, add_pv, add_pv_where, pipelined_step, score_chunk, wide_scores, wide_step,
};
use super::tiles::{p_fragments, tiles_assign};
use super::turns::{pass_turn, take_turn};
use super::variant::Variant;
use super::wgmma::{Frags, Product, k_major, mma_ss};
use super::wide_overlap::{add_held, add_held_where, pipelined_wide_step};
use crate::args::Pass;
use crate::sm80::mma::{CHUNK, P2, zero_tiles};

/// What an overlapped step holds for the next one: the probabilities of chunk `i` of the
/// cube's walk (and, for a wide step, of chunk `i + 1`) as `P·V`'s register `A`, and the
/// shared address of chunk `i`'s values (chunk `i + 1`'s are two tiles on).
#[derive(CubeType)]
pub(super) struct Held {
    /// The held (first) chunk's probabilities.
    pub p0: Vector<u32, Frags>,
    /// A held wide step's second chunk's.
    pub p1: Vector<u32, Frags>,
    /// Shared address of the held chunk's values.
    pub v: u32,
    /// The held chunk's index in the cube's walk (its ring stage and round).
    pub i: usize,
    /// Whether anything is held.
    pub pending: bool,
}

#[cube]
impl Held {
    /// Nothing held; `v` is a valid shared address all the same (`add_pv_where` reads it).
    pub(super) fn none(v: u32) -> Held {
        Held {
            p0: Vector::<u32, Frags>::new(0u32),
            p1: Vector::<u32, Frags>::new(0u32),
            v,
            i: 0usize,
            pending: false,
        }
    }
}

/// Chunk `i` of the cube's walk (with `variant.wide` also chunk `i + 1`), landed in the stage at
/// shared address `kbase`: its step, unless the warpgroup's rows all precede its keys (`skip`,
/// causal), then the stages it is done with go back to the ring.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn consume<F: Float>(
    ring: &Ring,
    i: usize,
    skip: bool,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    held: &mut Held,
    dq: u64,
    kbase: u32,
    kv: &[u32],
    kv0: usize,
    k0: usize,
    bounds: &ScoreBounds,
    group: usize,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] qk: Product,
    #[comptime] pv: Product,
    #[comptime] variant: Variant,
    #[comptime] bf16: bool,
) {
    let tile_bytes = comptime!((CHUNK * pass.head_dim * 2) as u32);
    if comptime!(variant.wide && !variant.overlap) {
        if !skip {
            wide_step::<F>(
                acc,
                m,
                l,
                dq,
                kbase,
                kv,
                kv0,
                k0,
                bounds,
                pass,
                dtiles,
                lazy,
                qk,
                pv,
                variant.pv_pair,
            );
        }
    } else if comptime!(variant.overlap) {
        // With `variant.wide` a step holds two chunks (stages `held.i` and the next). With
        // `variant.turns` each step is one turn, a skipped one too (`super::turns`).
        take_turn(group, variant.turns);
        if skip {
            // Stages go back in order: the held chunk's product first.
            if held.pending {
                if comptime!(variant.wide) {
                    add_held(acc, held.p0, held.p1, held.v, pass, pv);
                } else {
                    add_pv(acc, held.p0, held.v, pv, pass.head_dim, variant.pv_pair);
                }
                release_step(ring, held.i, variant);
                held.pending = false;
            }
            pass_turn(group, variant.turns);
            release_step(ring, i, variant);
        } else {
            let mut s = zero_tiles(comptime!(if variant.wide { 16usize } else { 8usize }));
            if held.pending {
                if comptime!(variant.wide) {
                    pipelined_wide_step(
                        &mut s,
                        m,
                        l,
                        acc,
                        held.p0,
                        held.p1,
                        held.v,
                        dq,
                        kbase,
                        kv,
                        kv0,
                        k0,
                        bounds,
                        pass,
                        dtiles,
                        lazy,
                        group,
                        qk,
                        pv,
                        variant.turns,
                    );
                } else {
                    pipelined_step(
                        &mut s,
                        m,
                        l,
                        acc,
                        held.p0,
                        held.v,
                        dq,
                        kbase,
                        kv,
                        kv0,
                        k0,
                        bounds,
                        pass,
                        dtiles,
                        lazy,
                        group,
                        qk,
                        pv,
                        variant.turns,
                    );
                }
                release_step(ring, held.i, variant);
            } else {
                if comptime!(variant.wide) {
                    wide_scores(&mut s, dq, kbase, pass, qk);
                } else {
                    tiles_assign(&mut s, 0usize, mma_ss(dq, k_major(kbase), qk));
                }
                pass_turn(group, variant.turns);
                score_chunk(
                    &mut s,
                    m,
                    l,
                    acc,
                    kv,
                    kv0,
                    k0,
                    bounds,
                    pass,
                    dtiles,
                    lazy,
                    comptime!(if variant.wide { 2 * CHUNK } else { CHUNK }),
                );
            }
            // Rounded only now, with no product in flight (`super::pipelined`).
            held.p0 = p_fragments_in_order(&s, bf16);
            if comptime!(variant.wide) {
                held.p1 = p_fragments_in_order_at(&s, 8usize, bf16);
            }
            held.v = kbase + tile_bytes;
            held.i = i;
            held.pending = true;
        }
    } else if !skip {
        let mut s = zero_tiles(8usize);
        tiles_assign(&mut s, 0usize, mma_ss(dq, k_major(kbase), qk));
        score_chunk(
            &mut s, m, l, acc, kv, kv0, k0, bounds, pass, dtiles, lazy, CHUNK,
        );
        let p = p_fragments::<F>(&s);
        add_pv(
            acc,
            p,
            kbase + tile_bytes,
            pv,
            pass.head_dim,
            variant.pv_pair,
        );
    }

    // `wgmma` has finished reading the stages (each call waits for its products); an
    // overlapped step released its held chunk's stages above.
    if comptime!(!variant.overlap) {
        release_step(ring, i, variant);
    }
}

/// After a tile's walk: the last held chunk or step (only the overlapped step holds one), with
/// no branch around its product (`super::steps::add_pv_where`), and its stages back to the ring.
#[cube]
#[allow(clippy::collapsible_if)] // CubeCL kernel code: a comptime branch around a runtime one
pub(super) fn finish_held(
    ring: &Ring,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    held: &Held,
    #[comptime] pass: Pass,
    #[comptime] pv: Product,
    #[comptime] variant: Variant,
) {
    if comptime!(variant.overlap && variant.wide) {
        add_held_where(acc, held.p0, held.p1, held.v, held.pending, pass, pv);
    } else if comptime!(variant.overlap) {
        add_pv_where(acc, held.p0, held.v, held.pending, pv, pass.head_dim);
    }
    if comptime!(variant.overlap) {
        if held.pending {
            release_step(ring, held.i, variant);
        }
    }
}

/// The stage of chunk `i` back to the ring (a wide step's two, in order).
#[cube]
fn release_step(ring: &Ring, i: usize, #[comptime] variant: Variant) {
    ring.release(i);
    if comptime!(variant.wide) {
        ring.release(i + 1);
    }
}

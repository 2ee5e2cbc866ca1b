//! One chunk step of the Hopper `dK/dV` kernels (`super::backward_dkdv`): a warpgroup's 64
//! keys against a ring stage's `CHUNK` queries — `Sᵀ = K·Qᵀ` and `dPᵀ = V·dOᵀ` issued together,
//! `Pᵀ` and `dSᵀ` in place (`super::dkdv_scores`), then `dV += Pᵀ·dO` and `dK += dSᵀ·Q` issued
//! together; at head dim 128 in two halves of `NARROW` queries, so that `Sᵀ` and `dPᵀ` fit
//! beside the two 64-register accumulators. With `fuse_dq` the step also leaves `dSᵀ` in the
//! `dS` tile for `super::fused_dq`.
//!
//! Shapes: the stage's query and `dO` rows at shared address `base + 2 · stage · tile` (K-major,
//! `CHUNK` rows, 128-byte swizzle) and their `L`, `Δ` at `lq`, `dlt[stage · CHUNK..]`; `dk_acc`,
//! `dv_acc`: `d / 8` accumulator tiles a unit.

use cubecl::prelude::*;

use super::dkdv_scores::key_scores;
use super::fused_dq::{store_ds, zero_ds};
use super::tiles::{p_fragments_from, tiles_assign, tiles_into};
use super::wgmma::{
    PANEL_ROW, Product, half_of, k_major, mma_rs_add_pair, mma_ss_pair, mma_ss_pair_narrow,
    mn_major,
};
use crate::args::Pass;
use crate::sm80::mma::{CHUNK, P2, zero_tiles};

/// Queries per narrow product at head dim 128: a chunk is two halves.
pub(crate) const NARROW: usize = 32;

/// The chunk of queries `c0..c0 + CHUNK` in ring stage `stage` against the warpgroup's keys
/// from `kw0` (the unit's rows from `krow0`), added into `dk_acc` and `dv_acc`; `dkt`, `dvt`:
/// the descriptors of the warpgroup's `K` and `V` rows. `pw`: the plane within its warpgroup.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn dkdv_chunk<F: Float, N: Size>(
    dk_acc: &mut Sequence<Array<Vector<f32, P2>>>,
    dv_acc: &mut Sequence<Array<Vector<f32, P2>>>,
    dkt: u64,
    dvt: u64,
    base: u32,
    stage: usize,
    lq: &[f32],
    dlt: &[f32],
    dsb: &mut [Vector<F, N>],
    c0: usize,
    kw0: usize,
    krow0: usize,
    sl2: f32,
    neg_inf: f32,
    group: usize,
    pw: usize,
    #[comptime] pass: Pass,
    #[comptime] st: Product,
    #[comptime] grad_product: Product,
    #[comptime] narrow_grad: Product,
    #[comptime] fuse_dq: bool,
) {
    let d = comptime!(pass.head_dim);
    let tile_bytes = comptime!((CHUNK * d / 8 * 16) as u32);
    let cq0 = stage * CHUNK;
    let qbase = base + comptime!(2 * tile_bytes) * stage as u32;
    let gbase = qbase + tile_bytes;
    if comptime!(d == 64) {
        // Sᵀ and dPᵀ, issued together.
        let sdp = mma_ss_pair(dkt, k_major(qbase), dvt, k_major(gbase), st);
        // Tiles 0–7 hold `Sᵀ`, tiles 8–15 `dPᵀ`.
        let mut sd = zero_tiles(16usize);
        tiles_assign(&mut sd, 0usize, half_of(sdp, 0usize));
        tiles_assign(&mut sd, 8usize, half_of(sdp, 1usize));
        // The causal mask only on a chunk that reaches the warpgroup's keys (one branch
        // a chunk, not a select on every score).
        let lqs = lq;
        let dls = dlt;
        if pass.causal && c0 < krow0 + 16 {
            key_scores(
                &mut sd, lqs, dls, cq0, c0, krow0, 0usize, sl2, neg_inf, 8usize, true,
            );
        } else {
            key_scores(
                &mut sd, lqs, dls, cq0, c0, krow0, 0usize, sl2, neg_inf, 8usize, false,
            );
        }
        if comptime!(fuse_dq) {
            store_ds::<F, N>(dsb, &sd, 8usize, 4usize, 0usize, group, pw);
        }
        // dV += Pᵀ·dO and dK += dSᵀ·Q, issued together.
        let o = mma_rs_add_pair(
            tiles_into(&*dv_acc, 0usize),
            p_fragments_from::<F>(&sd, 0usize, 4usize),
            mn_major(gbase),
            tiles_into(&*dk_acc, 0usize),
            p_fragments_from::<F>(&sd, 4usize, 4usize),
            mn_major(qbase),
            grad_product,
        );
        tiles_assign(dv_acc, 0usize, half_of(o, 0usize));
        tiles_assign(dk_acc, 0usize, half_of(o, 1usize));
    } else {
        // Head dim 128: the chunk's queries in two halves of 32, so that `Sᵀ` and
        // `dPᵀ` (16 registers each) fit beside the two 64-register accumulators.
        #[unroll]
        for half in 0..2usize {
            let at = comptime!((half * NARROW * PANEL_ROW) as u32);
            let h0 = c0 + half * NARROW;
            // Every query of the half precedes the warpgroup's keys (causal).
            if !(pass.causal && h0 + NARROW <= kw0) {
                let sdp =
                    mma_ss_pair_narrow(dkt, k_major(qbase + at), dvt, k_major(gbase + at), st);
                // Tiles 0–3 hold `Sᵀ`, tiles 4–7 `dPᵀ`.
                let mut sd = zero_tiles(8usize);
                tiles_assign(&mut sd, 0usize, sdp);
                let lqs = lq;
                let dls = dlt;
                let col0 = half * NARROW;
                if pass.causal && h0 < krow0 + 16 {
                    key_scores(
                        &mut sd, lqs, dls, cq0, c0, krow0, col0, sl2, neg_inf, 4usize, true,
                    );
                } else {
                    key_scores(
                        &mut sd, lqs, dls, cq0, c0, krow0, col0, sl2, neg_inf, 4usize, false,
                    );
                }
                if comptime!(fuse_dq) {
                    store_ds::<F, N>(
                        dsb,
                        &sd,
                        4usize,
                        2usize,
                        comptime!(half * NARROW),
                        group,
                        pw,
                    );
                }
                let pf = p_fragments_from::<F>(&sd, 0usize, 2usize);
                let df = p_fragments_from::<F>(&sd, 2usize, 2usize);
                // dV += Pᵀ·dO and dK += dSᵀ·Q over the half's 32 queries, a pair per
                // 64 columns of the head dim.
                #[unroll]
                for hh in 0..2usize {
                    let panel = comptime!((hh * CHUNK * PANEL_ROW) as u32) + at;
                    let o = mma_rs_add_pair(
                        tiles_into(&*dv_acc, comptime!(8 * hh)),
                        pf,
                        mn_major(gbase + panel),
                        tiles_into(&*dk_acc, comptime!(8 * hh)),
                        df,
                        mn_major(qbase + panel),
                        narrow_grad,
                    );
                    tiles_assign(dv_acc, comptime!(8 * hh), half_of(o, 0usize));
                    tiles_assign(dk_acc, comptime!(8 * hh), half_of(o, 1usize));
                }
            } else if comptime!(fuse_dq) {
                zero_ds::<F, N>(dsb, comptime!(half * NARROW), NARROW, group);
            }
        }
    }
}

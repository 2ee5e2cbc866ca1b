//! A consumer warpgroup's step of the Hopper forward on staged chunks (`super::forward`): the
//! scores, their masks and online softmax, and `O += P·V`, and the comptime variants of that
//! step.
//!
//! Shapes per warpgroup: `S[64, keys]` (`keys` = 64, or 128 for a wide step) and `O[64, d]`
//! as f32 accumulators in the `mma.sync` layout (`crate::sm80::rows`); `Q[64, d]`, `K[keys, d]`
//! and `V[keys, d]` in shared memory, 128-byte swizzled, read by descriptor.

use cubecl::prelude::*;

use super::tiles::{p_fragments_from, tiles_assign, tiles_into};
use super::wgmma::{
    Frags, PANEL_ROW, Product, half_of, k_major, mma_rs_add, mma_rs_add_pair, mma_ss_pair, mn_major,
};
use crate::args::Pass;
use crate::sm80::mma::{CHUNK, P2, zero_tiles};
use crate::sm80::rows::{mask_scores, softmax_step};

/// Comptime variants of the forward's consumer loop (`crate::Sm80Tuning`'s experimental
/// switches; both off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    /// At head dim 128, both 64-column panels of `P·V` are issued together and waited for
    /// once (`mma_rs_add_pair`), instead of one product and one wait each.
    pub pv_pair: bool,
    /// A step takes two chunks (128 keys, two ring stages): both `Q·Kᵀ` products issued
    /// together, one softmax over 128 columns, then the two `P·V` halves — half the waits,
    /// fences, row reductions and rescales per key (FlashAttention-3's 128-key tile).
    pub wide: bool,
}

/// One wide step (`Variant::wide`): chunks in stages `kv0 / CHUNK` and the next, whose keys
/// and values start at shared address `kbase` and two tiles on: `S[64, 128] = Q·Kᵀ` as two
/// products issued together, the masks and the online softmax over its 128 columns, then
/// `O += P·V` one chunk at a time.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn wide_step<F: Float>(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    dq: u64,
    kbase: u32,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    lo: usize,
    hi: usize,
    prow0: usize,
    sl2: f32,
    neg_inf: f32,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] qk: Product,
    #[comptime] pv: Product,
    #[comptime] pv_pair: bool,
) {
    let tile_bytes = comptime!((CHUNK * pass.head_dim * 2) as u32);
    let next = kbase + comptime!(2 * tile_bytes);
    let sk = mma_ss_pair(dq, k_major(kbase), dq, k_major(next), qk);
    let mut s = zero_tiles(16usize);
    tiles_assign(&mut s, 0usize, half_of(sk, 0usize));
    tiles_assign(&mut s, 8usize, half_of(sk, 1usize));
    score_chunk(
        &mut s,
        m,
        l,
        acc,
        kvalid,
        kv0,
        k0,
        lo,
        hi,
        prow0,
        sl2,
        neg_inf,
        pass,
        dtiles,
        lazy,
        comptime!(2 * CHUNK),
    );
    let p0 = p_fragments_from::<F>(&s, 0usize, 4usize);
    add_pv(acc, p0, kbase + tile_bytes, pv, pass.head_dim, pv_pair);
    let p1 = p_fragments_from::<F>(&s, 4usize, 4usize);
    add_pv(acc, p1, next + tile_bytes, pv, pass.head_dim, pv_pair);
}

/// `O[:, 64h..64h + 64] += P·V[:, 64h..64h + 64]` for each 64-column panel `h` of the value
/// tile at shared address `vbase`; with `pair` (head dim 128) both panels' products are issued
/// together and waited for once.
#[cube]
pub(super) fn add_pv(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    p: Vector<u32, Frags>,
    vbase: u32,
    #[comptime] pv: Product,
    #[comptime] d: usize,
    #[comptime] pair: bool,
) {
    if comptime!(pair && d == 128) {
        let panel = comptime!((CHUNK * PANEL_ROW) as u32);
        let o = mma_rs_add_pair(
            tiles_into(&*acc, 0usize),
            p,
            mn_major(vbase),
            tiles_into(&*acc, 8usize),
            p,
            mn_major(vbase + panel),
            pv,
        );
        tiles_assign(acc, 0usize, half_of(o, 0usize));
        tiles_assign(acc, 8usize, half_of(o, 1usize));
    } else {
        #[unroll]
        for h in 0..comptime!(d / 64) {
            let dv = mn_major(vbase + comptime!((h * CHUNK * PANEL_ROW) as u32));
            let o = mma_rs_add(tiles_into(&*acc, comptime!(8 * h)), p, dv, pv);
            tiles_assign(acc, comptime!(8 * h), o);
        }
    }
}

/// The masks (where the chunk needs them: keys `k0..k0 + keys` against the key window
/// `lo..hi`, the padding flags from `kvalid[kv0..]`, causal rows from `prow0`) and the online
/// softmax step on a chunk's scores `s`, which become the probabilities; `acc` is rescaled.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn score_chunk(
    s: &mut Sequence<Array<Vector<f32, P2>>>,
    m: &mut Array<f32>,
    l: &mut Array<f32>,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    kvalid: &[u32],
    kv0: usize,
    k0: usize,
    lo: usize,
    hi: usize,
    prow0: usize,
    sl2: f32,
    neg_inf: f32,
    #[comptime] pass: Pass,
    #[comptime] dtiles: usize,
    #[comptime] lazy: bool,
    #[comptime] keys: usize,
) {
    let mut need = k0 < lo || k0 + keys > hi;
    if comptime!(pass.masked) {
        need = true;
    }
    if comptime!(pass.causal) {
        need = need || k0 + keys > prow0 + 1;
    }
    if need {
        mask_scores(
            s,
            kvalid,
            kv0,
            k0,
            prow0,
            neg_inf,
            1usize,
            pass.causal,
            keys,
        );
    }
    softmax_step(s, m, l, acc, sl2, neg_inf, 1usize, dtiles, lazy, keys);
}

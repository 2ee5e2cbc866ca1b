//! Tensor-core forward on manual MMA: `mma.sync.m16n8k16` (f16/bf16 → f32) fed by `ldmatrix`,
//! the FlashAttention-2 register layout (CUDA, sm_80 and later).
//!
//! Same math, shapes, grid and layout arguments as `crate::portable::forward`: for each query row `i` of a
//! tile, `out_i = Σ_j 2^{x_ij - m_i} v_j / Σ_j 2^{x_ij - m_i}` and `lse_i = ln 2 · m_i + ln l_i`
//! with `x_ij = log2(e) · scale · q_i·k_j` over the row's active gathered keys.
//!
//! A plane (warp) owns `16 · tiles` gathered query rows (`tiles` = 1 or 2 stacked 16-row MMA
//! tiles; with 2, every `B` fragment read from shared memory feeds two MMAs, which halves the
//! `ldmatrix` traffic per product), a cube of up to 4 planes `TQ = min(block, 64 · tiles)` rows
//! (a larger block is split into tiles of `TQ` rows). The `O` accumulators stay in registers
//! for the whole row, the query rows in shared memory (their `A` fragments are re-read per
//! chunk: held across the row they would cost 16 registers per tile). Keys are walked in chunks of
//! `CHUNK = 64` gathered rows (row stride `head_dim + 8` halves, so `ldmatrix` rows fall on
//! distinct banks) copied by `cp.async` into two shared stages, chunk `i + 1` landing while
//! chunk `i` is computed. Per chunk and plane:
//! 1. `S = Q·Kᵀ`: `ldmatrix.x4` gives two 8-key `B` fragments, `CHUNK / 8` accumulators of 16×8;
//! 2. masks only where the chunk needs them (tail, padding, causal diagonal), the online softmax
//!    in f32 with `ex2.approx` (row max across the 4 lanes of a row by shuffles, row sums kept per
//!    lane until the end);
//! 3. `O += P·V`: the `S` accumulators of two adjacent key tiles *are* the `A` fragment of `P`
//!    (no trip through shared memory); `V` fragments by `ldmatrix.x4.trans`.
//!
//! With `merge`, the tile's result is merged into what `out, lse` hold (an earlier branch's
//! rows, or `0, -inf`) by the LSE merge as it is written — `out = (e^{lse_prev} out_prev +
//! e^{lse_own} out_own) / (e^{lse_prev} + e^{lse_own})`, `lse = log(e^{lse_prev} + e^{lse_own})`
//! — so the branches of a pattern need neither their own buffers nor a merge pass.
//!
//! With `windowed` (a ring step, see `crate::args::Window`) the tensors hold only the
//! window's query and key rows: cubes outside the query window leave, the walk skips key blocks
//! outside the key window, and keys outside it are masked like padding.
//!
//! Needs f16/bf16, 32-wide planes, the runtime's manual MMA at 16×8×16, head dim 32/64/128,
//! block 64/128/256, and `q, k, v` read as 8-wide vectors (contiguous head dim, 8-aligned
//! strides). `out: [batch, heads, n, head_dim]` is written per element, `lse: [batch, heads, n]`.

use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use super::mma::{
    CHUNK, P2, Walk, a_fragments, commit, issue_pair, mma_rows, occupancy_hint, stage_rows,
    tiles_as_a, wait, zero_absent_rows, zero_tiles,
};
use super::rows::{NO_KEY, mark_rows_from, mask_scores, nan_marked_rows, softmax_step, write_rows};
use crate::addressing::{Rows, locate};
use crate::args::{Operands, Pass};
use crate::portable::finite::not_finite;

/// Largest query tile per 16-row MMA tile of a plane: a cube owns `min(block, TQ_MAX · tiles)`
/// rows, at most 4 planes.
pub(crate) const TQ_MAX: usize = 64;

/// Query rows per cube and units per cube of a forward launch with `tiles` MMA tiles per plane.
pub(crate) fn cube_shape(block: usize, tiles: usize) -> (usize, usize) {
    let tq = block.min(TQ_MAX * tiles);
    (tq, 32 * tq / (16 * tiles))
}
/// Shared memory of a forward cube in bytes (`nv`: the vector width of the row loads): two
/// stages of `CHUNK` key and value rows and the query tile, rows of `head_dim + nv` halves,
/// and the key flags.
pub(crate) fn shared_bytes(head_dim: usize, block: usize, tiles: usize, nv: usize) -> usize {
    let tq = cube_shape(block, tiles).0;
    (4 * CHUNK + tq) * (head_dim + nv) * 2 + 2 * CHUNK * 4 + PLANES_MAX * 4 + 16
}

/// The most planes a forward cube has (`cube_shape`): the length of its per-plane summary
/// words.
const PLANES_MAX: usize = TQ_MAX / 16;

/// `log2(e)`: scores are scaled once so that the softmax runs on `exp2`.
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn block_sparse_forward_mma<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    #[comptime] pass: Pass,
    #[comptime] tiles: usize,
    #[comptime] merge: bool,
    #[comptime] min_blocks: u32,
    #[comptime] windowed: bool,
    #[comptime] lazy: bool,
) {
    occupancy_hint(min_blocks);
    let tq = comptime!(cube_shape(pass.block, tiles).0);
    let threads = comptime!(cube_shape(pass.block, tiles).1);
    let subtiles = comptime!(pass.block / tq);
    let prows = comptime!(16 * tiles);
    let dtiles = comptime!(pass.head_dim / 8);
    let ctiles = comptime!(CHUNK / 8);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        windowed,
    );
    let q0 = tile.qb * pass.block + (CUBE_POS_X as usize % subtiles) * tq;
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    // Cubes whose rows miss the query window (all of the segment's without one) leave.
    if tile.qb >= tile.seg_blocks || q0 >= queries.hi || q0 + tq <= queries.lo {
        terminate!();
    }

    let unit = UNIT_POS as usize;
    let plane = unit / 32;

    let nv = N::value();
    let rstr = comptime!(pass.head_dim / nv + 1);
    // Two stages of CHUNK key rows and CHUNK value rows, then the tile's query rows.
    let stage_rows_n = comptime!(2 * CHUNK);
    let qrow0 = comptime!(4 * CHUNK);
    let buf_len = comptime!((4 * CHUNK + tq) * (pass.head_dim / nv + 1));
    let mut buf = Shared::<[Vector<F, N>]>::new_slice(buf_len);
    let mut kvalid = Shared::<[u32]>::new_slice(comptime!(2 * CHUNK));
    // Per plane, the first key of a causal diagonal chunk whose value row was not finite.
    let mut first_bad = Shared::<[u32]>::new_slice(PLANES_MAX);
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &keys, pass.block, windowed);
    if walk.live() {
        let first = walk.first(pass.block);
        issue_pair::<F, N>(
            &io.k,
            &io.v,
            &mut buf[0..buf_len],
            &tile,
            &keys,
            tile.kv_head,
            first,
            0usize,
            threads,
            rstr,
            pass.head_dim,
        );
        bar0.commit_copy_async();
        if unit < CHUNK {
            kvalid[unit] = key_present(&io.mask, &tile, first + unit, pass.masked);
        }
    }

    // Stage the gathered query rows once; each plane reads its A fragments per chunk (held
    // across the whole row they would cost 16 registers and a cube per SM).
    stage_rows::<F, N>(
        &io.q,
        &mut buf[0..buf_len],
        &tile,
        &queries,
        tile.head,
        q0,
        qrow0,
        tq,
        threads,
        rstr,
        pass.head_dim,
    );
    // Tile i's accumulators at i · dtiles ..; its scores at i · ctiles ...
    let mut acc = zero_tiles(comptime!(tiles * dtiles));
    // Running max (base 2, scaled) and per-lane partial sums of rows g and g + 8 of each tile
    // (entry 2i + h: row 16i + g + 8h).
    let mut m = Array::<f32>::new(comptime!(2 * tiles));
    let mut l = Array::<f32>::new(comptime!(2 * tiles));
    #[unroll]
    for i in 0..comptime!(2 * tiles) {
        m[i] = io.neg_inf;
        l[i] = 0.0f32;
    }
    let sl2 = io.scale * LOG2E;
    let prow0 = q0 + plane * prows;
    // Rows that see a key whose value row was not finite (below): they write NaN.
    let mut poison = Array::<u32>::new(comptime!(2 * tiles));
    #[unroll]
    for i in 0..comptime!(2 * tiles) {
        poison[i] = 0u32;
    }

    // Walk the row's key chunks; chunk i + 1 is copied into the other stage while chunk i is
    // computed.
    let mut stage = 0usize;
    while walk.live() {
        let k0 = walk.first(pass.block);
        walk.advance(&io.runs, pass.block, windowed);
        // Every plane is done with the other stage (chunk i - 1) before it is overwritten; on
        // the first pass this also publishes the staged query rows.
        sync_cube();
        if walk.live() {
            let next = 1 - stage;
            let first = walk.first(pass.block);
            issue_pair::<F, N>(
                &io.k,
                &io.v,
                &mut buf[0..buf_len],
                &tile,
                &keys,
                tile.kv_head,
                first,
                next * stage_rows_n,
                threads,
                rstr,
                pass.head_dim,
            );
            commit(&bar0, &bar1, next);
            if unit < CHUNK {
                kvalid[next * CHUNK + unit] =
                    key_present(&io.mask, &tile, first + unit, pass.masked);
            }
        }
        wait(&bar0, &bar1, stage);
        let base = stage * stage_rows_n;
        let kv0 = stage * CHUNK;
        // Value rows of keys that are not there become zeros (their scores are masked below).
        let mut absent = k0 < keys.lo || k0 + CHUNK > keys.hi;
        if comptime!(pass.masked) {
            absent = true;
        }
        if absent {
            zero_absent_rows::<F, N>(
                &mut buf[0..buf_len],
                &kvalid[0..comptime!(2 * CHUNK)],
                kv0,
                base + CHUNK,
                false,
                threads,
                rstr,
                pass.head_dim,
            );
            sync_cube();
        }

        if comptime!(pass.causal) {
            // A chunk whose keys run past the cube's first row: some rows must not see some
            // of its keys, and `P·V` gives them `0 · v`. A value vector that is not finite
            // becomes zeros (the rows before its key stay exact) and every row at or after
            // its key writes NaN.
            if k0 + CHUNK > q0 + 1 {
                let mine = finite_values::<F, N>(
                    &mut buf[0..buf_len],
                    k0,
                    base + CHUNK,
                    threads,
                    rstr,
                    pass.head_dim,
                );
                let m_plane = plane_min(mine);
                if UNIT_POS % 32 == 0 {
                    first_bad[plane] = m_plane;
                }
                sync_cube();
                let mut bad = u32::new(NO_KEY as i64);
                #[unroll]
                for w in 0..comptime!(threads / 32) {
                    bad = select(first_bad[w] < bad, first_bad[w], bad);
                }
                mark_rows_from(&mut poison, bad as usize, prow0, tiles);
            }
        }

        // A plane whose rows all precede the chunk's keys has nothing to add (causal).
        let skip = pass.causal && k0 > prow0 + prows - 1;
        if !skip {
            // 1. S = Q·Kᵀ: CHUNK / 8 tiles of 16×8 per query tile, each K fragment serving
            // every query tile.
            let qf = a_fragments::<F, N>(
                &buf[0..buf_len],
                qrow0 + plane * prows,
                tiles,
                rstr,
                pass.head_dim,
            );
            let mut s = zero_tiles(comptime!(tiles * ctiles));
            #[unroll]
            for jj in 0..comptime!(CHUNK / 16) {
                #[unroll]
                for ds in 0..comptime!(pass.head_dim / 16) {
                    mma_rows::<F, N>(
                        &qf,
                        ds,
                        comptime!(pass.head_dim / 16),
                        tiles,
                        &buf[0..buf_len],
                        base + jj * 16,
                        ds,
                        &mut s,
                        comptime!(2 * jj),
                        ctiles,
                        rstr,
                        false,
                    );
                }
            }

            // 2. Masks where the chunk needs them: the segment's tail, padding, the diagonal.
            let mut need = k0 < keys.lo || k0 + CHUNK > keys.hi;
            if comptime!(pass.masked) {
                need = true;
            }
            if comptime!(pass.causal) {
                need = need || k0 + CHUNK > prow0 + 1;
            }
            if need {
                mask_scores(
                    &mut s,
                    &kvalid[0..comptime!(2 * CHUNK)],
                    kv0,
                    k0,
                    prow0,
                    io.neg_inf,
                    tiles,
                    pass.causal,
                    CHUNK,
                );
            }

            // Online softmax in base 2: row max over the 4 lanes of a row, sums kept per lane.
            softmax_step(
                &mut s, &mut m, &mut l, &mut acc, sl2, io.neg_inf, tiles, dtiles, lazy, CHUNK,
            );

            // 3. O += P·V: the S tiles of keys 16·kk .. are the A fragment of P; each V
            // fragment serves every query tile.
            #[unroll]
            for kk in 0..comptime!(CHUNK / 16) {
                let mut pa = Sequence::<Array<Vector<F, P2>>>::new();
                #[unroll]
                for i in 0..tiles {
                    pa.push(tiles_as_a::<F>(&s, comptime!(i * (ctiles / 2) + kk)));
                }
                #[unroll]
                for dd in 0..comptime!(pass.head_dim / 16) {
                    mma_rows::<F, N>(
                        &pa,
                        0usize,
                        1usize,
                        tiles,
                        &buf[0..buf_len],
                        base + CHUNK + kk * 16,
                        0usize,
                        &mut acc,
                        comptime!(2 * dd),
                        dtiles,
                        rstr,
                        true,
                    );
                }
            }
        }
        stage = 1 - stage;
    }

    if comptime!(pass.causal) {
        nan_marked_rows(&mut acc, &poison, io.nan, tiles, dtiles);
    }
    write_rows::<F>(
        &acc, &m, &l, out, lse, &tile, &queries, prow0, io.neg_inf, tiles, dtiles, merge,
    );
}

/// Every unit (of `threads`), once a chunk's value rows have landed at shared row `row0` (rows
/// `rstr` vectors apart, `CHUNK` of them, keys from gathered key `k0`): sets to zeros each of
/// its share of the vectors that holds a NaN or an infinity, and returns the first key it did
/// that for, or `NO_KEY`.
#[cube]
fn finite_values<F: Float, N: Size>(
    buf: &mut [Vector<F, N>],
    k0: usize,
    row0: usize,
    #[comptime] threads: usize,
    #[comptime] rstr: usize,
    #[comptime] head_dim: usize,
) -> u32 {
    let nv = N::value();
    let hv = comptime!(head_dim / nv);
    let per = comptime!(CHUNK * head_dim / nv / threads);
    let mut bad_key = u32::new(NO_KEY as i64);
    #[unroll]
    for i in 0..per {
        let e = UNIT_POS as usize + i * threads;
        let (c, dv) = (e / hv, e % hv);
        let x = buf[(row0 + c) * rstr + dv];
        let mut bad = false;
        #[unroll]
        for j in 0..nv {
            bad = bad || not_finite(f32::cast_from(x.extract(j)));
        }
        if bad {
            buf[(row0 + c) * rstr + dv] = Vector::new(F::new(0.0));
            let key = (k0 + c) as u32;
            bad_key = select(key < bad_key, key, bad_key);
        }
    }
    bad_key
}

/// Whether gathered token `tk` of the tile's segment is a key: a real token inside the key
/// window, present in the padding mask when there is one.
#[cube]
pub(crate) fn key_present(
    mask: &Tensor<u32>,
    tile: &crate::addressing::Tile,
    tk: usize,
    #[comptime] masked: bool,
) -> u32 {
    let keys = Rows::keys(tile);
    let mut ok = keys.holds(tk);
    if comptime!(masked) {
        let pk = keys.row(tile, tk);
        ok = ok && mask[tile.batch * mask.stride(0) + pk * mask.stride(1)] != 0;
    }
    select(ok, 1u32, 0u32)
}

//! The forward on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a), head dim 64.
//!
//! Same math, shapes, grid and layout arguments as `crate::sm80::forward` (tiles = 1): a cube is
//! two warpgroups (256 units) that own 128 gathered query rows, 64 each; for each row `i`,
//! `out_i = Σ_j 2^{x_ij - m_i} v_j / Σ_j 2^{x_ij - m_i}` and `lse_i = ln 2 · m_i + ln l_i` with
//! `x_ij = log2(e) · scale · q_i·k_j` over the row's active gathered keys.
//!
//! Keys are walked in chunks of `CHUNK = 64` gathered rows, copied by `cp.async` into two
//! shared stages (chunk `i + 1` lands while chunk `i` is computed), every tile in `wgmma`'s
//! no-swizzle canonical layout (`super::wgmma::core_offset`: a 16-byte row vector `dv` of row
//! `r` at `dv · 64 + r`). Per chunk:
//! 1. `S[64, 64] = Q·Kᵀ`: one `wgmma` call of four k-steps, both operands read from shared
//!    memory by descriptor (no `ldmatrix`, no fragment registers);
//! 2. masks and the online softmax on `S` in registers — the accumulator layout per plane is
//!    `mma.sync`'s, so this is the manual-MMA forward's code (`crate::sm80::rows`);
//! 3. `O[64, 64] += P·V`: `P` rounded from the `S` registers is the register `A` operand, `V`
//!    the MN-major `B` operand (`trans-b`), one call of four k-steps.
//!
//! Writes through the generic proxy (the query tile, the zeroed value rows of absent keys, the
//! `cp.async` landings) are fenced to the async proxy that `wgmma` reads through before the
//! products start. Each call waits for its products, so overlap comes from the 2–3 cubes an
//! SM holds, not from inside a cube (the warp-specialised kernel is the next step).
//!
//! Needs f16/bf16, head dim 64, blocks of 128/256 and `q, k, v` read as 8-wide vectors.
//! `out: [batch, heads, n, 64]`, `lse: [batch, heads, n]`.

use cubecl::prelude::barrier::{Barrier, copy_async};
use cubecl::prelude::*;

use super::wgmma::{Acc, Frags, Product, descriptor, mma_rs_add, mma_ss, shared_address};
use crate::addressing::{Rows, Tile, locate};
use crate::args::{Operands, Pass};
use crate::sm80::forward::{LOG2E, key_present};
use crate::sm80::mma::{CHUNK, P2, Walk, commit, occupancy_hint, tiles_as_a, wait, zero_tiles};
use crate::sm80::rows::{mask_scores, softmax_step, write_rows};

/// Query rows per cube: two warpgroups of one `wgmma` M (64 rows) each, sharing every staged
/// key chunk (with one warpgroup a cube loads each chunk for half as many rows: measured
/// 1.4× slower on the H200, the copies' latency and barriers dominating).
pub(crate) const ROWS: usize = 128;
/// Units per cube: two warpgroups.
pub(crate) const THREADS: usize = 256;
/// The one head dim served.
pub(crate) const HEAD_DIM: usize = 64;

/// Shared memory of a cube in bytes: two stages of key and value chunks, the query tile, the
/// key flags.
pub(crate) fn shared_bytes() -> usize {
    (4 * CHUNK + ROWS) * HEAD_DIM * 2 + 2 * CHUNK * 4 + 16
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn block_sparse_forward_wgmma<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    #[comptime] pass: Pass,
    #[comptime] merge: bool,
    #[comptime] min_blocks: u32,
    #[comptime] windowed: bool,
    #[comptime] bf16: bool,
) {
    occupancy_hint(min_blocks);
    let subtiles = comptime!(pass.block / ROWS);
    let dtiles = comptime!(HEAD_DIM / 8);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        windowed,
    );
    let q0 = tile.qb * pass.block + (CUBE_POS_X as usize % subtiles) * ROWS;
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || q0 >= queries.hi || q0 + ROWS <= queries.lo {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let group = unit / 128;

    // Vectors of one key tile (64 rows of 8 vectors); stage s holds keys at 2s, values at
    // 2s + 1, the query tile (ROWS rows) comes last.
    let tv = comptime!(CHUNK * HEAD_DIM / 8);
    let buf_len = comptime!(4 * tv + ROWS * HEAD_DIM / 8);
    let mut buf = Shared::<[Vector<F, N>]>::new_aligned_slice(buf_len, 128usize);
    let mut kvalid = Shared::<[u32]>::new_slice(comptime!(2 * CHUNK));
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    let mut walk = Walk::new(
        &io.blocks,
        &io.runs,
        tile.csr_base + tile.qb,
        keys.first_block(pass.block),
        keys.end_block(pass.block),
        windowed,
    );
    if walk.live() {
        let first = walk.first(pass.block);
        issue_chunk::<F, N>(
            &io.k,
            &io.v,
            &mut buf[0..buf_len],
            &tile,
            &keys,
            first,
            0usize,
        );
        bar0.commit_copy_async();
        if unit < CHUNK {
            kvalid[unit] = key_present(&io.mask, &tile, first + unit, pass.masked);
        }
    }
    stage_queries::<F, N>(
        &io.q,
        &mut buf[0..buf_len],
        &tile,
        &queries,
        q0,
        comptime!(4 * tv),
    );

    let base = shared_address::<Vector<F, N>>(&buf[0..buf_len]);
    let tile_bytes = comptime!((tv * 16) as u32);
    // K-major Q and K: K (head dim) steps by a vector column (ROWS or CHUNK rows of 16
    // bytes), M/N by 8 rows (128 bytes); each warpgroup's 64 query rows start 64 rows into
    // the column. MN-major V: K (keys, the rows) steps by 8 rows, N by a column.
    let q_column = comptime!((ROWS * 16) as u32);
    let dq = descriptor(
        base + 4 * tile_bytes + group as u32 * 1024u32,
        q_column,
        128u32,
    );
    let qk = comptime!(Product {
        bf16,
        steps: (HEAD_DIM / 16) as u32,
        a_step: 2 * (ROWS * 16) as u32,
        b_step: 2048,
        b_transposed: false,
    });
    let pv = comptime!(Product {
        bf16,
        steps: (CHUNK / 16) as u32,
        a_step: 0,
        b_step: 256,
        b_transposed: true,
    });

    let mut acc = zero_tiles(dtiles);
    let mut m = Array::<f32>::new(2usize);
    let mut l = Array::<f32>::new(2usize);
    m[0] = io.neg_inf;
    m[1] = io.neg_inf;
    l[0] = 0.0f32;
    l[1] = 0.0f32;
    let sl2 = io.scale * LOG2E;
    let prow0 = q0 + group * 64 + (plane % 4) * 16;

    let mut stage = 0usize;
    while walk.live() {
        let k0 = walk.first(pass.block);
        walk.advance(&io.runs, pass.block, windowed);
        // Every unit is done with the other stage (chunk i - 1) before it is overwritten.
        sync_cube();
        if walk.live() {
            let next = 1 - stage;
            let first = walk.first(pass.block);
            issue_chunk::<F, N>(
                &io.k,
                &io.v,
                &mut buf[0..buf_len],
                &tile,
                &keys,
                first,
                comptime!(2 * tv) * next,
            );
            commit(&bar0, &bar1, next);
            if unit < CHUNK {
                kvalid[next * CHUNK + unit] =
                    key_present(&io.mask, &tile, first + unit, pass.masked);
            }
        }
        wait(&bar0, &bar1, stage);
        let kv0 = stage * CHUNK;
        let mut absent = k0 < keys.lo || k0 + CHUNK > keys.hi;
        if comptime!(pass.masked) {
            absent = true;
        }
        if absent {
            // Value rows of keys that are not there become zeros (their scores are masked).
            let vrow0 = comptime!(2 * tv) * stage + tv;
            let mut e = unit;
            while e < tv {
                if kvalid[kv0 + e % CHUNK] == 0 {
                    buf[vrow0 + e] = Vector::new(F::new(0.0));
                }
                e += THREADS;
            }
        }
        // The landed and zeroed rows (and, the first time, the query tile) become visible to
        // the products.
        sync_async_proxy_shared();
        sync_cube();

        // The cube's rows all precede the chunk's keys: nothing to add (causal).
        let skip = pass.causal && k0 > q0 + ROWS - 1;
        if !skip {
            let kbase = base + comptime!(2 * tile_bytes) * stage as u32;
            let dk = descriptor(kbase, 1024u32, 128u32);
            let dv = descriptor(kbase + tile_bytes, 128u32, 1024u32);
            let mut s = tiles_from(mma_ss(dq, dk, qk));

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
                    1usize,
                    pass.causal,
                );
            }
            softmax_step(
                &mut s, &mut m, &mut l, &mut acc, sl2, io.neg_inf, 1usize, dtiles,
            );
            let o = mma_rs_add(tiles_into(&acc), p_fragments::<F>(&s), dv, pv);
            tiles_assign(&mut acc, o);
        }
        stage = 1 - stage;
    }
    write_rows::<F>(
        &acc, &m, &l, out, lse, &tile, &queries, prow0, io.neg_inf, 1usize, dtiles, merge,
    );
}

/// Issues the `cp.async` copies of the chunk of `CHUNK` gathered keys from `first` into the
/// key and value tiles at vector `at` (values one tile later). Unit pairs copy the two 16-byte
/// halves of one 32-byte sector; a tile's vector `dv` of row `c` lands at `dv · CHUNK + c`.
#[cube]
fn issue_chunk<F: Float, N: Size>(
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    keys: &Rows,
    first: usize,
    at: usize,
) {
    let nv = N::value();
    let tv = comptime!(CHUNK * HEAD_DIM / 8);
    let k_base = tile.batch * k.stride(0) + tile.kv_head * k.stride(1);
    let v_base = tile.batch * v.stride(0) + tile.kv_head * v.stride(1);
    #[unroll]
    for i in 0..comptime!(tv / THREADS) {
        let e = UNIT_POS as usize + i * THREADS;
        let pair = e / 2;
        let c = pair % CHUNK;
        let dv = 2 * (pair / CHUNK) + e % 2;
        let p = keys.row(tile, first + c);
        let ki = (k_base + p * k.stride(2)) / nv + dv;
        let vi = (v_base + p * v.stride(2)) / nv + dv;
        let at_k = at + dv * CHUNK + c;
        copy_async(
            k.slice(ki, ki + 1),
            &mut buf[at_k..at_k + 1],
            comptime!(8u32),
        );
        copy_async(
            v.slice(vi, vi + 1),
            &mut buf[at_k + tv..at_k + tv + 1],
            comptime!(8u32),
        );
    }
}

/// Loads the cube's `ROWS` gathered query rows from `q0` into the tile at vector `at`.
#[cube]
fn stage_queries<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    queries: &Rows,
    q0: usize,
    #[comptime] at: usize,
) {
    let nv = N::value();
    let base = tile.batch * q.stride(0) + tile.head * q.stride(1);
    #[unroll]
    for i in 0..comptime!(ROWS * HEAD_DIM / 8 / THREADS) {
        let e = UNIT_POS as usize + i * THREADS;
        let pair = e / 2;
        let r = pair % ROWS;
        let dv = 2 * (pair / ROWS) + e % 2;
        let p = queries.row(tile, q0 + r);
        buf[at + dv * ROWS + r] = q[(base + p * q.stride(2)) / nv + dv];
    }
}

/// The accumulator registers of a 64×64 product as the manual-MMA family's eight 16×8 tiles
/// (the same registers, renamed).
#[cube]
fn tiles_from(x: Vector<f32, Acc>) -> Sequence<Array<Vector<f32, P2>>> {
    let mut tiles = Sequence::<Array<Vector<f32, P2>>>::new();
    #[unroll]
    for j in 0..8usize {
        let mut a = Array::<Vector<f32, P2>>::new(2usize);
        #[unroll]
        for h in 0..2usize {
            let mut pair = Vector::<f32, P2>::new(0.0f32);
            pair.insert(0usize, x.extract(comptime!(4 * j + 2 * h)));
            pair.insert(1usize, x.extract(comptime!(4 * j + 2 * h + 1)));
            a[h] = pair;
        }
        tiles.push(a);
    }
    tiles
}

/// `tiles = tiles_from(x)`, in place.
#[cube]
fn tiles_assign(tiles: &mut Sequence<Array<Vector<f32, P2>>>, x: Vector<f32, Acc>) {
    #[unroll]
    for j in 0..8usize {
        let a = tiles.index_mut(j);
        #[unroll]
        for h in 0..2usize {
            let mut pair = Vector::<f32, P2>::new(0.0f32);
            pair.insert(0usize, x.extract(comptime!(4 * j + 2 * h)));
            pair.insert(1usize, x.extract(comptime!(4 * j + 2 * h + 1)));
            a[h] = pair;
        }
    }
}

/// The inverse of [`tiles_from`](fn@tiles_from).
#[cube]
fn tiles_into(tiles: &Sequence<Array<Vector<f32, P2>>>) -> Vector<f32, Acc> {
    let mut x = Vector::<f32, Acc>::new(0.0f32);
    #[unroll]
    for j in 0..8usize {
        #[unroll]
        for h in 0..2usize {
            let pair = tiles.index(j)[h];
            x.insert(comptime!(4 * j + 2 * h), pair.extract(0usize));
            x.insert(comptime!(4 * j + 2 * h + 1), pair.extract(1usize));
        }
    }
    x
}

/// The register `A` operand of `P·V`: the probabilities of the chunk's four 16-key steps,
/// rounded to `F`, two per `u32`.
#[cube]
fn p_fragments<F: Float>(s: &Sequence<Array<Vector<f32, P2>>>) -> Vector<u32, Frags> {
    let mut frags = Vector::<u32, Frags>::new(0u32);
    #[unroll]
    for kk in 0..4usize {
        let a = tiles_as_a::<F>(s, kk);
        #[unroll]
        for r in 0..4usize {
            frags.insert(comptime!(4 * kk + r), u32::reinterpret(a[r]));
        }
    }
    frags
}

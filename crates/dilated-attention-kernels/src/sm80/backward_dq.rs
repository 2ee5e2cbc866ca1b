//! `dQ` of the tensor-core backward on manual MMA (`mma.sync.m16n8k16` + `ldmatrix`, CUDA sm_80+), the
//! FlashAttention-2 register layout of `super::mma`.
//!
//! Same math, shapes and accumulation contract as `crate::portable::backward`:
//! `p_ij = 2^{x_ij − L_i}` (base 2, `x_ij = log2(e)·scale·q_i·k_j`), `ds_ij = p_ij (dO_i·v_j − Δ_i)`,
//! `dq_i += scale Σ_j ds_ij k_j`, `dk_j += scale Σ_i ds_ij q_i`, `dv_j += Σ_i p_ij dO_i`, added
//! to the f32 buffers `dq, dk, dv: [batch, heads, n, head_dim]` (query-head indexed) — or, with
//! `overwrite` (one class that covers every row, see `backward_class`), stored in buffers of
//! the inputs' dtype (`G = F`), which then need no zero fill, are not read, and need no cast.
//!
//! The other side is walked in chunks of `CHUNK = 64` rows copied by `cp.async` into two shared
//! stages (chunk `i + 1` lands while chunk `i` is computed). `dQ` has the forward's cube shape
//! (`super::forward::cube_shape`: `tiles` stacked 16-row MMA tiles per plane, each `K`/`V`
//! fragment feeding every tile) and keeps its `Q` and `dO` rows in shared memory, re-reading
//! their fragments per chunk (255 registers with two tiles, 2 cubes per SM on the H200). A
//! `dK/dV` cube owns `rows` keys (64, or the block with the fused `dQ`), one plane per 16, keeps `K`
//! and `V` in shared memory and
//! re-reads their fragments per chunk (that removed its register spills: 223 registers, 2
//! cubes per SM):
//! - `dQ` (rows = queries, chunks of keys, forward layout): `S = Q·Kᵀ`, `dP = dO·Vᵀ`,
//!   `dS = P ∘ (dP − Δ)` in registers, `dQ += dS·K`;
//! - `dK/dV` (rows = keys, chunks of the queries that see them, transposed layout):
//!   `Sᵀ = K·Qᵀ`, `Pᵀ`, `dV += Pᵀ·dO`, `dPᵀ = V·dOᵀ`, `dSᵀ = Pᵀ ∘ (dPᵀ − Δ)`, `dK += dSᵀ·Q`;
//! - with `fuse_dq` (sm_90: `stmatrix`), `dK/dV` also forms `dQ` and the `dQ` kernel does not
//!   run — five products per block pair instead of seven (FlashAttention-2's backward): each
//!   plane stores its `dSᵀ` transposed into a query-major shared tile, and after a cube
//!   barrier plane `p` forms `dQ += scale · dS·K` for 16 of the chunk's queries and
//!   `head_dim / dsplit` columns (`rows = 128` keys: 8 planes, `dsplit = 2`), added to the f32
//!   `dq` by `.v2.f32` atomics (one 32-byte sector per 4 lanes). Absent keys get `dS = 0`
//!   there, since their staged rows repeat token 0. Measured on the H200 it does not pay
//!   (LongNet 128K fwd+bwd 265 ms against 261 ms separate: the atomics and the 8-plane cubes,
//!   one per SM, cost what the two products save), so it runs only on request.
//!
//! Queries that see no key (`L = -inf`) or lie past the segment get `L = +inf` (so `p = 0`);
//! keys that are not present are never written (their gradient rows stay as they are), but
//! for zeros with `overwrite`. With `windowed` (a ring step) the tensors hold the window's rows
//! and both kernels bound their rows and walks by it, as the forward does; queries outside the
//! query window count as past the segment, keys outside the key window as not present.

use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use super::forward::{LOG2E, cube_shape, key_present};
use super::mma::{
    CHUNK, P2, Walk, a_fragments, commit, exp2_approx, issue_pair, mma_rows, stage_rows,
    tiles_as_a, wait, zero_absent_rows, zero_tiles,
};
use crate::addressing::{Rows, locate};
use crate::args::{GradOperands, Operands, Pass};

/// Shared memory of a `dQ` cube with `tiles` MMA tiles per plane in bytes (`nv`: the vector
/// width of the row loads): two stages of `CHUNK` key and value rows and the tile's `Q` and
/// `dO` rows (rows of `head_dim + nv` halves), the key flags and two barriers.
pub(crate) fn dq_shared_bytes(head_dim: usize, block: usize, tiles: usize, nv: usize) -> usize {
    let tq = cube_shape(block, tiles).0;
    (4 * CHUNK + 2 * tq) * (head_dim + nv) * 2 + 2 * CHUNK * 4 + 16
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dq_mma<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dq: &mut Tensor<G>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] tiles: usize,
    #[comptime] windowed: bool,
) {
    let tq = comptime!(cube_shape(pass.block, tiles).0);
    let threads = comptime!(cube_shape(pass.block, tiles).1);
    let subtiles = comptime!(pass.block / tq);
    let prows = comptime!(16 * tiles);
    let dtiles = comptime!(pass.head_dim / 8);
    let ctiles = comptime!(CHUNK / 8);
    let hs = comptime!(pass.head_dim / 16);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        windowed,
    );
    let q0 = tile.qb * pass.block + (CUBE_POS_X as usize % subtiles) * tq;
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || q0 >= queries.hi || q0 + tq <= queries.lo {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let lane = unit % 32;
    let g = lane / 4;
    let t = lane % 4;

    let nv = N::value();
    let rstr = comptime!(pass.head_dim / nv + 1);
    // Two stages of CHUNK key and CHUNK value rows, then the tile's Q and dO rows.
    let srows = comptime!(2 * CHUNK);
    let qrows = comptime!(4 * CHUNK);
    let grows = comptime!(4 * CHUNK + tq);
    let buf_len = comptime!((4 * CHUNK + 2 * tq) * (pass.head_dim / nv + 1));
    let mut buf = Shared::<[Vector<F, N>]>::new_slice(buf_len);
    let mut kvalid = Shared::<[u32]>::new_slice(comptime!(2 * CHUNK));
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &keys, pass.block, windowed);
    if walk.live() {
        let first = walk.first(pass.block);
        let b = &mut buf[0..buf_len];
        issue_pair::<F, N>(
            &io.k,
            &io.v,
            b,
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

    // The tile's Q and dO rows, staged once (each plane re-reads its A fragments per chunk:
    // held across the walk they would cost 32 registers per tile), and L (base 2; +inf for a
    // row with no key) and Δ of its rows (entry 2i + h: row 16i + g + 8h).
    let b = &mut buf[0..buf_len];
    stage_rows::<F, N>(
        &io.q,
        b,
        &tile,
        &queries,
        tile.head,
        q0,
        qrows,
        tq,
        threads,
        rstr,
        pass.head_dim,
    );
    stage_rows::<F, N>(
        &grad.dout,
        b,
        &tile,
        &queries,
        tile.head,
        q0,
        grows,
        tq,
        threads,
        rstr,
        pass.head_dim,
    );
    let mut acc = zero_tiles(comptime!(tiles * dtiles));
    let prow0 = q0 + plane * prows;
    let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
    let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);
    let mut lrow = Array::<f32>::new(comptime!(2 * tiles));
    let mut drow = Array::<f32>::new(comptime!(2 * tiles));
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let row = prow0 + i * 16 + g + 8 * h;
            let present = queries.holds(row);
            let pq = queries.row(&tile, row);
            let l = grad.lse[l_base + pq * grad.lse.stride(2)];
            lrow[comptime!(2 * i + h)] = select(present && l != io.neg_inf, l * LOG2E, -io.neg_inf);
            drow[comptime!(2 * i + h)] = grad.delta[d_base + pq * grad.delta.stride(2)];
        }
    }
    let sl2 = io.scale * LOG2E;

    let mut stage = 0usize;
    while walk.live() {
        let k0 = walk.first(pass.block);
        walk.advance(&io.runs, pass.block, windowed);
        // Every plane is done with the other stage before it is overwritten; on the first
        // pass this also publishes the staged Q and dO rows.
        sync_cube();
        if walk.live() {
            let next = 1 - stage;
            let first = walk.first(pass.block);
            let b = &mut buf[0..buf_len];
            let r0 = next * srows;
            issue_pair::<F, N>(
                &io.k,
                &io.v,
                b,
                &tile,
                &keys,
                tile.kv_head,
                first,
                r0,
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
        let base = stage * srows;
        let kv0 = stage * CHUNK;
        // Key and value rows of keys that are not there become zeros: dS is 0 there, and
        // `0 · NaN` would reach dQ through dP and K.
        let mut absent = k0 < keys.lo || k0 + CHUNK > keys.hi;
        if comptime!(pass.masked) {
            absent = true;
        }
        if absent {
            zero_absent_rows::<F, N>(
                &mut buf[0..buf_len],
                &kvalid[0..comptime!(2 * CHUNK)],
                kv0,
                base,
                true,
                threads,
                rstr,
                pass.head_dim,
            );
            sync_cube();
        }

        let skip = pass.causal && k0 > prow0 + prows - 1;
        if !skip {
            // S = Q·Kᵀ and dP = dO·Vᵀ, every K and V fragment serving each query tile.
            let b = &buf[0..buf_len];
            let qf = a_fragments::<F, N>(b, qrows + plane * prows, tiles, rstr, pass.head_dim);
            let gf = a_fragments::<F, N>(b, grows + plane * prows, tiles, rstr, pass.head_dim);
            let mut s = zero_tiles(comptime!(tiles * ctiles));
            let mut dp = zero_tiles(comptime!(tiles * ctiles));
            #[unroll]
            for jj in 0..comptime!(CHUNK / 16) {
                #[unroll]
                for ds in 0..hs {
                    let j0 = comptime!(2 * jj);
                    let r0 = base + jj * 16;
                    mma_rows::<F, N>(
                        &qf, ds, hs, tiles, b, r0, ds, &mut s, j0, ctiles, rstr, false,
                    );
                    let r1 = base + CHUNK + jj * 16;
                    mma_rows::<F, N>(
                        &gf, ds, hs, tiles, b, r1, ds, &mut dp, j0, ctiles, rstr, false,
                    );
                }
            }
            let mut need = k0 < keys.lo || k0 + CHUNK > keys.hi;
            if comptime!(pass.masked) {
                need = true;
            }
            if comptime!(pass.causal) {
                need = need || k0 + CHUNK > prow0 + 1;
            }
            // dS = P ∘ (dP − Δ), P = 2^{x − L}, over the pairs the forward saw.
            #[unroll]
            for i in 0..tiles {
                #[unroll]
                for j in 0..ctiles {
                    #[unroll]
                    for h in 0..2usize {
                        let e = comptime!(2 * i + h);
                        let row = prow0 + i * 16 + g + 8 * h;
                        let x = s.index(comptime!(i * ctiles + j))[h];
                        let y = dp.index(comptime!(i * ctiles + j))[h];
                        let mut r = y;
                        #[unroll]
                        for c in 0..2usize {
                            let key = j * 8 + 2 * t + c;
                            let mut xs = x.extract(c) * sl2;
                            let mut ok = true;
                            if need {
                                ok = kvalid[kv0 + key] != 0;
                                if comptime!(pass.causal) {
                                    ok = ok && k0 + key <= row;
                                }
                                xs = select(ok, xs, io.neg_inf);
                            }
                            let p = exp2_approx(xs - lrow[e]);
                            let mut ds = p * (y.extract(c) - drow[e]);
                            if need {
                                // A pair the row does not see adds nothing, even where `dP`
                                // is NaN (a causal-future key whose value row is not finite).
                                ds = select(ok, ds, 0.0f32);
                            }
                            r.insert(c, ds);
                        }
                        let sj = s.index_mut(comptime!(i * ctiles + j));
                        sj[h] = r;
                    }
                }
            }
            // dQ += dS·K, every K fragment serving each query tile.
            #[unroll]
            for kk in 0..comptime!(CHUNK / 16) {
                let mut a = Sequence::<Array<Vector<F, P2>>>::new();
                #[unroll]
                for i in 0..tiles {
                    a.push(tiles_as_a::<F>(&s, comptime!(i * (ctiles / 2) + kk)));
                }
                #[unroll]
                for dd in 0..hs {
                    let j0 = comptime!(2 * dd);
                    mma_rows::<F, N>(
                        &a,
                        0usize,
                        1usize,
                        tiles,
                        b,
                        base + kk * 16,
                        0usize,
                        &mut acc,
                        j0,
                        dtiles,
                        rstr,
                        true,
                    );
                }
            }
        }
        stage = 1 - stage;
    }

    write_query_grads::<G>(
        &acc,
        dq,
        &tile,
        &queries,
        prow0,
        io.scale,
        tiles,
        pass.head_dim,
        overwrite,
    );
}

/// Writes (or adds, without `overwrite`) `scale · dQ` for a plane's `16 · tiles` query rows
/// from `prow0` from its accumulator tiles (`head_dim / 8` per 16-row tile; lane `4g + t` holds
/// rows `g`, `g + 8` of each, columns `8j + 2t ..`); rows past the segment are not written.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_query_grads<G: Float>(
    acc: &Sequence<Array<Vector<f32, P2>>>,
    dq: &mut Tensor<G>,
    tile: &crate::addressing::Tile,
    queries: &Rows,
    prow0: usize,
    scale: f32,
    #[comptime] tiles: usize,
    #[comptime] head_dim: usize,
    #[comptime] overwrite: bool,
) {
    let lane = UNIT_POS as usize % 32;
    let (g, t) = (lane / 4, lane % 4);
    let dtiles = comptime!(head_dim / 8);
    let step = dq.stride(3);
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let row = prow0 + i * 16 + g + 8 * h;
            if queries.holds(row) {
                let pq = queries.row(tile, row);
                let base = tile.batch * dq.stride(0) + tile.head * dq.stride(1) + pq * dq.stride(2);
                #[unroll]
                for dt in 0..dtiles {
                    let x = acc.index(comptime!(i * dtiles + dt))[h];
                    let d = dt * 8 + 2 * t;
                    let (y0, y1) = (
                        G::cast_from(x.extract(0usize) * scale),
                        G::cast_from(x.extract(1usize) * scale),
                    );
                    if comptime!(overwrite) {
                        dq[base + d * step] = y0;
                        dq[base + (d + 1) * step] = y1;
                    } else {
                        dq[base + d * step] += y0;
                        dq[base + (d + 1) * step] += y1;
                    }
                }
            }
        }
    }
}

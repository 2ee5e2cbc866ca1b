//! Tensor-core backward on manual MMA (`mma.sync.m16n8k16` + `ldmatrix`, CUDA sm_80+), the
//! FlashAttention-2 register layout of [`crate::mma`].
//!
//! Same math, shapes and accumulation contract as [`crate::backward`]:
//! `p_ij = 2^{x_ij − L_i}` (base 2, `x_ij = log2(e)·scale·q_i·k_j`), `ds_ij = p_ij (dO_i·v_j − Δ_i)`,
//! `dq_i += scale Σ_j ds_ij k_j`, `dk_j += scale Σ_i ds_ij q_i`, `dv_j += Σ_i p_ij dO_i`, added
//! to the f32 buffers `dq, dk, dv: [batch, heads, n, head_dim]` (query-head indexed) — or, with
//! `overwrite` (one class that covers every row, see `backward_class`), stored in buffers of
//! the inputs' dtype (`G = F`), which then need no zero fill, are not read, and need no cast.
//!
//! The other side is walked in chunks of `CHUNK = 64` rows copied by `cp.async` into two shared
//! stages (chunk `i + 1` lands while chunk `i` is computed). `dQ` has the forward's cube shape
//! (`crate::forward_mma::cube_shape`: `tiles` stacked 16-row MMA tiles per plane, each `K`/`V`
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

use crate::forward::{Rows, locate};
use crate::forward_mma::{LOG2E, cube_shape, key_present};
use crate::mma::{
    CHUNK, P2, Walk, a_fragments, commit, exp2_approx, issue_pair, mma_def, mma_pair, mma_rows,
    occupancy_hint, stage_rows, tiles_as_a, wait, zero_tiles,
};
use cubecl::cmma::MatrixIdent;

/// Keys per `dK/dV` cube (16 per plane) without a fused `dQ`.
pub(crate) const ROWS: usize = 64;

/// Shared memory of an unfused `dK/dV` cube of `rows` keys in bytes (`nv`: the vector width of
/// the row loads): two stages of `CHUNK` query and `dO` rows, the cube's K and V rows (rows of
/// `head_dim + nv` halves), the one-vector stand-in for the fused `dQ`'s `dS` tile, the chunks'
/// `L` and `Δ`.
pub(crate) fn dkdv_shared_bytes(head_dim: usize, rows: usize, nv: usize) -> usize {
    ((4 * CHUNK + 2 * rows) * (head_dim + nv) + nv) * 2 + 4 * CHUNK * 4 + 16
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dq_mma<F: Float, G: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    dout: &Tensor<Vector<F, N>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    row_ptr: &Tensor<u32>,
    runs: &Tensor<u32>,
    params: &Tensor<u32>,
    dq: &mut Tensor<G>,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] causal: bool,
    #[comptime] masked: bool,
    #[comptime] overwrite: bool,
    #[comptime] tiles: usize,
    #[comptime] windowed: bool,
) {
    let tq = comptime!(cube_shape(block, tiles).0);
    let threads = comptime!(cube_shape(block, tiles).1);
    let subtiles = comptime!(block / tq);
    let prows = comptime!(16 * tiles);
    let dtiles = comptime!(head_dim / 8);
    let ctiles = comptime!(CHUNK / 8);
    let hs = comptime!(head_dim / 16);
    let tile = locate(params, CUBE_POS_X as usize / subtiles, block, windowed);
    let q0 = tile.qb * block + (CUBE_POS_X as usize % subtiles) * tq;
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
    let rstr = comptime!(head_dim / nv + 1);
    // Two stages of CHUNK key and CHUNK value rows, then the tile's Q and dO rows.
    let srows = comptime!(2 * CHUNK);
    let qrows = comptime!(4 * CHUNK);
    let grows = comptime!(4 * CHUNK + tq);
    let buf_len = comptime!((4 * CHUNK + 2 * tq) * (head_dim / nv + 1));
    let mut buf = Shared::<[Vector<F, N>]>::new_slice(buf_len);
    let mut kvalid = Shared::<[u32]>::new_slice(comptime!(2 * CHUNK));
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    let mut walk = Walk::new(
        row_ptr,
        runs,
        tile.csr_base + tile.qb,
        keys.first_block(block),
        keys.end_block(block),
        windowed,
    );
    if walk.live() {
        let first = walk.first(block);
        let b = &mut buf[0..buf_len];
        issue_pair::<F, N>(
            k,
            v,
            b,
            &tile,
            &keys,
            tile.kv_head,
            first,
            0usize,
            threads,
            rstr,
            head_dim,
        );
        bar0.commit_copy_async();
        if unit < CHUNK {
            kvalid[unit] = key_present(mask, &tile, first + unit, masked);
        }
    }

    // The tile's Q and dO rows, staged once (each plane re-reads its A fragments per chunk:
    // held across the walk they would cost 32 registers per tile), and L (base 2; +inf for a
    // row with no key) and Δ of its rows (entry 2i + h: row 16i + g + 8h).
    let b = &mut buf[0..buf_len];
    stage_rows::<F, N>(
        q, b, &tile, &queries, tile.head, q0, qrows, tq, threads, rstr, head_dim,
    );
    stage_rows::<F, N>(
        dout, b, &tile, &queries, tile.head, q0, grows, tq, threads, rstr, head_dim,
    );
    let mut acc = zero_tiles(comptime!(tiles * dtiles));
    let prow0 = q0 + plane * prows;
    let l_base = tile.batch * lse.stride(0) + tile.head * lse.stride(1);
    let d_base = tile.batch * delta.stride(0) + tile.head * delta.stride(1);
    let mut lrow = Array::<f32>::new(comptime!(2 * tiles));
    let mut drow = Array::<f32>::new(comptime!(2 * tiles));
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let row = prow0 + i * 16 + g + 8 * h;
            let present = queries.holds(row);
            let pq = queries.row(&tile, row);
            let l = lse[l_base + pq * lse.stride(2)];
            lrow[comptime!(2 * i + h)] = select(present && l != neg_inf, l * LOG2E, -neg_inf);
            drow[comptime!(2 * i + h)] = delta[d_base + pq * delta.stride(2)];
        }
    }
    let sl2 = scale * LOG2E;

    let mut stage = 0usize;
    while walk.live() {
        let k0 = walk.first(block);
        walk.advance(runs, block, windowed);
        // Every plane is done with the other stage before it is overwritten; on the first
        // pass this also publishes the staged Q and dO rows.
        sync_cube();
        if walk.live() {
            let next = 1 - stage;
            let first = walk.first(block);
            let b = &mut buf[0..buf_len];
            let r0 = next * srows;
            issue_pair::<F, N>(
                k,
                v,
                b,
                &tile,
                &keys,
                tile.kv_head,
                first,
                r0,
                threads,
                rstr,
                head_dim,
            );
            commit(&bar0, &bar1, next);
            if unit < CHUNK {
                kvalid[next * CHUNK + unit] = key_present(mask, &tile, first + unit, masked);
            }
        }
        wait(&bar0, &bar1, stage);
        let base = stage * srows;
        let kv0 = stage * CHUNK;

        let skip = causal && k0 > prow0 + prows - 1;
        if !skip {
            // S = Q·Kᵀ and dP = dO·Vᵀ, every K and V fragment serving each query tile.
            let b = &buf[0..buf_len];
            let qf = a_fragments::<F, N>(b, qrows + plane * prows, tiles, rstr, head_dim);
            let gf = a_fragments::<F, N>(b, grows + plane * prows, tiles, rstr, head_dim);
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
            if comptime!(masked) {
                need = true;
            }
            if comptime!(causal) {
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
                            if need {
                                let mut ok = kvalid[kv0 + key] != 0;
                                if comptime!(causal) {
                                    ok = ok && k0 + key <= row;
                                }
                                xs = select(ok, xs, neg_inf);
                            }
                            let p = exp2_approx(xs - lrow[e]);
                            r.insert(c, p * (y.extract(c) - drow[e]));
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

    let step = dq.stride(3);
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for h in 0..2usize {
            let row = prow0 + i * 16 + g + 8 * h;
            if queries.holds(row) {
                let pq = queries.row(&tile, row);
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

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dkdv_mma<F: Float, G: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    dout: &Tensor<Vector<F, N>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    col_ptr: &Tensor<u32>,
    runs: &Tensor<u32>,
    params: &Tensor<u32>,
    dk: &mut Tensor<G>,
    dv: &mut Tensor<G>,
    dq: &mut Tensor<Atomic<Vector<f32, P2>>>,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] causal: bool,
    #[comptime] masked: bool,
    #[comptime] overwrite: bool,
    #[comptime] rows: usize,
    #[comptime] fuse_dq: bool,
    #[comptime] min_blocks: u32,
    #[comptime] windowed: bool,
) {
    occupancy_hint(min_blocks);
    // Rows are keys: `tile.qb` is the key block, the transposed layout lists its query blocks.
    let subtiles = comptime!(block / rows);
    let threads = comptime!(rows * 2);
    let tile = locate(params, CUBE_POS_X as usize / subtiles, block, windowed);
    let k0 = tile.qb * block + (CUBE_POS_X as usize % subtiles) * ROWS;
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    // Cubes whose keys miss the key window (all of the segment's without one) leave.
    if tile.qb >= tile.seg_blocks || k0 >= keys.hi || k0 + rows <= keys.lo {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let lane = unit % 32;
    let g = lane / 4;
    let t = lane % 4;

    let nv = N::value();
    let rstr = comptime!(head_dim / nv + 1);
    // Two stages of CHUNK query and CHUNK dO rows, then the tile's K and V rows.
    let srows = comptime!(2 * CHUNK);
    let krows = comptime!(4 * CHUNK);
    let buf_len = comptime!((4 * CHUNK + 2 * rows) * (head_dim / nv + 1));
    let mut buf = Shared::<[Vector<F, N>]>::new_slice(buf_len);
    // With `fuse_dq`: the chunk's dS, query-major (`CHUNK` rows of the cube's keys).
    let dsstr = comptime!(rows / nv + 1);
    let ds_len = comptime!(if fuse_dq { CHUNK * (rows / nv + 1) } else { 1 });
    let mut dsb = Shared::<[Vector<F, N>]>::new_slice(ds_len);
    let mut lq = Shared::<[f32]>::new_slice(comptime!(2 * CHUNK));
    let mut dlt = Shared::<[f32]>::new_slice(comptime!(2 * CHUNK));
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let l_base = tile.batch * lse.stride(0) + tile.head * lse.stride(1);
    let d_base = tile.batch * delta.stride(0) + tile.head * delta.stride(1);

    let mut walk = Walk::new(
        col_ptr,
        runs,
        tile.csr_base + tile.qb,
        queries.first_block(block),
        queries.end_block(block),
        windowed,
    );
    if walk.live() {
        let first = walk.first(block);
        let b = &mut buf[0..buf_len];
        issue_pair::<F, N>(
            q, dout, b, &tile, &queries, tile.head, first, 0usize, threads, rstr, head_dim,
        );
        bar0.commit_copy_async();
        if unit < CHUNK {
            let (l, d) = query_stats(lse, delta, &tile, l_base, d_base, first + unit, neg_inf);
            lq[unit] = l;
            dlt[unit] = d;
        }
    }

    // The tile's K and V rows, staged once; each plane reads its A fragments per chunk (held
    // across the walk they would cost 32 registers and a cube per SM).
    let b = &mut buf[0..buf_len];
    stage_rows::<F, N>(
        k,
        b,
        &tile,
        &keys,
        tile.kv_head,
        k0,
        krows,
        rows,
        threads,
        rstr,
        head_dim,
    );
    let vrows = comptime!(4 * CHUNK + rows);
    stage_rows::<F, N>(
        v,
        b,
        &tile,
        &keys,
        tile.kv_head,
        k0,
        vrows,
        rows,
        threads,
        rstr,
        head_dim,
    );
    let mut dk_acc = zero_tiles(comptime!(head_dim / 8));
    let mut dv_acc = zero_tiles(comptime!(head_dim / 8));
    let krow0 = k0 + plane * 16;
    let sl2 = scale * LOG2E;
    // With `fuse_dq` the keys that are not there (padding, past the segment: their staged rows
    // repeat token 0) must give dS = 0, as they feed dQ.
    let mut kpf = Array::<f32>::new(2usize);
    if comptime!(fuse_dq) {
        #[unroll]
        for h in 0..2usize {
            kpf[h] = select(
                key_present(mask, &tile, krow0 + g + 8 * h, masked) != 0,
                1.0f32,
                0.0f32,
            );
        }
    }
    // The fused dQ product: plane → (16 query rows `qt`, `head_dim / dsplit` columns `dh`).
    let dsplit = comptime!(rows / 16 / (CHUNK / 16));
    let qt = plane % comptime!(CHUNK / 16);
    let dh = plane / comptime!(CHUNK / 16);
    let qcols = comptime!(head_dim / 8 / dsplit);

    let mut stage = 0usize;
    while walk.live() {
        let c0 = walk.first(block);
        walk.advance(runs, block, windowed);
        sync_cube();
        if walk.live() {
            let next = 1 - stage;
            let first = walk.first(block);
            let b = &mut buf[0..buf_len];
            let r0 = next * srows;
            issue_pair::<F, N>(
                q, dout, b, &tile, &queries, tile.head, first, r0, threads, rstr, head_dim,
            );
            commit(&bar0, &bar1, next);
            if unit < CHUNK {
                let (l, d) = query_stats(lse, delta, &tile, l_base, d_base, first + unit, neg_inf);
                lq[next * CHUNK + unit] = l;
                dlt[next * CHUNK + unit] = d;
            }
        }
        wait(&bar0, &bar1, stage);
        let base = stage * srows;
        let cq0 = stage * CHUNK;

        // Causal: a plane whose keys all follow the chunk's queries gets nothing.
        let skip = causal && c0 + CHUNK <= krow0;
        if !skip {
            // Sᵀ = K·Qᵀ, then Pᵀ = 2^{x − L} (queries along the columns).
            let kf =
                a_fragments::<F, N>(&buf[0..buf_len], krows + plane * 16, 1usize, rstr, head_dim);
            let mut s = zero_tiles(comptime!(CHUNK / 8));
            #[unroll]
            for jj in 0..comptime!(CHUNK / 16) {
                #[unroll]
                for ds in 0..comptime!(head_dim / 16) {
                    let j0 = comptime!(2 * jj);
                    mma_pair::<F, N>(
                        kf.index(ds),
                        &buf[0..buf_len],
                        base + jj * 16,
                        ds,
                        &mut s,
                        j0,
                        rstr,
                        false,
                    );
                }
            }
            let need = causal && c0 < krow0 + 16;
            #[unroll]
            for j in 0..comptime!(CHUNK / 8) {
                #[unroll]
                for h in 0..2usize {
                    let key = krow0 + g + 8 * h;
                    let mut x = s.index(j)[h];
                    #[unroll]
                    for c in 0..2usize {
                        let col = j * 8 + 2 * t + c;
                        let mut xs = x.extract(c) * sl2;
                        if need {
                            xs = select(key <= c0 + col, xs, neg_inf);
                        }
                        x.insert(c, exp2_approx(xs - lq[cq0 + col]));
                    }
                    let sj = s.index_mut(j);
                    sj[h] = x;
                }
            }
            // dV += Pᵀ·dO.
            #[unroll]
            for kk in 0..comptime!(CHUNK / 16) {
                let a = tiles_as_a::<F>(&s, kk);
                #[unroll]
                for dd in 0..comptime!(head_dim / 16) {
                    let j0 = comptime!(2 * dd);
                    let r0 = base + CHUNK + kk * 16;
                    mma_pair::<F, N>(
                        &a,
                        &buf[0..buf_len],
                        r0,
                        0usize,
                        &mut dv_acc,
                        j0,
                        rstr,
                        true,
                    );
                }
            }
            // dPᵀ = V·dOᵀ, then dSᵀ = Pᵀ ∘ (dPᵀ − Δ).
            let vf =
                a_fragments::<F, N>(&buf[0..buf_len], vrows + plane * 16, 1usize, rstr, head_dim);
            let mut dp = zero_tiles(comptime!(CHUNK / 8));
            #[unroll]
            for jj in 0..comptime!(CHUNK / 16) {
                #[unroll]
                for ds in 0..comptime!(head_dim / 16) {
                    let j0 = comptime!(2 * jj);
                    let r0 = base + CHUNK + jj * 16;
                    mma_pair::<F, N>(
                        vf.index(ds),
                        &buf[0..buf_len],
                        r0,
                        ds,
                        &mut dp,
                        j0,
                        rstr,
                        false,
                    );
                }
            }
            #[unroll]
            for j in 0..comptime!(CHUNK / 8) {
                #[unroll]
                for h in 0..2usize {
                    let p = s.index(j)[h];
                    let mut y = dp.index(j)[h];
                    #[unroll]
                    for c in 0..2usize {
                        let col = j * 8 + 2 * t + c;
                        let mut d = p.extract(c) * (y.extract(c) - dlt[cq0 + col]);
                        if comptime!(fuse_dq) {
                            d *= kpf[h];
                        }
                        y.insert(c, d);
                    }
                    let dj = dp.index_mut(j);
                    dj[h] = y;
                }
            }
            if comptime!(fuse_dq) {
                #[unroll]
                for kk in 0..comptime!(CHUNK / 16) {
                    let a = tiles_as_a::<F>(&dp, kk);
                    store_ds_t::<F, N>(&mut dsb[0..ds_len], &a, kk, plane, dsstr);
                }
            }
            // dK += dSᵀ·Q.
            #[unroll]
            for kk in 0..comptime!(CHUNK / 16) {
                let a = tiles_as_a::<F>(&dp, kk);
                #[unroll]
                for dd in 0..comptime!(head_dim / 16) {
                    let j0 = comptime!(2 * dd);
                    let r0 = base + kk * 16;
                    mma_pair::<F, N>(
                        &a,
                        &buf[0..buf_len],
                        r0,
                        0usize,
                        &mut dk_acc,
                        j0,
                        rstr,
                        true,
                    );
                }
            }
        }
        if comptime!(fuse_dq) {
            if skip {
                // This plane's keys all follow the chunk's queries: its columns of dS are 0.
                let mut a = Array::<Vector<F, P2>>::new(4usize);
                #[unroll]
                for r in 0..4usize {
                    a[r] = Vector::new(F::new(0.0));
                }
                #[unroll]
                for kk in 0..comptime!(CHUNK / 16) {
                    store_ds_t::<F, N>(&mut dsb[0..ds_len], &a, kk, plane, dsstr);
                }
            }
            // dQ += dS·K for the chunk's queries, atomically: every plane has written its
            // columns of dS. A chunk that follows all of the cube's keys adds nothing.
            sync_cube();
            if !(causal && c0 + CHUNK <= k0) {
                let mma = mma_def::<F>();
                let (m8, r8) = (lane / 8, lane % 8);
                let mut acc = zero_tiles(qcols);
                #[unroll]
                for kk in 0..comptime!(rows / 16) {
                    let idx = (qt * 16 + (m8 % 2) * 8 + r8) * dsstr + kk * 2 + m8 / 2;
                    let a =
                        mma.load_matrix::<_, P2>(&dsb[idx..idx + 1], MatrixIdent::A, 4usize, false);
                    #[unroll]
                    for dd in 0..comptime!(qcols / 2) {
                        mma_pair::<F, N>(
                            &a,
                            &buf[0..buf_len],
                            krows + kk * 16,
                            dh * qcols,
                            &mut acc,
                            comptime!(2 * dd),
                            rstr,
                            true,
                        );
                    }
                }
                // Rows of real tokens only; `dq` is contiguous (`backward_fuses_dq`), so
                // pairs of columns are `.v2.f32` atomics.
                let b0 = tile.batch * dq.stride(0) + tile.head * dq.stride(1);
                #[unroll]
                for h in 0..2usize {
                    let tq = c0 + qt * 16 + g + 8 * h;
                    if queries.holds(tq) {
                        let at = b0 + queries.row(&tile, tq) * dq.stride(2);
                        #[unroll]
                        for dt in 0..qcols {
                            let x = acc.index(dt)[h] * Vector::new(scale);
                            let d = (dh * qcols + dt) * 8 + 2 * t;
                            dq[(at + d) / 2].fetch_add(x);
                        }
                    }
                }
            }
        }
        stage = 1 - stage;
    }

    let (k_step, v_step) = (dk.stride(3), dv.stride(3));
    #[unroll]
    for h in 0..2usize {
        let key = krow0 + g + 8 * h;
        // A padded key gets no gradient (its sums above are not masked); with `overwrite` its
        // zeros are written too, so that every real token's row is.
        let present = key_present(mask, &tile, key, masked) != 0;
        let mut write = present;
        if comptime!(overwrite) {
            write = keys.holds(key);
        }
        if write {
            let pk = keys.row(&tile, key);
            let k_at = tile.batch * dk.stride(0) + tile.head * dk.stride(1) + pk * dk.stride(2);
            let v_at = tile.batch * dv.stride(0) + tile.head * dv.stride(1) + pk * dv.stride(2);
            let keep = select(present, 1.0f32, 0.0f32);
            #[unroll]
            for dt in 0..comptime!(head_dim / 8) {
                let x = dk_acc.index(dt)[h];
                let y = dv_acc.index(dt)[h];
                let d = dt * 8 + 2 * t;
                let x0 = G::cast_from(x.extract(0usize) * scale * keep);
                let x1 = G::cast_from(x.extract(1usize) * scale * keep);
                let y0 = G::cast_from(y.extract(0usize) * keep);
                let y1 = G::cast_from(y.extract(1usize) * keep);
                if comptime!(overwrite) {
                    dk[k_at + d * k_step] = x0;
                    dk[k_at + (d + 1) * k_step] = x1;
                    dv[v_at + d * v_step] = y0;
                    dv[v_at + (d + 1) * v_step] = y1;
                } else {
                    dk[k_at + d * k_step] += x0;
                    dk[k_at + (d + 1) * k_step] += x1;
                    dv[v_at + d * v_step] += y0;
                    dv[v_at + (d + 1) * v_step] += y1;
                }
            }
        }
    }
}

/// Stores the `A` fragment `a` of this plane's `dSᵀ` (its 16 keys × the chunk's queries
/// `16·kk ..`) transposed into the query-major `dS` tile `dsb` (`CHUNK` rows of the cube's
/// keys, `dsstr` vectors apart) by `stmatrix.trans`: fragment matrix `m` (key half `m % 2`,
/// query half `m / 2`) lands as rows `16·kk + 8(m / 2) ..`, columns `16·plane + 8(m % 2) ..`.
#[cube]
fn store_ds_t<F: Float, N: Size>(
    dsb: &mut [Vector<F, N>],
    a: &Array<Vector<F, P2>>,
    #[comptime] kk: usize,
    plane: usize,
    #[comptime] dsstr: usize,
) {
    let mma = mma_def::<F>();
    let lane = UNIT_POS_PLANE as usize;
    let (m8, r8) = (lane / 8, lane % 8);
    let idx = (kk * 16 + (m8 / 2) * 8 + r8) * dsstr + plane * 2 + m8 % 2;
    mma.store_matrix::<_, P2>(&mut dsb[idx..idx + 1], a, MatrixIdent::A, 4usize, true);
}

/// `(L, Δ)` of gathered query `tq` of the tile's segment: `L` in base 2, `+inf` where the
/// query is past the segment or sees no key (so that its `p` is 0).
#[cube]
#[allow(clippy::too_many_arguments)]
fn query_stats(
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    tile: &crate::forward::Tile,
    l_base: usize,
    d_base: usize,
    tq: usize,
    neg_inf: f32,
) -> (f32, f32) {
    let queries = Rows::queries(tile);
    let present = queries.holds(tq);
    let pq = queries.row(tile, tq);
    let l = lse[l_base + pq * lse.stride(2)];
    let l2 = select(present && l != neg_inf, l * LOG2E, -neg_inf);
    (l2, delta[d_base + pq * delta.stride(2)])
}

//! `dK/dV` (and, with `fuse_dq`, `dQ`) of the sm80 backward; the math, the cube shapes and
//! the accumulation contract are in `super::backward_dq`'s module docs:
//! rows = keys, chunks of the queries that see them (transposed layout),
//! `Sᵀ = K·Qᵀ`, `Pᵀ`, `dV += Pᵀ·dO`, `dPᵀ = V·dOᵀ`, `dSᵀ = Pᵀ ∘ (dPᵀ − Δ)`, `dK += dSᵀ·Q`.
//!
//! Shapes: `q, dout: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]` as
//! 8-wide vectors, `lse, delta: [batch, heads, n]` f32, `dk, dv: [batch, heads, n, head_dim]`
//! (f32 accumulators, or the inputs' dtype when stored), `dq` f32 (fused `dQ` only).

use cubecl::cmma::MatrixIdent;
use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use super::forward::{LOG2E, key_present};
use super::grads::{query_stats, write_key_grads};
use super::mma::{
    CHUNK, P2, Walk, a_fragments, commit, exp2_approx, issue_pair, mma_def, mma_pair,
    occupancy_hint, stage_rows, tiles_as_a, wait, zero_tiles,
};
use crate::addressing::{Rows, locate};
use crate::args::{GradOperands, Operands, Pass};

/// Keys per `dK/dV` cube (16 per plane) without a fused `dQ`.
pub(crate) const ROWS: usize = 64;

/// Shared memory of a `dK/dV` cube of `rows` keys in bytes (`nv`: the vector width of the row
/// loads): two stages of `CHUNK` query and `dO` rows, the cube's K and V rows (rows of
/// `head_dim + nv` halves), the fused `dQ`'s `dS` tile (`CHUNK` rows of `rows + nv` halves; one
/// vector without it), the chunks' `L` and `Δ`, two barriers.
pub(crate) fn dkdv_shared_bytes(head_dim: usize, rows: usize, nv: usize, fuse_dq: bool) -> usize {
    let ds = if fuse_dq { CHUNK * (rows + nv) } else { nv };
    ((4 * CHUNK + 2 * rows) * (head_dim + nv) + ds) * 2 + 4 * CHUNK * 4 + 16
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dkdv_mma<F: Float, G: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dk: &mut Tensor<G>,
    dv: &mut Tensor<G>,
    dq: &mut Tensor<Atomic<Vector<f32, P2>>>,
    #[comptime] pass: Pass,
    #[comptime] overwrite: bool,
    #[comptime] rows: usize,
    #[comptime] fuse_dq: bool,
    #[comptime] min_blocks: u32,
    #[comptime] windowed: bool,
) {
    occupancy_hint(min_blocks);
    // Rows are keys: `tile.qb` is the key block, the transposed layout lists its query blocks.
    let subtiles = comptime!(pass.block / rows);
    let threads = comptime!(rows * 2);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        windowed,
    );
    let k0 = tile.qb * pass.block + (CUBE_POS_X as usize % subtiles) * ROWS;
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
    let rstr = comptime!(pass.head_dim / nv + 1);
    // Two stages of CHUNK query and CHUNK dO rows, then the tile's K and V rows.
    let srows = comptime!(2 * CHUNK);
    let krows = comptime!(4 * CHUNK);
    let buf_len = comptime!((4 * CHUNK + 2 * rows) * (pass.head_dim / nv + 1));
    let mut buf = Shared::<[Vector<F, N>]>::new_slice(buf_len);
    // With `fuse_dq`: the chunk's dS, query-major (`CHUNK` rows of the cube's keys).
    let dsstr = comptime!(rows / nv + 1);
    let ds_len = comptime!(if fuse_dq { CHUNK * (rows / nv + 1) } else { 1 });
    let mut dsb = Shared::<[Vector<F, N>]>::new_slice(ds_len);
    let mut lq = Shared::<[f32]>::new_slice(comptime!(2 * CHUNK));
    let mut dlt = Shared::<[f32]>::new_slice(comptime!(2 * CHUNK));
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let l_base = tile.batch * grad.lse.stride(0) + tile.head * grad.lse.stride(1);
    let d_base = tile.batch * grad.delta.stride(0) + tile.head * grad.delta.stride(1);

    let mut walk = Walk::of_tile(&io.blocks, &io.runs, &tile, &queries, pass.block, windowed);
    if walk.live() {
        let first = walk.first(pass.block);
        let b = &mut buf[0..buf_len];
        issue_pair::<F, N>(
            &io.q,
            &grad.dout,
            b,
            &tile,
            &queries,
            tile.head,
            first,
            0usize,
            threads,
            rstr,
            pass.head_dim,
        );
        bar0.commit_copy_async();
        if unit < CHUNK {
            let (l, d) = query_stats(
                &grad.lse,
                &grad.delta,
                &tile,
                l_base,
                d_base,
                first + unit,
                io.neg_inf,
            );
            lq[unit] = l;
            dlt[unit] = d;
        }
    }

    // The tile's K and V rows, staged once; each plane reads its A fragments per chunk (held
    // across the walk they would cost 32 registers and a cube per SM).
    let b = &mut buf[0..buf_len];
    stage_rows::<F, N>(
        &io.k,
        b,
        &tile,
        &keys,
        tile.kv_head,
        k0,
        krows,
        rows,
        threads,
        rstr,
        pass.head_dim,
    );
    let vrows = comptime!(4 * CHUNK + rows);
    stage_rows::<F, N>(
        &io.v,
        b,
        &tile,
        &keys,
        tile.kv_head,
        k0,
        vrows,
        rows,
        threads,
        rstr,
        pass.head_dim,
    );
    // Own rows of keys that are not there (padding, past the window's end) stage as zeros:
    // their dK and dV are 0, which `0 · NaN` would break. Each unit clears what it staged.
    let mut absent = k0 < keys.lo || k0 + rows > keys.hi;
    if comptime!(pass.masked) {
        absent = true;
    }
    if absent {
        let hv = comptime!(pass.head_dim / nv);
        let mut e = unit;
        while e < rows * hv {
            let r = e / hv;
            if key_present(&io.mask, &tile, k0 + r, pass.masked) == 0 {
                b[(krows + r) * rstr + e % hv] = Vector::new(F::new(0.0));
                b[(vrows + r) * rstr + e % hv] = Vector::new(F::new(0.0));
            }
            e += threads;
        }
    }
    let mut dk_acc = zero_tiles(comptime!(pass.head_dim / 8));
    let mut dv_acc = zero_tiles(comptime!(pass.head_dim / 8));
    let krow0 = k0 + plane * 16;
    let sl2 = io.scale * LOG2E;
    // With `fuse_dq` the keys that are not there (padding, past the segment: their staged rows
    // repeat token 0) must give dS = 0, as they feed dQ.
    let mut kpf = Array::<f32>::new(2usize);
    if comptime!(fuse_dq) {
        #[unroll]
        for h in 0..2usize {
            kpf[h] = select(
                key_present(&io.mask, &tile, krow0 + g + 8 * h, pass.masked) != 0,
                1.0f32,
                0.0f32,
            );
        }
    }
    // The fused dQ product: plane → (16 query rows `qt`, `head_dim / dsplit` columns `dh`).
    let dsplit = comptime!(rows / 16 / (CHUNK / 16));
    let qt = plane % comptime!(CHUNK / 16);
    let dh = plane / comptime!(CHUNK / 16);
    let qcols = comptime!(pass.head_dim / 8 / dsplit);

    let mut stage = 0usize;
    while walk.live() {
        let c0 = walk.first(pass.block);
        walk.advance(&io.runs, pass.block, windowed);
        sync_cube();
        if walk.live() {
            let next = 1 - stage;
            let first = walk.first(pass.block);
            let b = &mut buf[0..buf_len];
            let r0 = next * srows;
            issue_pair::<F, N>(
                &io.q,
                &grad.dout,
                b,
                &tile,
                &queries,
                tile.head,
                first,
                r0,
                threads,
                rstr,
                pass.head_dim,
            );
            commit(&bar0, &bar1, next);
            if unit < CHUNK {
                let (l, d) = query_stats(
                    &grad.lse,
                    &grad.delta,
                    &tile,
                    l_base,
                    d_base,
                    first + unit,
                    io.neg_inf,
                );
                lq[next * CHUNK + unit] = l;
                dlt[next * CHUNK + unit] = d;
            }
        }
        wait(&bar0, &bar1, stage);
        let base = stage * srows;
        let cq0 = stage * CHUNK;

        // Causal: a plane whose keys all follow the chunk's queries gets nothing.
        let skip = pass.causal && c0 + CHUNK <= krow0;
        if !skip {
            // Sᵀ = K·Qᵀ, then Pᵀ = 2^{x − L} (queries along the columns).
            let kf = a_fragments::<F, N>(
                &buf[0..buf_len],
                krows + plane * 16,
                1usize,
                rstr,
                pass.head_dim,
            );
            let mut s = zero_tiles(comptime!(CHUNK / 8));
            #[unroll]
            for jj in 0..comptime!(CHUNK / 16) {
                #[unroll]
                for ds in 0..comptime!(pass.head_dim / 16) {
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
            let need = pass.causal && c0 < krow0 + 16;
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
                            xs = select(key <= c0 + col, xs, io.neg_inf);
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
                for dd in 0..comptime!(pass.head_dim / 16) {
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
            let vf = a_fragments::<F, N>(
                &buf[0..buf_len],
                vrows + plane * 16,
                1usize,
                rstr,
                pass.head_dim,
            );
            let mut dp = zero_tiles(comptime!(CHUNK / 8));
            #[unroll]
            for jj in 0..comptime!(CHUNK / 16) {
                #[unroll]
                for ds in 0..comptime!(pass.head_dim / 16) {
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
                            // `dS` goes into `dQ` of the chunk's queries: a pair a query does
                            // not see (p = 0) adds nothing there even where `dPᵀ` is NaN (a
                            // value row that is not finite, seen only by later queries).
                            d = select(p.extract(c) != 0.0f32, d * kpf[h], 0.0f32);
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
                for dd in 0..comptime!(pass.head_dim / 16) {
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
            if !(pass.causal && c0 + CHUNK <= k0) {
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
                            let x = acc.index(dt)[h] * Vector::new(io.scale);
                            let d = (dh * qcols + dt) * 8 + 2 * t;
                            dq[(at + d) / 2].fetch_add(x);
                        }
                    }
                }
            }
        }
        stage = 1 - stage;
    }

    write_key_grads::<F, G, N>(
        &dk_acc, &dv_acc, dk, dv, io, &tile, &keys, krow0, pass, overwrite,
    );
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

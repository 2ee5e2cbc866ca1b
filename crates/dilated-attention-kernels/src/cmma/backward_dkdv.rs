//! `dK/dV` of the cmma backward (see `super::backward` for the math and shapes).

use cubecl::prelude::*;

use super::backward::{COLS, PLANES, ROWS, add_tiles};
use super::forward::{operand, zero_accumulator};
use crate::addressing::locate;
use crate::args::{GradOperands, Operands, Pass};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dkdv_tc<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dk: &mut Tensor<f32>,
    dv: &mut Tensor<f32>,
    #[comptime] pass: Pass,
) {
    // Rows are keys: `tile.qb` is the key block, the transposed layout lists its query blocks.
    let subtiles = comptime!(pass.block / ROWS);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        false,
    );
    let (kb, head, kv_head, batch) = (tile.qb, tile.head, tile.kv_head, tile.batch);
    let (tokens, dilation, seg_start, csr_base) =
        (tile.tokens, tile.dilation, tile.seg_start, tile.csr_base);
    let k0 = kb * pass.block + (CUBE_POS_X as usize % subtiles) * ROWS;
    if kb >= tile.seg_blocks || k0 >= tokens {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let lane = unit % 32;
    let threads = comptime!(PLANES * 32);

    let str_f = comptime!(pass.head_dim + 8);
    let sstr = comptime!(COLS + 4);
    let pstr = comptime!(COLS + 8);
    let mut kst = Shared::<[F]>::new_slice(comptime!(ROWS * (pass.head_dim + 8)));
    let mut vst = Shared::<[F]>::new_slice(comptime!(ROWS * (pass.head_dim + 8)));
    let mut qs = Shared::<[F]>::new_slice(comptime!(COLS * (pass.head_dim + 8)));
    let mut gs = Shared::<[F]>::new_slice(comptime!(COLS * (pass.head_dim + 8)));
    let mut ss = Shared::<[f32]>::new_slice(comptime!(ROWS * (COLS + 4)));
    let mut dps = Shared::<[f32]>::new_slice(comptime!(ROWS * (COLS + 4)));
    let mut ps = Shared::<[F]>::new_slice(comptime!(ROWS * (COLS + 8)));
    let mut klive = Shared::<[u32]>::new_slice(ROWS);
    let mut lq = Shared::<[f32]>::new_slice(COLS);
    let mut dq_ = Shared::<[f32]>::new_slice(COLS);
    let mut qlive = Shared::<[u32]>::new_slice(COLS);

    // Stage the key and value rows and whether each key is present.
    let nv = N::value();
    let hv = comptime!(pass.head_dim / nv);
    let k_base = batch * io.k.stride(0) + kv_head * io.k.stride(1);
    let v_base = batch * io.v.stride(0) + kv_head * io.v.stride(1);
    let mut e = unit;
    while e < ROWS * hv {
        let r = e / hv;
        let d = e % hv;
        let tk = k0 + r;
        let present = tk < tokens;
        let pk = seg_start + select(present, tk, 0usize) * dilation;
        let kvec = io.k[(k_base + pk * io.k.stride(2)) / nv + d];
        let vvec = io.v[(v_base + pk * io.v.stride(2)) / nv + d];
        let mut ok = present;
        if comptime!(pass.masked) {
            ok = ok && io.mask[batch * io.mask.stride(0) + pk * io.mask.stride(1)] != 0;
        }
        // Keys that are not there stage as zeros (see the forward).
        #[unroll]
        for i in 0..nv {
            kst[r * str_f + d * nv + i] = select(ok, kvec.extract(i), F::new(0.0));
            vst[r * str_f + d * nv + i] = select(ok, vvec.extract(i), F::new(0.0));
        }
        if d == 0 {
            klive[r] = select(ok, 1u32, 0u32);
        }
        e += threads;
    }
    sync_cube();
    let mut kf = Sequence::<cmma::Matrix<F>>::new();
    let mut vf = Sequence::<cmma::Matrix<F>>::new();
    let mut dk_acc = Sequence::<cmma::Matrix<f32>>::new();
    let mut dv_acc = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for ds in 0..comptime!(pass.head_dim / 16) {
        kf.push(operand(
            cmma::MatrixIdent::A,
            cmma::MatrixLayout::RowMajor,
            &kst[plane * 16 * str_f + ds * 16..ROWS * str_f],
            str_f,
        ));
        vf.push(operand(
            cmma::MatrixIdent::A,
            cmma::MatrixLayout::RowMajor,
            &vst[plane * 16 * str_f + ds * 16..ROWS * str_f],
            str_f,
        ));
        dk_acc.push(zero_accumulator());
        dv_acc.push(zero_accumulator());
    }

    let krow = plane * 16 + lane / 2;
    let half = lane % 2;
    let tk_row = k0 + krow;
    let rot = lane / 2;
    let key_live = klive[krow] != 0;

    let q_base = batch * io.q.stride(0) + head * io.q.stride(1);
    let g_base = batch * grad.dout.stride(0) + head * grad.dout.stride(1);
    let l_base = batch * grad.lse.stride(0) + head * grad.lse.stride(1);
    let d_base = batch * grad.delta.stride(0) + head * grad.delta.stride(1);
    let run_lo = io.blocks[csr_base + kb] as usize;
    let run_hi = io.blocks[csr_base + kb + 1] as usize;
    for run in run_lo..run_hi {
        let qb_lo = io.runs[2 * run] as usize;
        let qb_hi = io.runs[2 * run + 1] as usize;
        for qb in qb_lo..qb_hi {
            let mut c0 = 0usize;
            while c0 < pass.block {
                sync_cube();
                let mut e = unit;
                while e < COLS * hv {
                    let c = e / hv;
                    let d = e % hv;
                    let tq = qb * pass.block + c0 + c;
                    let present = tq < tokens;
                    let pq = seg_start + select(present, tq, 0usize) * dilation;
                    let qv = io.q[(q_base + pq * io.q.stride(2)) / nv + d];
                    let gv = grad.dout[(g_base + pq * grad.dout.stride(2)) / nv + d];
                    #[unroll]
                    for i in 0..nv {
                        qs[c * str_f + d * nv + i] = qv.extract(i);
                        gs[c * str_f + d * nv + i] = gv.extract(i);
                    }
                    if d == 0 {
                        let l = grad.lse[l_base + pq * grad.lse.stride(2)];
                        let live = present && l != io.neg_inf;
                        lq[c] = select(live, l, 0.0f32);
                        dq_[c] = grad.delta[d_base + pq * grad.delta.stride(2)];
                        qlive[c] = select(live, 1u32, 0u32);
                    }
                    e += threads;
                }
                sync_cube();

                // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for the plane's 16 keys.
                #[unroll]
                for qt in 0..comptime!(COLS / 16) {
                    let s_acc = zero_accumulator();
                    let p_acc = zero_accumulator();
                    #[unroll]
                    for ds in 0..comptime!(pass.head_dim / 16) {
                        let at = qt * 16 * str_f + ds * 16;
                        let qb_frag = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::ColMajor,
                            &qs[at..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&kf[ds], &qb_frag, &s_acc, &s_acc);
                        let gb_frag = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::ColMajor,
                            &gs[at..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&vf[ds], &gb_frag, &p_acc, &p_acc);
                    }
                    let out_at = plane * 16 * sstr + qt * 16;
                    cmma::store(
                        &mut ss[out_at..ROWS * sstr],
                        &s_acc,
                        sstr as u32,
                        cmma::MatrixLayout::RowMajor,
                    );
                    cmma::store(
                        &mut dps[out_at..ROWS * sstr],
                        &p_acc,
                        sstr as u32,
                        cmma::MatrixLayout::RowMajor,
                    );
                }
                sync_plane();

                // Pᵀ, two lanes per key row.
                let cols = comptime!(COLS / 2);
                #[unroll]
                for j in 0..cols {
                    let c = half * cols + (j + rot) % cols;
                    let tq = qb * pass.block + c0 + c;
                    let mut ok = key_live && qlive[c] != 0;
                    if comptime!(pass.causal) {
                        ok = ok && tk_row <= tq;
                    }
                    let p = f32::exp(select(
                        ok,
                        ss[krow * sstr + c] * io.scale - lq[c],
                        io.neg_inf,
                    ));
                    ss[krow * sstr + c] = p;
                    ps[krow * pstr + c] = F::cast_from(p);
                }
                sync_plane();
                // dV += Pᵀ·dO.
                #[unroll]
                for dt in 0..comptime!(pass.head_dim / 16) {
                    #[unroll]
                    for kk in 0..comptime!(COLS / 16) {
                        let a = operand(
                            cmma::MatrixIdent::A,
                            cmma::MatrixLayout::RowMajor,
                            &ps[plane * 16 * pstr + kk * 16..ROWS * pstr],
                            pstr,
                        );
                        let b = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::RowMajor,
                            &gs[kk * 16 * str_f + dt * 16..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&a, &b, &dv_acc[dt], &dv_acc[dt]);
                    }
                }
                sync_plane();
                // dSᵀ = Pᵀ ∘ (dPᵀ − Δ) over the same tile.
                #[unroll]
                for j in 0..cols {
                    let c = half * cols + (j + rot) % cols;
                    let p = ss[krow * sstr + c];
                    let ds = select(p > 0.0f32, p * (dps[krow * sstr + c] - dq_[c]), 0.0f32);
                    ps[krow * pstr + c] = F::cast_from(ds);
                }
                sync_plane();
                // dK += dSᵀ·Q.
                #[unroll]
                for dt in 0..comptime!(pass.head_dim / 16) {
                    #[unroll]
                    for kk in 0..comptime!(COLS / 16) {
                        let a = operand(
                            cmma::MatrixIdent::A,
                            cmma::MatrixLayout::RowMajor,
                            &ps[plane * 16 * pstr + kk * 16..ROWS * pstr],
                            pstr,
                        );
                        let b = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::RowMajor,
                            &qs[kk * 16 * str_f + dt * 16..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&a, &b, &dk_acc[dt], &dk_acc[dt]);
                    }
                }
                c0 += COLS;
            }
        }
    }

    let pk = seg_start + select(tk_row < tokens, tk_row, 0usize) * dilation;
    let k_at = batch * dk.stride(0) + head * dk.stride(1) + pk * dk.stride(2);
    let v_at = batch * dv.stride(0) + head * dv.stride(1) + pk * dv.stride(2);
    sync_cube();
    add_tiles(
        &dk_acc,
        &mut ss[0..ROWS * sstr],
        dk,
        k_at,
        tk_row < tokens,
        io.scale,
        plane,
        lane,
        pass.head_dim,
    );
    add_tiles(
        &dv_acc,
        &mut dps[0..ROWS * sstr],
        dv,
        v_at,
        tk_row < tokens,
        1.0f32,
        plane,
        lane,
        pass.head_dim,
    );
}

//! `dQ` of the cmma backward (see `super::backward` for the math and shapes).

use cubecl::prelude::*;

use super::backward::{COLS, PLANES, ROWS, add_tiles};
use super::forward::{operand, zero_accumulator};
use crate::addressing::locate;
use crate::args::{GradOperands, Operands, Pass};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn backward_dq_tc<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    grad: &GradOperands<Vector<F, N>>,
    dq: &mut Tensor<f32>,
    #[comptime] pass: Pass,
) {
    let subtiles = comptime!(pass.block / ROWS);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        false,
    );
    let (qb, head, kv_head, batch) = (tile.qb, tile.head, tile.kv_head, tile.batch);
    let (tokens, dilation, seg_start, csr_base) =
        (tile.tokens, tile.dilation, tile.seg_start, tile.csr_base);
    let q0 = qb * pass.block + (CUBE_POS_X as usize % subtiles) * ROWS;
    if qb >= tile.seg_blocks || q0 >= tokens {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let lane = unit % 32;
    let threads = comptime!(PLANES * 32);

    let str_f = comptime!(pass.head_dim + 8);
    let sstr = comptime!(COLS + 4);
    let pstr = comptime!(COLS + 8);
    let mut qs = Shared::<[F]>::new_slice(comptime!(ROWS * (pass.head_dim + 8)));
    let mut gs = Shared::<[F]>::new_slice(comptime!(ROWS * (pass.head_dim + 8)));
    let mut ks = Shared::<[F]>::new_slice(comptime!(COLS * (pass.head_dim + 8)));
    let mut vs = Shared::<[F]>::new_slice(comptime!(COLS * (pass.head_dim + 8)));
    let mut ss = Shared::<[f32]>::new_slice(comptime!(ROWS * (COLS + 4)));
    let mut dps = Shared::<[f32]>::new_slice(comptime!(ROWS * (COLS + 4)));
    let mut ps = Shared::<[F]>::new_slice(comptime!(ROWS * (COLS + 8)));
    let mut kvalid = Shared::<[u32]>::new_slice(COLS);
    let mut lrow = Shared::<[f32]>::new_slice(ROWS);
    let mut drow = Shared::<[f32]>::new_slice(ROWS);
    let mut rlive = Shared::<[u32]>::new_slice(ROWS);

    // Stage the query rows, their output gradients, L and Δ.
    let nv = N::value();
    let hv = comptime!(pass.head_dim / nv);
    let q_base = batch * io.q.stride(0) + head * io.q.stride(1);
    let g_base = batch * grad.dout.stride(0) + head * grad.dout.stride(1);
    let mut e = unit;
    while e < ROWS * hv {
        let r = e / hv;
        let dv = e % hv;
        let tq = q0 + r;
        let pq = seg_start + select(tq < tokens, tq, 0usize) * dilation;
        let qv = io.q[(q_base + pq * io.q.stride(2)) / nv + dv];
        let gv = grad.dout[(g_base + pq * grad.dout.stride(2)) / nv + dv];
        #[unroll]
        for i in 0..nv {
            qs[r * str_f + dv * nv + i] = qv.extract(i);
            gs[r * str_f + dv * nv + i] = gv.extract(i);
        }
        if dv == 0 {
            let l = grad.lse
                [batch * grad.lse.stride(0) + head * grad.lse.stride(1) + pq * grad.lse.stride(2)];
            let live = tq < tokens && l != io.neg_inf;
            lrow[r] = select(live, l, 0.0f32);
            drow[r] = grad.delta[batch * grad.delta.stride(0)
                + head * grad.delta.stride(1)
                + pq * grad.delta.stride(2)];
            rlive[r] = select(live, 1u32, 0u32);
        }
        e += threads;
    }
    sync_cube();
    let mut qf = Sequence::<cmma::Matrix<F>>::new();
    let mut gf = Sequence::<cmma::Matrix<F>>::new();
    let mut accs = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for ds in 0..comptime!(pass.head_dim / 16) {
        qf.push(operand(
            cmma::MatrixIdent::A,
            cmma::MatrixLayout::RowMajor,
            &qs[plane * 16 * str_f + ds * 16..ROWS * str_f],
            str_f,
        ));
        gf.push(operand(
            cmma::MatrixIdent::A,
            cmma::MatrixLayout::RowMajor,
            &gs[plane * 16 * str_f + ds * 16..ROWS * str_f],
            str_f,
        ));
        accs.push(zero_accumulator());
    }

    // Lane pair (2r, 2r+1) owns row r of the plane's 16; each lane half of the columns.
    let prow = plane * 16 + lane / 2;
    let half = lane % 2;
    let tq_row = q0 + prow;
    let rot = lane / 2;

    let k_base = batch * io.k.stride(0) + kv_head * io.k.stride(1);
    let v_base = batch * io.v.stride(0) + kv_head * io.v.stride(1);
    let (m_batch, m_pos) = (io.mask.stride(0), io.mask.stride(1));
    let run_lo = io.blocks[csr_base + qb] as usize;
    let run_hi = io.blocks[csr_base + qb + 1] as usize;
    for run in run_lo..run_hi {
        let kb_lo = io.runs[2 * run] as usize;
        let kb_hi = io.runs[2 * run + 1] as usize;
        for kb in kb_lo..kb_hi {
            let mut c0 = 0usize;
            while c0 < pass.block {
                sync_cube();
                let mut e = unit;
                while e < COLS * hv {
                    let c = e / hv;
                    let dv = e % hv;
                    let tk = kb * pass.block + c0 + c;
                    let present = tk < tokens;
                    let pk = seg_start + select(present, tk, 0usize) * dilation;
                    let kvec = io.k[(k_base + pk * io.k.stride(2)) / nv + dv];
                    let vvec = io.v[(v_base + pk * io.v.stride(2)) / nv + dv];
                    let mut ok = present;
                    if comptime!(pass.masked) {
                        ok = ok && io.mask[batch * m_batch + pk * m_pos] != 0;
                    }
                    // Keys that are not there stage as zeros: their rows may hold anything
                    // (NaN included), and `0 · NaN` on the tensor cores would reach real rows.
                    #[unroll]
                    for i in 0..nv {
                        ks[c * str_f + dv * nv + i] = select(ok, kvec.extract(i), F::new(0.0));
                        vs[c * str_f + dv * nv + i] = select(ok, vvec.extract(i), F::new(0.0));
                    }
                    if dv == 0 {
                        kvalid[c] = select(ok, 1u32, 0u32);
                    }
                    e += threads;
                }
                sync_cube();

                // S = Q·Kᵀ and dP = dO·Vᵀ for the plane's 16 rows.
                #[unroll]
                for kt in 0..comptime!(COLS / 16) {
                    let s_acc = zero_accumulator();
                    let p_acc = zero_accumulator();
                    #[unroll]
                    for ds in 0..comptime!(pass.head_dim / 16) {
                        let at = kt * 16 * str_f + ds * 16;
                        let kb_frag = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::ColMajor,
                            &ks[at..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&qf[ds], &kb_frag, &s_acc, &s_acc);
                        let vb_frag = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::ColMajor,
                            &vs[at..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&gf[ds], &vb_frag, &p_acc, &p_acc);
                    }
                    let out_at = plane * 16 * sstr + kt * 16;
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

                // dS = P ∘ (dP − Δ), two lanes per row, columns rotated by row (banks).
                let cols = comptime!(COLS / 2);
                let live = rlive[prow] != 0;
                let l = lrow[prow];
                let dlt = drow[prow];
                #[unroll]
                for j in 0..cols {
                    let c = half * cols + (j + rot) % cols;
                    let tk = kb * pass.block + c0 + c;
                    let mut ok = live && kvalid[c] != 0;
                    if comptime!(pass.causal) {
                        ok = ok && tk <= tq_row;
                    }
                    let p = f32::exp(select(ok, ss[prow * sstr + c] * io.scale - l, io.neg_inf));
                    let ds = select(ok, p * (dps[prow * sstr + c] - dlt), 0.0f32);
                    ps[prow * pstr + c] = F::cast_from(ds);
                }
                sync_plane();

                // dQ += dS·K.
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
                            &ks[kk * 16 * str_f + dt * 16..COLS * str_f],
                            str_f,
                        );
                        cmma::execute(&a, &b, &accs[dt], &accs[dt]);
                    }
                }
                c0 += COLS;
            }
        }
    }

    let pq = seg_start + select(tq_row < tokens, tq_row, 0usize) * dilation;
    let base = batch * dq.stride(0) + head * dq.stride(1) + pq * dq.stride(2);
    add_tiles(
        &accs,
        &mut ss[0..ROWS * sstr],
        dq,
        base,
        tq_row < tokens,
        io.scale,
        plane,
        lane,
        pass.head_dim,
    );
}

//! Tensor-core forward (f16/bf16 through CubeCL `cmma`, 16×16×16 tiles, plane width 32).
//!
//! Same math, shapes, grid and layout arguments as `crate::portable::forward`; only the inner loop
//! differs. A cube of 4 planes owns a 64-row query tile (gathered rows staged once in shared
//! memory); key blocks are walked in chunks of 32 gathered keys:
//! 1. every plane computes `S = Q·Kᵀ` for its 16 rows with `cmma` (f32 accumulators) into
//!    shared memory;
//! 2. two lanes per row apply the masks and the online softmax in f32 (row max and sum by a
//!    lane-pair shuffle) and write `P` in the input dtype; the shift moves lazily (only when a
//!    row max passes it by more than `e^8`), so the output is rarely rescaled;
//! 3. `O += P·V` with `cmma` into f32 accumulators that stay in registers. They visit shared
//!    memory only to be rescaled and at the end, `TK` columns at a time through the plane's
//!    own rows of the score tile (free once `P` is written), so the cube needs no output tile:
//!    32.1 KiB of shared memory at head dim 64, under the 48 KiB a Vulkan driver may give.
//!
//! Used on runtimes whose `cmma` supports the input dtype at 16×16×16 with an f32 accumulator
//! and whose planes are 32 wide; head dims 32 and 64, blocks 64 and 128. `q, k, v` are read in
//! `N`-wide vectors (16-byte loads for `N = 8`), which needs a contiguous head dim and
//! batch/head/row strides divisible by `N`.

use cubecl::prelude::*;

use crate::addressing::locate;
use crate::args::{Operands, Pass};
use crate::portable::finite::not_finite;
use crate::sm80::rows::NO_KEY;

/// Query rows per cube.
const TQ: usize = 64;
/// Keys per chunk.
const TK: usize = 32;
/// Planes per cube (16 query rows each).
const PLANES: usize = 4;
/// How far (natural log) a row max may pass the softmax shift before the output is rescaled.
const LAZY: f32 = 8.0;

/// Shared memory of a forward cube in bytes (16-bit inputs): the query tile and a chunk's key
/// and value rows (rows of `head_dim + 8`), the chunk's f32 scores and 16-bit probabilities,
/// its key flags and a word a plane.
pub(crate) fn shared_bytes(head_dim: usize) -> usize {
    (TQ + 2 * TK) * (head_dim + 8) * 2 + TQ * (TK + 4) * 4 + TQ * (TK + 8) * 2 + TK * 4 + PLANES * 4
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn block_sparse_forward_tc<F: Float, N: Size>(
    io: &Operands<Vector<F, N>>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    #[comptime] pass: Pass,
) {
    let subtiles = comptime!(pass.block / TQ);
    let tile = locate(
        &io.params,
        CUBE_POS_X as usize / subtiles,
        pass.block,
        false,
    );
    let (qb, head, kv_head, batch) = (tile.qb, tile.head, tile.kv_head, tile.batch);
    let (tokens, dilation, seg_start, csr_base) =
        (tile.tokens, tile.dilation, tile.seg_start, tile.csr_base);
    let q0 = qb * pass.block + (CUBE_POS_X as usize % subtiles) * TQ;
    if qb >= tile.seg_blocks || q0 >= tokens {
        terminate!();
    }

    let unit = UNIT_POS as usize;
    let plane = unit / 32;
    let lane = unit % 32;
    let threads = comptime!(PLANES * 32);

    // Row strides padded so that consecutive rows start on different banks (cmma tiles and
    // the lanes' row walks would otherwise hit one bank).
    let qstr = comptime!(pass.head_dim + 8);
    let sstr = comptime!(TK + 4);
    let pstr = comptime!(TK + 8);
    let mut qs = Shared::<[F]>::new_slice(comptime!(TQ * (pass.head_dim + 8)));
    let mut ks = Shared::<[F]>::new_slice(comptime!(TK * (pass.head_dim + 8)));
    let mut vs = Shared::<[F]>::new_slice(comptime!(TK * (pass.head_dim + 8)));
    let mut ss = Shared::<[f32]>::new_slice(comptime!(TQ * (TK + 4)));
    let mut ps = Shared::<[F]>::new_slice(comptime!(TQ * (TK + 8)));
    let mut kvalid = Shared::<[u32]>::new_slice(TK);
    // Per plane, the first key of a causal diagonal chunk whose value row was not finite.
    let mut first_bad = Shared::<[u32]>::new_slice(PLANES);

    // Stage the gathered query rows (N-wide loads).
    let nv = N::value();
    let hv = comptime!(pass.head_dim / nv);
    let q_base = batch * io.q.stride(0) + head * io.q.stride(1);
    let q_row = io.q.stride(2);
    let mut e = unit;
    while e < TQ * hv {
        let r = e / hv;
        let dv = e % hv;
        let tq = q0 + r;
        let pq = seg_start + select(tq < tokens, tq, 0usize) * dilation;
        let vec = io.q[(q_base + pq * q_row) / nv + dv];
        #[unroll]
        for i in 0..nv {
            qs[r * qstr + dv * nv + i] = vec.extract(i);
        }
        e += threads;
    }
    sync_cube();
    // The plane's query fragments and output accumulators live in registers for the whole
    // cube.
    let mut qf = Sequence::<cmma::Matrix<F>>::new();
    let mut accs = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for ds in 0..comptime!(pass.head_dim / 16) {
        qf.push(operand(
            cmma::MatrixIdent::A,
            cmma::MatrixLayout::RowMajor,
            &qs[plane * 16 * qstr + ds * 16..TQ * qstr],
            qstr,
        ));
        accs.push(zero_accumulator());
    }

    // Lane pair (2r, 2r+1) owns row r of the plane's 16 rows; each lane half of the columns.
    let prow = plane * 16 + lane / 2;
    let half = lane % 2;
    let tq_row = q0 + prow;
    let mut m = io.neg_inf;
    let mut l = 0.0f32;
    // The row saw a key whose value row was not finite (staged as zeros): it writes NaN.
    let mut poisoned = false;

    let k_base = batch * io.k.stride(0) + kv_head * io.k.stride(1);
    let v_base = batch * io.v.stride(0) + kv_head * io.v.stride(1);
    let k_row = io.k.stride(2);
    let v_row = io.v.stride(2);
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
                // Some rows must not see some of the chunk's keys: `P·V` gives them `0 · v`,
                // so a value vector that is not finite stages as zeros and every row at or
                // after its key writes NaN (the rows before it stay exact).
                let diagonal = pass.causal && kb * pass.block + c0 + TK > q0 + 1;
                let mut mine = u32::new(NO_KEY as i64);
                let mut e = unit;
                while e < TK * hv {
                    let c = e / hv;
                    let dv = e % hv;
                    let tk = kb * pass.block + c0 + c;
                    let present = tk < tokens;
                    let pk = seg_start + select(present, tk, 0usize) * dilation;
                    let kvec = io.k[(k_base + pk * k_row) / nv + dv];
                    let vvec = io.v[(v_base + pk * v_row) / nv + dv];
                    let mut ok = present;
                    if comptime!(pass.masked) {
                        ok = ok && io.mask[batch * m_batch + pk * m_pos] != 0;
                    }
                    let mut v_ok = ok;
                    if diagonal {
                        let mut bad = false;
                        #[unroll]
                        for i in 0..nv {
                            bad = bad || not_finite(f32::cast_from(vvec.extract(i)));
                        }
                        if ok && bad {
                            v_ok = false;
                            mine = select((tk as u32) < mine, tk as u32, mine);
                        }
                    }
                    // Keys that are not there stage as zeros: their rows may hold anything
                    // (NaN included), and `0 · NaN` on the tensor cores would reach real rows.
                    #[unroll]
                    for i in 0..nv {
                        ks[c * qstr + dv * nv + i] = select(ok, kvec.extract(i), F::new(0.0));
                        vs[c * qstr + dv * nv + i] = select(v_ok, vvec.extract(i), F::new(0.0));
                    }
                    if dv == 0 {
                        kvalid[c] = select(ok, 1u32, 0u32);
                    }
                    e += threads;
                }
                if diagonal {
                    let m_plane = plane_min(mine);
                    if lane == 0 {
                        first_bad[plane] = m_plane;
                    }
                }
                sync_cube();
                if diagonal {
                    #[unroll]
                    for w in 0..PLANES {
                        poisoned = poisoned || tq_row >= first_bad[w] as usize;
                    }
                }

                // 1. S = Q·Kᵀ for the plane's 16 rows: TK / 16 tiles of 16 keys.
                #[unroll]
                for kt in 0..comptime!(TK / 16) {
                    let acc = zero_accumulator();
                    #[unroll]
                    for ds in 0..comptime!(pass.head_dim / 16) {
                        let b_start = kt * 16 * qstr + ds * 16;
                        let b = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::ColMajor,
                            &ks[b_start..TK * qstr],
                            qstr,
                        );
                        cmma::execute(&qf[ds], &b, &acc, &acc);
                    }
                    let s_start = plane * 16 * sstr + kt * 16;
                    cmma::store(
                        &mut ss[s_start..TQ * sstr],
                        &acc,
                        sstr as u32,
                        cmma::MatrixLayout::RowMajor,
                    );
                }
                sync_plane();

                // 2. Masks and online softmax, two lanes per row.
                let cols = comptime!(TK / 2);
                let mut local_max = io.neg_inf;
                let mut vals = Array::<f32>::new(cols);
                // Each lane walks its columns rotated by its row, so the 32 lanes of a plane
                // touch 32 different banks at every step.
                let rot = lane / 2;
                #[unroll]
                for j in 0..cols {
                    let c = half * cols + (j + rot) % cols;
                    let tk = kb * pass.block + c0 + c;
                    let mut ok = kvalid[c] != 0;
                    if comptime!(pass.causal) {
                        ok = ok && tk <= tq_row;
                    }
                    let s = select(ok, ss[prow * sstr + c] * io.scale, io.neg_inf);
                    vals[j] = s;
                    local_max = f32::max(local_max, s);
                }
                let row_max = f32::max(local_max, plane_shuffle_xor(local_max, 1));
                // Lazy rescaling: the shift only moves when the row max passes it by more than
                // LAZY (then p <= e^LAZY, safe in f16/bf16), or the row had no key before (its
                // output and sum are still 0). The softmax does not depend on the shift.
                let first = m == io.neg_inf;
                let need = !first && row_max > m + LAZY;
                let m_new = select(need || first, f32::max(m, row_max), m);
                let alpha = select(need, f32::exp(m - m_new), 1.0f32);
                let shift = select(m_new == io.neg_inf, 0.0f32, m_new);
                let mut local_sum = 0.0f32;
                #[unroll]
                for j in 0..cols {
                    let p = f32::exp(vals[j] - shift);
                    local_sum += p;
                    ps[prow * pstr + half * cols + (j + rot) % cols] = F::cast_from(p);
                }
                l = l * alpha + local_sum + plane_shuffle_xor(local_sum, 1);
                m = m_new;
                if plane_any(need) {
                    // The plane's score rows are free now: the accumulators go through them
                    // `TK` columns at a time, scaled by their row's `alpha`.
                    #[unroll]
                    for c in 0..comptime!(pass.head_dim / TK) {
                        #[unroll]
                        for t in 0..comptime!(TK / 16) {
                            cmma::store(
                                &mut ss[plane * 16 * sstr + t * 16..TQ * sstr],
                                &accs[c * (TK / 16) + t],
                                sstr as u32,
                                cmma::MatrixLayout::RowMajor,
                            );
                        }
                        sync_plane();
                        #[unroll]
                        for j in 0..cols {
                            ss[prow * sstr + half * cols + (j + rot) % cols] *= alpha;
                        }
                        sync_plane();
                        #[unroll]
                        for t in 0..comptime!(TK / 16) {
                            cmma::load_with_layout(
                                &mut accs[c * (TK / 16) + t],
                                &ss[plane * 16 * sstr + t * 16..TQ * sstr],
                                sstr as u32,
                                cmma::MatrixLayout::RowMajor,
                            );
                        }
                        sync_plane();
                    }
                }
                sync_plane();

                // 3. O += P·V for the plane's 16 rows, into the register accumulators.
                #[unroll]
                for dt in 0..comptime!(pass.head_dim / 16) {
                    #[unroll]
                    for kk in 0..comptime!(TK / 16) {
                        let a = operand(
                            cmma::MatrixIdent::A,
                            cmma::MatrixLayout::RowMajor,
                            &ps[plane * 16 * pstr + kk * 16..TQ * pstr],
                            pstr,
                        );
                        let b = operand(
                            cmma::MatrixIdent::B,
                            cmma::MatrixLayout::RowMajor,
                            &vs[kk * 16 * qstr + dt * 16..TK * qstr],
                            qstr,
                        );
                        cmma::execute(&a, &b, &accs[dt], &accs[dt]);
                    }
                }
                sync_plane();
                c0 += TK;
            }
        }
    }

    // Normalise and write the rows this cube owns, `TK` columns at a time through the plane's
    // score rows (two lanes a row, half of the columns each).
    let empty = l == 0.0f32;
    let inv = select(empty, 0.0f32, 1.0f32 / select(empty, 1.0f32, l));
    let live = tq_row < tokens;
    let pq = seg_start + select(live, tq_row, 0usize) * dilation;
    let o_base = batch * out.stride(0) + head * out.stride(1) + pq * out.stride(2);
    let o_step = out.stride(3);
    let cols = comptime!(TK / 2);
    #[unroll]
    for c in 0..comptime!(pass.head_dim / TK) {
        #[unroll]
        for t in 0..comptime!(TK / 16) {
            cmma::store(
                &mut ss[plane * 16 * sstr + t * 16..TQ * sstr],
                &accs[c * (TK / 16) + t],
                sstr as u32,
                cmma::MatrixLayout::RowMajor,
            );
        }
        sync_plane();
        if live {
            #[unroll]
            for j in 0..cols {
                let col = half * cols + j;
                let y = select(poisoned, io.nan, ss[prow * sstr + col] * inv);
                out[o_base + (c * TK + col) * o_step] = F::cast_from(y);
            }
        }
        sync_plane();
    }
    if live && half == 0 {
        let l_index = batch * lse.stride(0) + head * lse.stride(1) + pq * lse.stride(2);
        lse[l_index] = select(empty, io.neg_inf, m + f32::ln(select(empty, 1.0f32, l)));
    }
}

/// A 16×16×16 operand fragment read from `slice`, rows `stride` elements apart.
#[cube]
pub(crate) fn operand<F: Float>(
    #[comptime] ident: cmma::MatrixIdent,
    layout: cmma::MatrixLayout,
    slice: &[F],
    #[comptime] stride: usize,
) -> cmma::Matrix<F> {
    cmma::Matrix::<F>::from_slice(
        ident,
        16usize,
        16usize,
        16usize,
        layout,
        slice,
        stride as u32,
    )
}

/// A 16×16 f32 accumulator holding zeros.
#[cube]
pub(crate) fn zero_accumulator() -> cmma::Matrix<f32> {
    cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::Undefined,
        0.0,
    )
}

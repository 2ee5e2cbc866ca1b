//! Backward of block-sparse dilated flash attention, one head class of one branch at a time.
//!
//! The branches' outputs are merged as one softmax over the union of their keys, so with the
//! merged output `O` and log-sum-exp `L` every branch's backward is a plain flash backward:
//! `p_ij = e^{x_ij − L_i}`, `x_ij = scale · q_i·k_j`, `Δ_i = Σ_d dO_id · O_id − dL_i`,
//! `ds_ij = p_ij (dO_i·v_j − Δ_i)`, and
//! `dq_i += scale Σ_j ds_ij k_j`, `dk_j += scale Σ_i ds_ij q_i`, `dv_j += Σ_i p_ij dO_i`,
//! over the same (gathered, causal, masked) pairs as the forward. The `dL` term makes the
//! log-sum-exp output differentiable too; the weights of the branch merge are inside `p`.
//!
//! Shapes: `q, out, dout: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]`
//! (any strides), `lse, delta: [batch, heads, n]` f32, `mask: [batch, n]` u32.
//! The gradients accumulate (read–add–write) into contiguous f32 buffers
//! `dq, dk, dv: [batch, heads, n, head_dim]`, indexed by the **query** head: within a branch a
//! (head, token) pair belongs to one class, launches run in stream order, so no two units write
//! one element at once — but for the manual-MMA backward's fused `dQ` (sm_90), whose key cubes
//! add to the same query rows by f32 atomics. The caller sums `dk, dv` over the query heads
//! that share a kv head.
//!
//! Kernels:
//! - [`delta`](backward_delta): one unit per (batch, head, token) row.
//! - `dQ`: the forward's grid (a cube per query block, a unit per query row), walking the
//!   query block's key blocks; keys and values staged in shared memory.
//! - `dK/dV`: a cube per key block, a unit per key row, walking the **transposed** layout (the
//!   query blocks that see the key block); queries, `dO`, `L` and `Δ` staged in shared memory.

use cubecl::prelude::*;

use crate::KernelError;
use crate::backward_mma::{ROWS, backward_dkdv_mma, backward_dq_mma};
use crate::backward_tc::{backward_dkdv_tc, backward_dq_tc};
use crate::forward::{
    AttnDtype, ClassArgs, ForwardConfig, Pass, Rows, TensorRef, clamp_down, clamp_up, locate,
    manual_mma_runs, manual_mma_serves, mask_or_stand_in, mma_tiles, stage_keys,
    tensor_cores_apply, unroll_inner_loops, vector_width,
};

/// Rows staged per shared-memory step.
const CHUNK: usize = 16;

/// `delta[b, h, i] = Σ_d dout·out − dlse` in f32, a unit per row reading `N`-wide vectors
/// (`N = 8` where the head dim is contiguous and rows 8-aligned, else 1).
#[cube(launch_unchecked)]
fn backward_delta<F: Float, N: Size>(
    out: &Tensor<Vector<F, N>>,
    dout: &Tensor<Vector<F, N>>,
    dlse: &Tensor<f32>,
    delta: &mut Tensor<f32>,
    rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] with_dlse: bool,
) {
    let row = ABSOLUTE_POS;
    if row >= rows {
        terminate!();
    }
    let n = delta.shape(2);
    let heads = delta.shape(1);
    let i = row % n;
    let h = (row / n) % heads;
    let b = row / (n * heads);
    let nv = N::value();
    let o_base = b * out.stride(0) + h * out.stride(1) + i * out.stride(2);
    let g_base = b * dout.stride(0) + h * dout.stride(1) + i * dout.stride(2);
    let mut sum = 0.0f32;
    #[unroll]
    for dv in 0..comptime!(head_dim / nv) {
        let o = out[(o_base + dv * nv * out.stride(3)) / nv];
        let g = dout[(g_base + dv * nv * dout.stride(3)) / nv];
        #[unroll]
        for e in 0..nv {
            sum += f32::cast_from(o.extract(e)) * f32::cast_from(g.extract(e));
        }
    }
    if comptime!(with_dlse) {
        sum -= dlse[b * dlse.stride(0) + h * dlse.stride(1) + i * dlse.stride(2)];
    }
    let at = b * delta.stride(0) + h * delta.stride(1) + i * delta.stride(2);
    delta[at] = sum;
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil)] // CubeCL kernel code
fn backward_dq<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    mask: &Tensor<u32>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    row_ptr: &Tensor<u32>,
    runs: &Tensor<u32>,
    params: &Tensor<u32>,
    dq: &mut Tensor<f32>,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] causal: bool,
    #[comptime] masked: bool,
    #[comptime] unroll: bool,
    #[comptime] windowed: bool,
) {
    let tile = locate(params, CUBE_POS_X as usize, block, windowed);
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || !queries.meet(tile.qb, block) {
        terminate!();
    }
    let (qb, head, batch, csr_base) = (tile.qb, tile.head, tile.batch, tile.csr_base);

    let unit = UNIT_POS as usize;
    let tq = qb * block + unit;
    let q_valid = queries.holds(tq);
    let pq = queries.row(&tile, tq);
    let kb_first = keys.first_block(block);
    let kb_end = keys.end_block(block);

    let mut qr = Array::<f32>::new(head_dim);
    let mut gr = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let q_base = batch * q.stride(0) + head * q.stride(1) + pq * q.stride(2);
    let g_base = batch * dout.stride(0) + head * dout.stride(1) + pq * dout.stride(2);
    #[unroll]
    for d in 0..head_dim {
        qr[d] = f32::cast_from(q[q_base + d * q.stride(3)]) * scale;
        gr[d] = f32::cast_from(dout[g_base + d * dout.stride(3)]);
        acc[d] = 0.0f32;
    }
    let l_row = lse[batch * lse.stride(0) + head * lse.stride(1) + pq * lse.stride(2)];
    let delta_row = delta[batch * delta.stride(0) + head * delta.stride(1) + pq * delta.stride(2)];
    // A row with no key in any branch has `L = -inf` and no gradient.
    let live = q_valid && l_row != neg_inf;
    let l_safe = select(live, l_row, 0.0f32);

    let mut ks = Shared::<[f32]>::new_slice(CHUNK * head_dim);
    let mut vs = Shared::<[f32]>::new_slice(CHUNK * head_dim);
    let mut kvalid = Shared::<[u32]>::new_slice(CHUNK);

    let run_lo = row_ptr[csr_base + qb] as usize;
    let run_hi = row_ptr[csr_base + qb + 1] as usize;
    for run in run_lo..run_hi {
        let kb_lo = clamp_up(runs[2 * run] as usize, kb_first);
        let kb_hi = clamp_down(runs[2 * run + 1] as usize, kb_end);
        for kb in kb_lo..kb_hi {
            let mut c0 = 0usize;
            while c0 < block {
                stage_keys(
                    k,
                    v,
                    mask,
                    &mut ks[0..CHUNK * head_dim],
                    &mut vs[0..CHUNK * head_dim],
                    &mut kvalid[0..CHUNK],
                    &tile,
                    kb,
                    c0,
                    head_dim,
                    block,
                    masked,
                );
                sync_cube();

                for c in 0..CHUNK {
                    let tk = kb * block + c0 + c;
                    let mut ok = live && kvalid[c] != 0;
                    if comptime!(causal) {
                        ok = ok && tk <= tq;
                    }
                    let mut dot = 0.0f32;
                    let mut dp = 0.0f32;
                    #[unroll(unroll)]
                    for d in 0..head_dim {
                        dot += qr[d] * ks[c * head_dim + d];
                        dp += gr[d] * vs[c * head_dim + d];
                    }
                    let p = select(ok, f32::exp(dot - l_safe), 0.0f32);
                    let ds = select(ok, p * (dp - delta_row), 0.0f32);
                    #[unroll(unroll)]
                    for d in 0..head_dim {
                        acc[d] += ds * ks[c * head_dim + d];
                    }
                }
                sync_cube();
                c0 += CHUNK;
            }
        }
    }

    if q_valid {
        let base = batch * dq.stride(0) + head * dq.stride(1) + pq * dq.stride(2);
        #[unroll]
        for d in 0..head_dim {
            let at = base + d * dq.stride(3);
            dq[at] += acc[d] * scale;
        }
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil)] // CubeCL kernel code
fn backward_dkdv<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    mask: &Tensor<u32>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    col_ptr: &Tensor<u32>,
    runs: &Tensor<u32>,
    params: &Tensor<u32>,
    dk: &mut Tensor<f32>,
    dv: &mut Tensor<f32>,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] causal: bool,
    #[comptime] masked: bool,
    #[comptime] unroll: bool,
    #[comptime] windowed: bool,
) {
    // `qb` here is the key block; the transposed rows list the query blocks that see it.
    let tile = locate(params, CUBE_POS_X as usize, block, windowed);
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || !keys.meet(tile.qb, block) {
        terminate!();
    }
    let (kb, head, kv_head, batch) = (tile.qb, tile.head, tile.kv_head, tile.batch);
    let csr_base = tile.csr_base;

    let unit = UNIT_POS as usize;
    let tk = kb * block + unit;
    let k_valid = keys.holds(tk);
    let pk = keys.row(&tile, tk);
    let qb_first = queries.first_block(block);
    let qb_end = queries.end_block(block);
    let mut key_live = k_valid;
    if comptime!(masked) {
        key_live = key_live && mask[batch * mask.stride(0) + pk * mask.stride(1)] != 0;
    }

    let mut kr = Array::<f32>::new(head_dim);
    let mut vr = Array::<f32>::new(head_dim);
    let mut dk_acc = Array::<f32>::new(head_dim);
    let mut dv_acc = Array::<f32>::new(head_dim);
    let k_base = batch * k.stride(0) + kv_head * k.stride(1) + pk * k.stride(2);
    let v_base = batch * v.stride(0) + kv_head * v.stride(1) + pk * v.stride(2);
    #[unroll]
    for d in 0..head_dim {
        kr[d] = f32::cast_from(k[k_base + d * k.stride(3)]);
        vr[d] = f32::cast_from(v[v_base + d * v.stride(3)]);
        dk_acc[d] = 0.0f32;
        dv_acc[d] = 0.0f32;
    }

    // Staged queries (pre-scaled), their output gradients, `L` (0 for dead rows) and `Δ`.
    let mut qs = Shared::<[f32]>::new_slice(CHUNK * head_dim);
    let mut gs = Shared::<[f32]>::new_slice(CHUNK * head_dim);
    let mut ls = Shared::<[f32]>::new_slice(CHUNK);
    let mut ds_row = Shared::<[f32]>::new_slice(CHUNK);
    let mut qlive = Shared::<[u32]>::new_slice(CHUNK);

    let q_base = batch * q.stride(0) + head * q.stride(1);
    let g_base = batch * dout.stride(0) + head * dout.stride(1);
    let l_base = batch * lse.stride(0) + head * lse.stride(1);
    let d_base = batch * delta.stride(0) + head * delta.stride(1);
    let run_lo = col_ptr[csr_base + kb] as usize;
    let run_hi = col_ptr[csr_base + kb + 1] as usize;
    for run in run_lo..run_hi {
        let qb_lo = clamp_up(runs[2 * run] as usize, qb_first);
        let qb_hi = clamp_down(runs[2 * run + 1] as usize, qb_end);
        for qb in qb_lo..qb_hi {
            let mut c0 = 0usize;
            while c0 < block {
                let mut e = unit;
                while e < CHUNK * head_dim {
                    let c = e / head_dim;
                    let d = e % head_dim;
                    let tq = qb * block + c0 + c;
                    let present = queries.holds(tq) && c0 + c < block;
                    let pq = queries.row(&tile, tq);
                    qs[e] = f32::cast_from(q[q_base + pq * q.stride(2) + d * q.stride(3)]) * scale;
                    gs[e] = f32::cast_from(dout[g_base + pq * dout.stride(2) + d * dout.stride(3)]);
                    if d == 0 {
                        let l = lse[l_base + pq * lse.stride(2)];
                        let ok = present && l != neg_inf;
                        qlive[c] = select(ok, 1u32, 0u32);
                        ls[c] = select(ok, l, 0.0f32);
                        ds_row[c] = delta[d_base + pq * delta.stride(2)];
                    }
                    e += block;
                }
                sync_cube();

                for c in 0..CHUNK {
                    let tq = qb * block + c0 + c;
                    let mut ok = key_live && qlive[c] != 0;
                    if comptime!(causal) {
                        ok = ok && tk <= tq;
                    }
                    let mut dot = 0.0f32;
                    let mut dp = 0.0f32;
                    #[unroll(unroll)]
                    for d in 0..head_dim {
                        dot += qs[c * head_dim + d] * kr[d];
                        dp += gs[c * head_dim + d] * vr[d];
                    }
                    let p = select(ok, f32::exp(dot - ls[c]), 0.0f32);
                    let ds = select(ok, p * (dp - ds_row[c]), 0.0f32);
                    #[unroll(unroll)]
                    for d in 0..head_dim {
                        dv_acc[d] += p * gs[c * head_dim + d];
                        dk_acc[d] += ds * qs[c * head_dim + d];
                    }
                }
                sync_cube();
                c0 += CHUNK;
            }
        }
    }

    if k_valid {
        let k_at = batch * dk.stride(0) + head * dk.stride(1) + pk * dk.stride(2);
        let v_at = batch * dv.stride(0) + head * dv.stride(1) + pk * dv.stride(2);
        #[unroll]
        for d in 0..head_dim {
            let dk_at = k_at + d * dk.stride(3);
            let dv_at = v_at + d * dv.stride(3);
            dk[dk_at] += dk_acc[d];
            dv[dv_at] += dv_acc[d];
        }
    }
}

/// Launches the `Δ` prepass over all rows.
///
/// - `out, dout: [batch, heads, n, head_dim]` (the merged output and its gradient)
/// - `dlse: [batch, heads, n]` f32, the gradient of the merged log-sum-exp, or `None`
/// - `delta: [batch, heads, n]` f32 (written)
pub fn delta(
    client: &Client,
    config: &ForwardConfig,
    out: &TensorRef,
    dout: &TensorRef,
    dlse: Option<&TensorRef>,
    delta: &TensorRef,
) -> Result<(), KernelError> {
    config.check_on(client)?;
    let rows: usize = delta.shape.iter().product();
    if rows == 0 {
        return Ok(());
    }
    let threads = 256usize;
    let cubes = rows.div_ceil(threads);
    let count = CubeCount::new_1d(u32::try_from(cubes).map_err(|_| KernelError::Unsupported {
        field: "n",
        rule: "at most 2^32 cubes of rows".into(),
    })?);
    let dlse_ref = dlse.unwrap_or(delta);
    // WGSL vectors stop at 4 lanes.
    let width = vector_width(&[out, dout]).min(client.properties().hardware.max_vector_size);
    macro_rules! launch {
        ($t:ty) => {
            // SAFETY: `row < rows` bounds every index; strides come from the shapes, and
            // 8-wide vectors only where `vector_width` found the rows aligned.
            unsafe {
                backward_delta::launch_unchecked::<$t>(
                    client,
                    count,
                    CubeDim::new_1d(threads as u32),
                    width,
                    out.arg(),
                    dout.arg(),
                    dlse_ref.arg(),
                    delta.arg(),
                    rows,
                    config.head_dim,
                    dlse.is_some(),
                )
            }
        };
    }
    match config.dtype {
        AttnDtype::F32 => launch!(f32),
        AttnDtype::F16 => launch!(half::f16),
        AttnDtype::BF16 => launch!(half::bf16),
    }
    Ok(())
}

/// The tensors of one backward call (see the module docs for shapes).
#[derive(Debug, Clone, Copy)]
pub struct BackwardArgs<'a> {
    /// Queries `[batch, heads, n, head_dim]`.
    pub q: &'a TensorRef,
    /// Keys `[batch, kv_heads, n, head_dim]`.
    pub k: &'a TensorRef,
    /// Values `[batch, kv_heads, n, head_dim]`.
    pub v: &'a TensorRef,
    /// Padding mask `[batch, n]` u32 (1 = present), or `None`.
    pub mask: Option<&'a TensorRef>,
    /// Gradient of the merged output `[batch, heads, n, head_dim]`.
    pub dout: &'a TensorRef,
    /// Merged log-sum-exp `[batch, heads, n]` f32.
    pub lse: &'a TensorRef,
    /// `Δ` from [`delta`], `[batch, heads, n]` f32.
    pub delta: &'a TensorRef,
    /// Query gradient accumulator `[batch, heads, n, head_dim]` f32 (the inputs' dtype with
    /// `overwrite`, see [`backward_class`]).
    pub dq: &'a TensorRef,
    /// Key gradient accumulator per query head `[batch, heads, n, head_dim]` f32 (likewise).
    pub dk: &'a TensorRef,
    /// Value gradient accumulator per query head `[batch, heads, n, head_dim]` f32 (likewise).
    pub dv: &'a TensorRef,
}

/// How the manual-MMA backward forms `dQ`: by its own kernel (the default), or inside the
/// `dK/dV` kernel (FlashAttention-2's five products per block pair instead of seven: `dS` goes
/// through shared memory by `stmatrix` and `dQ += dS·K` is added to an f32 buffer by `.v2.f32`
/// atomics; sm_90).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DqPlan {
    /// `dQ` inside the `dK/dV` kernel.
    fuse: bool,
    /// Keys per `dK/dV` cube (16 per plane).
    rows: usize,
}

/// The [`DqPlan`] for `config` on `client`. The fused `dQ` was measured slower on the H200
/// (LongNet 128K fwd+bwd 265 against 261 ms; `docs/benchmarks.md`), so it runs only with
/// `DILATED_ATTENTION_DQ=fused` (read once per process), where the runtime has `stmatrix` for
/// the dtype and `.v2.f32` atomic adds, and for the shapes it was checked on: head dims 64 and
/// 128, blocks of 64 or 128 keys, one cube per key block (with blocks of 256 and head dim 32
/// its gradients were wrong on the H200; `docs/notes.md`).
fn dq_plan(client: &Client, config: &ForwardConfig) -> DqPlan {
    use cubecl::features::AtomicUsage;
    use cubecl::ir::{ElemType, FloatKind, Type};
    use std::sync::OnceLock;
    static FUSED: OnceLock<bool> = OnceLock::new();
    let asked =
        *FUSED.get_or_init(|| std::env::var("DILATED_ATTENTION_DQ").is_ok_and(|v| v == "fused"));
    let pairs = Type::atomic(Type::new(ElemType::Float(FloatKind::F32)).with_vector_size(2));
    let fuse = asked
        && matches!(config.head_dim, 64 | 128)
        && matches!(config.block, 64 | 128)
        && client
            .features()
            .matmul
            .stmatrix
            .contains(&config.dtype.elem())
        && client
            .properties()
            .atomic_type_usage(pairs)
            .contains(AtomicUsage::Add);
    let rows = if fuse { config.block } else { ROWS };
    DqPlan { fuse, rows }
}

/// Whether [`backward_class`] adds `dQ` atomically inside the `dK/dV` kernel for these tensors
/// (`q, k, v, dout` as in [`BackwardArgs`]): then `dq` must be a zero-filled, contiguous f32
/// buffer, also where `overwrite` stores `dk, dv`.
pub fn backward_fuses_dq(
    client: &Client,
    config: &ForwardConfig,
    q: &TensorRef,
    k: &TensorRef,
    v: &TensorRef,
    dout: &TensorRef,
) -> bool {
    manual_mma_runs(client, config, &[q, k, v, dout], Pass::Backward)
        && dq_plan(client, config).fuse
}

/// Whether [`backward_class`] can store (`overwrite`) rather than add the gradients of a class
/// for these tensors (`q, k, v, dout` as in [`BackwardArgs`]): the manual-MMA kernels can.
pub fn backward_can_overwrite(
    client: &Client,
    config: &ForwardConfig,
    q: &TensorRef,
    k: &TensorRef,
    v: &TensorRef,
    dout: &TensorRef,
) -> bool {
    manual_mma_runs(client, config, &[q, k, v, dout], Pass::Backward)
}

/// Adds one head class's contribution to `dq`, `dk` and `dv`.
///
/// `rows` is the class's forward layout (query block → key blocks), `cols` the transposed one
/// (key block → query blocks), both in the form of [`ClassArgs`] with the same `params`.
///
/// With `overwrite` the contribution is stored instead of added, in buffers of the inputs'
/// dtype (`config.dtype`, not f32), every real token's row of the class's heads written (zeros
/// for padded keys): a caller whose one class covers every row of `dq, dk, dv` (dilation 1,
/// all heads, no GQA) needs neither zero-filled f32 buffers nor a cast. Only the kernels of
/// [`backward_can_overwrite`] do that. Where [`backward_fuses_dq`] holds, `dq` is an f32
/// accumulator all the same.
pub fn backward_class(
    client: &Client,
    config: &ForwardConfig,
    args: &BackwardArgs<'_>,
    rows: &ClassArgs,
    cols: &ClassArgs,
    overwrite: bool,
) -> Result<(), KernelError> {
    config.check_on(client)?;
    let batch = args.q.shape[0];
    if rows.rows == 0 || rows.heads == 0 || batch == 0 {
        return Ok(());
    }
    let max_cubes = 65_535;
    if rows.rows > max_cubes || rows.heads > max_cubes || batch > max_cubes {
        return Err(KernelError::Unsupported {
            field: "n",
            rule: format!("at most {max_cubes} query blocks per class, heads and batch"),
        });
    }
    // `dk, dv` hold the key rows (per query head): those of `k` in a windowed launch.
    let key_rows = [
        args.q.shape[0],
        args.q.shape[1],
        args.k.shape[2],
        args.q.shape[3],
    ];
    for (name, t, want) in [
        ("dq", args.dq, &args.q.shape[..]),
        ("dk", args.dk, &key_rows[..]),
        ("dv", args.dv, &key_rows[..]),
    ] {
        if t.shape != want {
            return Err(KernelError::Shape {
                arg: name,
                expected: format!("{want:?} (q's batch, heads and head dim, k's rows)"),
            });
        }
    }
    if rows.windowed != cols.windowed {
        return Err(KernelError::Shape {
            arg: "cols",
            expected: "the window of `rows`".into(),
        });
    }
    let mask_ref = &mask_or_stand_in(args.mask, args.lse);
    // The tensor-core kernels read rows as vectors: they need a contiguous head dim.
    let tensors = [args.q, args.k, args.v, args.dout];
    let width = vector_width(&tensors);
    let manual = manual_mma_serves(client, config, width, Pass::Backward);
    if overwrite && rows.windowed {
        return Err(KernelError::Unsupported {
            field: "overwrite",
            rule: "a windowed launch adds to its gradients".into(),
        });
    }
    if overwrite && !manual {
        return Err(KernelError::Unsupported {
            field: "overwrite",
            rule: "only the manual-MMA backward stores gradients (see `backward_can_overwrite`)"
                .into(),
        });
    }
    // Cube shapes: manual MMA — dQ as the forward (`tiles` 16-row MMA tiles per plane), dK/dV
    // `plan.rows` keys (16 per plane); tensor cores — 32-row tiles of 2 planes; portable — a
    // block, one unit per row.
    // A windowed launch keeps dQ in its own kernel: the fused dQ was not checked with windows.
    let plan = if manual && !rows.windowed {
        dq_plan(client, config)
    } else {
        DqPlan {
            fuse: false,
            rows: ROWS,
        }
    };
    let tensor_cores = !manual
        && !rows.windowed
        && tensor_cores_apply(client, config)
        && tensors.iter().all(|t| t.strides[3] == 1);
    let dq_tiles = mma_tiles(Pass::Backward);
    let ((dq_x, dq_threads), (kv_x, kv_threads)) = if manual {
        let (dq_rows, dq_threads) = crate::forward_mma::cube_shape(config.block, dq_tiles);
        (
            (rows.rows * (config.block / dq_rows), dq_threads),
            (rows.rows * (config.block / plan.rows), 2 * plan.rows),
        )
    } else if tensor_cores {
        let shape = (rows.rows * (config.block / 32), 64);
        (shape, shape)
    } else {
        let shape = (rows.rows, config.block);
        (shape, shape)
    };
    if dq_x.max(kv_x) > max_cubes {
        return Err(KernelError::Unsupported {
            field: "n",
            rule: format!("at most {max_cubes} row tiles per class"),
        });
    }
    let grid = |x: usize| CubeCount::Static(x as u32, rows.heads as u32, batch as u32);
    let (dq_count, dq_dim) = (grid(dq_x), CubeDim::new_1d(dq_threads as u32));
    let (kv_count, kv_dim) = (grid(kv_x), CubeDim::new_1d(kv_threads as u32));
    let unroll = unroll_inner_loops(client);
    let windowed = rows.windowed;
    // The unfused dK/dV asks for more resident cubes than its registers would allow (the fused
    // one's 8-plane cubes fit once per SM anyway).
    let kv_blocks = if plan.fuse {
        0
    } else {
        crate::mma::min_blocks(
            client,
            crate::mma::Occupancy::DkDv,
            crate::backward_mma::dkdv_shared_bytes(config.head_dim, plan.rows, width),
        )
    };
    // `[extra]` goes to both kernels, `[dq_extra]` to dQ, `[kv_dq]` (the fused dQ's buffer)
    // and `[kv_extra]` to dK/dV.
    macro_rules! launch {
        ($dq:ident, $dkdv:ident, [$($t:ty),+] $(, $vec:expr)? ; [$($extra:expr),*] ;
         [$($dq_extra:expr),*] ; [$($kv_dq:expr),*] ; [$($kv_extra:expr),*]) => {
            // SAFETY: token positions are clamped to real tokens of the segment, CSR indices
            // come from the layout, shared-memory indices are bounded by comptime sizes; the
            // vector loads of the tensor-core kernels rest on the checks of `vector_width`;
            // the fused dQ adds only to rows of real tokens, into the contiguous f32 `dq` that
            // `backward_fuses_dq` asks for.
            unsafe {
                if !plan.fuse {
                    $dq::launch_unchecked::<$($t),+>(
                        client,
                        dq_count,
                        dq_dim,
                        $($vec,)?
                        args.q.arg(),
                        args.k.arg(),
                        args.v.arg(),
                        mask_ref.arg(),
                        args.dout.arg(),
                        args.lse.arg(),
                        args.delta.arg(),
                        rows.row_ptr.arg(),
                        rows.runs.arg(),
                        rows.params.arg(),
                        args.dq.arg(),
                        config.scale,
                        f32::NEG_INFINITY,
                        config.head_dim,
                        config.block,
                        config.causal,
                        args.mask.is_some(),
                        $($extra,)*
                        $($dq_extra,)*
                    );
                }
                $dkdv::launch_unchecked::<$($t),+>(
                    client,
                    kv_count,
                    kv_dim,
                    $($vec,)?
                    args.q.arg(),
                    args.k.arg(),
                    args.v.arg(),
                    mask_ref.arg(),
                    args.dout.arg(),
                    args.lse.arg(),
                    args.delta.arg(),
                    cols.row_ptr.arg(),
                    cols.runs.arg(),
                    cols.params.arg(),
                    args.dk.arg(),
                    args.dv.arg(),
                    $($kv_dq,)*
                    config.scale,
                    f32::NEG_INFINITY,
                    config.head_dim,
                    config.block,
                    config.causal,
                    args.mask.is_some(),
                    $($extra,)*
                    $($kv_extra,)*
                )
            }
        };
    }
    use half::{bf16, f16};
    match (config.dtype, manual, tensor_cores, overwrite) {
        (AttnDtype::F32, _, _, _) => {
            launch!(backward_dq, backward_dkdv, [f32]; [unroll, windowed]; []; []; [])
        }
        (AttnDtype::F16, true, _, false) => launch!(
            backward_dq_mma, backward_dkdv_mma, [f16, f32], width;
            [false]; [dq_tiles, windowed]; [args.dq.arg()]; [plan.rows, plan.fuse, kv_blocks, windowed]
        ),
        (AttnDtype::F16, true, _, true) => launch!(
            backward_dq_mma, backward_dkdv_mma, [f16, f16], width;
            [true]; [dq_tiles, windowed]; [args.dq.arg()]; [plan.rows, plan.fuse, kv_blocks, windowed]
        ),
        (AttnDtype::BF16, true, _, false) => launch!(
            backward_dq_mma, backward_dkdv_mma, [bf16, f32], width;
            [false]; [dq_tiles, windowed]; [args.dq.arg()]; [plan.rows, plan.fuse, kv_blocks, windowed]
        ),
        (AttnDtype::BF16, true, _, true) => launch!(
            backward_dq_mma, backward_dkdv_mma, [bf16, bf16], width;
            [true]; [dq_tiles, windowed]; [args.dq.arg()]; [plan.rows, plan.fuse, kv_blocks, windowed]
        ),
        (AttnDtype::F16, false, true, _) => {
            launch!(backward_dq_tc, backward_dkdv_tc, [f16], width; []; []; []; [])
        }
        (AttnDtype::BF16, false, true, _) => {
            launch!(backward_dq_tc, backward_dkdv_tc, [bf16], width; []; []; []; [])
        }
        (AttnDtype::F16, false, false, _) => {
            launch!(backward_dq, backward_dkdv, [f16]; [unroll, windowed]; []; []; [])
        }
        (AttnDtype::BF16, false, false, _) => {
            launch!(backward_dq, backward_dkdv, [bf16]; [unroll, windowed]; []; []; [])
        }
    }
    Ok(())
}

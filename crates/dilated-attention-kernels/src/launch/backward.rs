//! The backward launcher: one head class's `dQ` and `dK/dV` kernels.

use cubecl::prelude::*;

use super::{check_inputs, expect_rows_aligned, grad_operands, grid, operands, pass};
use crate::KernelError;
use crate::args::{AttnDtype, ClassArgs, TensorRef};
use crate::cmma::backward_dkdv::backward_dkdv_tc;
use crate::cmma::backward_dq::backward_dq_tc;
use crate::hopper::backward_dkdv::{self as wgmma_dkdv, backward_dkdv_wgmma};
use crate::hopper::backward_dkdv_handed::{self as handed_dkdv, backward_dkdv_handed};
use crate::hopper::backward_dq::backward_dq_wgmma;
use crate::hopper::backward_dq_handed::{self as handed_dq, backward_dq_handed};
use crate::hopper::schedule::{ScheduleLaunch, persistent_schedule};
use crate::hopper::tma::gather_maps;
use crate::portable::backward::{backward_dkdv, backward_dq};
use crate::sm80::backward_dkdv::{ROWS, backward_dkdv_mma, dkdv_shared_bytes};
use crate::sm80::backward_dq::backward_dq_mma;
use crate::sm80::forward::cube_shape;
use crate::sm80::mma::min_blocks;
use crate::strategy::{Plan, Strategy};

/// The tensors of a backward launch (`q_rows`, `k_rows` as in
/// [`ForwardTensors`](super::ForwardTensors)).
///
/// - `q, dout: [batch, heads, q_rows, head_dim]`, `k, v: [batch, kv_heads, k_rows, head_dim]`
///   in the plan's dtype; `mask: [batch, k_rows]` u32 (1 = present) or `None`
/// - `lse, delta: [batch, heads, q_rows]` f32: the merged log-sum-exp and `Δ` from
///   [`delta`](fn@crate::delta)
/// - `dq: [batch, heads, q_rows, head_dim]`, `dk, dv: [batch, heads, k_rows, head_dim]`
///   (per **query** head; the caller sums over the heads of a kv head): contiguous f32
///   accumulators, or with `store` contiguous buffers of the plan's dtype (`dq` stays an f32
///   accumulator where the plan [fuses dQ](Plan::fuses_dq)).
#[derive(Debug, Clone, Copy)]
pub struct BackwardTensors<'a> {
    /// Queries.
    pub q: &'a TensorRef,
    /// Keys.
    pub k: &'a TensorRef,
    /// Values.
    pub v: &'a TensorRef,
    /// Key padding mask, 1 = present.
    pub mask: Option<&'a TensorRef>,
    /// Gradient of the merged output.
    pub dout: &'a TensorRef,
    /// Merged log-sum-exp.
    pub lse: &'a TensorRef,
    /// `Δ`.
    pub delta: &'a TensorRef,
    /// Query gradient.
    pub dq: &'a TensorRef,
    /// Key gradient per query head.
    pub dk: &'a TensorRef,
    /// Value gradient per query head.
    pub dv: &'a TensorRef,
}

/// Adds (or with `store`, stores) one head class's contribution to `dq`, `dk` and `dv`.
///
/// `rows` is the class's forward layout (query block → key blocks), `cols` the transposed one
/// (key block → query blocks) of the same class. `store` writes every real token's row of the
/// class's heads (zeros for padded keys) into buffers of the plan's dtype: for a caller whose
/// one class covers every row (dilation 1, all heads, no GQA), which then needs neither
/// zero-filled f32 buffers nor a cast; only plans that [store](Plan::stores_gradients) do.
pub fn backward_class(
    client: &Client,
    plan: &Plan,
    t: &BackwardTensors<'_>,
    rows: &ClassArgs,
    cols: &ClassArgs,
    store: bool,
) -> Result<(), KernelError> {
    let config = plan.config();
    let s = check_inputs(client, plan, rows, t.q, t.k, t.v, t.mask)?;
    if !rows.matches(cols) {
        return Err(KernelError::shape(
            "cols",
            "the transposed rows of the same class and window",
        ));
    }
    let width = plan.strategy().row_width();
    TensorRef::expect_all_bindable(
        client,
        &[
            ("dout", Some(t.dout)),
            ("lse", Some(t.lse)),
            ("delta", Some(t.delta)),
            ("dq", Some(t.dq)),
            ("dk", Some(t.dk)),
            ("dv", Some(t.dv)),
        ],
    )?;
    t.dout.expect_shape("dout", t.q.shape(), "the shape of q")?;
    t.dout.expect_elem("dout", config.dtype.size())?;
    expect_rows_aligned("dout", t.dout, plan)?;
    let q_stats = [s.batch, s.heads, s.q_rows];
    for (name, x) in [("lse", t.lse), ("delta", t.delta)] {
        x.expect_shape(name, &q_stats, "[batch, heads, q_rows]")?;
        x.expect_elem(name, 4)?;
    }
    if store && !plan.stores_gradients() {
        return Err(KernelError::unsupported(
            "store",
            format!(
                "the {} backward{} adds its gradients (see `Plan::stores_gradients`)",
                plan.strategy().name(),
                if plan.windowed() { " of a window" } else { "" }
            ),
        ));
    }
    let grad_elem = if store { config.dtype.size() } else { 4 };
    let dq_elem = if plan.fuses_dq() { 4 } else { grad_elem };
    let key_rows = [s.batch, s.heads, s.k_rows, s.head_dim];
    for (name, x, want, elem) in [
        ("dq", t.dq, t.q.shape(), dq_elem),
        ("dk", t.dk, &key_rows[..], grad_elem),
        ("dv", t.dv, &key_rows[..], grad_elem),
    ] {
        x.expect_shape(
            name,
            want,
            "[batch, heads, rows, head_dim] (per query head)",
        )?;
        x.expect_elem(name, elem)?;
        if !x.is_contiguous() {
            return Err(KernelError::shape(name, "a contiguous buffer"));
        }
    }
    if rows.rows() == 0 || rows.heads() == 0 || s.batch == 0 {
        return Ok(());
    }
    let tuning = plan.sm80().unwrap_or_default();
    let fuse = plan.fuses_dq();
    let dq_tiles = usize::from(tuning.dq_tiles);
    // Keys per sm80 `dK/dV` cube: 64 (16 per plane), or the whole block with the fused dQ.
    let kv_rows = if fuse { config.block } else { ROWS };
    // Cube shapes: sm80 — dQ as its forward, dK/dV `kv_rows` keys (two units each); cmma —
    // 32-row tiles of 2 planes; portable — a block, one unit per row.
    let ((dq_x, dq_threads), (kv_x, kv_threads)) = match plan.strategy() {
        Strategy::Sm80(_) => {
            let (dq_rows, dq_threads) = cube_shape(config.block, dq_tiles);
            (
                (rows.rows() * (config.block / dq_rows), dq_threads),
                (rows.rows() * (config.block / kv_rows), 2 * kv_rows),
            )
        }
        Strategy::Cmma => {
            let shape = (rows.rows() * (config.block / 32), 64);
            (shape, shape)
        }
        Strategy::Portable => {
            let shape = (rows.rows(), config.block);
            (shape, shape)
        }
    };
    // The Hopper kernels: cubes of two warpgroups' rows (queries for `dQ`, which has the
    // forward's cube, keys for `dK/dV`) and the producer warp or warpgroup.
    let (hopper_dq, hopper_dkdv) = (plan.wgmma_dq(), plan.wgmma_dkdv());
    let (dq_x, dq_threads) = if hopper_dq {
        (
            rows.rows() * (config.block / crate::hopper::forward::ROWS),
            crate::hopper::forward::THREADS,
        )
    } else {
        (dq_x, dq_threads)
    };
    let (kv_x, kv_threads) = if hopper_dkdv {
        (
            rows.rows() * (config.block / wgmma_dkdv::ROWS),
            wgmma_dkdv::threads(config.head_dim),
        )
    } else {
        (kv_x, kv_threads)
    };
    let (dq_count, kv_count) = (
        grid(client, dq_x, rows, s.batch)?,
        grid(client, kv_x, rows, s.batch)?,
    );
    let (dq_dim, kv_dim) = (
        CubeDim::new_1d(dq_threads as u32),
        CubeDim::new_1d(kv_threads as u32),
    );
    let unroll = plan.unroll();
    let windowed = plan.windowed();
    // The unfused dK/dV asks for more resident cubes than its registers would allow (the fused
    // one's 8-plane cubes fit once per SM anyway).
    let kv_blocks = if fuse {
        0
    } else {
        min_blocks(
            client,
            tuning.dkdv_min_blocks,
            dkdv_shared_bytes(config.head_dim, kv_rows, width, false),
        )
    };
    // `[extra]` goes to both kernels, `[dq_extra]` to dQ, `[kv_dq]` (the fused dQ's buffer)
    // and `[kv_extra]` to dK/dV.
    macro_rules! launch {
        ($dq:ident, $dkdv:ident, [$($t:ty),+] $(, $vec:expr)? ; [$($extra:expr),*] ;
         [$($dq_extra:expr),*] ; [$($kv_dq:expr),*] ; [$($kv_extra:expr),*]) => {
            // SAFETY: `check_inputs` and the checks above matched every tensor's shape and
            // element size against the plan and the class, and `TensorRef` each handle against
            // its shape; the class's rows were checked against its parameters and its tokens
            // against the sequence. Inside, token positions are clamped to real tokens of the
            // segment and shared-memory indices are bounded by comptime sizes; the fused dQ
            // adds only to rows of real tokens of the contiguous f32 `dq`.
            unsafe {
                if !fuse {
                    $dq::launch_unchecked::<$($t),+>(
                        client,
                        dq_count.clone(),
                        dq_dim,
                        $($vec,)?
                        operands(t.q, t.k, t.v, t.mask, rows, &config),
                        grad_operands(t.dout, t.lse, t.delta),
                        t.dq.arg(),
                        pass(&config, t.mask),
                        $($extra,)*
                        $($dq_extra,)*
                    );
                }
                $dkdv::launch_unchecked::<$($t),+>(
                    client,
                    kv_count,
                    kv_dim,
                    $($vec,)?
                    operands(t.q, t.k, t.v, t.mask, cols, &config),
                    grad_operands(t.dout, t.lse, t.delta),
                    t.dk.arg(),
                    t.dv.arg(),
                    $($kv_dq,)*
                    pass(&config, t.mask),
                    $($extra,)*
                    $($kv_extra,)*
                )
            }
        };
    }
    use half::{bf16, f16};
    if hopper_dkdv {
        // The Hopper `dQ` (unless `dK/dV` fuses it), then its `dK/dV`.
        // Whole chunks by TMA (`crate::hopper::tma`): keys and values for `dQ`, queries and
        // `dO` for `dK/dV`, through maps of the class's dilation.
        let dilation = rows.params().dilation;
        let (kmap, vmap, dq_tma) = gather_maps(t.k, t.v, dilation, config.dtype, tuning.tma_loads);
        let (qmap, gmap, kv_tma) =
            gather_maps(t.q, t.dout, dilation, config.dtype, tuning.tma_loads);
        // `Sm80Tuning::handed_dq`: `dQ` on a persistent grid (capped as the forward's), its
        // tiles handed by the producer and their `Q` and `dO` rows loaded by TMA
        // (`crate::hopper::backward_dq_handed`); without the maps, the device's SM count or a
        // persistent forward, the one-tile kernel.
        let wants_handed = hopper_dq && tuning.handed_dq && dq_tma;
        let (dq_qmap, dq_gmap, dq_q_tma) =
            gather_maps(t.q, t.dout, dilation, config.dtype, wants_handed);
        let handed = match wants_handed && dq_q_tma {
            true => persistent_schedule(
                client,
                tuning.persistent_forward,
                handed_dq::shared_bytes(config.head_dim),
                1,
                [dq_x, rows.heads(), s.batch],
            ),
            false => None,
        };
        // `Sm80Tuning::handed_dkdv`: `dK/dV` likewise over the key tiles
        // (`crate::hopper::backward_dkdv_handed`), not with the fused `dQ`.
        let handed_kv = match tuning.handed_dkdv && !fuse {
            true => persistent_schedule(
                client,
                tuning.persistent_forward,
                handed_dkdv::shared_bytes(config.head_dim),
                1,
                [kv_x, cols.heads(), s.batch],
            ),
            false => None,
        };
        macro_rules! hopper {
            ($f:ty, $g:ty, $bf16:expr) => {
                // SAFETY: as for the launches above (the same checks cover these kernels'
                // tensors); `Plan::wgmma_dkdv` holds only for unwindowed f16/bf16 plans of
                // head dim 64 or 128 and blocks of 128 or 256 on sm_90+, and `Plan::wgmma_dq`
                // for those that do not fuse `dQ`; a fused `dq` is the contiguous f32 buffer
                // checked above, and the kernel adds only to rows of real tokens. The handed
                // `dQ`'s cubes serve tiles below the schedule's count, the tiles of this
                // class's grid, and read the maps only for tiles inside the query window.
                unsafe {
                    if let Some(p) = handed {
                        backward_dq_handed::launch_unchecked::<$f, $g>(
                            client,
                            CubeCount::Static(p.cubes, 1, 1),
                            dq_dim,
                            width,
                            operands(t.q, t.k, t.v, t.mask, rows, &config),
                            grad_operands(t.dout, t.lse, t.delta),
                            t.dq.arg(),
                            pass(&config, t.mask),
                            store,
                            $bf16,
                            true,
                            ScheduleLaunch::new(p.tiles, dq_x as u32, rows.heads() as u32),
                            dq_qmap,
                            dq_gmap,
                            kmap,
                            vmap,
                        );
                    } else if hopper_dq {
                        backward_dq_wgmma::launch_unchecked::<$f, $g>(
                            client,
                            dq_count.clone(),
                            dq_dim,
                            width,
                            operands(t.q, t.k, t.v, t.mask, rows, &config),
                            grad_operands(t.dout, t.lse, t.delta),
                            t.dq.arg(),
                            pass(&config, t.mask),
                            store,
                            $bf16,
                            dq_tma,
                            kmap,
                            vmap,
                        );
                    }
                    if let Some(p) = handed_kv {
                        backward_dkdv_handed::launch_unchecked::<$f, $g>(
                            client,
                            CubeCount::Static(p.cubes, 1, 1),
                            kv_dim,
                            width,
                            operands(t.q, t.k, t.v, t.mask, cols, &config),
                            grad_operands(t.dout, t.lse, t.delta),
                            t.dk.arg(),
                            t.dv.arg(),
                            pass(&config, t.mask),
                            store,
                            $bf16,
                            kv_tma,
                            ScheduleLaunch::new(p.tiles, kv_x as u32, cols.heads() as u32),
                            qmap,
                            gmap,
                        );
                        return Ok(());
                    }
                    backward_dkdv_wgmma::launch_unchecked::<$f, $g>(
                        client,
                        kv_count.clone(),
                        kv_dim,
                        width,
                        operands(t.q, t.k, t.v, t.mask, cols, &config),
                        grad_operands(t.dout, t.lse, t.delta),
                        t.dk.arg(),
                        t.dv.arg(),
                        t.dq.arg(),
                        pass(&config, t.mask),
                        store,
                        $bf16,
                        kv_tma,
                        fuse,
                        qmap,
                        gmap,
                    );
                }
            };
        }
        match (config.dtype, store) {
            (AttnDtype::F16, false) => hopper!(f16, f32, false),
            (AttnDtype::F16, true) => hopper!(f16, f16, false),
            (AttnDtype::BF16, false) => hopper!(bf16, f32, true),
            (AttnDtype::BF16, true) => hopper!(bf16, bf16, true),
            (AttnDtype::F32, _) => {
                return Err(KernelError::unsupported("dtype", "wgmma takes f16 or bf16"));
            }
        }
        return Ok(());
    }
    match (config.dtype, plan.strategy(), store) {
        (AttnDtype::F32, _, _) => {
            launch!(backward_dq, backward_dkdv, [f32]; [unroll, windowed]; []; []; [])
        }
        (AttnDtype::F16, Strategy::Sm80(_), false) => launch!(
            backward_dq_mma, backward_dkdv_mma, [f16, f32], width;
            [false]; [dq_tiles, windowed]; [t.dq.arg()]; [kv_rows, fuse, kv_blocks, windowed]
        ),
        (AttnDtype::F16, Strategy::Sm80(_), true) => launch!(
            backward_dq_mma, backward_dkdv_mma, [f16, f16], width;
            [true]; [dq_tiles, windowed]; [t.dq.arg()]; [kv_rows, fuse, kv_blocks, windowed]
        ),
        (AttnDtype::BF16, Strategy::Sm80(_), false) => launch!(
            backward_dq_mma, backward_dkdv_mma, [bf16, f32], width;
            [false]; [dq_tiles, windowed]; [t.dq.arg()]; [kv_rows, fuse, kv_blocks, windowed]
        ),
        (AttnDtype::BF16, Strategy::Sm80(_), true) => launch!(
            backward_dq_mma, backward_dkdv_mma, [bf16, bf16], width;
            [true]; [dq_tiles, windowed]; [t.dq.arg()]; [kv_rows, fuse, kv_blocks, windowed]
        ),
        (AttnDtype::F16, Strategy::Cmma, _) => {
            launch!(backward_dq_tc, backward_dkdv_tc, [f16], width; []; []; []; [])
        }
        (AttnDtype::BF16, Strategy::Cmma, _) => {
            launch!(backward_dq_tc, backward_dkdv_tc, [bf16], width; []; []; []; [])
        }
        (AttnDtype::F16, Strategy::Portable, _) => {
            launch!(backward_dq, backward_dkdv, [f16]; [unroll, windowed]; []; []; [])
        }
        (AttnDtype::BF16, Strategy::Portable, _) => {
            launch!(backward_dq, backward_dkdv, [bf16]; [unroll, windowed]; []; []; [])
        }
    }
    Ok(())
}

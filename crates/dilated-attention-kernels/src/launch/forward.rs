//! The forward launcher: one head class of one branch.

use cubecl::prelude::*;

use super::{check_inputs, expect_rows_aligned, grid, operands, pass};
use crate::KernelError;
use crate::args::{AttnDtype, ClassArgs, TensorRef};
use crate::cmma::forward::block_sparse_forward_tc;
use crate::hopper::forward::{self as wgmma_fwd, block_sparse_forward_wgmma};
use crate::hopper::schedule::{ScheduleLaunch, persistent_schedule, resident_cubes};
use crate::hopper::tma::{gather_map_of, gather_maps};
use crate::portable::forward::block_sparse_forward;
use crate::sm80::forward::{block_sparse_forward_mma, cube_shape, shared_bytes};
use crate::sm80::mma::min_blocks;
use crate::strategy::{Plan, Strategy};

/// The tensors of a forward launch.
///
/// - `q, out: [batch, heads, q_rows, head_dim]` in the plan's dtype
/// - `k, v: [batch, kv_heads, k_rows, head_dim]` in the plan's dtype
/// - `mask: [batch, k_rows]` u32 (1 = key present), or `None`
/// - `lse: [batch, heads, q_rows]` f32
///
/// `q_rows = k_rows = n` without a window; with one, the window's query and key rows.
#[derive(Debug, Clone, Copy)]
pub struct ForwardTensors<'a> {
    /// Queries.
    pub q: &'a TensorRef,
    /// Keys.
    pub k: &'a TensorRef,
    /// Values.
    pub v: &'a TensorRef,
    /// Key padding mask, 1 = present.
    pub mask: Option<&'a TensorRef>,
    /// Output (written).
    pub out: &'a TensorRef,
    /// Log-sum-exp (written).
    pub lse: &'a TensorRef,
}

/// Launches the forward of one head class.
///
/// Writes the class's rows of `out` and `lse` only: overwrites them, or with `merge` merges
/// the class's result into what they hold (LSE merge; `0, -inf` rows take the result as it is),
/// which only plans that [merge in the kernel](Plan::merges_in_kernel) do.
pub fn forward_class(
    client: &Client,
    plan: &Plan,
    t: &ForwardTensors<'_>,
    class: &ClassArgs,
    merge: bool,
) -> Result<(), KernelError> {
    let config = plan.config();
    let s = check_inputs(client, plan, class, t.q, t.k, t.v, t.mask)?;
    t.out.expect_shape("out", t.q.shape(), "the shape of q")?;
    t.out.expect_elem("out", config.dtype.size())?;
    TensorRef::expect_all_bindable(client, &[("out", Some(t.out)), ("lse", Some(t.lse))])?;
    // The Hopper forward stores `out` as whole vectors of the rows.
    if plan.wgmma_forward() {
        expect_rows_aligned("out", t.out, plan)?;
    }
    t.lse.expect_shape(
        "lse",
        &[s.batch, s.heads, s.q_rows],
        "[batch, heads, q_rows]",
    )?;
    t.lse.expect_elem("lse", 4)?;
    if merge && !plan.merges_in_kernel() {
        return Err(KernelError::unsupported(
            "merge",
            format!(
                "the {} forward{} does not merge in the kernel (see `Plan::merges_in_kernel`)",
                plan.strategy().name(),
                if plan.windowed() { " of a window" } else { "" }
            ),
        ));
    }
    if class.rows() == 0 || class.heads() == 0 || s.batch == 0 {
        return Ok(());
    }
    let width = plan.strategy().row_width();
    let tuning = plan.sm80().unwrap_or_default();
    let kernel_pass = pass(config, t.mask);
    let tiles = usize::from(tuning.forward_tiles);
    let lazy = tuning.lazy_rescale;
    // Query rows per cube: the sm80 tile, the cmma kernel's 64, or a whole block (one unit per
    // row); cubes have two units per row on the cmma tensor cores.
    let (rows_per_cube, threads) = match plan.strategy() {
        Strategy::Sm80(_) if plan.wgmma_forward() => {
            let variant = wgmma_fwd::Variant::of(&tuning, kernel_pass, false, false);
            (wgmma_fwd::ROWS, variant.threads())
        }
        Strategy::Sm80(_) => cube_shape(config.block, tiles),
        Strategy::Cmma => (64, 128),
        Strategy::Portable => (config.block, config.block),
    };
    let cubes_per_head = class.rows() * (config.block / rows_per_cube);
    let mut count = grid(client, cubes_per_head, class, s.batch)?;
    let dim = CubeDim::new_1d(threads as u32);
    macro_rules! launch {
        ($kernel:ident, $t:ty $(, $vec:expr)? ; $($extra:expr),*) => {
            // SAFETY: `check_inputs` matched every tensor's shape and element size against the
            // plan and the class, and `TensorRef` checked each handle against its shape; the
            // class's rows were checked against its parameters (`ClassCsr::new`) and its
            // tokens against the sequence (`ClassArgs::upload`). Inside, token positions are
            // clamped to real tokens of the segment and shared-memory indices are bounded by
            // the comptime tile sizes.
            unsafe {
                $kernel::launch_unchecked::<$t>(
                    client,
                    count,
                    dim,
                    $($vec,)?
                    operands(t.q, t.k, t.v, t.mask, class, &config),
                    t.out.arg(),
                    t.lse.arg(),
                    kernel_pass,
                    $($extra,)*
                )
            }
        };
    }
    let unroll = plan.unroll();
    let windowed = plan.windowed();
    let blocks = min_blocks(
        client,
        tuning.forward_min_blocks,
        shared_bytes(config.head_dim, config.block, tiles, width),
    );
    use half::{bf16, f16};
    if plan.wgmma_forward() {
        // TMA needs the class's rows as one strided box: not through a ring window. With
        // `tma_queries` the producer loads the query tiles too (`crate::hopper::query_tile`).
        let dilation = class.params().dilation;
        let wanted = tuning.tma_loads && !windowed;
        let (kmap, vmap, tma) = gather_maps(t.k, t.v, dilation, config.dtype, wanted);
        let (qmap, q_tma) =
            gather_map_of(t.q, dilation, config.dtype, wanted && tuning.tma_queries);
        let variant = wgmma_fwd::Variant::of(&tuning, kernel_pass, tma, q_tma);
        let shared = wgmma_fwd::shared_bytes(config.head_dim, variant.queries);
        // Products in flight hold a second set of accumulators: two cubes an SM (head dim 64)
        // would leave ptxas too few registers, and it serialises every product then (its
        // C7512; `crate::hopper::pipelined`). One cube an SM takes the whole register file, as
        // does one whose producer warpgroup moves its registers to the consumers.
        let per_sm_cap = variant.per_sm_cap();
        // The tuning's ask, else the cubes the shared memory lets an SM hold (the moved
        // registers' kernel asks for one whatever it is given: `setmaxnreg` needs it).
        let mut blocks = match tuning.forward_min_blocks {
            0 => resident_cubes(
                client.properties().hardware.max_shared_memory_size,
                shared,
                per_sm_cap,
            ),
            _ => min_blocks(client, tuning.forward_min_blocks, shared),
        };
        let schedule = persistent_schedule(
            client,
            tuning.persistent_forward,
            shared,
            per_sm_cap,
            [cubes_per_head, class.heads(), s.batch],
        );
        let persistent = schedule.is_some();
        // The kernel reads the schedule's words only on a persistent grid.
        let mut words = [0; 3];
        if let Some(p) = schedule {
            count = CubeCount::Static(p.cubes, 1, 1);
            blocks = p.per_sm;
            words = [p.tiles, cubes_per_head as u32, class.heads() as u32];
        }
        let [tiles, per_head, heads] = words;
        let schedule = || ScheduleLaunch::new(tiles, per_head, heads);
        match config.dtype {
            AttnDtype::F16 => {
                launch!(block_sparse_forward_wgmma, f16, width; merge, blocks, windowed, false, lazy, persistent, variant, schedule(), qmap, kmap, vmap)
            }
            AttnDtype::BF16 => {
                launch!(block_sparse_forward_wgmma, bf16, width; merge, blocks, windowed, true, lazy, persistent, variant, schedule(), qmap, kmap, vmap)
            }
            AttnDtype::F32 => {
                return Err(KernelError::unsupported("dtype", "wgmma takes f16 or bf16"));
            }
        }
        return Ok(());
    }
    match (config.dtype, plan.strategy()) {
        (AttnDtype::F32, _) => launch!(block_sparse_forward, f32; unroll, windowed),
        (AttnDtype::F16, Strategy::Sm80(_)) => {
            launch!(block_sparse_forward_mma, f16, width; tiles, merge, blocks, windowed, lazy)
        }
        (AttnDtype::BF16, Strategy::Sm80(_)) => {
            launch!(block_sparse_forward_mma, bf16, width; tiles, merge, blocks, windowed, lazy)
        }
        (AttnDtype::F16, Strategy::Cmma) => launch!(block_sparse_forward_tc, f16, width;),
        (AttnDtype::BF16, Strategy::Cmma) => launch!(block_sparse_forward_tc, bf16, width;),
        (AttnDtype::F16, Strategy::Portable) => {
            launch!(block_sparse_forward, f16; unroll, windowed)
        }
        (AttnDtype::BF16, Strategy::Portable) => {
            launch!(block_sparse_forward, bf16; unroll, windowed)
        }
    }
    Ok(())
}

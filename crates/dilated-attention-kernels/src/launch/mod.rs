//! The launchers: check that a call's tensors, class and plan agree, then launch the plan's
//! family. They never choose a family; [`crate::plan`] did, once.

mod backward;
mod forward;

pub use backward::{BackwardTensors, backward_class};
pub use forward::{ForwardTensors, forward_class};

use cubecl::prelude::*;

use crate::KernelError;
use crate::args::{
    ClassArgs, GradOperandsLaunch, KernelConfig, OperandsLaunch, Pass, TensorRef, Window,
};
use crate::strategy::Plan;

/// The sizes of a launch, read off `q` and `k` and checked against the plan and the class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub batch: usize,
    pub heads: usize,
    pub q_rows: usize,
    pub k_rows: usize,
    pub head_dim: usize,
}

/// Checks `q: [batch, heads, q_rows, head_dim]`, `k, v: [batch, kv_heads, k_rows, head_dim]`
/// and `mask: [batch, k_rows]` u32 against the plan (dtype, head dim, row alignment) and the
/// class (query heads per kv head, its heads inside `heads`, rows of its window or sequence).
pub(crate) fn check_inputs(
    client: &Client,
    plan: &Plan,
    class: &ClassArgs,
    q: &TensorRef,
    k: &TensorRef,
    v: &TensorRef,
    mask: Option<&TensorRef>,
) -> Result<Sizes, KernelError> {
    let config = plan.config();
    plan.check(client, config)?;
    TensorRef::expect_all_bindable(
        client,
        &[
            ("q", Some(q)),
            ("k", Some(k)),
            ("v", Some(v)),
            ("mask", mask),
        ],
    )?;
    let d = config.head_dim;
    let [batch, heads, q_rows] = match q.shape() {
        &[b, h, n, qd] if qd == d => [b, h, n],
        other => {
            return Err(KernelError::shape(
                "q",
                format!("[batch, heads, n, {d}], got {other:?}"),
            ));
        }
    };
    let [kv_heads, k_rows] = match k.shape() {
        &[b, kh, n, kd] if b == batch && kd == d && kh > 0 => [kh, n],
        other => {
            return Err(KernelError::shape(
                "k",
                format!("[{batch}, kv_heads, n, {d}], got {other:?}"),
            ));
        }
    };
    v.expect_shape("v", k.shape(), "the shape of k")?;
    let elem = config.dtype.size();
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        t.expect_elem(name, elem)?;
        expect_rows_aligned(name, t, plan)?;
    }
    if let Some(mask) = mask {
        mask.expect_shape("mask", &[batch, k_rows], "[batch, keys]")?;
        mask.expect_elem("mask", 4)?;
    }
    let p = class.params();
    if !heads.is_multiple_of(kv_heads) || heads / kv_heads != p.group {
        return Err(KernelError::shape(
            "k",
            format!(
                "{} query heads per kv head (the class's group), got {heads} / {kv_heads}",
                p.group
            ),
        ));
    }
    if class.heads() > 0 && p.offset + p.dilation * (class.heads() - 1) >= heads {
        return Err(KernelError::shape(
            "q",
            format!(
                "more than {} heads for a class of {} heads from {} every {}",
                p.offset + p.dilation * (class.heads() - 1),
                class.heads(),
                p.offset,
                p.dilation
            ),
        ));
    }
    if class.block != config.block {
        return Err(KernelError::shape(
            "class",
            format!("blocks of {} tokens, got {}", config.block, class.block),
        ));
    }
    if class.window().is_some() != plan.windowed() {
        return Err(KernelError::shape(
            "plan",
            "a windowed plan for a windowed class and a plain one otherwise",
        ));
    }
    let (want_q, want_k) = Window::rows(class.window(), class.n());
    if (q_rows, k_rows) != (want_q, want_k) {
        return Err(KernelError::shape(
            "q",
            format!(
                "{want_q} query and {want_k} key rows (the class's window or sequence), got \
                 {q_rows} and {k_rows}"
            ),
        ));
    }
    Ok(Sizes {
        batch,
        heads,
        q_rows,
        k_rows,
        head_dim: d,
    })
}

/// The grid `(x, class heads, batch)`, or an error where the device cannot launch it.
pub(crate) fn grid(
    client: &Client,
    x: usize,
    class: &ClassArgs,
    batch: usize,
) -> Result<CubeCount, KernelError> {
    let (mx, my, mz) = client.properties().hardware.max_cube_count;
    let fits = |v: usize, m: u32| u32::try_from(v).is_ok_and(|v| v <= m);
    if fits(x, mx) && fits(class.heads(), my) && fits(batch, mz) {
        Ok(CubeCount::Static(
            x as u32,
            class.heads() as u32,
            batch as u32,
        ))
    } else {
        Err(KernelError::unsupported(
            "n",
            format!(
                "a grid of {x} x {} x {batch} cubes passes this device's {mx} x {my} x {mz}",
                class.heads()
            ),
        ))
    }
}

/// `cubes` cubes of a one-dimensional launch spread over the grid's first two dimensions (`x`
/// up to the device's limit, then rows of them in `y`), or an error where even that does not
/// hold them. Kernels launched on it number their cubes `CUBE_POS` (units `ABSOLUTE_POS`) and
/// leave the last row's surplus cubes idle.
pub(crate) fn spread(client: &Client, cubes: usize) -> Result<CubeCount, KernelError> {
    let (max_x, max_y, _) = client.properties().hardware.max_cube_count;
    let x = cubes.clamp(1, max_x as usize);
    let y = cubes.div_ceil(x).max(1);
    if y > max_y as usize {
        return Err(KernelError::unsupported(
            "n",
            format!("{cubes} cubes pass this device's {max_x} x {max_y} grid"),
        ));
    }
    Ok(CubeCount::Static(x as u32, y as u32, 1))
}

/// `t` (argument `name`) has a contiguous head dim and rows that start on a multiple of the
/// plan's row width, so that the kernels can read or write its rows as vectors of that width.
pub(crate) fn expect_rows_aligned(
    name: &'static str,
    t: &TensorRef,
    plan: &Plan,
) -> Result<(), KernelError> {
    if t.rows_aligned(plan.strategy().row_width()) {
        return Ok(());
    }
    Err(KernelError::shape(
        name,
        format!(
            "a contiguous head dim and rows aligned to {} elements for the {} kernels",
            plan.strategy().row_width(),
            plan.strategy().name()
        ),
    ))
}

/// The `Operands` of a launch: `q, k, v`, the padding mask (or a 1×1 stand-in over `q` that
/// no kernel reads: `Pass::masked` is false), the class's layout (its row pointer for the
/// forward and `dQ`, its column pointer for `dK/dV`) and the config's scale.
pub(crate) fn operands<T: CubePrimitive>(
    q: &TensorRef,
    k: &TensorRef,
    v: &TensorRef,
    mask: Option<&TensorRef>,
    class: &ClassArgs,
    config: &KernelConfig,
) -> OperandsLaunch<T> {
    let mask = mask.cloned().unwrap_or_else(|| q.stand_in());
    OperandsLaunch::new(
        q.arg(),
        k.arg(),
        v.arg(),
        mask.arg(),
        class.row_ptr.arg(),
        class.runs.arg(),
        class.params.arg(),
        config.scale,
        f32::NEG_INFINITY,
        f32::NAN,
    )
}

/// The `GradOperands` of a backward launch.
pub(crate) fn grad_operands<T: CubePrimitive>(
    dout: &TensorRef,
    lse: &TensorRef,
    delta: &TensorRef,
) -> GradOperandsLaunch<T> {
    GradOperandsLaunch::new(dout.arg(), lse.arg(), delta.arg())
}

/// The comptime [`Pass`] of `config`, masked where a mask is given.
pub(crate) fn pass(config: &KernelConfig, mask: Option<&TensorRef>) -> Pass {
    Pass {
        head_dim: config.head_dim,
        block: config.block,
        causal: config.causal,
        masked: mask.is_some(),
    }
}

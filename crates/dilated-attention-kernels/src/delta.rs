//! The backward's `Δ` prepass, shared by every family:
//! `Δ[b, h, i] = Σ_d dO[b, h, i, d] · O[b, h, i, d] − dL[b, h, i]` in f32.
//!
//! Shapes: `out, dout: [batch, heads, n, head_dim]` (any strides), `dlse, delta: [batch, heads,
//! n]` f32. A row's `head_dim / N` vectors are read by as many adjacent units (`N`-wide where
//! the head dim is contiguous and rows are aligned, else scalars), whose partial sums the cube
//! adds up in shared memory: one unit a row read its 128-byte row alone, a strided pattern that
//! ran at a third of the H100's bandwidth.

use cubecl::prelude::*;

use crate::KernelError;
use crate::args::TensorRef;
use crate::launch::spread;
use crate::strategy::Plan;

/// Units per cube of the prepass.
const THREADS: usize = 256;

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
    // `lanes` units share a row, each summing every `lanes`-th vector of it (adjacent units read
    // adjacent vectors: one row's loads are contiguous); the cube then adds up each row's
    // partial sums in shared memory.
    let nv = N::value();
    let vectors = comptime!(head_dim) / nv;
    let lanes = select(vectors < THREADS, vectors, THREADS);
    let per_cube = THREADS / lanes;
    let unit = UNIT_POS as usize;
    let lane = unit % lanes;
    let row = CUBE_POS * per_cube + unit / lanes;
    let mut partial = Shared::<[f32]>::new_slice(THREADS);
    let mut sum = 0.0f32;
    if unit < per_cube * lanes && row < rows {
        let n = delta.shape(2);
        let heads = delta.shape(1);
        let i = row % n;
        let h = (row / n) % heads;
        let b = row / (n * heads);
        let o_base = b * out.stride(0) + h * out.stride(1) + i * out.stride(2);
        let g_base = b * dout.stride(0) + h * dout.stride(1) + i * dout.stride(2);
        let mut dv = lane;
        while dv < vectors {
            let o = out[(o_base + dv * nv * out.stride(3)) / nv];
            let g = dout[(g_base + dv * nv * dout.stride(3)) / nv];
            #[unroll]
            for e in 0..nv {
                sum += f32::cast_from(o.extract(e)) * f32::cast_from(g.extract(e));
            }
            dv += lanes;
        }
    }
    partial[unit] = sum;
    sync_cube();
    if unit < per_cube {
        let row = CUBE_POS * per_cube + unit;
        if row < rows {
            let mut total = 0.0f32;
            for l in 0..lanes {
                total += partial[unit * lanes + l];
            }
            let n = delta.shape(2);
            let heads = delta.shape(1);
            let i = row % n;
            let h = (row / n) % heads;
            let b = row / (n * heads);
            if comptime!(with_dlse) {
                total -= dlse[b * dlse.stride(0) + h * dlse.stride(1) + i * dlse.stride(2)];
            }
            let at = b * delta.stride(0) + h * delta.stride(1) + i * delta.stride(2);
            delta[at] = total;
        }
    }
}

/// Launches the `Δ` prepass over all rows.
///
/// - `out, dout: [batch, heads, n, head_dim]` (the merged output and its gradient, the plan's
///   dtype)
/// - `dlse: [batch, heads, n]` f32, the gradient of the merged log-sum-exp, or `None`
/// - `delta: [batch, heads, n]` f32 (written)
pub fn delta(
    client: &Client,
    plan: &Plan,
    out: &TensorRef,
    dout: &TensorRef,
    dlse: Option<&TensorRef>,
    delta: &TensorRef,
) -> Result<(), KernelError> {
    let config = plan.config();
    config.check_on(client)?;
    let [b, h, n, d] = match out.shape() {
        &[b, h, n, d] if d == config.head_dim => [b, h, n, d],
        other => {
            return Err(KernelError::shape(
                "out",
                format!("[batch, heads, n, {}], got {other:?}", config.head_dim),
            ));
        }
    };
    dout.expect_shape("dout", &[b, h, n, d], "the shape of out")?;
    delta.expect_shape("delta", &[b, h, n], "[batch, heads, n] of out")?;
    if let Some(dlse) = dlse {
        dlse.expect_shape("dlse", &[b, h, n], "[batch, heads, n] of out")?;
    }
    TensorRef::expect_all_bindable(
        client,
        &[
            ("out", Some(out)),
            ("dout", Some(dout)),
            ("dlse", dlse),
            ("delta", Some(delta)),
        ],
    )?;
    let rows = b * h * n;
    if rows == 0 {
        return Ok(());
    }
    // WGSL vectors stop at 4 lanes.
    let width = if config.head_dim.is_multiple_of(8) && out.rows_aligned(8) && dout.rows_aligned(8)
    {
        8
    } else {
        1
    }
    .min(client.properties().hardware.max_vector_size);
    // Rows per cube, as the kernel splits them.
    let per_cube = THREADS / (config.head_dim / width).clamp(1, THREADS);
    let count = spread(client, rows.div_ceil(per_cube))?;
    let dlse_ref = dlse.unwrap_or(delta);
    macro_rules! launch {
        ($t:ty) => {
            // SAFETY: `row < rows` bounds every index; the shapes were checked against each
            // other and the handles against the shapes (`TensorRef::new`), and vectors are
            // read only where the rows are aligned.
            unsafe {
                backward_delta::launch_unchecked::<$t>(
                    client,
                    count.clone(),
                    CubeDim::new_1d(THREADS as u32),
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
    use crate::args::AttnDtype;
    match config.dtype {
        AttnDtype::F32 => launch!(f32),
        AttnDtype::F16 => launch!(half::f16),
        AttnDtype::BF16 => launch!(half::bf16),
    }
    Ok(())
}

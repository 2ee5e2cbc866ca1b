//! Wiring of the CubeCL kernels (`dilated-attention-kernels`) into Burn.
//!
//! On a CubeCL device (wgpu, CUDA) without autodiff tracking, [`try_forward`] unwraps the Burn
//! tensors into CubeCL handles, launches the forward kernel once per head class of each branch,
//! and merges the branches: inside the kernel as it writes where the kernel can
//! (`fuses_merge`: the manual-MMA forward on CUDA), else with [`merge_lse`] over one buffer
//! pair per branch. Anything the kernel does not cover (another
//! device, an autodiff-tracked tensor, an unsupported head dim or block size) returns `None`, and
//! the module runs the reference path instead.

mod autodiff;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::backend::Cube;
use burn::tensor::{Bool, DType, Tensor};
use burn_cubecl::tensor::CubeTensor;
pub use dilated_attention_kernels::forward::Window;
use dilated_attention_kernels::forward::{
    AttnDtype, ClassArgs, ForwardConfig, TensorRef, forward_class, fuses_merge,
};
use dilated_attention_kernels::{Client, upload_u32};

use crate::inputs::AttentionShape;
use crate::layout::{BlockLayout, BlockRows, ClassLayout};
use crate::merge::merge_lse;

pub(crate) use autodiff::{Call, attention};

/// The kernel form of a class layout: rows of a full then a tail segment, as runs of
/// consecutive key blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelClassLayout {
    /// `[blocks_full + 1 + blocks_tail + 1]`.
    pub row_ptr: Vec<u32>,
    /// `[2 · runs]`: `[start, end)` pairs of key blocks.
    pub runs: Vec<u32>,
    /// Kernel parameters (see `ClassArgs::params`), without a window.
    pub params: [u32; 12],
    /// Query-block rows to launch.
    pub rows: usize,
}

impl KernelClassLayout {
    /// Converts a class layout for the forward kernel (`group` = query heads per kv head).
    pub fn new(class: &ClassLayout, group: usize) -> Self {
        Self::build(class, group, |rows| rows.clone())
    }

    /// The transposed form (key block → the query blocks that see it), for the `dK/dV`
    /// kernel; same parameters as [`new`](Self::new).
    pub fn transposed(class: &ClassLayout, group: usize) -> Self {
        Self::build(class, group, BlockRows::transpose)
    }

    fn build(class: &ClassLayout, group: usize, rows_of: impl Fn(&BlockRows) -> BlockRows) -> Self {
        let mut row_ptr = Vec::new();
        let mut runs = Vec::new();
        push_runs(&rows_of(&class.full.rows), &mut row_ptr, &mut runs);
        match &class.tail {
            Some(tail) => push_runs(&rows_of(&tail.rows), &mut row_ptr, &mut runs),
            None => row_ptr.push((runs.len() / 2) as u32),
        }
        if runs.is_empty() {
            runs.extend([0, 0]);
        }
        let tail_tokens = class.tail.as_ref().map_or(0, |t| t.tokens);
        let [q_start, q_end, k_start, k_end] = Window::params(None);
        Self {
            row_ptr,
            runs,
            params: [
                class.segment_length as u32,
                class.dilation_rate as u32,
                class.offset as u32,
                class.num_segments as u32,
                class.full.blocks.max(1) as u32,
                class.full.tokens as u32,
                tail_tokens as u32,
                group as u32,
                q_start,
                q_end,
                k_start,
                k_end,
            ],
            rows: class.num_segments * class.full.blocks.max(1),
        }
    }

    /// The same layout restricted to `window` (a ring step; see [`Window`]).
    pub fn with_window(mut self, window: Option<Window>) -> Self {
        self.params[8..].copy_from_slice(&Window::params(window));
        self
    }
}

/// Appends the rows of `rows` as runs of consecutive key blocks.
fn push_runs(rows: &BlockRows, row_ptr: &mut Vec<u32>, runs: &mut Vec<u32>) {
    row_ptr.push((runs.len() / 2) as u32);
    for q in 0..rows.rows() {
        let row = rows.row(q);
        let mut i = 0;
        while i < row.len() {
            let start = row[i];
            let mut end = start + 1;
            while i + 1 < row.len() && row[i + 1] == end {
                i += 1;
                end += 1;
            }
            runs.extend([start, end]);
            i += 1;
        }
        row_ptr.push((runs.len() / 2) as u32);
    }
}

/// `(n, heads, group, device, window)`.
type DeviceLayoutKey = (usize, usize, usize, String, Option<Window>);

/// One head class on the device: its rows for the forward and `dQ`, and its transposed rows
/// for `dK/dV` (both with the same parameters, kept on the host in `params`).
#[derive(Debug, Clone)]
pub(crate) struct DeviceClass {
    rows: ClassArgs,
    cols: ClassArgs,
    params: [u32; 12],
}

impl DeviceClass {
    /// The class of `layout` without a window.
    fn new(client: &Client, class: &ClassLayout, group: usize) -> Self {
        let args = |kl: KernelClassLayout| ClassArgs {
            row_ptr: upload(client, &kl.row_ptr),
            runs: upload(client, &kl.runs),
            params: upload(client, &kl.params),
            rows: kl.rows,
            heads: class.heads.len(),
            windowed: false,
        };
        let rows = KernelClassLayout::new(class, group);
        let params = rows.params;
        Self {
            rows: args(rows),
            cols: args(KernelClassLayout::transposed(class, group)),
            params,
        }
    }

    /// The same class restricted to `window`: its layout buffers are shared, only the
    /// parameters are uploaded anew.
    fn with_window(&self, client: &Client, window: Window) -> Self {
        let mut params = self.params;
        params[8..].copy_from_slice(&Window::params(Some(window)));
        let params_ref = upload(client, &params);
        let windowed = |args: &ClassArgs| ClassArgs {
            params: params_ref.clone(),
            windowed: true,
            ..args.clone()
        };
        Self {
            rows: windowed(&self.rows),
            cols: windowed(&self.cols),
            params,
        }
    }
}

fn upload(client: &Client, values: &[u32]) -> TensorRef {
    TensorRef::contiguous(upload_u32(client, values), vec![values.len()])
}

/// Device copies of the kernel layouts, by `(n, heads, group, device, window)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceLayoutCache {
    entries: Arc<Mutex<HashMap<DeviceLayoutKey, Arc<Vec<DeviceClass>>>>>,
}

impl DeviceLayoutCache {
    fn get(
        &self,
        client: &Client,
        device: String,
        layout: &BlockLayout,
        group: usize,
        window: Option<Window>,
    ) -> Arc<Vec<DeviceClass>> {
        let key = |window| (layout.n, layout.heads, group, device.clone(), window);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let whole = entries
            .entry(key(None))
            .or_insert_with(|| {
                Arc::new(
                    layout
                        .classes
                        .iter()
                        .map(|class| DeviceClass::new(client, class, group))
                        .collect(),
                )
            })
            .clone();
        let Some(window) = window else {
            return whole;
        };
        entries
            .entry(key(Some(window)))
            .or_insert_with(|| {
                Arc::new(
                    whole
                        .iter()
                        .map(|class| class.with_window(client, window))
                        .collect(),
                )
            })
            .clone()
    }
}

/// The kernels' static configuration for these inputs, or why there is none.
fn kernel_config(
    dtype: DType,
    shape: AttentionShape,
    layout: &BlockLayout,
    scale: f64,
) -> Result<ForwardConfig, String> {
    let dtype = match dtype {
        DType::F32 => AttnDtype::F32,
        DType::F16 => AttnDtype::F16,
        DType::BF16 => AttnDtype::BF16,
        other => return Err(format!("dtype {other:?} has no kernel")),
    };
    let config = ForwardConfig {
        dtype,
        head_dim: shape.head_dim,
        block: layout.block_size,
        causal: layout.causal,
        scale: scale as f32,
    };
    config.check().map_err(|e| e.to_string())?;
    if shape.n == 0 {
        return Err("empty sequence".into());
    }
    Ok(config)
}

/// The CubeCL primitive of a float tensor on a CubeCL device without autodiff tracking.
pub(crate) fn cube<const D: usize>(t: Tensor<D>) -> Result<CubeTensor, String> {
    t.try_into_primitive::<Cube>()
        .map_err(|_| "not a CubeCL tensor without autodiff tracking".to_string())
}

/// The padding mask as a CubeCL primitive of 0/1 integers, as the kernels read it.
fn cube_mask(mask: Option<&Tensor<2, Bool>>) -> Result<Option<CubeTensor>, String> {
    mask.map(|m| {
        m.clone()
            .int()
            .try_into_primitive::<Cube>()
            .map_err(|_| "the mask is not on a CubeCL device without autodiff tracking".to_string())
    })
    .transpose()
}

fn tensor_ref(t: &CubeTensor) -> TensorRef {
    TensorRef {
        handle: t.handle.clone(),
        shape: t.meta.shape().iter().copied().collect(),
        strides: t.meta.strides().iter().copied().collect(),
    }
}

/// Checks that the row counts of `q` and `k` are those of `window` (or `n` without one).
fn check_window(
    window: Option<Window>,
    n: usize,
    q_rows: usize,
    k_rows: usize,
) -> Result<(), String> {
    let (q, k) = match window {
        Some(w) if w.q_start <= w.q_end && w.q_end <= n && w.k_start <= w.k_end && w.k_end <= n => {
            (w.q_end - w.q_start, w.k_end - w.k_start)
        }
        Some(w) => return Err(format!("window {w:?} is not inside 0..{n}")),
        None => (n, n),
    };
    if (q_rows, k_rows) == (q, k) {
        Ok(())
    } else {
        Err(format!(
            "{q_rows} query and {k_rows} key rows for a window of {q} and {k}"
        ))
    }
}

/// Runs the forward kernels if the inputs live on a CubeCL device (without autodiff tracking)
/// and the configuration is supported; otherwise says why, and the caller falls back to the
/// reference path.
///
/// With a `window` (a ring step) `q` holds the rows of its query tokens and `k, v, mask` those
/// of its key tokens; the results are the partial `(out, lse)` of those queries over those keys.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_forward(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    shape: AttentionShape,
    layout: &BlockLayout,
    scale: f64,
    cache: &DeviceLayoutCache,
    window: Option<Window>,
) -> Result<(Tensor<4>, Tensor<3>), String> {
    let device = q.device();
    let config = kernel_config(q.dtype(), shape, layout, scale)?;
    check_window(window, shape.n, q.dims()[2], k.dims()[2])?;
    let (qc, kc, vc) = (cube(q.clone())?, cube(k.clone())?, cube(v.clone())?);
    let mask_t = cube_mask(mask)?;
    let client = qc.client.clone();
    let classes = cache.get(
        &client,
        format!("{:?}", qc.device),
        layout,
        shape.group(),
        window,
    );
    let (qr, kr, vr) = (tensor_ref(&qc), tensor_ref(&kc), tensor_ref(&vc));
    let mask_r = mask_t.as_ref().map(tensor_ref);

    let [b, h, n, d] = [shape.batch, shape.heads, q.dims()[2], shape.head_dim];
    let q_dtype = q.dtype();
    let buffers = || -> Result<(CubeTensor, CubeTensor), String> {
        let out = Tensor::<4>::zeros([b, h, n, d], (&device, q_dtype));
        let lse = Tensor::<3>::full([b, h, n], f32::NEG_INFINITY, (&device, DType::F32));
        Ok((cube(out)?, cube(lse)?))
    };
    let launch = |out: &CubeTensor, lse: &CubeTensor, branch: usize, merge: bool| {
        let (out_r, lse_r) = (tensor_ref(out), tensor_ref(lse));
        for (class, args) in layout.classes.iter().zip(classes.iter()) {
            if class.branch == branch {
                forward_class(
                    &client,
                    &config,
                    &qr,
                    &kr,
                    &vr,
                    mask_r.as_ref(),
                    &out_r,
                    &lse_r,
                    &args.rows,
                    merge,
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Ok::<(), String>(())
    };
    let finish = |(out, lse): (CubeTensor, CubeTensor)| {
        (
            Tensor::<4>::from_primitive::<Cube>(out),
            Tensor::<3>::from_primitive::<Cube>(lse),
        )
    };
    if window.is_none() && fuses_merge(&client, &config, &qr, &kr, &vr) {
        // One pair of buffers: every branch after the first merges into it as it is written.
        let (out, lse) = buffers()?;
        for branch in 0..layout.branches.len() {
            launch(&out, &lse, branch, branch > 0)?;
        }
        return Ok(finish((out, lse)));
    }
    let mut parts = Vec::with_capacity(layout.branches.len());
    for branch in 0..layout.branches.len() {
        let (out, lse) = buffers()?;
        launch(&out, &lse, branch, false)?;
        parts.push(finish((out, lse)));
    }
    Ok(merge_lse(parts))
}

/// What the backward kernels read: the forward's inputs and its merged results.
#[derive(Debug, Clone)]
pub(crate) struct SavedForward {
    /// `[batch, heads, n, head_dim]`.
    pub q: Tensor<4>,
    /// `[batch, kv_heads, n, head_dim]`.
    pub k: Tensor<4>,
    /// `[batch, kv_heads, n, head_dim]`.
    pub v: Tensor<4>,
    /// `[batch, n]`, true = present.
    pub mask: Option<Tensor<2, Bool>>,
    /// Merged output `[batch, heads, n, head_dim]`.
    pub out: Tensor<4>,
    /// Merged log-sum-exp `[batch, heads, n]` f32.
    pub lse: Tensor<3>,
}

/// `(dq, dk, dv)` of the merged attention through the backward kernels, for tensors on a
/// CubeCL device without autodiff tracking.
///
/// - `dout: [batch, heads, n, head_dim]`, the gradient of the merged output;
/// - `dlse: [batch, heads, n]`, the gradient of the merged log-sum-exp, if it is used.
///
/// Returns gradients in the inputs' dtype, `dk, dv` summed over the query heads of each kv head.
/// With a `window` the tensors hold its rows, as in [`try_forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_backward(
    saved: &SavedForward,
    dout: Tensor<4>,
    dlse: Option<Tensor<3>>,
    shape: AttentionShape,
    layout: &BlockLayout,
    scale: f64,
    cache: &DeviceLayoutCache,
    window: Option<Window>,
) -> Result<(Tensor<4>, Tensor<4>, Tensor<4>), String> {
    use dilated_attention_kernels::backward::{
        BackwardArgs, backward_can_overwrite, backward_class, backward_fuses_dq, delta,
    };
    let config = kernel_config(saved.q.dtype(), shape, layout, scale)?;
    let device = saved.q.device();
    let dtype = saved.q.dtype();
    let (n, n_k) = (saved.q.dims()[2], saved.k.dims()[2]);
    check_window(window, shape.n, n, n_k)?;
    let [b, h, d] = [shape.batch, shape.heads, shape.head_dim];
    let (qc, kc, vc) = (
        cube(saved.q.clone())?,
        cube(saved.k.clone())?,
        cube(saved.v.clone())?,
    );
    // The upstream gradient may be broadcast (`sum().backward()`) or strided: the
    // tensor-core kernels read rows as vectors.
    let gc = burn_cubecl::kernel::into_contiguous(cube(dout.cast(dtype))?);
    let (oc, lc) = (cube(saved.out.clone())?, cube(saved.lse.clone())?);
    let dlse_c = dlse.map(|t| cube(t.cast(DType::F32))).transpose()?;
    let mask_c = cube_mask(saved.mask.as_ref())?;
    let client = qc.client.clone();
    let classes = cache.get(
        &client,
        format!("{:?}", qc.device),
        layout,
        shape.group(),
        window,
    );

    // One class that covers every row (dilation 1, every head, no GQA: the seed layout, say)
    // lets the kernels store their gradients where they can, into buffers with no zero fill.
    let covers_all = |c: &crate::layout::ClassLayout| {
        c.dilation_rate == 1 && c.offset == 0 && c.heads.len() == h && shape.group() == 1
    };
    let (qr, kr, vr, or, gr, lr) = (
        tensor_ref(&qc),
        tensor_ref(&kc),
        tensor_ref(&vc),
        tensor_ref(&oc),
        tensor_ref(&gc),
        tensor_ref(&lc),
    );
    let overwrite = window.is_none()
        && matches!(layout.classes.as_slice(), [c] if covers_all(c))
        && backward_can_overwrite(&client, &config, &qr, &kr, &vr, &gr);
    // Stored gradients land in the inputs' dtype; added ones in zero-filled f32 buffers, and
    // so does dQ where the dK/dV kernel adds it atomically.
    let fused_dq = window.is_none() && backward_fuses_dq(&client, &config, &qr, &kr, &vr, &gr);
    let grad4 = |stored: bool, rows: usize| {
        cube(if stored {
            Tensor::<4>::empty([b, h, rows, d], (&device, dtype))
        } else {
            Tensor::<4>::zeros([b, h, rows, d], (&device, DType::F32))
        })
    };
    let (dq, dk, dv) = (
        grad4(overwrite && !fused_dq, n)?,
        grad4(overwrite, n_k)?,
        grad4(overwrite, n_k)?,
    );
    let delta_c = cube(Tensor::<3>::zeros([b, h, n], (&device, DType::F32)))?;
    let (dqr, dkr, dvr, deltar) = (
        tensor_ref(&dq),
        tensor_ref(&dk),
        tensor_ref(&dv),
        tensor_ref(&delta_c),
    );
    let mask_r = mask_c.as_ref().map(tensor_ref);
    let dlse_r = dlse_c.as_ref().map(tensor_ref);
    delta(&client, &config, &or, &gr, dlse_r.as_ref(), &deltar).map_err(|e| e.to_string())?;
    let args = BackwardArgs {
        q: &qr,
        k: &kr,
        v: &vr,
        mask: mask_r.as_ref(),
        dout: &gr,
        lse: &lr,
        delta: &deltar,
        dq: &dqr,
        dk: &dkr,
        dv: &dvr,
    };
    for class in classes.iter() {
        backward_class(&client, &config, &args, &class.rows, &class.cols, overwrite)
            .map_err(|e| e.to_string())?;
    }
    let dq = Tensor::<4>::from_primitive::<Cube>(dq).cast(dtype);
    let per_kv = |t: CubeTensor| {
        let t = Tensor::<4>::from_primitive::<Cube>(t);
        let g = shape.group();
        let t = if g == 1 {
            t
        } else {
            t.reshape([b, shape.kv_heads, g, n_k * d])
                .sum_dim(2)
                .reshape([b, shape.kv_heads, n_k, d])
        };
        t.cast(dtype)
    };
    Ok((dq, per_kv(dk), per_kv(dv)))
}

//! The kernels on CubeCL primitives: buffers sized from the plan, one launch per head class,
//! the branch merge, the backward's `Δ` prepass and gradient buffers.
//!
//! Shapes: `q: [batch, heads, q_rows, head_dim]`, `k, v: [batch, kv_heads, k_rows, head_dim]`,
//! `mask: [batch, k_rows]` u32 (1 = key present), `out` like `q`, `lse: [batch, heads,
//! q_rows]` f32; `q_rows = k_rows = n` without a window.

use std::sync::Arc;

use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use dilated_attention_kernels::{
    self as kernels, AttnDtype, BackwardTensors, ForwardTensors, KernelError, Plan, TensorRef,
};

use super::KernelCall;
use super::chunks;
use super::layout::DeviceClass;

/// Byte alignment of a part's start inside its buffer: storage bindings must start at a
/// multiple of the device's offset alignment, at most 256 bytes (WebGPU's bound).
const ALIGN: usize = 256;

/// What the backward reads: the forward's inputs and its merged results (the mask travels
/// beside it, as the backend's int tensor).
#[derive(Debug, Clone)]
pub(crate) struct Saved<T> {
    /// `[batch, heads, q_rows, head_dim]`.
    pub q: T,
    /// `[batch, kv_heads, k_rows, head_dim]`.
    pub k: T,
    /// `[batch, kv_heads, k_rows, head_dim]`.
    pub v: T,
    /// Merged output, like `q`.
    pub out: T,
    /// Merged log-sum-exp `[batch, heads, q_rows]` f32.
    pub lse: T,
}

impl<T> Saved<T> {
    /// Each tensor through `f`.
    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> Saved<U> {
        Saved {
            q: f(self.q),
            k: f(self.k),
            v: f(self.v),
            out: f(self.out),
            lse: f(self.lse),
        }
    }

    /// The tensors by reference.
    pub(crate) fn as_ref(&self) -> Saved<&T> {
        Saved {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            out: &self.out,
            lse: &self.lse,
        }
    }
}

fn attn_dtype(dtype: DType) -> Result<AttnDtype, KernelError> {
    match dtype {
        DType::F32 => Ok(AttnDtype::F32),
        DType::F16 => Ok(AttnDtype::F16),
        DType::BF16 => Ok(AttnDtype::BF16),
        other => Err(KernelError::Unsupported {
            field: "dtype",
            rule: format!("the kernels take f32, f16 and bf16, got {other:?}"),
        }),
    }
}

/// The call's head classes on `q`'s device (cached) and `q`'s `[batch, heads, rows, head_dim]`.
fn device_classes(
    q: &CubeTensor,
    call: &KernelCall,
) -> Result<(Arc<Vec<DeviceClass>>, [usize; 4]), KernelError> {
    let classes = call.cache.get(
        &q.client,
        format!("{:?}", q.device),
        &call.layout,
        call.shape.group(),
        call.window,
    )?;
    let shape = q.meta.shape();
    Ok((classes, [shape[0], shape[1], shape[2], shape[3]]))
}

/// The kernels' view of a CubeCL tensor `t` (any shape and strides; `name` goes into errors):
/// what the launchers of `dilated-attention-kernels` take.
pub fn tensor_ref(name: &'static str, t: &CubeTensor) -> Result<TensorRef, KernelError> {
    TensorRef::new(
        name,
        t.handle.clone(),
        t.meta.shape().iter().copied().collect(),
        t.meta.strides().iter().copied().collect(),
        t.dtype.size(),
    )
}

/// `t` with rows the plan's family can read as vectors (a copy only where they are not).
fn readable(t: CubeTensor, plan: &Plan) -> Result<CubeTensor, KernelError> {
    let width = plan.strategy().row_width();
    if tensor_ref("t", &t)?.rows_aligned(width) {
        Ok(t)
    } else {
        Ok(burn_cubecl::kernel::into_contiguous(t))
    }
}

/// A contiguous buffer of `shape` filled with `value` (`None`: left unwritten).
fn buffer(
    like: &CubeTensor,
    shape: Vec<usize>,
    dtype: DType,
    value: Option<f32>,
) -> Result<CubeTensor, KernelError> {
    let t = burn_cubecl::ops::numeric::empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        dtype,
    );
    if let Some(value) = value {
        kernels::fill(
            &t.client,
            attn_dtype(dtype)?,
            &tensor_ref("buffer", &t)?,
            value,
        )?;
    }
    Ok(t)
}

/// `[batch, heads, rows, head_dim]` of `q` and `[kv_heads, k_rows]` of `k`.
fn dims(q: &CubeTensor, k: &CubeTensor) -> ([usize; 4], [usize; 2]) {
    let (qs, ks) = (q.meta.shape(), k.meta.shape());
    ([qs[0], qs[1], qs[2], qs[3]], [ks[1], ks[2]])
}

/// The merged `(out, lse)` of the forward kernels, in launches that fit the kernels' offsets
/// (`super::chunks`).
pub(crate) fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: Option<CubeTensor>,
    call: &KernelCall,
    plan: &Plan,
) -> Result<(CubeTensor, CubeTensor), KernelError> {
    let ([b, h, n, d], kv) = dims(&q, &k);
    let out = buffer(&q, vec![b, h, n, d], q.dtype, None)?;
    let lse = buffer(&q, vec![b, h, n], DType::F32, None)?;
    let Some(chunks) = chunks::chunking(call, [b, h, n, d], kv)? else {
        let (q, k, v) = (readable(q, plan)?, readable(k, plan)?, readable(v, plan)?);
        forward_into(&q, &k, &v, mask.as_ref(), call, plan, &out, &lse)?;
        return Ok((out, lse));
    };
    // Whole tensors past the offsets cannot be viewed by the kernels (`readable`); contiguous,
    // each launch's views are.
    let contiguous = burn_cubecl::kernel::into_contiguous;
    let [q, k, v] = [q, k, v].map(|t| chunks.fold(contiguous(t)));
    let (o, l) = (chunks.fold(out.clone()), chunks.fold(lse.clone()));
    let mask = mask.map(|m| chunks.fold_mask(m));
    for r in chunks.ranges(b) {
        let part = |t: &CubeTensor| chunks::batches(t, r.clone());
        let m = mask.as_ref().map(part);
        let (q, k, v) = (part(&q), part(&k), part(&v));
        forward_into(
            &q,
            &k,
            &v,
            m.as_ref(),
            &chunks.call,
            plan,
            &part(&o),
            &part(&l),
        )?;
    }
    Ok((out, lse))
}

/// The merged forward of one launch's tensors into `out` and `lse` (buffers or views of them,
/// any contents).
#[allow(clippy::too_many_arguments)]
fn forward_into(
    q: &CubeTensor,
    k: &CubeTensor,
    v: &CubeTensor,
    mask: Option<&CubeTensor>,
    call: &KernelCall,
    plan: &Plan,
    out: &CubeTensor,
    lse: &CubeTensor,
) -> Result<(), KernelError> {
    let client = q.client.clone();
    let (classes, [b, h, n, d]) = device_classes(q, call)?;
    let (qr, kr, vr) = (
        tensor_ref("q", q)?,
        tensor_ref("k", k)?,
        tensor_ref("v", v)?,
    );
    let mask_r = mask.map(|m| tensor_ref("mask", m)).transpose()?;
    let dtype = q.dtype;
    let (out_r, lse_r) = (tensor_ref("out", out)?, tensor_ref("lse", lse)?);
    let branches = call.layout.branches.len();
    let launch = |out: &TensorRef, lse: &TensorRef, branch: usize, merge: bool| {
        let tensors = ForwardTensors {
            q: &qr,
            k: &kr,
            v: &vr,
            mask: mask_r.as_ref(),
            out,
            lse,
        };
        classes
            .iter()
            .filter(|class| class.branch == branch)
            .try_for_each(|class| {
                kernels::forward_class(&client, plan, &tensors, &class.rows, merge)
            })
    };
    // A branch of dilation 1 writes every row of `out` and `lse` (its one class holds every
    // head and token); a dilated branch leaves the rows it skips as they were, which must then
    // read `0, -inf`. Filling 128K × 8 × 64 halves costs about as much as a seed forward's
    // tenth, so buffers a covering first branch overwrites are left unfilled.
    let covers = |branch: usize| {
        call.layout
            .classes
            .iter()
            .any(|c| c.branch == branch && c.covers_every_row(h))
    };
    if plan.merges_in_kernel() || branches == 1 {
        // One pair of buffers: every branch after the first merges into it as it is written.
        if !covers(0) {
            kernels::fill(&client, attn_dtype(dtype)?, &out_r, 0.0)?;
            kernels::fill(&client, AttnDtype::F32, &lse_r, f32::NEG_INFINITY)?;
        }
        for branch in 0..branches {
            launch(&out_r, &lse_r, branch, branch > 0)?;
        }
        return Ok(());
    }
    // A pair per branch in two buffers, each part starting at an aligned offset (storage
    // bindings need one), merged by the LSE merge kernel.
    let elem = dtype.size();
    let rows = b * h * n;
    let aligned = |len: usize, elem: usize| (len * elem).next_multiple_of(ALIGN) / elem;
    let (part_len, lse_len) = (aligned(rows * d, elem), aligned(rows, 4));
    let fill = |value: f32| (!(0..branches).all(covers)).then_some(value);
    let parts = buffer(q, vec![branches, part_len], dtype, fill(0.0))?;
    let lses = buffer(
        q,
        vec![branches, lse_len],
        DType::F32,
        fill(f32::NEG_INFINITY),
    )?;
    for branch in 0..branches {
        let at = |t: &CubeTensor, len: usize, shape: Vec<usize>, elem: usize| {
            let handle = t.handle.clone().offset_start((branch * len * elem) as u64);
            TensorRef::contiguous("part", handle, shape, elem)
        };
        launch(
            &at(&parts, part_len, vec![b, h, n, d], elem)?,
            &at(&lses, lse_len, vec![b, h, n], 4)?,
            branch,
            false,
        )?;
    }
    kernels::merge::lse_merge(
        &client,
        attn_dtype(dtype)?,
        &TensorRef::new(
            "parts",
            parts.handle.clone(),
            vec![branches, rows, d],
            vec![part_len, d, 1],
            elem,
        )?,
        &TensorRef::new(
            "lse",
            lses.handle.clone(),
            vec![branches, rows],
            vec![lse_len, 1],
            4,
        )?,
        &TensorRef::contiguous("out", out.handle.clone(), vec![rows, d], elem)?,
        &TensorRef::contiguous("lse_out", lse.handle.clone(), vec![rows], 4)?,
    )
}

/// `(dq, dk, dv)` of the merged attention: `dout` like `out`, `dlse` like `lse` (if the loss
/// uses it). Gradients in the inputs' dtype, `dk, dv` summed over the query heads of each kv
/// head; in launches that fit the kernels' offsets (`super::chunks`), each chunk's gradients
/// written into the whole ones as it is done.
pub(crate) fn backward(
    saved: Saved<CubeTensor>,
    mask: Option<CubeTensor>,
    dout: CubeTensor,
    dlse: Option<CubeTensor>,
    call: &KernelCall,
    plan: &Plan,
) -> Result<(CubeTensor, CubeTensor, CubeTensor), KernelError> {
    let (qd, [kv_heads, n_k]) = dims(&saved.q, &saved.k);
    let Some(chunks) = chunks::chunking(call, qd, [kv_heads, n_k])? else {
        let (dq, dk, dv, _) = backward_launch(saved, mask, dout, dlse, call, plan, None)?;
        return Ok((dq, dk, dv));
    };
    let [b, h, n, d] = qd;
    let dtype = saved.q.dtype;
    let contiguous = burn_cubecl::kernel::into_contiguous;
    let fold = |t: CubeTensor| chunks.fold(contiguous(t));
    let saved = saved.map(fold);
    // Each launch casts its part of `dout` and `dlse` where their dtypes differ.
    let dout = fold(dout);
    let dlse = dlse.map(fold);
    let mask = mask.map(|m| chunks.fold_mask(m));
    let empty = |dims: [usize; 4]| buffer(&saved.q, dims.to_vec(), dtype, None);
    let (mut dq, mut dk, mut dv) = (
        chunks.fold(empty([b, h, n, d])?),
        chunks.fold(empty([b, kv_heads, n_k, d])?),
        chunks.fold(empty([b, kv_heads, n_k, d])?),
    );
    for r in chunks.ranges(b) {
        let part = |t: &CubeTensor| chunks::batches(t, r.clone());
        // Stored gradients go straight into views of the whole ones; added ones (f32, summed
        // over a GQA group) come back as new buffers and are copied in.
        let (gq, gk, gv, in_place) = backward_launch(
            saved.as_ref().map(part),
            mask.as_ref().map(part),
            part(&dout),
            dlse.as_ref().map(part),
            &chunks.call,
            plan,
            Some([part(&dq), part(&dk), part(&dv)]),
        )?;
        if !in_place {
            dq = chunks::assign_batches(dq, r.clone(), gq);
            dk = chunks::assign_batches(dk, r.clone(), gk);
            dv = chunks::assign_batches(dv, r, gv);
        }
    }
    let unfold = |t: CubeTensor, heads: usize, rows: usize| {
        CubeBackend::float_reshape(t, Shape::from([b, heads, rows, d]))
    };
    Ok((
        unfold(dq, h, n),
        unfold(dk, kv_heads, n_k),
        unfold(dv, kv_heads, n_k),
    ))
}

/// [`backward`] of one launch's tensors: `(dq, dk, dv, in_place)`. Where the kernels store
/// the gradients (one class covering every row, no GQA) and `into` names `(dq, dk, dv)` views
/// (each launch of a chunked call: views of the whole gradients), they are written there and
/// returned with `in_place`; otherwise into new buffers.
#[allow(clippy::too_many_arguments)]
fn backward_launch(
    saved: Saved<CubeTensor>,
    mask: Option<CubeTensor>,
    dout: CubeTensor,
    dlse: Option<CubeTensor>,
    call: &KernelCall,
    plan: &Plan,
    into: Option<[CubeTensor; 3]>,
) -> Result<(CubeTensor, CubeTensor, CubeTensor, bool), KernelError> {
    let dtype = saved.q.dtype;
    let (q, k, v) = (
        readable(saved.q, plan)?,
        readable(saved.k, plan)?,
        readable(saved.v, plan)?,
    );
    // The upstream gradient may be broadcast (`sum().backward()`), strided or of another
    // float type: the kernels read contiguous rows of the inputs' dtype (`cast` returns a
    // tensor of that dtype as it is).
    let cast = burn_cubecl::kernel::cast;
    let dout = burn_cubecl::kernel::into_contiguous(cast(dout, dtype));
    let dlse = dlse.map(|t| cast(t, DType::F32));
    let client = q.client.clone();
    let (classes, [b, h, n, d]) = device_classes(&q, call)?;
    let n_k = k.meta.shape()[2];
    // One class that covers every row (dilation 1, every head, no GQA: the seed layout, say)
    // lets the kernels store their gradients, into buffers with no zero fill.
    let covers_all = matches!(call.layout.classes.as_slice(), [c] if c.covers_every_row(h))
        && call.shape.group() == 1;
    let store = plan.stores_gradients() && covers_all;
    let fused = plan.fuses_dq();
    // Stored gradients land in the inputs' dtype; added ones in zero-filled f32 buffers, and
    // so does dQ where the dK/dV kernel adds it atomically.
    let grad = |stored: bool, rows: usize| {
        if stored {
            buffer(&q, vec![b, h, rows, d], dtype, None)
        } else {
            buffer(&q, vec![b, h, rows, d], DType::F32, Some(0.0))
        }
    };
    let in_place = store && !fused && into.is_some();
    let (dq, dk, dv) = match into {
        Some([dq, dk, dv]) if in_place => (dq, dk, dv),
        _ => (
            grad(store && !fused, n)?,
            grad(store, n_k)?,
            grad(store, n_k)?,
        ),
    };
    let delta = buffer(&q, vec![b, h, n], DType::F32, None)?;
    let (qr, kr, vr) = (
        tensor_ref("q", &q)?,
        tensor_ref("k", &k)?,
        tensor_ref("v", &v)?,
    );
    let (or, gr, lr) = (
        tensor_ref("out", &saved.out)?,
        tensor_ref("dout", &dout)?,
        tensor_ref("lse", &saved.lse)?,
    );
    let mask_r = mask.as_ref().map(|m| tensor_ref("mask", m)).transpose()?;
    let dlse_r = dlse.as_ref().map(|t| tensor_ref("dlse", t)).transpose()?;
    let deltar = tensor_ref("delta", &delta)?;
    kernels::delta(&client, plan, &or, &gr, dlse_r.as_ref(), &deltar)?;
    let (dqr, dkr, dvr) = (
        tensor_ref("dq", &dq)?,
        tensor_ref("dk", &dk)?,
        tensor_ref("dv", &dv)?,
    );
    let tensors = BackwardTensors {
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
        kernels::backward_class(&client, plan, &tensors, &class.rows, &class.cols, store)?;
    }
    let to_dtype = |t: CubeTensor| cast(t, dtype);
    let group = call.shape.group();
    let per_kv = |t: CubeTensor| {
        let t = if group == 1 {
            t
        } else {
            let kv = call.shape.kv_heads;
            let t = CubeBackend::float_reshape(t, Shape::from([b, kv, group, n_k * d]));
            let t = CubeBackend::float_sum_dim(t, 2);
            CubeBackend::float_reshape(t, Shape::from([b, kv, n_k, d]))
        };
        to_dtype(t)
    };
    Ok((to_dtype(dq), per_kv(dk), per_kv(dv), in_place))
}

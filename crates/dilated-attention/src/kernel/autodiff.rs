//! The kernels as one differentiable Burn operation, on Burn's `Cube` backend as the build has
//! it (`CubeBackend`, or `Fusion<CubeBackend>` with Burn's default features), tracked by
//! autodiff or not.
//!
//! `(out, lse) = attention(q, k, v)` is recorded in Burn's autodiff graph as two nodes:
//! - `AttentionStep`, parents `q, k, v`, output `out`. Its state is what the backward kernels
//!   read: `q, k, v`, the mask, `out` and `lse` (all `O(n)`; the attention weights are
//!   recomputed block by block in the backward, as in FlashAttention, never stored), and the
//!   forward's plan.
//! - `LseStep`, parent `out`, output `lse`. It runs first in the backward (it is deeper in the
//!   graph), hands `dlse` to `AttentionStep` through a shared slot and gives `out` a zero
//!   gradient so that a loss of `lse` alone still reaches `q, k, v`.
//!
//! One backward call then covers both outputs: `dlse` only shifts `Δ`. The backward runs the
//! plan its forward ran; should its launch fail all the same, the gradients come from the
//! reference path (differentiated by Burn) and the failure is logged, never a panic.

use std::sync::{Arc, Mutex};

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    AutodiffBackend, Cube, DispatchDevice, DispatchKindConversion, DispatchTensor,
};
use burn::tensor::{Bool, DType, Device, GradientCheckpointingStrategy, Int, IntDType, Tensor};
use dilated_attention_kernels::Plan;

use super::KernelCall;
use super::backend::KernelBackend;
use super::run::Saved;
use crate::error::KernelUnavailable;
use crate::inputs::AttentionShape;
use crate::reference::{ReferencePlan, reference_attention};

fn not_cube(device: &Device) -> KernelUnavailable {
    KernelUnavailable::NotCubeDevice {
        device: format!("{device:?}"),
    }
}

/// The plan `call` gets for tensors of `dtype` on `device`, or why the kernels cannot serve it.
pub(crate) fn path(
    device: &Device,
    dtype: DType,
    call: &KernelCall,
) -> Result<Plan, KernelUnavailable> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube) => Ok(Cube::kernel_plan(cube, dtype, call)?),
        _ => Err(not_cube(device)),
    }
}

/// Whether f32 matrix products in Burn ops on `device` must be computed in f64 to keep f32
/// accuracy (CUDA: Burn's matmul stages f32 operands as TF32).
pub(crate) fn f32_products_need_f64(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube) => Cube::f32_products_need_f64(cube),
        _ => false,
    }
}

/// The key padding mask (`true` = padded, Burn's polarity) as the kernels read it: u32, 1 = key
/// present.
fn kernel_mask(mask: &Tensor<2, Bool>) -> Tensor<2, Int> {
    // `1 - padded` in integers (a gathered bool tensor may be typed `U8`, see the reference
    // path), then the kernels' u32 whatever the device's default int type.
    mask.clone().int().neg().add_scalar(1).cast(IntDType::U32)
}

/// The kernels' mask as the backend's int primitive, whether it was made on the autodiff form
/// of the device or the plain one (int tensors carry no gradient either way).
fn mask_primitive(
    mask: Tensor<2, Int>,
    device: &Device,
) -> Result<IntTensor<Cube>, KernelUnavailable> {
    match mask.clone().try_into_primitive::<Cube>() {
        Ok(m) => Ok(m),
        Err(_) => mask
            .try_into_primitive::<Autodiff<Cube>>()
            .map_err(|_| not_cube(device)),
    }
}

fn plain<const D: usize>(t: FloatTensor<Cube>) -> Tensor<D> {
    Tensor::from_primitive::<Cube>(t)
}

/// The merged `(out, lse)` through the kernels, recorded for autodiff where `q` is tracked.
/// `Err` says why the kernels cannot serve the call; nothing has run then.
pub(crate) fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    call: &KernelCall,
) -> Result<(Tensor<4>, Tensor<3>), KernelUnavailable> {
    let plan = path(&q.device(), q.dtype(), call)?;
    // A call past the kernels' offsets runs in several launches (`super::chunks`); one that
    // cannot be cut fails here, before anything is queued: under Fusion an error inside the
    // operation surfaces only at a sync.
    let [_, kv_heads, k_rows, _] = k.dims();
    super::chunks::chunking(call, q.dims(), [kv_heads, k_rows])?;
    let mask = mask.map(kernel_mask);
    match q.gradient_checkpointing_strategy() {
        None => untracked(q, k, v, mask, call, plan),
        Some(GradientCheckpointingStrategy::Disabled) => {
            tracked::<NoCheckpointing>(q, k, v, mask, call, plan)
        }
        Some(GradientCheckpointingStrategy::Balanced) => {
            tracked::<BalancedCheckpointing>(q, k, v, mask, call, plan)
        }
    }
}

fn untracked(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<Tensor<2, Int>>,
    call: &KernelCall,
    plan: Plan,
) -> Result<(Tensor<4>, Tensor<3>), KernelUnavailable> {
    let device = q.device();
    let prim = |t: &Tensor<4>| {
        t.clone()
            .try_into_primitive::<Cube>()
            .map_err(|_| not_cube(&device))
    };
    let mask = mask.map(|m| mask_primitive(m, &device)).transpose()?;
    let (out, lse) = Cube::kernel_forward(prim(q)?, prim(k)?, prim(v)?, mask, call, plan)?;
    Ok((plain(out), plain(lse)))
}

/// `(dq, dk, dv)` through the backward kernels, for tensors without autodiff tracking:
/// `[q, k, v, out, dout]`, the key padding mask (Burn's polarity), `lse` and `dlse`.
pub(crate) fn backward(
    [q, k, v, out, dout]: [Tensor<4>; 5],
    mask: Option<&Tensor<2, Bool>>,
    lse: Tensor<3>,
    dlse: Option<Tensor<3>>,
    call: &KernelCall,
) -> Result<(Tensor<4>, Tensor<4>, Tensor<4>), KernelUnavailable> {
    let device = q.device();
    let plan = path(&device, q.dtype(), call)?;
    let prim = |t: Tensor<4>| {
        t.try_into_primitive::<Cube>()
            .map_err(|_| not_cube(&device))
    };
    let prim3 = |t: Tensor<3>| {
        t.try_into_primitive::<Cube>()
            .map_err(|_| not_cube(&device))
    };
    let mask = mask
        .map(|m| mask_primitive(kernel_mask(m), &device))
        .transpose()?;
    let saved = Saved {
        q: prim(q)?,
        k: prim(k)?,
        v: prim(v)?,
        out: prim(out)?,
        lse: prim3(lse)?,
    };
    let dlse = dlse.map(prim3).transpose()?;
    let (dq, dk, dv) = Cube::kernel_backward(saved, mask, prim(dout)?, dlse, call, plan)?;
    Ok((plain(dq), plain(dk), plain(dv)))
}

/// `dlse`, passed from `LseStep` to `AttentionStep`.
type DlseSlot = Arc<Mutex<Option<FloatTensor<Cube>>>>;

#[derive(Debug)]
struct AttentionStep;

#[derive(Debug, Clone)]
struct AttentionState {
    saved: Saved<FloatTensor<Cube>>,
    mask: Option<IntTensor<Cube>>,
    dlse: DlseSlot,
    call: KernelCall,
    plan: Plan,
}

impl Backward<Cube, 3> for AttentionStep {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let dout = grads.consume::<Cube>(&ops.node);
        let s = ops.state;
        let dlse = s.dlse.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (dq, dk, dv) = match Cube::kernel_backward(
            s.saved.clone(),
            s.mask.clone(),
            dout.clone(),
            dlse.clone(),
            &s.call,
            s.plan,
        ) {
            Ok(grads) => grads,
            Err(e) => {
                log::error!(
                    "dilated attention: the backward kernels failed ({e}); computing the \
                     gradients on the reference path"
                );
                match reference_gradients(s.saved, s.mask, dout, dlse, &s.call) {
                    Some(grads) => grads,
                    None => {
                        log::error!(
                            "dilated attention: the reference gradients did not convert back \
                             to the CubeCL backend; q, k and v get no gradient"
                        );
                        return;
                    }
                }
            }
        };
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<Cube>(node.id, grad);
            }
        }
    }
}

/// The gradients of the reference path for the forward of `saved`: the reference attention,
/// differentiated by Burn on the autodiff form of the tensors' device. `None` if a gradient
/// does not convert back to the CubeCL backend's primitive (it always should: every tensor
/// here lives on the device `saved` came from).
fn reference_gradients(
    saved: Saved<FloatTensor<Cube>>,
    mask: Option<IntTensor<Cube>>,
    dout: FloatTensor<Cube>,
    dlse: Option<FloatTensor<Cube>>,
    call: &KernelCall,
) -> Option<(FloatTensor<Cube>, FloatTensor<Cube>, FloatTensor<Cube>)> {
    let q: Tensor<4> = plain(saved.q);
    let device = q.device().autodiff();
    let leaf = |t: Tensor<4>| t.to_device(&device).require_grad();
    let (q, k, v) = (leaf(q), leaf(plain(saved.k)), leaf(plain(saved.v)));
    // The kernels' mask is 1 = present; the reference path takes Burn's polarity.
    let mask = mask.map(|m| {
        Tensor::<2, Int>::from_primitive::<Cube>(m)
            .equal_elem(0)
            .to_device(&device)
    });
    let plan = match call.window {
        None => ReferencePlan::new(call.layout.clone()),
        Some(w) => {
            let (queries, keys): (Vec<usize>, Vec<usize>) = (
                (w.q_start..w.q_end).collect(),
                (w.k_start..w.k_end).collect(),
            );
            ReferencePlan::restricted(call.layout.clone(), &queries, &keys)
        }
    };
    let shape = AttentionShape {
        n: q.dims()[2],
        ..call.shape
    };
    let (out, lse) = reference_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        mask,
        shape,
        &plan,
        call.scale,
    );
    let dout: Tensor<4> = plain(dout);
    let mut loss = (out * dout.to_device(&device)).sum();
    if let Some(dlse) = dlse {
        let dlse: Tensor<3> = plain(dlse);
        let finite = lse.clone().is_finite();
        loss = loss + (lse.mask_fill(finite.bool_not(), 0.0) * dlse.to_device(&device)).sum();
    }
    let grads = loss.backward();
    let grad = |t: &Tensor<4>| {
        let g = t.grad(&grads).unwrap_or_else(|| t.zeros_like().inner());
        g.try_into_primitive::<Cube>().ok()
    };
    Some((grad(&q)?, grad(&k)?, grad(&v)?))
}

#[derive(Debug)]
struct LseStep;

/// What `LseStep` needs to give `out` its zero gradient: `out`'s shape, dtype and device, not
/// its buffer. The step is a child of `out` in the graph, so a backward from `out` never runs
/// it, and Burn frees such a step's state only when its graph cleanup reaches it: holding
/// `out` here kept one output-sized tensor alive per call after the caller had dropped it
/// (one, two, then three across a training loop's steps).
#[derive(Debug, Clone)]
struct LseState {
    shape: burn::tensor::Shape,
    dtype: DType,
    device: burn::backend::tensor::Device<Cube>,
    dlse: DlseSlot,
}

impl Backward<Cube, 1> for LseStep {
    type State = LseState;

    fn backward(self, ops: Ops<LseState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_out] = ops.parents;
        let s = ops.state;
        *s.dlse.lock().unwrap_or_else(|e| e.into_inner()) = Some(grads.consume::<Cube>(&ops.node));
        if let Some(node) = node_out {
            let zeros = Cube::float_zeros(s.shape, &s.device, s.dtype.into());
            grads.register::<Cube>(node.id, zeros);
        }
    }
}

/// The kernels on an autodiff CubeCL device with checkpoint strategy `C`.
fn tracked<C>(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<Tensor<2, Int>>,
    call: &KernelCall,
    plan: Plan,
) -> Result<(Tensor<4>, Tensor<3>), KernelUnavailable>
where
    C: CheckpointStrategy,
    DispatchTensor: DispatchKindConversion<Autodiff<Cube, C>>,
{
    let device = q.device();
    let conv = |t: &Tensor<4>| {
        // An input made on the plain device joins as an untracked autodiff tensor.
        t.clone()
            .autodiff()
            .try_into_primitive::<Autodiff<Cube, C>>()
            .map_err(|_| not_cube(&device))
    };
    let (qp, qg) = conv(q)?.into_parts();
    let (kp, kg) = conv(k)?.into_parts();
    let (vp, vg) = conv(v)?.into_parts();
    let mask = mask.map(|m| mask_primitive(m, &device)).transpose()?;
    let (out, lse) =
        Cube::kernel_forward(qp.clone(), kp.clone(), vp.clone(), mask.clone(), call, plan)?;
    let (out, lse) = match AttentionStep
        .prepare::<C>([qg, kg, vg])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let slot = DlseSlot::default();
            let lse_state = LseState {
                shape: out.shape(),
                dtype: out.dtype(),
                device: out.device(),
                dlse: slot.clone(),
            };
            let state = AttentionState {
                saved: Saved {
                    q: qp,
                    k: kp,
                    v: vp,
                    out: out.clone(),
                    lse: lse.clone(),
                },
                mask,
                dlse: slot,
                call: call.clone(),
                plan,
            };
            let out = prep.finish(state, out);
            let lse = match LseStep
                .prepare::<C>([out.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(lse_state, lse),
                OpsKind::UnTracked(prep) => prep.finish(lse),
            };
            (out, lse)
        }
        OpsKind::UnTracked(prep) => (
            prep.finish(out),
            <Autodiff<Cube, C> as AutodiffBackend>::from_inner(lse),
        ),
    };
    Ok((
        Tensor::<4>::from_primitive::<Autodiff<Cube, C>>(out),
        Tensor::<3>::from_primitive::<Autodiff<Cube, C>>(lse),
    ))
}

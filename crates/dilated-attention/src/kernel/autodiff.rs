//! The kernels as one differentiable Burn operation on autodiff CubeCL devices.
//!
//! `(out, lse) = attention(q, k, v)` is recorded in Burn's autodiff graph as two nodes:
//! - `AttentionStep`, parents `q, k, v`, output `out`. Its state is what the backward kernels
//!   read: `q, k, v`, the mask, `out` and `lse` (all `O(n)`; the attention weights are
//!   recomputed block by block in the backward, as in FlashAttention, never stored).
//! - `LseStep`, parent `out`, output `lse`. It runs first in the backward (it is deeper in the
//!   graph), hands `dlse` to `AttentionStep` through a shared slot and gives `out` a zero
//!   gradient so that a loss of `lse` alone still reaches `q, k, v`.
//!
//! One backward call then covers both outputs: `dlse` only shifts `Δ` (see
//! `dilated_attention_kernels::backward`).

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{AutodiffBackend, Cube, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Bool, DType, GradientCheckpointingStrategy, Shape, Tensor};
use burn_cubecl::CubeDevice;
use burn_cubecl::tensor::CubeTensor;

use super::{DeviceLayoutCache, SavedForward, Window, cube, try_backward, try_forward};
use crate::inputs::AttentionShape;
use crate::reference::ReferencePlan;

/// What a call needs besides the tensors: sizes, layout (in its plan), scale, device layouts.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub shape: AttentionShape,
    pub plan: Arc<ReferencePlan>,
    pub scale: f64,
    pub cache: DeviceLayoutCache,
    /// The ring step's token ranges, if any (see [`Window`]).
    pub window: Option<Window>,
}

/// `dlse`, passed from `LseStep` to `AttentionStep`.
type DlseSlot = Arc<Mutex<Option<CubeTensor>>>;

#[derive(Debug)]
struct AttentionStep;

#[derive(Debug, Clone)]
struct AttentionState {
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: Option<CubeTensor>,
    out: CubeTensor,
    lse: CubeTensor,
    dlse: DlseSlot,
    call: Call,
}

fn plain<const D: usize>(t: CubeTensor) -> Tensor<D> {
    Tensor::from_primitive::<Cube>(t)
}

fn prim<const D: usize>(t: Tensor<D>) -> CubeTensor {
    cube(t).expect("a tensor made on a plain CubeCL device converts back")
}

impl Backward<Cube, 3> for AttentionStep {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let dout = grads.consume::<Cube>(&ops.node);
        let s = ops.state;
        let dlse = s.dlse.lock().unwrap_or_else(|e| e.into_inner()).take();
        let saved = SavedForward {
            q: plain(s.q),
            k: plain(s.k),
            v: plain(s.v),
            mask: s.mask.map(Tensor::<2, Bool>::from_primitive::<Cube>),
            out: plain(s.out),
            lse: plain(s.lse),
        };
        // The forward ran these kernels on this configuration, so the backward's checks pass too.
        let (dq, dk, dv) = try_backward(
            &saved,
            plain(dout),
            dlse.map(plain),
            s.call.shape,
            &s.call.plan.layout,
            s.call.scale,
            &s.call.cache,
            s.call.window,
        )
        .unwrap_or_else(|reason| panic!("attention backward kernels: {reason}"));
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<Cube>(node.id, prim(grad));
            }
        }
    }
}

#[derive(Debug)]
struct LseStep;

#[derive(Debug, Clone)]
struct LseState {
    out_shape: Shape,
    out_dtype: DType,
    device: CubeDevice,
    dlse: DlseSlot,
}

impl Backward<Cube, 1> for LseStep {
    type State = LseState;

    fn backward(self, ops: Ops<LseState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_out] = ops.parents;
        let s = ops.state;
        *s.dlse.lock().unwrap_or_else(|e| e.into_inner()) = Some(grads.consume::<Cube>(&ops.node));
        if let Some(node) = node_out {
            let zeros = burn_cubecl::ops::numeric::zeros(s.device, s.out_shape, s.out_dtype);
            grads.register::<Cube>(node.id, zeros);
        }
    }
}

/// The kernels on an autodiff CubeCL device with checkpoint strategy `C`.
fn tracked<C>(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    call: &Call,
) -> Result<(Tensor<4>, Tensor<3>), String>
where
    C: CheckpointStrategy,
    DispatchTensor: DispatchKindConversion<Autodiff<Cube, C>>,
{
    let not_cube = || "not a tensor of an autodiff CubeCL device".to_string();
    let conv = |t: &Tensor<4>| {
        t.clone()
            .try_into_primitive::<Autodiff<Cube, C>>()
            .map_err(|_| not_cube())
    };
    let (qp, qg) = conv(q)?.into_parts();
    let (kp, kg) = conv(k)?.into_parts();
    let (vp, vg) = conv(v)?.into_parts();
    let mask = match mask {
        Some(m) => Some(
            m.clone()
                .try_into_primitive::<Autodiff<Cube, C>>()
                .map_err(|_| not_cube())?,
        ),
        None => None,
    };
    let mask_plain = mask.clone().map(Tensor::<2, Bool>::from_primitive::<Cube>);
    let (out, lse) = try_forward(
        &plain(qp.clone()),
        &plain(kp.clone()),
        &plain(vp.clone()),
        mask_plain.as_ref(),
        call.shape,
        &call.plan.layout,
        call.scale,
        &call.cache,
        call.window,
    )?;
    let (out, lse) = (cube(out)?, cube(lse)?);
    let (out, lse) = match AttentionStep
        .prepare::<C>([qg, kg, vg])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let slot = DlseSlot::default();
            let lse_state = LseState {
                out_shape: out.meta.shape().clone(),
                out_dtype: out.dtype,
                device: out.device.clone(),
                dlse: slot.clone(),
            };
            let state = AttentionState {
                q: qp,
                k: kp,
                v: vp,
                mask,
                out: out.clone(),
                lse: lse.clone(),
                dlse: slot,
                call: call.clone(),
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

/// Forward through the kernels on any CubeCL device: plain, or autodiff (then the backward
/// kernels run in `loss.backward()`). `Err` says why the kernels cannot serve the call.
pub(crate) fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    call: &Call,
) -> Result<(Tensor<4>, Tensor<3>), String> {
    match q.gradient_checkpointing_strategy() {
        None => try_forward(
            q,
            k,
            v,
            mask,
            call.shape,
            &call.plan.layout,
            call.scale,
            &call.cache,
            call.window,
        ),
        Some(GradientCheckpointingStrategy::Disabled) => {
            tracked::<NoCheckpointing>(q, k, v, mask, call)
        }
        Some(GradientCheckpointingStrategy::Balanced) => {
            tracked::<BalancedCheckpointing>(q, k, v, mask, call)
        }
    }
}

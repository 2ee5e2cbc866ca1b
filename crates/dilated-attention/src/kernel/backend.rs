//! [`KernelBackend`]: the kernels as operations of a Burn backend, for the plain CubeCL backend
//! and for Burn's Fusion over it.
//!
//! With Burn's default features the `Cube` backend is `Fusion<CubeBackend>`: tensors are lazy
//! and their handles exist only inside Fusion's stream. The Fusion implementation checks the
//! call and plans it at once (so an unsupported call fails before anything is queued), then
//! registers the kernels as one custom operation: Fusion runs it in stream order on the
//! `CubeBackend` handles, like any other operation it cannot fuse. Without Fusion the same
//! code runs directly. Both implementations exist whatever Burn's features are; `Cube` picks
//! the one in effect.

use burn::backend::Backend;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_fusion::client::GlobalFusionClient;
use burn_fusion::stream::{Operation, StreamId};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use dilated_attention_kernels::{KernelError, Plan};

use super::KernelCall;
use super::run::{self, Saved};

/// `(dq, dk, dv)` of a backend.
pub(crate) type Grads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// A backend whose tensors the kernels can run on.
pub(crate) trait KernelBackend: Backend {
    /// The plan of `call` for tensors of `dtype` on `device`.
    fn kernel_plan(
        device: &Self::Device,
        dtype: DType,
        call: &KernelCall,
    ) -> Result<Plan, KernelError>;

    /// Whether f32 products in Burn ops on `device` must run in f64 to be f32-exact (see
    /// [`dilated_attention_kernels::f32_matmul_may_use_tf32`]).
    fn f32_products_need_f64(device: &Self::Device) -> bool;

    /// The merged `(out, lse)` (see `run::forward`).
    fn kernel_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: Option<IntTensor<Self>>,
        call: &KernelCall,
        plan: Plan,
    ) -> Result<(FloatTensor<Self>, FloatTensor<Self>), KernelError>;

    /// `(dq, dk, dv)` (see `run::backward`).
    fn kernel_backward(
        saved: Saved<FloatTensor<Self>>,
        mask: Option<IntTensor<Self>>,
        dout: FloatTensor<Self>,
        dlse: Option<FloatTensor<Self>>,
        call: &KernelCall,
        plan: Plan,
    ) -> Result<Grads<Self>, KernelError>;
}

impl KernelBackend for CubeBackend {
    fn kernel_plan(
        device: &Self::Device,
        dtype: DType,
        call: &KernelCall,
    ) -> Result<Plan, KernelError> {
        call.plan(&device.client(), dtype)
    }

    fn f32_products_need_f64(device: &Self::Device) -> bool {
        let client = device.client();
        dilated_attention_kernels::f32_matmul_may_use_tf32(&client)
            && dilated_attention_kernels::supports_f64(&client)
    }

    fn kernel_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: Option<IntTensor<Self>>,
        call: &KernelCall,
        plan: Plan,
    ) -> Result<(FloatTensor<Self>, FloatTensor<Self>), KernelError> {
        run::forward(q, k, v, mask, call, &plan)
    }

    fn kernel_backward(
        saved: Saved<FloatTensor<Self>>,
        mask: Option<IntTensor<Self>>,
        dout: FloatTensor<Self>,
        dlse: Option<FloatTensor<Self>>,
        call: &KernelCall,
        plan: Plan,
    ) -> Result<Grads<Self>, KernelError> {
        run::backward(saved, mask, dout, dlse, call, &plan)
    }
}

/// The kernels of one call as a Fusion operation: `inputs` are read in order, `outputs`
/// written in order.
#[derive(Debug)]
struct KernelOp<B> {
    call: KernelCall,
    plan: Plan,
    pass: Pass,
    inputs: Vec<TensorIr>,
    outputs: Vec<TensorIr>,
    _backend: core::marker::PhantomData<fn() -> B>,
}

/// Which pass a [`KernelOp`] runs, and which of its optional inputs it has.
#[derive(Debug, Clone, Copy)]
enum Pass {
    Forward { masked: bool },
    Backward { masked: bool, with_dlse: bool },
}

impl<B: FusionBackend + KernelBackend> Operation<B::FusionRuntime> for KernelOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) -> Result<(), burn::tensor::ExecutionError> {
        let fail = |e: KernelError| burn::tensor::ExecutionError::WithContext {
            reason: format!("dilated attention kernels: {e}"),
        };
        let ins = &self.inputs;
        match self.pass {
            Pass::Forward { masked } => {
                let [q, k, v] = [0, 1, 2].map(|i| handles.get_float_tensor::<B>(&ins[i]));
                let mask = masked.then(|| handles.get_int_tensor::<B>(&ins[3]));
                let (out, lse) =
                    B::kernel_forward(q, k, v, mask, &self.call, self.plan).map_err(fail)?;
                handles.register_float_tensor::<B>(&self.outputs[0].id, out);
                handles.register_float_tensor::<B>(&self.outputs[1].id, lse);
            }
            Pass::Backward { masked, with_dlse } => {
                // Inputs: q, k, v, out, lse, dout, [dlse], [mask].
                let [q, k, v, out, lse, dout] =
                    [0, 1, 2, 3, 4, 5].map(|i| handles.get_float_tensor::<B>(&ins[i]));
                let saved = Saved { q, k, v, out, lse };
                let dlse = with_dlse.then(|| handles.get_float_tensor::<B>(&ins[6]));
                let mask = masked.then(|| handles.get_int_tensor::<B>(&ins[ins.len() - 1]));
                let (dq, dk, dv) =
                    B::kernel_backward(saved, mask, dout, dlse, &self.call, self.plan)
                        .map_err(fail)?;
                for (ir, grad) in self.outputs.iter().zip([dq, dk, dv]) {
                    handles.register_float_tensor::<B>(&ir.id, grad);
                }
            }
        }
        Ok(())
    }
}

/// Registers `op`'s kernels on the stream of `client` with `inputs`, returning lazy tensors of
/// the `outputs` shapes and dtypes.
fn register<B: FusionBackend + KernelBackend, const N: usize>(
    client: &GlobalFusionClient<B::FusionRuntime>,
    id: &str,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    outputs: [(Shape, DType); N],
    call: &KernelCall,
    plan: Plan,
    pass: Pass,
) -> Result<[FusionTensor<B::FusionRuntime>; N], KernelError> {
    let inputs: Vec<TensorIr> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let outputs: Vec<TensorIr> = outputs
        .into_iter()
        .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype))
        .collect();
    let desc = CustomOpIr {
        id: id.into(),
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        scalars: Vec::new(),
    };
    let op = KernelOp::<B> {
        call: call.clone(),
        plan,
        pass,
        inputs,
        outputs,
        _backend: core::marker::PhantomData,
    };
    let handles = client.register(StreamId::current(), OperationIr::Custom(desc), op);
    let count = handles.len();
    handles.try_into().map_err(|_| KernelError::Shape {
        arg: "outputs",
        expected: format!("Fusion to return the {N} outputs registered, got {count}"),
    })
}

impl<B: FusionBackend + KernelBackend> KernelBackend for Fusion<B> {
    fn kernel_plan(
        device: &Self::Device,
        dtype: DType,
        call: &KernelCall,
    ) -> Result<Plan, KernelError> {
        B::kernel_plan(device, dtype, call)
    }

    fn f32_products_need_f64(device: &Self::Device) -> bool {
        B::f32_products_need_f64(device)
    }

    fn kernel_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: Option<IntTensor<Self>>,
        call: &KernelCall,
        plan: Plan,
    ) -> Result<(FloatTensor<Self>, FloatTensor<Self>), KernelError> {
        let client = q.client.clone();
        let [b, h, n, d] = dims4(&q.shape);
        let outputs = [
            (Shape::from([b, h, n, d]), q.dtype),
            (Shape::from([b, h, n]), DType::F32),
        ];
        let masked = mask.is_some();
        let inputs = [q, k, v].into_iter().chain(mask).collect();
        let pass = Pass::Forward { masked };
        let [out, lse] = register::<B, 2>(
            &client,
            "dilated_attention_forward",
            inputs,
            outputs,
            call,
            plan,
            pass,
        )?;
        Ok((out, lse))
    }

    fn kernel_backward(
        saved: Saved<FloatTensor<Self>>,
        mask: Option<IntTensor<Self>>,
        dout: FloatTensor<Self>,
        dlse: Option<FloatTensor<Self>>,
        call: &KernelCall,
        plan: Plan,
    ) -> Result<Grads<Self>, KernelError> {
        let client = saved.q.client.clone();
        let dtype = saved.q.dtype;
        let (q_shape, kv_shape) = (saved.q.shape.clone(), saved.k.shape.clone());
        let outputs = [
            (q_shape, dtype),
            (kv_shape.clone(), dtype),
            (kv_shape, dtype),
        ];
        let pass = Pass::Backward {
            masked: mask.is_some(),
            with_dlse: dlse.is_some(),
        };
        let inputs = [saved.q, saved.k, saved.v, saved.out, saved.lse, dout]
            .into_iter()
            .chain(dlse)
            .chain(mask)
            .collect();
        let [dq, dk, dv] = register::<B, 3>(
            &client,
            "dilated_attention_backward",
            inputs,
            outputs,
            call,
            plan,
            pass,
        )?;
        Ok((dq, dk, dv))
    }
}

fn dims4(shape: &Shape) -> [usize; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

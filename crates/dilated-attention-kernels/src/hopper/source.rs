//! The CUDA C++ of the Hopper kernels, generated on a machine without a GPU.
//!
//! A launch compiles a kernel inside the CUDA runtime, which needs a device. Here the same
//! expansion runs against the properties an sm_90 device reports (an H100/H200: 132 SMs,
//! 227 KB of shared memory a cube, the features `cubecl-cuda` registers from compute
//! capability 9.0) and stops at the CUDA C++ that NVRTC would receive, with the launch bounds
//! the patched `cubecl-cuda` adds for a kernel's `cubecl-min-blocks-per-sm` marker. NVRTC and
//! `ptxas` from NVIDIA's wheels then give registers, spills and SASS without a GPU: a kernel
//! that does not compile, or spills, is caught before it costs device time.
//!
//! The launch arguments are those a plan with the case's [`Sm80Tuning`] passes on sm_90 (the
//! default: the persistent forward): the forward, the `dQ` kernel and the `dK/dV` kernel of the
//! Hopper backward, each unmasked, non-causal or causal, storing gradients in the input dtype
//! or adding to f32.

use std::sync::Arc;

use cubecl::__private::Runtime;
use cubecl::Compiler;
use cubecl::cuda::compiler::CudaBackend;
use cubecl::cuda::{CudaCompilationOptions, CudaCompiler, CudaRuntime};
use cubecl::ir::features::{Plane, Tma};
use cubecl::ir::nvidia::SmArch;
use cubecl::ir::{
    DeviceIdentity, DeviceProperties, HardwareProperties, MemoryDeviceProperties, OpaqueType,
    VectorSize,
};
use cubecl::prelude::*;
use cubecl::profile::TimingMethod;
use cubecl::server::Handle;
use cubecl_cpp::shared::{CompilationOptions, CppSupportedFeatures};
use half::{bf16, f16};

use super::backward_dkdv::{self as dkdv, backward_dkdv_wgmma};
use super::backward_dkdv_handed::backward_dkdv_handed;
use super::backward_dq::backward_dq_wgmma;
use super::backward_dq_handed::backward_dq_handed;
use super::forward::{self as fwd, Variant, block_sparse_forward_wgmma};
use super::schedule::{ScheduleLaunch, resident_cubes};
use crate::args::{AttnDtype, GradOperandsLaunch, OperandsLaunch, Pass};
use crate::{KernelError, Sm80Tuning};

/// Streaming multiprocessors of an H100 SXM / H200.
const SMS: u32 = 132;
/// Shared memory a cube may opt into on sm_90.
const MAX_SHARED: usize = 227 * 1024;
/// Units per cube, at most.
const MAX_UNITS: u32 = 1024;
/// Vector width of the tensor-core families' rows (8 halves, 16 bytes).
const WIDTH: VectorSize = 8;

/// One generated kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// The kernel's role and shape, usable as a file stem: `forward_f16_d64_b128`.
    pub name: String,
    /// The CUDA entry point in `source`.
    pub entry: String,
    /// Units per cube it is launched with.
    pub threads: u32,
    /// CUDA C++ as NVRTC would receive it, launch bounds included.
    pub source: String,
}

/// The shape of the kernels to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCase {
    /// f16 or bf16.
    pub dtype: AttnDtype,
    /// 64 or 128.
    pub head_dim: usize,
    /// Tokens a block: 128 or 256.
    pub block: usize,
    /// Causal masking.
    pub causal: bool,
    /// Gradients stored in the input dtype (one class covers every row) instead of added to f32.
    pub store: bool,
    /// The tuning whose forward switches (`overlap_softmax`, `wide_chunks`, `paired_pv`,
    /// `lazy_rescale`, `persistent_forward`, `forward_min_blocks`, `register_move`, ...) shape
    /// the forward.
    pub tuning: Sm80Tuning,
}

/// The CUDA C++ of the Hopper forward, `dQ` and `dK/dV` kernels for `case`, as a plan with
/// its tuning would launch them on an sm_90 device (and, with `handed_dq` and `handed_dkdv`,
/// the handed `dQ` and `dK/dV`).
///
/// # Errors
///
/// [`KernelError::Unsupported`] for a dtype, head dim or block the family does not serve, or
/// a kernel whose expansion or compilation fails (its message says which and why).
pub fn hopper_sources(case: SourceCase) -> Result<Vec<KernelSource>, KernelError> {
    let bf16 = match case.dtype {
        AttnDtype::F16 => false,
        AttnDtype::BF16 => true,
        AttnDtype::F32 => {
            return Err(KernelError::unsupported("dtype", "wgmma takes f16 or bf16"));
        }
    };
    if !fwd::serves_head_dim(case.head_dim) {
        return Err(KernelError::unsupported("head_dim", "64 or 128"));
    }
    if !matches!(case.block, 128 | 256) {
        return Err(KernelError::unsupported("block", "128 or 256"));
    }
    let pass = Pass {
        head_dim: case.head_dim,
        block: case.block,
        causal: case.causal,
        masked: false,
    };
    let props = Arc::new(sm90_properties());
    let target = Arc::new(<CudaRuntime as Runtime>::target_properties());
    let tuning = case.tuning;
    // The stand-in launch has every tensor map.
    let variant = Variant::of(&tuning, pass, tuning.tma_loads, true);
    // As `launch::forward` picks them: the cubes an SM holds, which the launch bounds ask for.
    let shared = fwd::shared_bytes(case.head_dim, variant.queries);
    let per_sm = resident_cubes(MAX_SHARED, shared, variant.per_sm_cap());
    let persistent = tuning.persistent_forward > 0;
    let min_blocks = match tuning.forward_min_blocks {
        _ if persistent => per_sm,
        0 => per_sm,
        wanted => {
            let wanted = u32::from(wanted.min(4));
            let fits = wanted as usize * (shared + 1024) <= MAX_SHARED + 1024;
            if wanted > 1 && fits { wanted } else { 0 }
        }
    };
    let grid = match persistent {
        true => CubeCount::Static(SMS * per_sm, 1, 1),
        false => CubeCount::Static(64, 8, 1),
    };
    let dim = |threads: usize| CubeDim::new_1d(threads as u32);
    let suffix = format!(
        "{}_d{}_b{}{}",
        if bf16 { "bf16" } else { "f16" },
        case.head_dim,
        case.block,
        if case.causal { "_causal" } else { "" }
    );
    let grads = if case.store { "store" } else { "add" };

    macro_rules! build {
        ($f:ty, $g:ty) => {{
            let forward = block_sparse_forward_wgmma::create_dummy_kernel::<$f>(
                props.clone(),
                target.clone(),
                grid.clone(),
                dim(variant.threads()),
                WIDTH,
                operands(),
                tensor(4, 2),
                tensor(4, 4),
                pass,
                false,
                min_blocks,
                false,
                bf16,
                tuning.lazy_rescale,
                persistent,
                variant,
                ScheduleLaunch::new(SMS * per_sm * 4, 64, 8),
                gather_map(bf16),
                gather_map(bf16),
                gather_map(bf16),
            );
            let dq = backward_dq_wgmma::create_dummy_kernel::<$f, $g>(
                props.clone(),
                target.clone(),
                CubeCount::Static(64, 8, 1),
                dim(fwd::THREADS),
                WIDTH,
                operands(),
                grad_operands(),
                tensor(4, 4),
                pass,
                case.store,
                bf16,
                tuning.tma_loads,
                gather_map(bf16),
                gather_map(bf16),
            );
            let dkdv = backward_dkdv_wgmma::create_dummy_kernel::<$f, $g>(
                props.clone(),
                target.clone(),
                CubeCount::Static(64, 8, 1),
                dim(dkdv::threads(case.head_dim)),
                WIDTH,
                operands(),
                grad_operands(),
                tensor(4, 4),
                tensor(4, 4),
                tensor(4, 4),
                pass,
                case.store,
                bf16,
                tuning.tma_loads,
                tuning.fused_dq,
                gather_map(bf16),
                gather_map(bf16),
            );
            let mut sources = vec![
                compile(format!("forward_{suffix}"), &forward)?,
                compile(format!("dq_{grads}_{suffix}"), &dq)?,
                compile(format!("dkdv_{grads}_{suffix}"), &dkdv)?,
            ];
            if tuning.handed_dq {
                let handed = backward_dq_handed::create_dummy_kernel::<$f, $g>(
                    props.clone(),
                    target.clone(),
                    CubeCount::Static(SMS, 1, 1),
                    dim(fwd::THREADS),
                    WIDTH,
                    operands(),
                    grad_operands(),
                    tensor(4, 4),
                    pass,
                    case.store,
                    bf16,
                    true,
                    ScheduleLaunch::new(SMS * 4, 64, 8),
                    gather_map(bf16),
                    gather_map(bf16),
                    gather_map(bf16),
                    gather_map(bf16),
                );
                sources.push(compile(format!("dq_handed_{grads}_{suffix}"), &handed)?);
            }
            if tuning.handed_dkdv {
                let handed = backward_dkdv_handed::create_dummy_kernel::<$f, $g>(
                    props.clone(),
                    target.clone(),
                    CubeCount::Static(SMS, 1, 1),
                    dim(dkdv::threads(case.head_dim)),
                    WIDTH,
                    operands(),
                    grad_operands(),
                    tensor(4, 4),
                    tensor(4, 4),
                    pass,
                    case.store,
                    bf16,
                    tuning.tma_loads,
                    ScheduleLaunch::new(SMS * 4, 64, 8),
                    gather_map(bf16),
                    gather_map(bf16),
                );
                sources.push(compile(format!("dkdv_handed_{grads}_{suffix}"), &handed)?);
            }
            sources
        }};
    }
    Ok(match (bf16, case.store) {
        (false, false) => build!(f16, f32),
        (false, true) => build!(f16, f16),
        (true, false) => build!(bf16, f32),
        (true, true) => build!(bf16, bf16),
    })
}

/// The properties an sm_90 device reports to `cubecl-cuda` (what its runtime registers from
/// compute capability 9.0 and the device's attributes), as far as the Hopper kernels read them.
fn sm90_properties() -> DeviceProperties {
    let memory = MemoryDeviceProperties::new(1 << 34, 512).with_max_memory(1 << 36);
    let hardware = HardwareProperties {
        load_width: 128,
        vector_register_count: None,
        plane_size_min: 32,
        plane_size_max: 32,
        max_bindings: 1024,
        max_shared_memory_size: MAX_SHARED,
        max_cube_count: (i32::MAX as u32, 65535, 65535),
        max_units_per_cube: MAX_UNITS,
        max_cube_dim: (MAX_UNITS, MAX_UNITS, 64),
        num_streaming_multiprocessors: Some(SMS),
        num_tensor_cores: Some(4),
        min_tensor_cores_dim: Some(8),
        num_cpu_cores: None,
        last_level_cache_size: None,
        max_vector_size: VectorSize::MAX,
        cube_mma_reserved_shared_memory: 0,
    };
    let mut props = DeviceProperties::new(
        Default::default(),
        memory,
        hardware,
        TimingMethod::Device,
        DeviceIdentity {
            name: "sm_90 (offline)".into(),
            fingerprint: "ptx_sm90".into(),
            physical: None,
        },
    );
    cubecl_cpp::register_supported_types(&mut props);
    props.register_opaque_type(OpaqueType::Barrier);
    props.register_opaque_type(OpaqueType::TensorMap);
    let features = &mut props.features;
    features.plane.insert(Plane::Sync);
    features.plane.insert(Plane::Ops);
    features.plane.insert(Plane::NonUniformControlFlow);
    features.copy_async = true;
    features.tma.insert(Tma::Base);
    features.cube_cluster = true;
    features.memory_reinterpret = true;
    features.alignment = true;
    features.device_memory_scope = true;
    props
}

/// What `cubecl-cuda` compiles with on an sm_90 device.
fn sm90_options() -> CudaCompilationOptions {
    CudaCompilationOptions {
        cpp: CompilationOptions {
            warp_size: 32,
            supports_features: CppSupportedFeatures {
                fast_math: true,
                dp4a: true,
                grid_constants: true,
                clusters: true,
                elect_sync: true,
                ..Default::default()
            },
            ..Default::default()
        },
        arch: Some(SmArch::new(90, true)),
        ptx_version: None,
    }
}

/// Expands `kernel` unchecked (as `launch_unchecked` does) and compiles it to CUDA C++, with
/// the launch bounds its `cubecl-min-blocks-per-sm` marker asks for.
fn compile<K: CubeKernel>(name: String, kernel: &K) -> Result<KernelSource, KernelError> {
    let failed = |why: String| KernelError::unsupported("kernel", format!("{name}: {why}"));
    let mut definition = cubecl::define_kernel(kernel).map_err(|e| failed(e.to_string()))?;
    definition.settings.execution_mode = ExecutionMode::Unchecked;
    let threads = definition.settings.cube_dim.num_elems();
    let entry = definition.settings.kernel_name.clone();
    let compiled = CudaCompiler::new(CudaBackend::Cpp)
        .compile(definition, &sm90_options())
        .map_err(|e| failed(e.to_string()))?;
    Ok(KernelSource {
        name,
        entry,
        threads,
        source: with_min_blocks(&compiled.to_string()),
    })
}

/// `source` with `__launch_bounds__(T)` made `__launch_bounds__(T, N)` where it carries the
/// marker `cubecl-min-blocks-per-sm=N` (what the patched `cubecl-cuda` does before NVRTC).
fn with_min_blocks(source: &str) -> String {
    const MARKER: &str = "cubecl-min-blocks-per-sm=";
    const BOUNDS: &str = "__launch_bounds__(";
    let blocks = source.find(MARKER).and_then(|at| {
        let digits: String = source[at + MARKER.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u32>().ok().filter(|&n| n > 0)
    });
    let close = source.find(BOUNDS).and_then(|open| {
        let open = open + BOUNDS.len();
        let close = open + source[open..].find(')')?;
        (!source[open..close].contains(',')).then_some(close)
    });
    match (blocks, close) {
        (Some(blocks), Some(close)) => {
            let mut patched = source.to_string();
            patched.insert_str(close, &format!(", {blocks}"));
            patched
        }
        _ => source.to_string(),
    }
}

/// A stand-in tensor argument: shapes and strides of a `[1, 8, 8192, 128]` tensor over a
/// handle that addresses no memory (nothing is launched).
fn tensor(rank: usize, elem_size: u64) -> TensorArg {
    let (shape, strides): (Vec<usize>, Vec<usize>) = match rank {
        1 => (vec![1 << 20], vec![1]),
        2 => (vec![1, 8192], vec![8192, 1]),
        3 => (vec![1, 8, 8192], vec![8 * 8192, 8192, 1]),
        _ => (
            vec![1, 8, 8192, 128],
            vec![8 * 8192 * 128, 8192 * 128, 128, 1],
        ),
    };
    let elems: usize = shape.iter().product();
    let handle = stand_in_handle(elems as u64 * elem_size);
    // SAFETY: the argument is only expanded and compiled, never launched or read.
    unsafe { TensorArg::from_raw_parts(handle, strides.into(), shape.into()) }
}

/// A gathering tensor map (`super::tma`) over a stand-in `[1, 8, 8192, 128]` tensor at
/// dilation 2.
fn gather_map(bf16: bool) -> TensorMapArg<Tiled> {
    let elem = match bf16 {
        true => AttnDtype::BF16.elem(),
        false => AttnDtype::F16.elem(),
    };
    let row = 128;
    let handle = stand_in_handle(8 * 8192 * row as u64 * 2);
    // SAFETY: only expanded and compiled, never launched.
    let arg = unsafe {
        TensorArg::from_raw_parts(
            handle,
            vec![8 * 8192 * row, 8192 * row, 2 * row, row, 1].into(),
            vec![1, 8, 4096, 2, row].into(),
        )
    };
    TensorMapArg::new(
        TiledArgs {
            tile_size: vec![1, 1, 64, 1, 64].into(),
        },
        arg,
        elem,
    )
    .with_swizzle(TensorMapSwizzle::B128)
}

/// A handle of `bytes` that addresses no memory (nothing is launched).
fn stand_in_handle(bytes: u64) -> Handle {
    let service =
        cubecl_common::device::ServiceId::of::<CudaRuntime>(cubecl_common::device::DeviceId {
            type_id: 0,
            index_id: 0,
        });
    Handle::new(
        service,
        cubecl_environment::stream::StreamId::current(),
        bytes,
    )
}

/// `Operands` over stand-in tensors (values and layout words are never read).
fn operands<T: CubePrimitive>() -> OperandsLaunch<T> {
    OperandsLaunch::new(
        tensor(4, 2),
        tensor(4, 2),
        tensor(4, 2),
        tensor(2, 4),
        tensor(1, 4),
        tensor(1, 4),
        tensor(1, 4),
        0.125,
        f32::NEG_INFINITY,
        f32::NAN,
    )
}

/// `GradOperands` over stand-in tensors.
fn grad_operands<T: CubePrimitive>() -> GradOperandsLaunch<T> {
    GradOperandsLaunch::new(tensor(4, 2), tensor(3, 4), tensor(3, 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_bounds_take_the_marker() {
        let src = "// cubecl-min-blocks-per-sm=2\nextern \"C\" __global__ void __launch_bounds__(288) k()";
        assert!(with_min_blocks(src).contains("__launch_bounds__(288, 2)"));
        let plain = "extern \"C\" __global__ void __launch_bounds__(288) k()";
        assert_eq!(with_min_blocks(plain), plain);
    }

    #[test]
    fn sources_of_the_default_plan() {
        let case = SourceCase {
            dtype: AttnDtype::F16,
            head_dim: 64,
            block: 128,
            causal: false,
            store: false,
            tuning: Sm80Tuning::default(),
        };
        let sources = hopper_sources(case).expect("the Hopper kernels expand offline");
        assert_eq!(sources.len(), 3);
        for s in &sources {
            assert!(
                s.source.contains("wgmma.mma_async"),
                "{} has no wgmma",
                s.name
            );
            assert!(s.source.contains("__launch_bounds__"), "{}", s.name);
        }
        assert!(sources[0].source.contains("__launch_bounds__(288, 2)"));
    }
}

//! Stub of `cubecl-llvm` 0.11.3: the items `cubecl-cuda` names, none of which is reached when
//! cubecl's `cuda-cpp` feature selects the CUDA C++ (NVRTC) compiler. Taking the LLVM path
//! panics with a message that names the missing feature.

use cubecl_core::CompilationError;
use cubecl_core::ir::DeviceProperties;
use cubecl_core::prelude::KernelDefinition;

const MISSING: &str = "cubecl-llvm is stubbed in this workspace: enable cubecl's `cuda-cpp` \
                       feature so that cubecl-cuda compiles through CUDA C++ and NVRTC";

/// PTX versions (only carried through cubecl-cuda's options and cache keys).
pub mod nvptx {
    /// The PTX version a driver loads.
    pub mod ptx_version {
        /// A PTX ISA version, e.g. 87 for PTX 8.7.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion(pub u32);

        impl PtxVersion {
            /// The stub knows no driver table: the C++ path does not need one.
            pub fn for_driver(_driver: i32) -> Option<Self> {
                None
            }
        }

        impl core::fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "ptx{}", self.0)
            }
        }
    }
}

/// Feature lowering for the LLVM targets.
pub mod shared {
    /// Narrows device features to what the LLVM backends lower.
    pub mod lowered_features {
        use super::super::{DeviceProperties, MISSING};

        /// The GPU targets of the LLVM backend.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            /// NVIDIA PTX.
            Nvptx,
        }

        /// Only called on the LLVM backend, which the stub does not have.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {
            panic!("{MISSING}");
        }
    }
}

/// LLVM targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    /// Host CPU.
    #[default]
    Cpu,
    /// NVIDIA PTX.
    Nvptx,
}

/// The LLVM compiler (stub: every compilation fails).
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    /// Target of the compilation.
    pub target: LlvmTarget,
}

/// Options of the LLVM compiler.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMD architecture.
    pub arch: Option<cubecl_core::ir::amd::GfxArch>,
    /// NVIDIA architecture.
    pub sm_arch: Option<cubecl_core::ir::nvidia::SmArch>,
    /// PTX version to emit.
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    /// Whether kernel parameters are grid constants.
    pub grid_constants: bool,
}

/// A compiled PTX module.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX.
    pub ptx: Vec<core::ffi::c_char>,
    /// Entry point name.
    pub entrypoint: String,
    /// The LLVM IR it came from.
    pub ir: String,
    /// Static shared memory in bytes.
    pub shared_memory_size: usize,
    /// What the kernel does with each buffer.
    pub io: Vec<cubecl_core::ir::attributes::BufferIOAttr>,
}

/// What the LLVM compiler produces.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    /// PTX for NVIDIA GPUs.
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NvptxCode(m) => write!(f, "{}", m.ir),
        }
    }
}

impl cubecl_core::Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &PlironOptions,
    ) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic {
            reason: MISSING.into(),
            backtrace: cubecl_core::environment::backtrace::BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}

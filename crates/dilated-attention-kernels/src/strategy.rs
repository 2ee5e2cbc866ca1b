//! Which kernel family serves a call, decided once from what the device reports.
//!
//! [`plan`] looks at the device's features (manual MMA and `ldmatrix`, `cmma`, element types,
//! plane width), the dtype, head dim and block size, and whether the call is a windowed ring
//! step, and returns a [`Plan`]: the [`Strategy`] with its tuning, and the buffer contract that
//! follows from it (whether the forward merges branches in the kernel, whether the backward
//! can store its gradients, whether `dQ` is added by the `dK/dV` kernel). The caller sizes its
//! buffers from the plan and hands the same plan to every launch; the launchers never decide
//! again. A strategy can be forced (benchmarks and tests compare families that way); a forced
//! strategy that cannot serve the call is an [`KernelError::Unsupported`] naming `strategy`.

use cubecl::features::{AtomicUsage, MmaConfig};
use cubecl::ir::{ElemType, FloatKind, Type};
use cubecl::prelude::*;
use cubecl::tf32;

use crate::KernelError;
use crate::args::{AttnDtype, KernelConfig};
pub use crate::tuning::Sm80Tuning;

/// A kernel family (serde: `"portable"`, `"cmma"`, `{"sm80": {...}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Plain CubeCL: one unit per query row, f32 accumulation; every runtime and dtype (WGSL
    /// on lavapipe in CI).
    Portable,
    /// Tensor cores through CubeCL's `cmma` (16×16×16): f16/bf16, head dim 32 or 64, blocks of
    /// 64 or 128, 32-wide planes; no ring windows.
    Cmma,
    /// Ampere-style tensor-core kernels: `mma.sync.m16n8k16`, `ldmatrix`, `cp.async` (CUDA
    /// sm_80 and later): f16/bf16, head dim 32, 64 or 128, blocks of 64, 128 or 256.
    Sm80(Sm80Tuning),
}

impl Strategy {
    /// The family's name, as benchmark rows and logs print it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Cmma => "cmma",
            Self::Sm80(_) => "sm80",
        }
    }

    /// Whether this strategy serves `config` (windowed or not) on `client`, or why not.
    pub fn serves(
        &self,
        client: &Client,
        config: &KernelConfig,
        windowed: bool,
    ) -> Result<(), KernelError> {
        config.check_on(client)?;
        let refuse = |rule: String| Err(KernelError::unsupported("strategy", rule));
        match self {
            Self::Portable => Ok(()),
            Self::Cmma if windowed => refuse("the cmma kernels take no ring window".into()),
            Self::Cmma if !cmma_applies(client, config) => refuse(format!(
                "cmma needs f16/bf16 16x16x16 cmma into f32 on 32-wide planes, head dim 32 \
                 or 64 and blocks of 64 or 128; got {config:?}"
            )),
            Self::Cmma => Ok(()),
            Self::Sm80(tuning) => {
                if !matches!(tuning.forward_tiles, 1 | 2) || !matches!(tuning.dq_tiles, 1 | 2) {
                    return refuse(format!("sm80 tiles must be 1 or 2, got {tuning:?}"));
                }
                if sm80_applies(client, config) {
                    Ok(())
                } else {
                    refuse(format!(
                        "sm80 needs manual 16x8x16 f16/bf16 MMA with ldmatrix (CUDA sm_80+), \
                         head dim 32, 64 or 128 and blocks of 64, 128 or 256; got {config:?}"
                    ))
                }
            }
        }?;
        let (need, limit) = (self.shared_bytes(config), shared_limit(client));
        if need > limit {
            return refuse(format!(
                "{} needs {need} B of shared memory a cube at head dim {}, blocks of {}; this \
                 device gives a cube {limit} B",
                self.name(),
                config.head_dim,
                config.block
            ));
        }
        Ok(())
    }

    /// The most shared memory one cube of the family's kernels takes for `config`, in bytes
    /// (the `dK/dV` kernel of [`Strategy::Sm80`] without the fused `dQ`, which the plan only
    /// turns on where it fits too).
    pub fn shared_bytes(&self, config: &KernelConfig) -> usize {
        let (d, block, nv) = (config.head_dim, config.block, self.row_width());
        match self {
            Self::Portable => crate::portable::shared_bytes(d),
            Self::Cmma => {
                crate::cmma::forward::shared_bytes(d).max(crate::cmma::backward::shared_bytes(d))
            }
            Self::Sm80(tuning) => {
                let forward = crate::sm80::forward::shared_bytes(
                    d,
                    block,
                    usize::from(tuning.forward_tiles),
                    nv,
                );
                let dq = crate::sm80::backward_dq::dq_shared_bytes(
                    d,
                    block,
                    usize::from(tuning.dq_tiles),
                    nv,
                );
                let dkdv = crate::sm80::backward_dkdv::dkdv_shared_bytes(
                    d,
                    crate::sm80::backward_dkdv::ROWS,
                    nv,
                    false,
                );
                forward.max(dq).max(dkdv)
            }
        }
    }

    /// Vector width of the row loads the family needs: 8 (16-byte loads, so the head dim
    /// contiguous and row starts 8-aligned) for the tensor-core families, 1 otherwise.
    pub fn row_width(&self) -> usize {
        match self {
            Self::Portable => 1,
            Self::Cmma | Self::Sm80(_) => 8,
        }
    }
}

/// The strategy of one call and the buffer contract that follows from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    strategy: Strategy,
    config: KernelConfig,
    windowed: bool,
    fused_dq: bool,
    wgmma_forward: bool,
    wgmma_dq: bool,
    wgmma_dkdv: bool,
    unroll: bool,
}

impl Plan {
    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The configuration the plan was made for.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Whether the plan is for a windowed launch (a ring step).
    pub fn windowed(&self) -> bool {
        self.windowed
    }

    /// Whether the forward merges each branch into the output as it writes (one `out, lse`
    /// pair for all branches, every launch after the first with `merge`); otherwise each
    /// branch needs its own pair and the caller merges them.
    pub fn merges_in_kernel(&self) -> bool {
        matches!(self.strategy, Strategy::Sm80(_)) && !self.windowed
    }

    /// Whether the backward can store a class's gradients (`store`) instead of adding them:
    /// buffers in the inputs' dtype with no zero fill, for a caller whose one class covers
    /// every row.
    pub fn stores_gradients(&self) -> bool {
        matches!(self.strategy, Strategy::Sm80(_)) && !self.windowed
    }

    /// Whether the `dK/dV` kernel adds `dQ` by f32 atomics (then `dq` must be a zero-filled
    /// contiguous f32 buffer, also where the other gradients are stored).
    pub fn fuses_dq(&self) -> bool {
        self.fused_dq
    }

    /// Whether the forward runs on Hopper's warpgroup MMA (`crate::hopper::forward`).
    pub fn wgmma_forward(&self) -> bool {
        self.wgmma_forward
    }

    /// Whether the backward's `dQ` runs on Hopper's warpgroup MMA
    /// (`crate::hopper::backward_dq`).
    pub fn wgmma_dq(&self) -> bool {
        self.wgmma_dq
    }

    /// Whether the backward's `dK/dV` runs on Hopper's warpgroup MMA
    /// (`crate::hopper::backward_dkdv`), with `dQ` inside it where [`fuses_dq`](Self::fuses_dq)
    /// and on `wgmma` beside it otherwise.
    pub fn wgmma_dkdv(&self) -> bool {
        self.wgmma_dkdv
    }

    /// The kernels that run, as benchmark rows and logs name them: the strategy's name, or
    /// `wgmma` where some of the sm80 family's kernels run on Hopper's warpgroup MMA.
    pub fn label(&self) -> &'static str {
        if self.wgmma_forward || self.wgmma_dkdv {
            "wgmma"
        } else {
            self.strategy.name()
        }
    }

    pub(crate) fn unroll(&self) -> bool {
        self.unroll
    }

    pub(crate) fn sm80(&self) -> Option<Sm80Tuning> {
        match self.strategy {
            Strategy::Sm80(tuning) => Some(tuning),
            _ => None,
        }
    }

    /// Checks that the plan was made for a device like `client`'s and for `config`.
    pub(crate) fn check(&self, client: &Client, config: &KernelConfig) -> Result<(), KernelError> {
        if *config != self.config {
            return Err(KernelError::shape(
                "plan",
                format!("a plan for {config:?}, got one for {:?}", self.config),
            ));
        }
        self.strategy.serves(client, config, self.windowed)
    }
}

/// The plan for `config` (a windowed ring step or not) on `client`: `strategy` if given and it
/// serves, else the fastest family that does (sm80, then cmma, then portable).
pub fn plan(
    client: &Client,
    config: &KernelConfig,
    windowed: bool,
    strategy: Option<Strategy>,
) -> Result<Plan, KernelError> {
    let strategy = match strategy {
        Some(s) => {
            s.serves(client, config, windowed)?;
            s
        }
        None => {
            config.check_on(client)?;
            let fastest = [Strategy::Sm80(Sm80Tuning::default()), Strategy::Cmma]
                .into_iter()
                .find(|s| s.serves(client, config, windowed).is_ok());
            match fastest {
                Some(s) => s,
                None => {
                    Strategy::Portable.serves(client, config, windowed)?;
                    Strategy::Portable
                }
            }
        }
    };
    // The Hopper backward: `dK/dV` on `wgmma`, and `dQ` either inside it (`fused_dq`) or on
    // `wgmma` beside it.
    let wgmma_dkdv = match strategy {
        Strategy::Sm80(tuning) => {
            tuning.wgmma_backward
                && !windowed
                && config.dtype != AttnDtype::F32
                && crate::hopper::available(client)
                && crate::hopper::backward_dq::serves_head_dim(config.head_dim)
                && crate::hopper::backward_dkdv::serves_head_dim(config.head_dim)
                && config.block.is_multiple_of(crate::hopper::forward::ROWS)
        }
        _ => false,
    };
    let fused_dq = match strategy {
        Strategy::Sm80(tuning) => {
            tuning.fused_dq
                && !windowed
                && fused_dq_applies(client, config)
                && if wgmma_dkdv {
                    crate::hopper::backward_dkdv::shared_bytes(config.head_dim, true)
                        <= shared_limit(client)
                } else {
                    matches!(config.block, 64 | 128)
                        && crate::sm80::backward_dkdv::dkdv_shared_bytes(
                            config.head_dim,
                            config.block,
                            strategy.row_width(),
                            true,
                        ) <= shared_limit(client)
                }
        }
        _ => false,
    };
    let wgmma_forward = match strategy {
        Strategy::Sm80(tuning) => {
            // Ring windows stay on the manual-MMA forward until the ring check has run on
            // the Hopper one (its kernel takes a window; unmeasured).
            tuning.wgmma_forward
                && !windowed
                && crate::hopper::available(client)
                && crate::hopper::forward::serves_head_dim(config.head_dim)
                && config.block.is_multiple_of(crate::hopper::forward::ROWS)
                && crate::hopper::forward::shared_bytes(
                    config.head_dim,
                    tuning.tma_loads && tuning.tma_queries,
                ) <= shared_limit(client)
        }
        _ => false,
    };
    let wgmma_dq = wgmma_dkdv && !fused_dq;
    Ok(Plan {
        strategy,
        config: *config,
        windowed,
        fused_dq,
        wgmma_forward,
        wgmma_dq,
        wgmma_dkdv,
        unroll: unroll_inner_loops(client),
    })
}

/// The most shared memory a cube may take on `client`, in bytes (CUDA: the opt-in limit,
/// 227 KiB on Hopper, 99 KiB on consumer Ampere and Ada; Vulkan drivers often 48 KiB; WebGPU's
/// default 16 KiB).
fn shared_limit(client: &Client) -> usize {
    client.properties().hardware.max_shared_memory_size
}

/// Whether an f32 matrix product on `client` may round its operands to TF32: CubeCL's
/// accelerated matmul (what Burn's `matmul` autotunes to on CUDA) stages f32 operands as TF32
/// wherever the runtime has that type, a relative error near 1e-3 instead of f32's 1e-7.
pub fn f32_matmul_may_use_tf32(client: &Client) -> bool {
    client.properties().supports_type(tf32::elem_type_native())
}

/// Whether the runtime of `client` computes in f64.
pub fn supports_f64(client: &Client) -> bool {
    client.properties().supports_type(f64::elem_type_native())
}

/// The tensor-core shape `16×n×16` for `dtype` operands into f32 accumulators, where the tensor
/// cores take that dtype (f16, bf16) and planes are 32 wide; `None` otherwise.
fn half_mma(client: &Client, dtype: AttnDtype, n: u32) -> Option<MmaConfig> {
    let hw = &client.properties().hardware;
    let planes_32 = hw.plane_size_min == 32 && hw.plane_size_max == 32;
    (dtype != AttnDtype::F32 && planes_32).then(|| MmaConfig {
        a_type: dtype.elem(),
        b_type: dtype.elem(),
        cd_type: AttnDtype::F32.elem(),
        m: 16,
        n,
        k: 16,
    })
}

/// `cmma` at 16×16×16 into f32, head dim 32 or 64, block 64 or 128.
fn cmma_applies(client: &Client, config: &KernelConfig) -> bool {
    half_mma(client, config.dtype, 16).is_some_and(|mma| {
        matches!(config.head_dim, 32 | 64)
            && matches!(config.block, 64 | 128)
            && client.features().matmul.cmma.contains(&mma)
    })
}

/// Manual `mma` at 16×8×16 into f32 and `ldmatrix`, head dim 32, 64 or 128, block 64–256.
fn sm80_applies(client: &Client, config: &KernelConfig) -> bool {
    let features = client.features();
    half_mma(client, config.dtype, 8).is_some_and(|mma| {
        matches!(config.head_dim, 32 | 64 | 128)
            && matches!(config.block, 64 | 128 | 256)
            && features.matmul.mma.contains(&mma)
            && features.matmul.ldmatrix.contains(&config.dtype.elem())
    })
}

/// The fused `dQ`: `stmatrix` for the dtype, paired f32 atomic adds, and head dims 64 and 128
/// (the manual-MMA kernel also takes only blocks of 64 or 128: with blocks of 256 and head
/// dim 32 its gradients were wrong on the H200, `docs/notes.md`).
fn fused_dq_applies(client: &Client, config: &KernelConfig) -> bool {
    let pairs = Type::atomic(Type::new(ElemType::Float(FloatKind::F32)).with_vector_size(2));
    matches!(config.head_dim, 64 | 128)
        && client
            .features()
            .matmul
            .stmatrix
            .contains(&config.dtype.elem())
        && client
            .properties()
            .atomic_type_usage(pairs)
            .contains(AtomicUsage::Add)
}

/// Whether the portable kernels unroll their loops over the head dim.
///
/// Unrolled, the query row and the accumulators stay in registers (on CUDA the rolled loops
/// index them dynamically, which puts them in local memory). Not on Mesa's lavapipe (plane
/// width 8): its LLVM compiles the unrolled kernels very slowly, and it stops every loop
/// after 65 535 iterations per invocation, counted over all loops, so kernels there are
/// exact only while `n · head_dim` per row stays well under that (the CI sizes do).
fn unroll_inner_loops(client: &Client) -> bool {
    client.properties().hardware.plane_size_max > 8
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn config(head_dim: usize, block: usize) -> KernelConfig {
        KernelConfig {
            dtype: AttnDtype::F16,
            head_dim,
            block,
            causal: true,
            scale: 0.125,
        }
    }

    /// Every shape the `cmma` kernels serve fits the 48 KiB a cube that Vulkan drivers give
    /// (NVIDIA's on the H100 among them; the forward's output tile took it to 49.1 KiB).
    #[rstest]
    fn cmma_fits_48_kib(#[values(32, 64)] head_dim: usize, #[values(64, 128)] block: usize) {
        let need = Strategy::Cmma.shared_bytes(&config(head_dim, block));
        assert!(need <= 48 * 1024, "{need}");
    }

    /// The sm80 kernels at their defaults fit an A100's 163 KiB at every shape they serve.
    #[rstest]
    fn sm80_fits_an_a100(
        #[values(32, 64, 128)] head_dim: usize,
        #[values(64, 128, 256)] block: usize,
    ) {
        let need = Strategy::Sm80(Sm80Tuning::default()).shared_bytes(&config(head_dim, block));
        assert!(need <= 163 * 1024, "{need}");
    }

    /// At head dim 128 the sm80 `dQ` cube (128 query rows, two stages of 64 keys and values)
    /// passes the 99 KiB of consumer Ampere and Ada GPUs, where the plan refuses the family;
    /// head dim 64 fits there.
    #[test]
    fn sm80_at_head_dim_128_passes_99_kib() {
        let sm80 = Strategy::Sm80(Sm80Tuning::default());
        assert_eq!(sm80.shared_bytes(&config(128, 128)), 139_792);
        assert!(sm80.shared_bytes(&config(64, 256)) <= 99 * 1024);
    }

    /// The portable kernels fit lavapipe's 32 KiB at every head dim.
    #[rstest]
    fn portable_fits_32_kib(#[values(32, 64, 96, 128)] head_dim: usize) {
        let need = Strategy::Portable.shared_bytes(&config(head_dim, 64));
        assert!(need <= 32 * 1024, "{need}");
    }
}

//! The sweep: for each size and pattern, time our module (and Burn's dense attention where it
//! fits) and record one row per measurement.

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution};
use dilated_attention::module::AttentionFactoryConfig;
use dilated_attention::{
    AttentionShape, BlockSparseRingDilatedAttention, DilatedPattern, PatternType,
    SparsePatternConfig,
};
use dilated_attention_examples::timing::{QUEUE, median_p10_p90, queued_times, times};
use serde::{Deserialize, Serialize};

use crate::report::Progress;

/// Where the sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// CUDA (binary built with `--features cuda`).
    Cuda,
    /// wgpu (Vulkan, Metal, DX12, lavapipe).
    Wgpu,
    /// wgpu pinned to Vulkan with SPIR-V (binary built with `--features vulkan`): the `cmma`
    /// kernels on cooperative matrices where the driver has them.
    Vulkan,
    /// Burn's CPU backend (flex).
    Cpu,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
            Self::Cpu => "cpu",
        }
    }

    fn device(self) -> Result<Device, String> {
        match self {
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err("--backend cuda: rebuild with `--features cuda`".into()),
            Self::Wgpu => Ok(Device::wgpu(DeviceKind::DefaultDevice)),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Ok(Device::vulkan(DeviceKind::DefaultDevice)),
            #[cfg(not(feature = "vulkan"))]
            Self::Vulkan => Err("--backend vulkan: rebuild with `--features vulkan`".into()),
            Self::Cpu => Ok(Device::flex()),
        }
    }

    /// The best backend present: CUDA when compiled in and a GPU answers, else the CPU.
    fn detect() -> Self {
        #[cfg(feature = "cuda")]
        if std::panic::catch_unwind(|| {
            let d = Device::cuda(0);
            Tensor::<1>::ones([1], &d).into_scalar::<f32>()
        })
        .is_ok()
        {
            return Self::Cuda;
        }
        Self::Cpu
    }
}

/// Forward only, forward and backward, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Forward.
    Fwd,
    /// Forward and backward.
    Fwdbwd,
    /// Both rows.
    Both,
}

/// Sweep options (`cargo xtask bench --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Backend; default: CUDA when compiled in and a GPU answers, else the CPU.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Sequence lengths in tokens (`4k,8k,...`); default: 1K–4K on the CPU, 4K–128K on a GPU.
    #[arg(long, value_delimiter = ',', value_parser = dilated_attention_examples::cli::parse_size)]
    pub sizes: Option<Vec<usize>>,
    /// Presets: seed, longnet, local, global, random, a comma-separated list, or all.
    #[arg(long, default_value = "all")]
    pub pattern: String,
    /// A JSON `AttentionFactoryConfig` to sweep instead of the presets.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Element type on GPUs (the CPU backend computes in f32).
    #[arg(long, value_enum, default_value_t = dilated_attention_examples::cli::DtypeArg::F16)]
    pub dtype: dilated_attention_examples::cli::DtypeArg,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Query heads (= key/value heads).
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Forward, forward and backward, or both.
    #[arg(long, value_enum, default_value_t = Mode::Fwd)]
    pub mode: Mode,
    /// Timed runs per row (after two warm-ups).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Output folder of results.{json,md,svg}.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            options: Options,
        }
        Wrap::parse_from(["bench"]).options
    }
}

/// One measurement, with exactly the keys of the issue (and a few extra).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub backend: String,
    pub device: String,
    pub dtype: String,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub n: usize,
    pub pattern: String,
    pub density: f64,
    pub mode: String,
    pub median_ms: Option<f64>,
    pub p10_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub tflops: Option<f64>,
    /// Median per-run time of groups of [`QUEUE`] back-to-back runs, one sync a group: the
    /// host's work overlaps the device's, as in `triton.testing.do_bench` (the peers' rows).
    #[serde(default)]
    pub queued_ms: Option<f64>,
    /// Growth of the memory pools' reserved bytes over the row, after a cleanup (see
    /// `measure`).
    pub peak_mem_bytes: Option<u64>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The path that ran: a kernel family (`portable`, `cmma`, `sm80`), `reference`, or the
    /// peer's name.
    #[serde(default)]
    pub path: String,
    /// The commit the binary was built from (`git describe --always --dirty` at build time).
    #[serde(default)]
    pub commit: String,
}

/// The commit the binary was built from (`build.rs`: `git describe --always --dirty`).
fn commit() -> String {
    env!("XTASK_BUILD_COMMIT").to_string()
}

/// The presets: `seed` (the old prototype's layout) and `longnet`, plus three sparse layouts.
fn pattern(name: &str, n: usize) -> Option<DilatedPattern> {
    let single = |sparse| Some(DilatedPattern::single(sparse, false));
    match name {
        "seed" => Some(DilatedPattern::seed(128, false)),
        // Blocks of 128: the forward's two-tile planes then own 128 rows per cube.
        "longnet" => DilatedPattern::longnet(n, 128, false).ok(),
        "local" => single(
            SparsePatternConfig::new(PatternType::LocalWindow)
                .with_block_size(64)
                .with_sparsity_ratio(0.95),
        ),
        "global" => single(
            SparsePatternConfig::new(PatternType::GlobalLocal)
                .with_block_size(64)
                .with_sparsity_ratio(0.95)
                .with_global_blocks(2),
        ),
        "random" => single(
            SparsePatternConfig::new(PatternType::Random)
                .with_block_size(64)
                .with_sparsity_ratio(0.95),
        ),
        _ => None,
    }
}

/// The samples of one row, in ms: one sync per run, and per run of queued groups.
struct Timing {
    synced: Vec<f64>,
    queued: Vec<f64>,
}

/// `iters` runs of `f` after two warm-ups, each synced, then (with `queue`) groups of
/// [`QUEUE`] queued runs (the shared helpers of every benchmark); a failed device sync fails
/// the row. The CPU backend runs each op as it is called, so it skips the second ruler.
fn time<F: FnMut()>(device: &Device, iters: usize, queue: bool, mut f: F) -> Timing {
    let synced = times(device, 2, iters, &mut f).unwrap_or_else(|e| panic!("{e}"));
    let queued = if queue {
        let groups = iters.div_ceil(QUEUE).max(3);
        queued_times(device, groups, QUEUE, f).unwrap_or_else(|e| panic!("{e}"))
    } else {
        Vec::new()
    };
    Timing { synced, queued }
}

/// Runs the sweep; returns the rows and the output folder.
pub fn run(opts: Options) -> Result<(Vec<Row>, PathBuf), String> {
    let backend = opts.backend.unwrap_or_else(Backend::detect);
    let device = backend.device()?;
    let sizes = opts.sizes.clone().unwrap_or_else(|| match backend {
        Backend::Cpu => vec![1024, 2048, 4096],
        _ => vec![4096, 8192, 16384, 32768, 65536, 131072],
    });
    // The CPU backend computes in f32.
    let dtype = match backend {
        Backend::Cpu => DType::F32,
        _ => opts.dtype.dtype(),
    };
    let iters = opts.iters as usize;
    let queue = backend != Backend::Cpu;
    let commit = commit();
    let custom = match &opts.config {
        Some(path) => {
            let json =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let cfg: AttentionFactoryConfig =
                serde_json::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(cfg)
        }
        None => None,
    };
    let patterns: Vec<String> = match (&custom, opts.pattern.as_str()) {
        (Some(_), _) => vec!["config".into()],
        (None, "all") => ["seed", "longnet", "local", "global", "random"]
            .map(String::from)
            .to_vec(),
        (None, list) => {
            // One name or a comma-separated list of them.
            let names: Vec<String> = list.split(',').map(|p| p.trim().to_string()).collect();
            if let Some(bad) = names.iter().find(|p| pattern(p, 1).is_none()) {
                return Err(format!(
                    "--pattern: seed, longnet, local, global, random, a comma-separated list \
                     of them, or all; got `{bad}`"
                ));
            }
            names
        }
    };
    let modes: &[&str] = match opts.mode {
        Mode::Fwd => &["fwd"],
        Mode::Fwdbwd => &["fwdbwd"],
        Mode::Both => &["fwd", "fwdbwd"],
    };
    let device_name = format!("{device:?}");
    let (b, h, d) = (opts.batch, opts.heads, opts.head_dim);
    let total = sizes.len() * (patterns.len() + 1) * modes.len();
    let mut progress = Progress::new(total);
    let mut rows = Vec::new();
    for &n in &sizes {
        let blank = |implementation: &str, pattern: &str, density: f64, mode: &str| Row {
            implementation: implementation.into(),
            backend: backend.name().into(),
            device: device_name.clone(),
            dtype: format!("{dtype:?}").to_lowercase(),
            batch: b,
            heads: h,
            head_dim: d,
            n,
            pattern: pattern.into(),
            density,
            mode: mode.into(),
            median_ms: None,
            queued_ms: None,
            p10_ms: None,
            p90_ms: None,
            tflops: None,
            peak_mem_bytes: None,
            status: "ok".into(),
            message: None,
            path: implementation.into(),
            commit: commit.clone(),
        };
        for name in &patterns {
            let module = match &custom {
                Some(cfg) => {
                    dilated_attention::module::create_attention(cfg.kind, &cfg.attention, &device)
                        .map_err(|e| e.to_string())?
                }
                None => BlockSparseRingDilatedAttention::from_pattern(
                    pattern(name, n).expect("preset"),
                    None,
                ),
            };
            let stats = module.layout(n, h).map_err(|e| e.to_string())?.stats();
            let shape = AttentionShape {
                batch: b,
                heads: h,
                kv_heads: h,
                n,
                head_dim: d,
            };
            let path = module
                .execution_path(shape, dtype, &device)
                .map_err(|e| e.to_string())?;
            for &mode in modes {
                let base = Row {
                    path: path.label().into(),
                    ..blank("ours", name, stats.density, mode)
                };
                let flops = 4.0
                    * d as f64
                    * stats.active_pairs as f64
                    * if mode == "fwd" { 1.0 } else { 3.5 };
                progress.step(&format!("ours {name} n={n} {mode}"));
                rows.push(measure(&device, base, flops, || {
                    bench_ours(&module, &device, dtype, [b, h, n, d], mode, iters, queue)
                }));
            }
        }
        // Burn's dense attention, once per size and mode, where n² scores fit the budget.
        for &mode in modes {
            progress.step(&format!("burn-dense n={n} {mode}"));
            let dense_flops = 4.0
                * d as f64
                * (b * h) as f64
                * (n as f64)
                * (n as f64)
                * if mode == "fwd" { 1.0 } else { 3.5 };
            // wgpu (WGSL or SPIR-V): beyond 4K the n²·heads scores pass the adapter's largest
            // storage binding and the dispatch is dropped without an error (H100 Vulkan: 0.3 ms
            // "timings" at 16K), so those rows are not measured.
            let dense_limit = match backend {
                Backend::Cpu | Backend::Wgpu | Backend::Vulkan => 4096,
                Backend::Cuda => 32768,
            };
            let dense = Row {
                path: "burn".into(),
                ..blank("burn-dense", "dense", 1.0, mode)
            };
            rows.push(if n > dense_limit {
                Row {
                    status: "oom".into(),
                    message: Some(format!(
                        "n²·heads scores exceed the sweep's budget (n > {dense_limit})"
                    )),
                    ..dense
                }
            } else {
                measure(&device, dense, dense_flops, || {
                    bench_dense(&device, dtype, [b, h, n, d], mode, iters, queue)
                })
            });
        }
    }
    progress.finish();
    Ok((rows, opts.out))
}

/// Times `f`, catching failures. Memory is the row's own: the pools are emptied of free pages
/// before it, and the figure is how far their reserved bytes grew over the row (pools keep
/// the pages of a high-water mark until the next cleanup), so it holds the row's inputs,
/// results and transient buffers at their peak, to page granularity. `None` where the
/// backend reports no pools (the CPU).
fn measure(device: &Device, mut row: Row, flops: f64, f: impl FnOnce() -> Timing) -> Row {
    let reserved = || {
        let _ = device.sync();
        device.memory_pool_usage().map(|u| u.bytes_reserved)
    };
    device.memory_cleanup();
    let before = reserved();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    row.peak_mem_bytes = reserved()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    match result {
        Ok(Timing { synced, queued }) => {
            let (median, p10, p90) = median_p10_p90(synced);
            row.queued_ms = (!queued.is_empty()).then(|| median_p10_p90(queued).0);
            row.median_ms = Some(median);
            row.p10_ms = Some(p10);
            row.p90_ms = Some(p90);
            row.tflops = Some(flops / (median * 1e-3) / 1e12);
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            row.status = if message.to_lowercase().contains("memory") {
                "oom"
            } else {
                "error"
            }
            .into();
            row.message = Some(message);
        }
    }
    row
}

fn inputs(device: &Device, dtype: DType, shape: [usize; 4], grad: bool) -> [Tensor<4>; 3] {
    [0, 1, 2].map(|_| {
        let t = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), (device, dtype));
        if grad { t.require_grad() } else { t }
    })
}

fn bench_ours(
    module: &BlockSparseRingDilatedAttention,
    device: &Device,
    dtype: DType,
    shape: [usize; 4],
    mode: &str,
    iters: usize,
    queue: bool,
) -> Timing {
    if mode == "fwd" {
        let [q, k, v] = inputs(device, dtype, shape, false);
        time(device, iters, queue, || {
            let _ = module
                .forward(q.clone(), k.clone(), v.clone())
                .expect("valid inputs");
        })
    } else {
        let ad = device.clone().autodiff();
        let [q, k, v] = inputs(&ad, dtype, shape, true);
        time(device, iters, queue, || {
            let out = module
                .forward(q.clone(), k.clone(), v.clone())
                .expect("valid inputs");
            // Seeded with a ones gradient (that of `out.sum()`, without the reduction), as
            // PyTorch's rows are timed with `out.backward(dout)`.
            let _ = out.backward();
        })
    }
}

fn bench_dense(
    device: &Device,
    dtype: DType,
    shape: [usize; 4],
    mode: &str,
    iters: usize,
    queue: bool,
) -> Timing {
    let options = AttentionModuleOptions::default();
    if mode == "fwd" {
        let [q, k, v] = inputs(device, dtype, shape, false);
        time(device, iters, queue, || {
            let _ = attention(q.clone(), k.clone(), v.clone(), None, None, options);
        })
    } else {
        let ad = device.clone().autodiff();
        let [q, k, v] = inputs(&ad, dtype, shape, true);
        time(device, iters, queue, || {
            let out = attention(q.clone(), k.clone(), v.clone(), None, None, options);
            // Seeded with a ones gradient (that of `out.sum()`, without the reduction), as
            // PyTorch's rows are timed with `out.backward(dout)`.
            let _ = out.backward();
        })
    }
}

//! The sweep: for each size and pattern, time our module (and Burn's dense attention where it
//! fits) and record one row per measurement.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution};
use dilated_attention::module::AttentionFactoryConfig;
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, PatternType, SparsePatternConfig,
};
use serde::{Deserialize, Serialize};

use crate::report::Progress;

/// Where the sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CUDA (binary built with `--features cuda`).
    Cuda,
    /// wgpu (Vulkan, Metal, DX12, lavapipe).
    Wgpu,
    /// Burn's CPU backend (flex).
    Cpu,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cuda" => Ok(Self::Cuda),
            "wgpu" => Ok(Self::Wgpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            _ => Err(format!("--backend: cuda, wgpu or cpu, got `{s}`")),
        }
    }
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Fwd,
    /// Forward and backward.
    FwdBwd,
    /// Both rows.
    Both,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fwd" => Ok(Self::Fwd),
            "fwdbwd" => Ok(Self::FwdBwd),
            "both" => Ok(Self::Both),
            _ => Err(format!("--mode: fwd, fwdbwd or both, got `{s}`")),
        }
    }
}

/// Sweep options (see `USAGE`).
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Option<Backend>,
    pub sizes: Option<Vec<usize>>,
    pub pattern: String,
    pub config: Option<PathBuf>,
    pub dtype: String,
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub mode: Mode,
    pub iters: usize,
    pub out: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: None,
            sizes: None,
            pattern: "all".into(),
            config: None,
            dtype: "f16".into(),
            batch: 1,
            heads: 8,
            head_dim: 64,
            mode: Mode::Fwd,
            iters: 10,
            out: PathBuf::from("target/bench"),
        }
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
    pub peak_mem_bytes: Option<u64>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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

fn median_p10_p90(mut t: Vec<f64>) -> (f64, f64, f64) {
    t.sort_by(f64::total_cmp);
    let at = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn time<F: FnMut()>(device: &Device, iters: usize, mut f: F) -> Vec<f64> {
    for _ in 0..2 {
        f();
    }
    let _ = device.sync();
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            let _ = device.sync();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Runs the sweep; returns the rows and the output folder.
pub fn run(opts: Options) -> Result<(Vec<Row>, PathBuf), String> {
    let backend = opts.backend.unwrap_or_else(Backend::detect);
    let device = backend.device()?;
    let sizes = opts.sizes.clone().unwrap_or_else(|| match backend {
        Backend::Cpu => vec![1024, 2048, 4096],
        _ => vec![4096, 8192, 16384, 32768, 65536, 131072],
    });
    let dtype = match (backend, opts.dtype.as_str()) {
        // The CPU backend computes in f32.
        (Backend::Cpu, _) | (_, "f32") => DType::F32,
        (_, "bf16") => DType::BF16,
        _ => DType::F16,
    };
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
        Mode::FwdBwd => &["fwdbwd"],
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
            p10_ms: None,
            p90_ms: None,
            tflops: None,
            peak_mem_bytes: None,
            status: "ok".into(),
            message: None,
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
            for &mode in modes {
                let base = blank("ours", name, stats.density, mode);
                let flops = 4.0
                    * d as f64
                    * stats.active_pairs as f64
                    * if mode == "fwd" { 1.0 } else { 3.5 };
                progress.step(&format!("ours {name} n={n} {mode}"));
                rows.push(measure(&device, base, flops, || {
                    bench_ours(&module, &device, dtype, [b, h, n, d], mode, opts.iters)
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
            // wgpu: beyond 4K the n²·heads scores pass the adapter's largest storage binding
            // and the dispatch is dropped without an error (H100 Vulkan: 0.3 ms "timings" at
            // 16K), so those rows are not measured.
            let dense_limit = match backend {
                Backend::Cpu | Backend::Wgpu => 4096,
                Backend::Cuda => 32768,
            };
            let dense = blank("burn-dense", "dense", 1.0, mode);
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
                    bench_dense(&device, dtype, [b, h, n, d], mode, opts.iters)
                })
            });
        }
    }
    progress.finish();
    Ok((rows, opts.out))
}

/// Times `f`, catching failures. Peak memory is the allocator's reserved bytes after the call,
/// with the pools cleaned before it: pools keep their high-water pages for reuse.
fn measure(device: &Device, mut row: Row, flops: f64, f: impl FnOnce() -> Vec<f64>) -> Row {
    device.memory_cleanup();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    row.peak_mem_bytes = device.memory_pool_usage().map(|u| u.bytes_reserved);
    match result {
        Ok(times) => {
            let (median, p10, p90) = median_p10_p90(times);
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
) -> Vec<f64> {
    if mode == "fwd" {
        let [q, k, v] = inputs(device, dtype, shape, false);
        time(device, iters, || {
            let _ = module
                .forward(q.clone(), k.clone(), v.clone())
                .expect("valid inputs");
        })
    } else {
        let ad = device.clone().autodiff();
        let [q, k, v] = inputs(&ad, dtype, shape, true);
        time(device, iters, || {
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
) -> Vec<f64> {
    let options = AttentionModuleOptions::default();
    if mode == "fwd" {
        let [q, k, v] = inputs(device, dtype, shape, false);
        time(device, iters, || {
            let _ = attention(q.clone(), k.clone(), v.clone(), None, None, options);
        })
    } else {
        let ad = device.clone().autodiff();
        let [q, k, v] = inputs(&ad, dtype, shape, true);
        time(device, iters, || {
            let out = attention(q.clone(), k.clone(), v.clone(), None, None, options);
            // Seeded with a ones gradient (that of `out.sum()`, without the reduction), as
            // PyTorch's rows are timed with `out.backward(dout)`.
            let _ = out.backward();
        })
    }
}

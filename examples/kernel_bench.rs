//! Times the attention module on a device: the seed layout and the LongNet preset, median of
//! many runs after warm-up, device-synchronised. Prints one JSON object per row, labelled with
//! the kernel family that ran.
//!
//! `cargo run --release --example kernel_bench [--features cuda] -- --help`
//!
//! `fwdbwd` times the forward and `out.backward()` (seeded with ones, the gradient of
//! `out.sum()` without the reduction) on an autodiff device (the backward kernels); `phases`
//! splits a step with `out.sum()` into its parts (forward, loss, backward; the backward also
//! without the final sync, i.e. the host's enqueue time), each synchronised.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use clap::{Parser, ValueEnum};
use dilated_attention::{
    AttentionShape, BlockSparseRingDilatedAttention, DilatedPattern, KernelPolicy, KernelStrategy,
    Sm80Tuning,
};
use dilated_attention_examples::cli::{DeviceArg, DtypeArg, parse_size};
use dilated_attention_examples::timing::{QUEUE, median_p10_p90, queued_times, times};

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The forward.
    Fwd,
    /// The forward and the backward.
    Fwdbwd,
    /// Both, one row each.
    Both,
    /// A training step's parts, each synchronised.
    Phases,
}

/// A preset to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// One branch of dilation 1, blocks of 128, block offsets 0, ±1, ±2, ±4.
    Seed,
    /// The LongNet preset (segments n/4, n/2, n at dilations 1, 2, 4).
    Longnet,
}

/// A kernel family to force (`auto`: the module's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Family {
    Auto,
    Portable,
    Cmma,
    /// sm80 with the manual-MMA (`mma.sync`) forward and backward.
    Sm80,
    /// sm80 with one 16-row tile per plane in the forward and `dQ`.
    Sm80OneTile,
    /// sm80 with `dQ` fused into `dK/dV` (f32 atomics).
    Sm80FusedDq,
    /// sm80 with the forward on Hopper's warpgroup MMA (head dim 64 or 128, sm_90+), the
    /// backward on manual MMA.
    Sm80Wgmma,
    /// sm80 with the forward and the backward on Hopper's warpgroup MMA (head dim 64 or 128,
    /// sm_90+).
    WgmmaBwd,
    /// The default tuning with the forward's lazy rescaling (`Sm80Tuning::lazy_rescale`).
    Lazy,
    /// The default tuning with the Hopper forward on a persistent grid
    /// (`Sm80Tuning::persistent_forward`, as many cubes as the SMs hold; the default).
    Persistent,
    /// The default tuning with the Hopper forward on a grid of one cube a query tile
    /// (`Sm80Tuning::persistent_forward` 0).
    TilePerCube,
    /// The default tuning with the Hopper forward's two `P·V` panels issued together at head
    /// dim 128 (`Sm80Tuning::paired_pv`).
    PairedPv,
    /// The default tuning with the Hopper forward taking 128 keys a step
    /// (`Sm80Tuning::wide_chunks`).
    WideChunks,
    /// Wide chunks with the paired `P·V` panels.
    WideChunksPairedPv,
    /// The default tuning with the Hopper forward's softmax overlapping its own `P·V`
    /// (`Sm80Tuning::overlap_softmax`).
    Overlap,
    /// Overlap with lazy rescaling.
    OverlapLazy,
    /// The default tuning with the Hopper kernels' producers copying every chunk row by row
    /// instead of loading whole chunks by TMA (`Sm80Tuning::tma_loads` off).
    Copies,
    /// The default tuning with the Hopper forward's producer loading whole query tiles by TMA
    /// too, one tile ahead (`Sm80Tuning::tma_queries`).
    TmaQueries,
    /// Query tiles by TMA with the tiles and chunk positions handed by the producer
    /// (`Sm80Tuning::handed_tiles`).
    Handoff,
    /// The handoff with the Hopper `dQ` on a persistent grid, its tiles handed by the producer
    /// (`Sm80Tuning::handed_dq`).
    HandoffDq,
    /// The handoff with both backward kernels on persistent grids, their tiles handed by the
    /// producers (`Sm80Tuning::handed_dq`, `handed_dkdv`).
    HandoffBwd,
    /// The default tuning with `dQ` inside the Hopper `dK/dV` kernel by f32 atomics
    /// (`Sm80Tuning::fused_dq`).
    FusedDq,
    /// The default step on a forward cube of 384 units whose producer warpgroup moves its
    /// registers to the consumers, one cube an SM (`Sm80Tuning::register_move`).
    Moved,
    /// Wide chunks with the moved registers.
    MovedWide,
    /// The overlapped softmax with the moved registers.
    MovedOverlap,
    /// Wide chunks with the overlapped softmax and the moved registers (FlashAttention-3's
    /// step: 128 keys, the held step's `P·V` in flight across the softmax).
    MovedWideOverlap,
    /// The moved overlapped softmax with the consumer warpgroups taking turns at the tensor
    /// cores (`Sm80Tuning::warpgroup_turns`, FlashAttention-3's ping-pong).
    MovedOverlapTurns,
    /// FlashAttention-3's step with the warpgroups taking turns.
    MovedWideOverlapTurns,
}

impl Family {
    fn strategy(self) -> Option<KernelStrategy> {
        // The manual-MMA forward and backward, whatever the default tuning picks on this device.
        let sm80 = Sm80Tuning {
            wgmma_forward: false,
            wgmma_backward: false,
            ..Sm80Tuning::default()
        };
        match self {
            Self::Auto => None,
            Self::Portable => Some(KernelStrategy::Portable),
            Self::Cmma => Some(KernelStrategy::Cmma),
            Self::Sm80 => Some(KernelStrategy::Sm80(sm80)),
            Self::Sm80OneTile => Some(KernelStrategy::Sm80(Sm80Tuning {
                forward_tiles: 1,
                dq_tiles: 1,
                ..sm80
            })),
            Self::Sm80FusedDq => Some(KernelStrategy::Sm80(Sm80Tuning {
                fused_dq: true,
                ..sm80
            })),
            Self::Sm80Wgmma => Some(KernelStrategy::Sm80(Sm80Tuning {
                wgmma_forward: true,
                ..sm80
            })),
            Self::WgmmaBwd => Some(KernelStrategy::Sm80(Sm80Tuning {
                wgmma_forward: true,
                wgmma_backward: true,
                ..sm80
            })),
            Self::Lazy => Some(KernelStrategy::Sm80(Sm80Tuning {
                lazy_rescale: true,
                ..Sm80Tuning::default()
            })),
            Self::Persistent => Some(KernelStrategy::Sm80(Sm80Tuning {
                persistent_forward: u32::MAX,
                ..Sm80Tuning::default()
            })),
            Self::TilePerCube => Some(KernelStrategy::Sm80(Sm80Tuning {
                persistent_forward: 0,
                ..Sm80Tuning::default()
            })),
            Self::PairedPv => Some(KernelStrategy::Sm80(Sm80Tuning {
                paired_pv: true,
                ..Sm80Tuning::default()
            })),
            Self::WideChunks => Some(KernelStrategy::Sm80(Sm80Tuning {
                wide_chunks: true,
                ..Sm80Tuning::default()
            })),
            Self::WideChunksPairedPv => Some(KernelStrategy::Sm80(Sm80Tuning {
                wide_chunks: true,
                paired_pv: true,
                ..Sm80Tuning::default()
            })),
            Self::Overlap => Some(KernelStrategy::Sm80(Sm80Tuning {
                overlap_softmax: true,
                ..Sm80Tuning::default()
            })),
            Self::Copies => Some(KernelStrategy::Sm80(Sm80Tuning {
                tma_loads: false,
                ..Sm80Tuning::default()
            })),
            Self::TmaQueries => Some(KernelStrategy::Sm80(Sm80Tuning {
                tma_queries: true,
                ..Sm80Tuning::default()
            })),
            Self::Handoff => Some(KernelStrategy::Sm80(Sm80Tuning {
                tma_queries: true,
                handed_tiles: true,
                ..Sm80Tuning::default()
            })),
            Self::HandoffDq => Some(KernelStrategy::Sm80(Sm80Tuning {
                tma_queries: true,
                handed_tiles: true,
                handed_dq: true,
                ..Sm80Tuning::default()
            })),
            Self::HandoffBwd => Some(KernelStrategy::Sm80(Sm80Tuning {
                tma_queries: true,
                handed_tiles: true,
                handed_dq: true,
                handed_dkdv: true,
                ..Sm80Tuning::default()
            })),
            Self::FusedDq => Some(KernelStrategy::Sm80(Sm80Tuning {
                fused_dq: true,
                ..Sm80Tuning::default()
            })),
            Self::Moved => Some(KernelStrategy::Sm80(Sm80Tuning {
                register_move: true,
                ..Sm80Tuning::default()
            })),
            Self::MovedWide => Some(KernelStrategy::Sm80(Sm80Tuning {
                register_move: true,
                wide_chunks: true,
                ..Sm80Tuning::default()
            })),
            Self::MovedOverlap => Some(KernelStrategy::Sm80(Sm80Tuning {
                register_move: true,
                overlap_softmax: true,
                ..Sm80Tuning::default()
            })),
            Self::MovedWideOverlap => Some(KernelStrategy::Sm80(Sm80Tuning {
                register_move: true,
                wide_chunks: true,
                overlap_softmax: true,
                ..Sm80Tuning::default()
            })),
            Self::MovedOverlapTurns => Some(KernelStrategy::Sm80(Sm80Tuning {
                register_move: true,
                overlap_softmax: true,
                warpgroup_turns: true,
                ..Sm80Tuning::default()
            })),
            Self::MovedWideOverlapTurns => Some(KernelStrategy::Sm80(Sm80Tuning {
                register_move: true,
                wide_chunks: true,
                overlap_softmax: true,
                warpgroup_turns: true,
                ..Sm80Tuning::default()
            })),
            Self::OverlapLazy => Some(KernelStrategy::Sm80(Sm80Tuning {
                overlap_softmax: true,
                lazy_rescale: true,
                ..Sm80Tuning::default()
            })),
        }
    }
}

/// Times the attention kernels on the seed and LongNet presets.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Wgpu)]
    device: DeviceArg,
    /// Element type.
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    dtype: DtypeArg,
    /// Sequence lengths in tokens (`4k`, `16384`, ...).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4k,16k")]
    sizes: Vec<usize>,
    /// Timed runs per row (after three warm-ups).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// What to time.
    #[arg(long, value_enum, default_value_t = Mode::Fwd)]
    mode: Mode,
    /// Block size of the LongNet preset (tokens).
    #[arg(long, default_value_t = 128)]
    longnet_block: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Kernel family to force.
    #[arg(long, value_enum, default_value_t = Family::Auto)]
    family: Family,
    /// The presets to time, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Preset::Seed, Preset::Longnet])]
    patterns: Vec<Preset>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let device = args.device.device()?;
    let dtype = args.dtype.dtype();
    let (b, h, d) = (1, 8, args.head_dim);
    let modes: &[&str] = match args.mode {
        Mode::Fwd => &["fwd"],
        Mode::Fwdbwd => &["fwdbwd"],
        Mode::Both => &["fwd", "fwdbwd"],
        Mode::Phases => &["phases"],
    };
    for &n in &args.sizes {
        for &preset in &args.patterns {
            let (name, pattern) = match preset {
                Preset::Seed => ("seed", DilatedPattern::seed(128, false)),
                Preset::Longnet => (
                    "longnet",
                    DilatedPattern::longnet(n, args.longnet_block, false)
                        .map_err(|e| e.to_string())?,
                ),
            };
            let module = BlockSparseRingDilatedAttention::from_pattern(pattern, None)
                .with_kernel_policy(KernelPolicy::Require)
                .with_kernel_strategy(args.family.strategy());
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
                if mode == "phases" {
                    phases(&module, &device, dtype, [b, h, n, d], args.iters, name)?;
                    continue;
                }
                let grad = mode == "fwdbwd";
                let dev = if grad {
                    device.clone().autodiff()
                } else {
                    device.clone()
                };
                let make = || {
                    let t = Tensor::<4>::random(
                        [b, h, n, d],
                        Distribution::Normal(0.0, 1.0),
                        (&dev, dtype),
                    );
                    if grad { t.require_grad() } else { t }
                };
                let (q, k, v) = (make(), make(), make());
                let run = || {
                    let (o, _) = module
                        .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
                        .expect("the kernels run these inputs");
                    if grad {
                        drop(o.backward());
                    }
                };
                // One run read back first: a launch the device refused (a buffer over its
                // binding limit, a driver error) surfaces here, not as a fast, empty time.
                if let Err(e) = read_back(&module, [&q, &k, &v], grad) {
                    println!(
                        "{{\"impl\":\"ours\",\"backend\":\"{:?}\",\"dtype\":\"{dtype:?}\",\"n\":{n},\
                         \"head_dim\":{d},\"pattern\":\"{name}\",\"mode\":\"{mode}\",\"status\":{:?}}}",
                        args.device,
                        format!("error: {e}"),
                    );
                    continue;
                }
                let (median, p10, p90) = median_p10_p90(times(&device, 3, args.iters, run)?);
                // The second ruler: runs queued back to back, a sync every `QUEUE` (what
                // `triton.testing.do_bench`, the peers' timer, sees: no host gap per run).
                let groups = args.iters.div_ceil(QUEUE).max(3);
                let (queued, _, _) = median_p10_p90(queued_times(&device, groups, QUEUE, run)?);
                let work = if grad { 3.5 } else { 1.0 };
                let tflops =
                    work * 4.0 * d as f64 * stats.active_pairs as f64 / (median * 1e-3) / 1e12;
                println!(
                    "{{\"impl\":\"ours\",\"path\":\"{}\",\"backend\":\"{:?}\",\"dtype\":\"{dtype:?}\",\"n\":{n},\
                     \"head_dim\":{d},\"pattern\":\"{name}\",\"mode\":\"{mode}\",\"density\":{:.6},\
                     \"median_ms\":{median:.3},\"p10_ms\":{p10:.3},\"p90_ms\":{p90:.3},\"queued_ms\":{queued:.3},\"tflops\":{tflops:.2}}}",
                    path.label(),
                    args.device,
                    stats.density,
                );
            }
        }
    }
    Ok(())
}

/// Runs the module once on `[q, k, v]` (and its backward with `grad`) and reads a sum of the
/// result back: `out`'s, or `dq`'s with `grad`. Errors where the device failed a launch or the
/// sum is not finite (the inputs are standard normal).
fn read_back(
    module: &BlockSparseRingDilatedAttention,
    [q, k, v]: [&Tensor<4>; 3],
    grad: bool,
) -> Result<(), String> {
    let (o, _) = module
        .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
        .map_err(|e| e.to_string())?;
    // Summed in f32: a sum in f16 of a 128K-token gradient passes 65 504 and reads as inf.
    let sum = if grad {
        let grads = o.backward();
        q.grad(&grads)
            .ok_or("no gradient for q")?
            .cast(DType::F32)
            .sum()
    } else {
        o.cast(DType::F32).sum()
    };
    let value = sum.try_to_vec_as::<f32>().map_err(|e| format!("{e:?}"))?[0];
    if value.is_finite() {
        Ok(())
    } else {
        Err(format!("the read-back sum is {value}"))
    }
}

/// The parts of one training step, each followed by a device sync, as medians over `iters`:
/// where the time of `fwdbwd` goes between kernels, Burn's glue and the host.
fn phases(
    module: &BlockSparseRingDilatedAttention,
    device: &Device,
    dtype: DType,
    shape: [usize; 4],
    iters: usize,
    name: &str,
) -> Result<(), String> {
    let ad = device.clone().autodiff();
    let make =
        || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), (&ad, dtype)).require_grad();
    let (q, k, v) = (make(), make(), make());
    let sync = || device.sync().map_err(|e| format!("device sync: {e}"));
    let mut parts: [Vec<f64>; 5] = Default::default();
    for i in 0..iters + 3 {
        let t0 = Instant::now();
        let (o, _) = module
            .forward_kernels(q.clone(), k.clone(), v.clone(), None)
            .map_err(|e| e.to_string())?;
        sync()?;
        let t1 = Instant::now();
        let loss = o.sum();
        sync()?;
        let t2 = Instant::now();
        let grads = loss.backward();
        let t3 = Instant::now();
        sync()?;
        let t4 = Instant::now();
        drop(grads);
        sync()?;
        let t5 = Instant::now();
        if i >= 3 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            for (part, t) in
                parts
                    .iter_mut()
                    .zip([ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t2, t4), ms(t4, t5)])
            {
                part.push(t);
            }
        }
    }
    let [f, l, e, bw, dr] = parts.map(|p| median_p10_p90(p).0);
    println!(
        "{{\"impl\":\"phases\",\"pattern\":\"{name}\",\"n\":{},\"forward_ms\":{f:.3},\"loss_ms\":{l:.3},\
         \"backward_enqueue_ms\":{e:.3},\"backward_ms\":{bw:.3},\"drop_ms\":{dr:.3}}}",
        shape[2]
    );
    Ok(())
}

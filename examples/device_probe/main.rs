//! Proves a runtime end to end: our CubeCL kernels, Burn's ops and autodiff, and the attention
//! module, each checked against the CPU (flex) backend or an f64 oracle on random inputs.
//!
//! `cargo run --release --example device_probe [--features cuda] -- --device cuda --check all`
//!
//! Checks (`--check a,b,...`; `all` runs every one but `ring-steps`, `large` and `scale`):
//! `basics`, `wgmma`, `strategies`, `forward`, `edge`, `gradients`, `edge-gradients`,
//! `finite-differences`, `ring`, `oracle`, `ring-steps`, `large`, `scale`. Lines over a bar
//! are collected and reported at the end; the probe exits with status 1 if there are any.

mod basics;
mod families;
mod forward;
mod gradients;
mod hopper;
mod ring;
mod scale;
mod strategies;
mod support;

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use dilated_attention_examples::cli::{DeviceArg, DtypeArg};
use support::Probe;

/// The body of a check.
type CheckFn<'a> = dyn Fn(&mut Probe) + 'a;

/// A check of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Check {
    /// Every check but `ring-steps`.
    All,
    /// The LSE merge kernel, Burn's ops and autodiff, the reference path on the device.
    Basics,
    /// Every kernel family the device serves, forced, forward and backward.
    Strategies,
    /// Hopper's warpgroup MMA (`wgmma`) on one tile against the host (sm_90+ only).
    Wgmma,
    /// f16/bf16 presets at 2K against the f32 reference.
    Forward,
    /// Forward edge cases: tails, padding, GQA, head dims 32–128, blocks 64–256.
    Edge,
    /// Gradients of presets, f32/f16/bf16, stored and added.
    Gradients,
    /// Gradient edge cases against FlashAttention's same-precision yardstick.
    EdgeGradients,
    /// A directional derivative against finite differences (f32).
    FiniteDifferences,
    /// The ring on one device in f16/bf16 against the unchunked kernels.
    Ring,
    /// The kernels at `--oracle-n` against an f64 oracle on sampled rows.
    Oracle,
    /// The ring's windowed steps at `--ring-cases`, errors and times.
    RingSteps,
    /// A small call forced into chunked launches (heads folded into the batch, a launch per
    /// folded batch, as at 8M tokens) against one launch: out, lse, dq, dk, dv.
    Chunks,
    /// A call past 2^32 elements (9 GB tensors) against its single batches.
    Large,
    /// The seed layout forward and backward at `--scale-lengths` (4M–16M): time and memory.
    Scale,
}

/// Proves a runtime end to end against the CPU and an f64 oracle.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The device under test.
    #[arg(long, value_enum, default_value_t = DeviceArg::Wgpu)]
    device: DeviceArg,
    /// The checks to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    check: Vec<Check>,
    /// `edge` and `edge-gradients` only at these lengths (tokens; default: all five).
    #[arg(long, value_delimiter = ',')]
    edge_lengths: Option<Vec<usize>>,
    /// Sequence length of the `oracle` check (tokens).
    #[arg(long, default_value_t = 16384)]
    oracle_n: usize,
    /// `ring-steps` cases as `n:heads` (tokens, heads), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16384:8")]
    ring_cases: Vec<String>,
    /// `ring-steps`: f16 at P = 2 only, and times at P = 1, 2.
    #[arg(long)]
    quick: bool,
    /// `scale` lengths in tokens (`4m,8m,16m`).
    #[arg(long, value_delimiter = ',', value_parser = dilated_attention_examples::cli::parse_size, default_value = "4m,8m,16m")]
    scale_lengths: Vec<usize>,
    /// Only these element types, comma-separated (default: every one a check covers).
    #[arg(long, value_enum, value_delimiter = ',')]
    dtypes: Option<Vec<DtypeArg>>,
    /// Seed of the CPU backend's random inputs.
    #[arg(long, default_value_t = 3)]
    seed: u64,
    /// `strategies`: only the first this many families of each case (at blocks of 128 the query
    /// tiles by TMA, with and without the handoff, and the default come first, then the row copies and the experiments), for
    /// a short device call.
    #[arg(long)]
    families: Option<usize>,
    /// `strategies`: only these families, by index into its list (`strategies.rs`), at blocks
    /// of 128 and head dims 64 and 128 — the ones a device call just timed fastest; overrides
    /// `--families`.
    #[arg(long, value_delimiter = ',')]
    pick: Option<Vec<usize>>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let start = Instant::now();
    let device = match args.device.device() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(Some(cube)) = args.device.cube() else {
        eprintln!("the probe checks a CubeCL device: --device wgpu, vulkan or cuda");
        return ExitCode::from(2);
    };
    let client = cube.client();
    let props = client.properties();
    println!(
        "runtime {:?}: plane size {}..{}, shared memory {} B, {} cmma configs, {} mma configs, \
         largest page {} B (wgpu: the largest storage binding), cubes per dimension {:?}",
        args.device,
        props.hardware.plane_size_min,
        props.hardware.plane_size_max,
        props.hardware.max_shared_memory_size,
        client.features().matmul.cmma.len(),
        client.features().matmul.mma.len(),
        props.memory.max_page_size,
        props.hardware.max_cube_count,
    );
    let cpu = burn::prelude::Device::flex();
    cpu.seed(args.seed);
    let mut p = Probe {
        device,
        cpu,
        over: Vec::new(),
        only: args
            .dtypes
            .map(|list| list.into_iter().map(DtypeArg::dtype).collect()),
        families: args.families,
        pick: args.pick,
    };
    let wants = |c: Check| {
        args.check.contains(&c)
            || (args.check.contains(&Check::All)
                && !matches!(c, Check::RingSteps | Check::Large | Check::Scale))
    };
    let lengths = args.edge_lengths.as_deref();
    let timed = |name: &str, t: Instant| println!("[{name}: {:.1} s]", t.elapsed().as_secs_f64());
    let checks: [(Check, &str, &CheckFn); 11] = [
        (Check::Basics, "basics", &|p| basics::run(p, &cube)),
        (Check::Wgmma, "wgmma", &|p| hopper::run(p, &cube)),
        (Check::Strategies, "strategies", &strategies::run),
        (Check::Forward, "forward", &forward::presets),
        (Check::Edge, "edge", &|p| forward::edge(p, lengths)),
        (Check::Gradients, "gradients", &gradients::presets),
        (Check::EdgeGradients, "edge-gradients", &|p| {
            gradients::edge(p, lengths)
        }),
        (
            Check::FiniteDifferences,
            "finite-differences",
            &gradients::finite_differences,
        ),
        (Check::Ring, "ring", &ring::chunked),
        (Check::Chunks, "chunks", &scale::chunks),
        (Check::Oracle, "oracle", &|p| {
            forward::oracle(p, args.oracle_n)
        }),
    ];
    for (check, name, run) in checks {
        if wants(check) {
            let t = Instant::now();
            run(&mut p);
            timed(name, t);
        }
    }
    if wants(Check::RingSteps) {
        for case in &args.ring_cases {
            let mut it = case.split(':');
            let n = it.next().and_then(|n| n.parse().ok());
            let heads = it.next().map_or(Some(8), |h| h.parse().ok());
            let (Some(n), Some(heads)) = (n, heads) else {
                eprintln!("--ring-cases: `{case}` is not n:heads");
                return ExitCode::from(2);
            };
            let t = Instant::now();
            ring::steps(&mut p, n, heads, args.quick);
            timed("ring-steps", t);
        }
    }
    let scale_lengths = args.scale_lengths.clone();
    let later: [(Check, &str, &CheckFn); 2] = [
        (Check::Large, "large", &scale::large),
        (Check::Scale, "scale", &|p| scale::scale(p, &scale_lengths)),
    ];
    for (check, name, run) in later {
        if wants(check) {
            let t = Instant::now();
            run(&mut p);
            timed(name, t);
        }
    }
    for line in &p.over {
        println!("OVER THE BAR: {line}");
    }
    println!(
        "device probe {} on {:?} in {:.1} s ({} lines over the bar)",
        if p.over.is_empty() {
            "passed"
        } else {
            "FAILED"
        },
        args.device,
        start.elapsed().as_secs_f64(),
        p.over.len()
    );
    if p.over.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

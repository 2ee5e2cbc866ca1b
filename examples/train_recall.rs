//! Trains the recall transformer (`dilated_attention_examples::recall`) and saves it.
//!
//! `cargo run --release --example train_recall -- --help` lists the flags. The defaults run
//! on the CPU in about half a minute; `--device wgpu` (or `cuda`, built with
//! `--features cuda`) trains on a GPU through the attention kernels. Training stops early once
//! the last 50 steps at `--seq-len` average an accuracy of 0.99.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::DType;
use clap::Parser;
use dilated_attention_examples::cli::{DeviceArg, DtypeArg};
use dilated_attention_examples::{Mastery, RecallConfig, saved_file, train};

/// Trains a small decoder on associative recall and saves it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The device to train on.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Optimiser steps at most.
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Sequence length in tokens (a multiple of 4).
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Key–value pairs at the start of each sequence.
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// Distinct keys (and values); chance is 1 / symbols.
    #[arg(long, default_value_t = 8)]
    symbols: usize,
    /// Model width (4 heads: 128 gives head dim 32, which the GPU kernels serve).
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Block size of the attention layout (64 with f16/bf16 puts the attention on the
    /// tensor-core kernels).
    #[arg(long, default_value_t = 16)]
    block: usize,
    /// Type the attention layers run in (default: the model's f32).
    #[arg(long, value_enum)]
    attention_dtype: Option<DtypeArg>,
    /// Where to save the model (burn-pack; `.bpk` is added to a name without extension;
    /// default: `recall-model.bpk` in the temp dir).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Start a length curriculum at this many tokens, doubled at each 0.99.
    #[arg(long)]
    start_len: Option<usize>,
    /// Stop after this many seconds of training (the model so far is saved).
    #[arg(long)]
    max_seconds: Option<f64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = args.device.device()?;
    let cfg = RecallConfig::new()
        .with_seq_len(args.seq_len)
        .with_pairs(args.pairs)
        .with_symbols(args.symbols)
        .with_d_model(args.d_model)
        .with_block_size(args.block)
        .with_attention_dtype(args.attention_dtype.map(DtypeArg::dtype))
        .with_start_len(args.start_len);
    let (steps, seq_len) = (args.steps, args.seq_len);
    println!(
        "associative recall on {device:?}: {} pairs of {} symbols, query at position {}, chance {:.3}; \
         block {}, attention in {:?}{}",
        cfg.pairs,
        cfg.symbols,
        seq_len - 1,
        1.0 / cfg.symbols as f32,
        cfg.block_size,
        cfg.attention_dtype.unwrap_or(DType::F32),
        match cfg.start_len {
            Some(len) => format!(
                "; lengths from {len}, doubled at each {}",
                Mastery::THRESHOLD
            ),
            None => String::new(),
        },
    );
    let max_seconds = args.max_seconds.unwrap_or(f64::INFINITY);
    let start = std::time::Instant::now();
    let mut len = 0;
    let model = train(&cfg, steps, args.batch, args.lr, &device, |log| {
        if log.seq_len != len {
            if len > 0 {
                println!("\n{len} tokens mastered at step {}", log.step);
            }
            len = log.seq_len;
        }
        let avg = log.recent_accuracy;
        let width = 30;
        let done = width * (log.step + 1) / steps;
        print!(
            "\r[{}{}] step {:>4}/{steps}  len {len:>5}  loss {:.3}  acc {:.2}  (last 50: {:.2})  {:>5.1}s",
            "#".repeat(done),
            "-".repeat(width - done),
            log.step + 1,
            log.loss,
            log.accuracy,
            avg,
            start.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        let done = len == seq_len && log.mastered;
        if (log.step + 1) % 50 == 0 || done {
            let [f, b, u] = log.seconds.map(|s| s * 1e3);
            println!("  (this step: forward {f:.0} ms, backward {b:.0} ms, update {u:.0} ms)");
        }
        if done {
            println!("stopped early: the last 50 steps average {avg:.3}");
            ControlFlow::Break(())
        } else if start.elapsed().as_secs_f64() > max_seconds {
            println!(
                "\nstopped at the time cap ({max_seconds} s): the last 50 steps average {avg:.3}"
            );
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    println!();
    let path = args
        .model
        .unwrap_or_else(|| std::env::temp_dir().join("recall-model.bpk"));
    model.save_file(&path)?;
    println!("saved to {}", saved_file(&path).display());
    Ok(())
}

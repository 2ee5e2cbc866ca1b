//! Trains the recall transformer (`dilated_attention_examples`) and saves it.
//!
//! `cargo run --release --example train_recall -- [steps] [seq_len] [batch] [pairs] [symbols] [d_model] [lr] [block] [f32|f16|bf16] [model_path] [start_len]`
//! (4 heads: `d_model` 128 gives head dim 32, which the GPU kernels serve; the last argument
//! is the type the attention layers run in, `f16`/`bf16` with `block` 64 putting them on the
//! tensor-core kernels). Defaults run on the CPU in a few minutes; `BURN_DEVICE=wgpu` (or
//! `cuda`, built with `--features cuda`) trains on a GPU through the attention kernels. Training
//! stops early once the last 50 steps at `seq_len` average an accuracy of 0.99. The model is
//! saved to `model_path` (default: `recall-model` in the temp dir; the recorder adds `.bpk`;
//! `-` keeps the default). With `start_len` it follows the length curriculum of
//! [`RecallConfig::start_len`]: from `start_len` tokens, doubled at each 0.99.
//! `RECALL_MAX_SECONDS` caps the training time (the model trained so far is still saved).

use std::io::Write;

use burn::prelude::*;
use burn::tensor::DType;
use dilated_attention_examples::{Mastery, RecallConfig, train};
use std::ops::ControlFlow;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (steps, seq_len, batch) = (arg(1, 600), arg(2, 128), arg(3, 32));
    let device = match std::env::var("BURN_DEVICE").as_deref() {
        Ok("wgpu") => Device::wgpu(DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        Ok("cuda") => Device::cuda(0),
        _ => Device::flex(),
    };
    let defaults = RecallConfig::new();
    let cfg = RecallConfig::new()
        .with_seq_len(seq_len)
        .with_pairs(arg(4, defaults.pairs))
        .with_symbols(arg(5, defaults.symbols))
        .with_d_model(arg(6, defaults.d_model))
        .with_block_size(arg(8, defaults.block_size))
        .with_attention_dtype(match std::env::args().nth(9).as_deref() {
            Some("f16") => Some(DType::F16),
            Some("bf16") => Some(DType::BF16),
            _ => None,
        })
        .with_start_len(std::env::args().nth(11).and_then(|s| s.parse().ok()));
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
    let max_seconds: f64 = std::env::var("RECALL_MAX_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::INFINITY);
    let start = std::time::Instant::now();
    let mut len = 0;
    let lr: f64 = std::env::args()
        .nth(7)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1e-3);
    let model = train(&cfg, steps, batch, lr, &device, |log| {
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
    let path = std::env::args()
        .nth(10)
        .filter(|p| p != "-")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("recall-model"));
    model.save_file(&path)?;
    println!("saved to {}.bpk", path.display());
    Ok(())
}

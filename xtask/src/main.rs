//! `cargo xtask bench`: sweeps sequence lengths and patterns on a backend and writes
//! `results.json`, `results.md` and `results.svg` (time and memory vs n, log–log).
//!
//! `cargo xtask bench --compare a.json b.json [--out DIR]` merges result files (e.g. ours and
//! `benches/torch_baseline.py`'s) into one table and plot.

mod plot;
mod report;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sweep::Options;

/// The workspace's tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Sweeps sequence lengths and patterns on a backend and writes results.{json,md,svg}.
    Bench {
        #[command(flatten)]
        options: Options,
        /// Merge these result files (ours, `benches/torch_baseline.py`'s JSON lines) into one
        /// table and plot instead of sweeping.
        #[arg(long, num_args = 1..)]
        compare: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Task::Bench { options, compare } = Cli::parse().task;
    let out = options.out.clone();
    let result = if compare.is_empty() {
        sweep::run(options).and_then(|(rows, out)| report::write_all(&rows, &out).map(|_| rows))
    } else {
        report::compare(&compare, &out)
    };
    match result {
        Ok(rows) => {
            report::summary(&rows, &out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sweep::{Backend, Mode};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["cargo xtask"].iter().chain(args))
    }

    #[test]
    fn sizes_and_flags_parse() {
        let cli = parse(&[
            "bench",
            "--sizes",
            "4k,100",
            "--mode",
            "both",
            "--backend",
            "cpu",
        ])
        .unwrap();
        let Task::Bench { options, compare } = cli.task;
        assert_eq!(options.sizes, Some(vec![4096, 100]));
        assert_eq!(options.mode, Mode::Both);
        assert_eq!(options.backend, Some(Backend::Cpu));
        assert!(compare.is_empty());
        assert!(parse(&["bench", "--dtype", "f8"]).is_err());
        assert!(parse(&["bench", "--sizes", "4q"]).is_err());
        assert!(parse(&["bench", "--iters", "0"]).is_err());
        assert!(parse(&["bench", "--no-such-flag"]).is_err());
        let help = parse(&["bench", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
    }

    /// CI's tiny sweep: the three outputs exist and parse.
    #[test]
    fn tiny_sweep_writes_json_markdown_and_svg() {
        let out = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let opts = Options {
            backend: Some(Backend::Cpu),
            sizes: Some(vec![128, 256]),
            pattern: "seed".into(),
            mode: Mode::Both,
            iters: 2,
            out: out.clone(),
            ..Options::default()
        };
        let (rows, out) = sweep::run(opts).unwrap();
        report::write_all(&rows, &out).unwrap();
        let json: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(json.len(), 8);
        for key in [
            "impl",
            "backend",
            "device",
            "dtype",
            "batch",
            "heads",
            "head_dim",
            "n",
            "pattern",
            "density",
            "mode",
            "median_ms",
            "p10_ms",
            "p90_ms",
            "queued_ms",
            "tflops",
            "peak_mem_bytes",
            "status",
            "path",
            "commit",
        ] {
            assert!(
                json.iter().all(|r| r.get(key).is_some()),
                "missing key {key}"
            );
        }
        assert!(json.iter().all(|r| r["status"] == "ok"));
        let md = std::fs::read_to_string(out.join("results.md")).unwrap();
        assert_eq!(md.lines().count(), 2 + rows.len());
        let svg = std::fs::read_to_string(out.join("results.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            4,
            "one line per impl and mode"
        );
        let _ = std::fs::remove_dir_all(out);
    }
}

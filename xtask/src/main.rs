//! `cargo xtask bench`: sweeps sequence lengths and patterns on a backend and writes
//! `results.json`, `results.md` and `results.svg` (time and memory vs n, log–log).
//!
//! `cargo xtask bench --compare a.json b.json [--out DIR]` merges result files (e.g. ours and
//! `benches/torch_baseline.py`'s) into one table and plot.

mod plot;
mod report;
mod sweep;

use std::path::PathBuf;

use sweep::Options;

const USAGE: &str = "usage: cargo xtask bench [--backend cuda|wgpu|cpu] [--sizes 4k,8k,...] \
[--pattern seed|longnet|local|global|random|LIST,...|all] [--config FILE.json] [--dtype f32|f16|bf16] \
[--batch B] [--heads H] [--head-dim D] [--mode fwd|fwdbwd|both] [--iters N] [--out DIR]\n       \
cargo xtask bench --compare a.json b.json [...] [--out DIR]";

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => (s.as_str(), 1),
    };
    num.parse::<usize>()
        .map(|v| v * mul)
        .map_err(|_| format!("--sizes: `{s}` is not a size like 4096 or 4k"))
}

fn parse(args: &[String]) -> Result<(Options, Vec<PathBuf>), String> {
    let mut opts = Options::default();
    let mut compare = Vec::new();
    let mut sizes = None;
    let mut i = 0;
    let value = |i: usize| -> Result<&String, String> {
        args.get(i + 1)
            .ok_or_else(|| format!("{} needs a value", args[i]))
    };
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--backend" => opts.backend = Some(value(i)?.parse()?),
            "--sizes" => {
                sizes = Some(
                    value(i)?
                        .split(',')
                        .map(parse_size)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            "--pattern" => opts.pattern = value(i)?.clone(),
            "--config" => opts.config = Some(PathBuf::from(value(i)?)),
            "--dtype" => opts.dtype = value(i)?.clone(),
            "--batch" => opts.batch = value(i)?.parse().map_err(|_| "--batch: a number")?,
            "--heads" => opts.heads = value(i)?.parse().map_err(|_| "--heads: a number")?,
            "--head-dim" => {
                opts.head_dim = value(i)?.parse().map_err(|_| "--head-dim: a number")?
            }
            "--mode" => opts.mode = value(i)?.parse()?,
            "--iters" => opts.iters = value(i)?.parse().map_err(|_| "--iters: a number")?,
            "--out" => opts.out = PathBuf::from(value(i)?),
            "--compare" => {
                while i + 1 < args.len() && !args[i + 1].starts_with("--") {
                    compare.push(PathBuf::from(&args[i + 1]));
                    i += 1;
                }
                i += 1;
                continue;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
        i += 2;
    }
    if !matches!(opts.dtype.as_str(), "f32" | "f16" | "bf16") {
        return Err(format!("--dtype: f32, f16 or bf16, got `{}`", opts.dtype));
    }
    if opts.iters < 1 {
        return Err("--iters: at least 1".into());
    }
    opts.sizes = sizes;
    Ok((opts, compare))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("bench") {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let (opts, compare) = match parse(&args[1..]) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = if compare.is_empty() {
        sweep::run(opts.clone())
            .and_then(|(rows, out)| report::write_all(&rows, &out).map(|_| rows))
    } else {
        report::compare(&compare, &opts.out)
    };
    match result {
        Ok(rows) => report::summary(&rows, &opts.out),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sweep::{Backend, Mode};

    #[test]
    fn sizes_and_flags_parse() {
        let args: Vec<String> = ["--sizes", "4k,100", "--mode", "both", "--backend", "cpu"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (opts, compare) = parse(&args).unwrap();
        assert_eq!(opts.sizes, Some(vec![4096, 100]));
        assert_eq!(opts.mode, Mode::Both);
        assert_eq!(opts.backend, Some(Backend::Cpu));
        assert!(compare.is_empty());
        assert!(parse(&["--dtype".into(), "f8".into()]).is_err());
        assert!(parse(&["--sizes".into(), "4q".into()]).is_err());
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
            "tflops",
            "peak_mem_bytes",
            "status",
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

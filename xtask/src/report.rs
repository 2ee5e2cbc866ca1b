//! Output of a sweep: JSON rows, a Markdown table, the SVG plot, a progress bar and a summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::plot;
use crate::sweep::Row;

/// A one-line progress bar on stderr.
pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self {
            total: total.max(1),
            done: 0,
            start: Instant::now(),
        }
    }

    pub fn step(&mut self, what: &str) {
        self.done += 1;
        let width = 30;
        let filled = width * self.done / self.total;
        eprint!(
            "\r[{}{}] {}/{} {:>6.1}s  {what:<40}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        eprintln!();
    }
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// The Markdown table of `rows`.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| impl | backend | dtype | B/H/D | n | pattern | density | mode | median ms | p10 ms | p90 ms | queued ms | TFLOP/s | peak MiB | status |\n\
         |---|---|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {}/{}/{} | {} | {} | {:.4} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.implementation,
            r.backend,
            r.dtype,
            r.batch,
            r.heads,
            r.head_dim,
            r.n,
            r.pattern,
            r.density,
            r.mode,
            fmt(r.median_ms, 3),
            fmt(r.p10_ms, 3),
            fmt(r.p90_ms, 3),
            fmt(r.queued_ms, 3),
            fmt(r.tflops, 2),
            r.peak_mem_bytes
                .map_or("–".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            r.status
        );
    }
    s
}

/// Writes `results.json`, `results.md` and `results.svg` into `out`.
pub fn write_all(rows: &[Row], out: &Path) -> Result<(), String> {
    write_named(rows, out, "results")
}

fn write_named(rows: &[Row], out: &Path, stem: &str) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: String, body: String| {
        let path = out.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        format!("{stem}.json"),
        serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?,
    )?;
    write(format!("{stem}.md"), markdown(rows))?;
    write(format!("{stem}.svg"), plot::svg(rows))?;
    Ok(())
}

/// Merges result files into `compare.{json,md,svg}`.
pub fn compare(files: &[PathBuf], out: &Path) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let mut part: Vec<Row> = match serde_json::from_str(&text) {
            Ok(rows) => rows,
            // One JSON object per line (benches/torch_baseline.py).
            Err(_) => text
                .lines()
                .filter(|l| l.trim_start().starts_with('{'))
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", f.display()))?,
        };
        rows.append(&mut part);
    }
    rows.sort_by(|a, b| {
        (a.pattern.as_str(), a.mode.as_str(), a.n).cmp(&(b.pattern.as_str(), b.mode.as_str(), b.n))
    });
    write_named(&rows, out, "compare")?;
    Ok(rows)
}

/// A one-screen summary: per pattern and mode, our time at the largest n next to the others.
pub fn summary(rows: &[Row], out: &Path) {
    println!("\n{} rows written to {}", rows.len(), out.display());
    let mut keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.pattern.clone(), r.mode.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    for (pattern, mode) in keys {
        let sel: Vec<&Row> = rows
            .iter()
            .filter(|r| r.pattern == pattern && r.mode == mode)
            .collect();
        let line: Vec<String> = sel
            .iter()
            .map(|r| match (r.median_ms, r.queued_ms) {
                (Some(ms), Some(q)) => {
                    format!("{} n={} {ms:.3} ms (queued {q:.3})", r.implementation, r.n)
                }
                (Some(ms), None) => format!("{} n={} {ms:.3} ms", r.implementation, r.n),
                _ => format!("{} n={} {}", r.implementation, r.n, r.status),
            })
            .collect();
        println!("{pattern:>8} {mode:<6} {}", line.join(" | "));
    }
}

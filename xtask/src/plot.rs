//! A dependency-free SVG plot: time and (where the backend measures it) memory against n,
//! log–log, one line per (implementation, pattern, mode). The axes span the data; the legend
//! sits below the plot, off the lines.

use crate::sweep::Row;

const W: f64 = 520.0;
const PLOT_H: f64 = 300.0;
const PAD: f64 = 56.0;
const LEGEND_LINE: f64 = 14.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// `log10` of the smallest and largest positive finite values, widened by 5 % of the span
/// (a decade where there is one value) so that no point sits on the frame.
fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    (lo <= hi).then(|| {
        let (lo, hi) = (lo.log10(), hi.log10());
        let margin = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
        (lo - margin, hi + margin)
    })
}

/// Tokens as people write them: 512, 4K, 128K, 1M.
fn tokens(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

/// The 1–2–5 values inside `[10^lo, 10^hi]`.
fn y_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    for e in (lo.floor() as i32)..=(hi.ceil() as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if (lo..=hi).contains(&v.log10()) {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// The (implementation pattern mode) series of `value`, points sorted by n.
fn series(rows: &[Row], value: &impl Fn(&Row) -> Option<f64>) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        let Some(v) = value(r).filter(|v| *v > 0.0 && v.is_finite()) else {
            continue;
        };
        let key = format!("{} {} {}", r.implementation, r.pattern, r.mode);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, pts)) => pts.push((r.n as f64, v)),
            None => series.push((key, vec![(r.n as f64, v)])),
        }
    }
    for (_, pts) in &mut series {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// One panel at `x0`: plot area, axes labelled at the measured n and at 1–2–5 values, one
/// polyline per series, the legend below. `None` where no row has a value.
fn panel(
    rows: &[Row],
    x0: f64,
    title: &str,
    value: impl Fn(&Row) -> Option<f64>,
    unit: &str,
) -> Option<String> {
    let series = series(rows, &value);
    let (xl, xh) = log_range(series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)))?;
    let (yl, yh) = log_range(series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)))?;
    let px = |n: f64| PAD + (n.log10() - xl) / (xh - xl) * (W - 2.0 * PAD);
    let py = |v: f64| PAD + PLOT_H - (v.log10() - yl) / (yh - yl) * PLOT_H;
    let mut s = format!(
        "<g transform=\"translate({x0},0)\"><text x=\"{}\" y=\"24\" text-anchor=\"middle\" \
         font-size=\"14\">{title}</text><rect x=\"{PAD}\" y=\"{PAD}\" width=\"{}\" \
         height=\"{PLOT_H}\" fill=\"none\" stroke=\"#444\"/>",
        W / 2.0,
        W - 2.0 * PAD,
    );
    let mut ns: Vec<usize> = rows.iter().map(|r| r.n).collect();
    ns.sort_unstable();
    ns.dedup();
    for n in ns {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
            px(n as f64),
            PAD + PLOT_H + 14.0,
            tokens(n)
        );
    }
    for v in y_ticks(yl, yh) {
        let y = py(v);
        s += &format!(
            "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{v}</text>",
            W - PAD,
            PAD - 4.0,
            y + 3.0
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">n (tokens)</text>\
         <text x=\"12\" y=\"{y}\" font-size=\"11\" transform=\"rotate(-90 12 {y})\">{unit}</text>",
        W / 2.0,
        PAD + PLOT_H + 30.0,
        y = PAD + PLOT_H / 2.0,
    );
    for (i, (key, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(n, v)| format!("{:.1},{:.1}", px(n), py(v)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(n, v) in pts {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                px(n),
                py(v)
            );
        }
        let y = legend_top() + LEGEND_LINE * i as f64;
        s += &format!(
            "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{color}\" \
             stroke-width=\"2\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{key}</text>",
            PAD + 18.0,
            PAD + 24.0,
            y + 4.0
        );
    }
    Some(s + "</g>")
}

/// Where the legend starts, below the x axis' title.
fn legend_top() -> f64 {
    PAD + PLOT_H + 48.0
}

/// The plot of `rows` as an SVG document: the time panel, and the memory panel beside it
/// where some row has a memory figure.
pub fn svg(rows: &[Row]) -> String {
    let time = panel(rows, 0.0, "time (median) vs n", |r| r.median_ms, "ms");
    let memory = panel(
        rows,
        W,
        "peak memory of the row vs n",
        |r| r.peak_mem_bytes.map(|b| b as f64 / 1048576.0),
        "MiB",
    );
    let lines = series(rows, &|r: &Row| r.median_ms).len().max(1);
    let height = legend_top() + LEGEND_LINE * lines as f64 + 8.0;
    let panels = 1 + usize::from(memory.is_some());
    let body = match time {
        Some(time) => time + &memory.unwrap_or_default(),
        None => "<text x=\"260\" y=\"180\" text-anchor=\"middle\">no timed rows</text>".into(),
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>{body}</svg>\n",
        W * panels as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_labels_and_ticks() {
        assert_eq!(tokens(1024), "1K");
        assert_eq!(tokens(131072), "128K");
        assert_eq!(tokens(1 << 22), "4M");
        assert_eq!(tokens(1000), "1000");
        assert_eq!(y_ticks(0.0, 1.0), vec![1.0, 2.0, 5.0, 10.0]);
    }
}

//! A dependency-free SVG plot: time and peak memory against n, log–log, one line per
//! (implementation, pattern, mode).

use crate::sweep::Row;

const W: f64 = 520.0;
const H: f64 = 360.0;
const PAD: f64 = 56.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    (lo <= hi).then(|| {
        let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
        (lo, if hi > lo { hi } else { lo + 1.0 })
    })
}

fn panel(
    rows: &[Row],
    x0: f64,
    title: &str,
    value: impl Fn(&Row) -> Option<f64>,
    unit: &str,
) -> String {
    let mut s = format!(
        "<g transform=\"translate({x0},0)\"><text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\
         <rect x=\"{PAD}\" y=\"{PAD}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>",
        W / 2.0,
        W - 2.0 * PAD,
        H - 2.0 * PAD
    );
    let (Some((xl, xh)), Some((yl, yh))) = (
        log_range(rows.iter().map(|r| r.n as f64)),
        log_range(rows.iter().filter_map(&value)),
    ) else {
        return s + "<text x=\"260\" y=\"180\" text-anchor=\"middle\">no data</text></g>";
    };
    let px = |n: f64| PAD + (n.log10() - xl) / (xh - xl) * (W - 2.0 * PAD);
    let py = |v: f64| H - PAD - (v.log10() - yl) / (yh - yl) * (H - 2.0 * PAD);
    for e in (xl as i32)..=(xh as i32) {
        let x = px(10f64.powi(e));
        s += &format!(
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">1e{e}</text>",
            H - PAD + 14.0
        );
    }
    for e in (yl as i32)..=(yh as i32) {
        let y = py(10f64.powi(e));
        s += &format!(
            "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">1e{e}</text>",
            W - PAD,
            PAD - 4.0,
            y + 3.0
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">n (tokens)</text><text x=\"12\" y=\"{}\" font-size=\"11\" transform=\"rotate(-90 12 {})\">{unit}</text>",
        W / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        let Some(v) = value(r) else { continue };
        let key = format!("{} {} {}", r.implementation, r.pattern, r.mode);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, pts)) => pts.push((r.n as f64, v)),
            None => series.push((key, vec![(r.n as f64, v)])),
        }
    }
    for (i, (key, mut pts)) in series.into_iter().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(n, v)| format!("{:.1},{:.1}", px(n), py(v)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(n, v) in &pts {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                px(n),
                py(v)
            );
        }
        s += &format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"{color}\">{key}</text>",
            PAD + 6.0,
            PAD + 12.0 + 12.0 * i as f64
        );
    }
    s + "</g>"
}

/// The plot of `rows` as an SVG document.
pub fn svg(rows: &[Row]) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{H}\" font-family=\"sans-serif\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>{}{}</svg>\n",
        2.0 * W,
        panel(rows, 0.0, "time (median) vs n", |r| r.median_ms, "ms"),
        panel(
            rows,
            W,
            "peak memory vs n",
            |r| r.peak_mem_bytes.map(|b| b as f64 / 1048576.0),
            "MiB"
        )
    )
}

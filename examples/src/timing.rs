//! The one timing helper of the benchmarks (`cargo xtask bench`, `kernel_bench`,
//! `device_probe`): wall time of a closure ended by a device sync, after warm-up, as a median
//! of many runs.

use std::time::Instant;

use burn::prelude::*;

/// Wall times in ms of `iters` runs of `f` after `warmup` runs, each ended by a device sync
/// (a failed sync is an error: the timed work did not run).
pub fn times(
    device: &Device,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut(),
) -> Result<Vec<f64>, String> {
    let sync = || device.sync().map_err(|e| format!("device sync: {e}"));
    for _ in 0..warmup {
        f();
        sync()?;
    }
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            sync()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// The median, 10th and 90th percentile of `t` (ms); `NaN` for no samples.
pub fn median_p10_p90(mut t: Vec<f64>) -> (f64, f64, f64) {
    if t.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

/// The median wall time in ms of `iters` runs of `f` after two warm-ups.
pub fn median_ms(device: &Device, iters: usize, f: impl FnMut()) -> Result<f64, String> {
    Ok(median_p10_p90(times(device, 2, iters.max(1), f)?).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let (m, lo, hi) = median_p10_p90((1..=11).map(f64::from).rev().collect());
        assert_eq!((m, lo, hi), (6.0, 2.0, 10.0));
        assert!(median_p10_p90(Vec::new()).0.is_nan());
    }

    #[test]
    fn times_runs_warmup_and_iterations() {
        let device = Device::flex();
        let mut calls = 0;
        let t = times(&device, 2, 5, || calls += 1).unwrap();
        assert_eq!((t.len(), calls), (5, 7));
    }
}

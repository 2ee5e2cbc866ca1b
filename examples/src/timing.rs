//! The one timing helper of the benchmarks (`cargo xtask bench`, `kernel_bench`,
//! `device_probe`): wall time of a closure ended by a device sync, after warm-up, as a median
//! of many runs.
//!
//! Two rulers: [`times`] syncs after every run, so each sample also holds the host's work
//! before the first launch and the sync's own latency; [`queued_times`] queues
//! [`QUEUE`] runs back to back before one sync and divides, so the host's work overlaps the
//! device's as in a training loop. PyTorch's `triton.testing.do_bench` (the peers' rows) times
//! back-to-back runs with device events, which is the second ruler's view.

use std::time::Instant;

use burn::prelude::*;

/// The wall time in ms of `per_sync` back-to-back runs of `f` ended by one device sync,
/// divided by `per_sync` (a failed sync is an error: the timed work did not run).
fn group(device: &Device, per_sync: usize, f: &mut impl FnMut()) -> Result<f64, String> {
    let start = Instant::now();
    for _ in 0..per_sync {
        f();
    }
    device.sync().map_err(|e| format!("device sync: {e}"))?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / per_sync as f64)
}

/// Wall times in ms of `iters` runs of `f` after `warmup` runs, each ended by a device sync.
pub fn times(
    device: &Device,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut(),
) -> Result<Vec<f64>, String> {
    for _ in 0..warmup {
        group(device, 1, &mut f)?;
    }
    (0..iters).map(|_| group(device, 1, &mut f)).collect()
}

/// Runs queued before each sync in [`queued_times`].
pub const QUEUE: usize = 5;

/// Per-run wall times in ms of `groups` groups of `per_sync` back-to-back runs of `f`, each
/// group ended by one device sync (the group's time divided by `per_sync`), after one warm-up
/// group.
pub fn queued_times(
    device: &Device,
    groups: usize,
    per_sync: usize,
    mut f: impl FnMut(),
) -> Result<Vec<f64>, String> {
    let per_sync = per_sync.max(1);
    group(device, per_sync, &mut f)?;
    (0..groups)
        .map(|_| group(device, per_sync, &mut f))
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

    #[test]
    fn queued_times_run_groups_after_one_warmup_group() {
        let device = Device::flex();
        let mut calls = 0;
        let t = queued_times(&device, 3, 4, || calls += 1).unwrap();
        assert_eq!((t.len(), calls), (3, 16));
    }
}

//! Device memory across autodiff calls through the kernels, on the wgpu device (lavapipe in CI).
//!
//! A training loop calls the attention with the same leaves (`require_grad` parameters), runs a
//! backward and drops everything but the leaves; what the device holds afterwards must not grow
//! from step to step. The measure is CubeCL's bytes in use (the requested sizes of live
//! allocations, not the pool's reservation), after a device sync so Fusion's queued drops have
//! run. This file holds a single test: the figure is device-wide, so nothing else may run on the
//! device beside it.
#![cfg(feature = "wgpu")]

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use common::gpu;
use dilated_attention::{BlockSparseRingDilatedAttention, DilatedPattern, KernelPolicy};

/// Bytes in use on `device` once its queued work (and drops) have run.
fn in_use(device: &Device) -> u64 {
    let _ = device.sync();
    device.memory_pool_usage().map_or(0, |u| u.bytes_in_use)
}

/// Four steps of forward (`out` and `lse`), backward (from `out` alone, then from `out` and
/// `lse`, in turn), drops: after each step the device holds the three leaves and at most a
/// quarter of one input's bytes besides (the kernels' cached block layouts), the same after
/// every step once both kinds have run. Before `LseStep` stopped holding `out`, one more
/// output-sized tensor stayed alive per step (1, 2, 3, 3).
#[test]
fn autodiff_calls_leave_nothing_behind() {
    let Some(device) = gpu() else { return };
    let (h, n, d) = (2, 512, 32);
    let module =
        BlockSparseRingDilatedAttention::from_pattern(DilatedPattern::seed(64, false), None)
            .with_kernel_policy(KernelPolicy::Require);
    let ad = device.clone().autodiff();
    device.memory_cleanup();
    let base = in_use(&device);
    let leaf =
        || Tensor::<4>::random([1, h, n, d], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let (q, k, v) = (leaf(), leaf(), leaf());
    let inputs = in_use(&device) - base;
    let tensor = (h * n * d * 4) as u64;
    assert!(
        inputs >= 3 * tensor,
        "the leaves are on the device: {inputs} B for 3 × {tensor} B"
    );

    let mut retained = Vec::new();
    for step in 0..4 {
        let (out, lse) = module
            .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
            .expect("the kernels serve the call");
        let mut loss = (out.clone() * out.clone()).sum();
        if step % 2 == 1 {
            loss = loss + lse.clone().sum();
        }
        let grads = loss.backward();
        let dq = q.grad(&grads).expect("q's gradient");
        assert_eq!(dq.dims(), [1, h, n, d]);
        drop((out, lse, loss, dq, grads));
        retained.push(in_use(&device) - base - inputs);
    }
    // Each kind of step caches what it needs once (a few KB); from then on nothing grows.
    assert!(
        retained.iter().all(|&r| r < tensor / 4) && retained[2..].iter().all(|&r| r == retained[1]),
        "bytes in use beyond the three leaves after each step: {retained:?} (one input: {tensor} B)"
    );
}

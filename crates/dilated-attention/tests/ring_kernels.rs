//! Ring steps through the CubeCL kernels (one windowed launch per query piece and key piece) on
//! the wgpu device (lavapipe in CI): forward and gradients equal the unchunked kernels and the
//! CPU reference, and the steps really ran the kernels (`RingOutput::kernel_steps`).
//!
//! Inputs and upstream gradients are random (never zeros); `n` is not a multiple of the block
//! or of `P`, so windows cut through blocks and segments. Tolerances (f32, max abs error
//! relative to the tensor's scale): ring against unchunked kernels ≤ 1e-5 for the forward and
//! 1e-4 for gradients (each step adds its own partial `dq`); against the reference ≤ 1e-4.
#![cfg(feature = "wgpu")]

mod common;

use burn::prelude::*;
use common::{assert_close, cpu, gpu, loss, padding_mask, qkv, randn, ring_preset, sparse, values};
use dilated_attention::{BlockSparseRingDilatedAttention, DilatedPattern, Partition, PatternType};
use rstest::rstest;

/// The seed layout's shape at a block size lavapipe runs fast, and LongNet over 16-token blocks.
fn preset(name: &str, n: usize, causal: bool) -> DilatedPattern {
    ring_preset(
        name,
        n,
        causal,
        16,
        sparse(PatternType::DilatedSparse, 16, 0.5),
    )
}

#[rstest]
#[case("seed", false, 2, Partition::Zigzag, 5, 5)]
#[case("seed", true, 3, Partition::Contiguous, 4, 2)]
#[case("longnet", false, 3, Partition::Contiguous, 5, 5)]
#[case("longnet", true, 4, Partition::Zigzag, 4, 2)]
fn ring_through_kernels_equals_unchunked(
    #[case] name: &str,
    #[case] causal: bool,
    #[case] p: usize,
    #[case] partition: Partition,
    #[case] heads: usize,
    #[case] kv_heads: usize,
) {
    let (batch, n, d) = (2, 382, 32);
    let cpu = cpu(60 + p as u64);
    let Some(gpu) = gpu() else { return };
    let inputs = qkv([batch, heads, kv_heads, n, d], &cpu);
    let r = randn([batch, heads, n, d], &cpu);
    let s = randn([batch, heads, n], &cpu);
    let module = BlockSparseRingDilatedAttention::from_pattern(preset(name, n, causal), None)
        .with_ring(1, partition);
    let what = format!("{name} causal={causal} P={p} {partition:?} heads={heads}/{kv_heads}");

    // Forward: ring, unchunked kernels, and the CPU reference.
    let [q, k, v] = inputs.clone().map(|t| t.to_device(&gpu));
    let ring = module
        .forward_ring(
            q.clone(),
            k.clone(),
            v.clone(),
            Some(padding_mask(batch, n, &gpu)),
            &vec![gpu.clone(); p],
        )
        .unwrap();
    assert!(ring.kernel_steps > 0, "{what}: no step ran the kernels");
    assert_eq!(
        ring.reference_steps, 0,
        "{what}: steps fell back to the reference"
    );
    let (o_ring, l_ring) = ring.gather(&gpu);
    let (o_plain, l_plain) = module
        .forward_kernels(q, k, v, Some(padding_mask(batch, n, &gpu)))
        .unwrap();
    let [qc, kc, vc] = inputs.clone();
    let (o_ref, l_ref) = module
        .clone()
        .without_kernels()
        .forward_with_lse(qc, kc, vc, Some(padding_mask(batch, n, &cpu)))
        .unwrap();
    let (o_ring, l_ring) = (values(o_ring), values(l_ring));
    assert_close(&o_ring, &values(o_plain), 1e-5, &format!("out {what}"));
    assert_close(&l_ring, &values(l_plain), 1e-5, &format!("lse {what}"));
    assert_close(
        &o_ring,
        &values(o_ref),
        1e-4,
        &format!("out vs reference {what}"),
    );
    assert_close(
        &l_ring,
        &values(l_ref),
        1e-4,
        &format!("lse vs reference {what}"),
    );

    // Gradients through autodiff: the ring's windowed backward kernels against the unchunked
    // backward kernels, and against the reference path's autodiff on the CPU.
    let grads = |device: &Device, how: &str| {
        let ad = device.clone().autodiff();
        let [q, k, v] = inputs
            .clone()
            .map(|t| Tensor::<4>::from_data(t.into_data(), &ad).require_grad());
        let mask = Some(padding_mask(batch, n, &ad));
        let (out, lse) = match how {
            "ring" => {
                let ring = module
                    .forward_ring(q.clone(), k.clone(), v.clone(), mask, &vec![ad.clone(); p])
                    .unwrap();
                assert_eq!(ring.reference_steps, 0, "{what}: autodiff steps fell back");
                ring.gather(&ad)
            }
            "kernels" => module
                .forward_kernels(q.clone(), k.clone(), v.clone(), mask)
                .unwrap(),
            _ => module
                .clone()
                .without_kernels()
                .forward_with_lse(q.clone(), k.clone(), v.clone(), mask)
                .unwrap(),
        };
        let r = Tensor::<4>::from_data(r.to_data(), &ad);
        let s = Tensor::<3>::from_data(s.to_data(), &ad);
        let g = loss(out, lse, &r, &s).backward();
        [q, k, v].map(|t| values(t.grad(&g).unwrap()))
    };
    let ring = grads(&gpu, "ring");
    let plain = grads(&gpu, "kernels");
    let reference = grads(&cpu, "reference");
    for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
        assert_close(&ring[i], &plain[i], 1e-4, &format!("{name} {what}"));
        assert_close(
            &ring[i],
            &reference[i],
            1e-4,
            &format!("{name} vs reference {what}"),
        );
    }
}

/// A striped holder owns `n / P` one-token pieces: its steps go to the reference path, with
/// the same results.
#[test]
fn striped_ring_falls_back_to_the_reference() {
    let (n, p) = (190, 3);
    let cpu = cpu(70);
    let Some(gpu) = gpu() else { return };
    let module = BlockSparseRingDilatedAttention::from_pattern(preset("longnet", n, true), None)
        .with_ring(1, Partition::Striped);
    let [q, k, v] = [0; 3].map(|_| randn([1, 4, n, 32], &cpu).to_device(&gpu));
    let ring = module
        .forward_ring(q.clone(), k.clone(), v.clone(), None, &vec![gpu.clone(); p])
        .unwrap();
    assert_eq!(ring.kernel_steps, 0);
    assert!(ring.reference_steps > 0);
    let (o_ring, _) = ring.gather(&gpu);
    let (o_plain, _) = module.forward_kernels(q, k, v, None).unwrap();
    assert_close(&values(o_ring), &values(o_plain), 1e-5, "striped");
}

//! The ring equals the unchunked path: on one device with P chunks, across a list of device
//! handles (the same code path as several GPUs), forward and gradients.
//! Tolerance: f32, max abs error ≤ 1e-5 relative to the output scale.

mod common;

use common::{assert_close, cpu, padding_mask, qkv, randn, ring_preset, values};
use dilated_attention::{
    BlockSparseRingDilatedAttention, DilatedPattern, Partition, PatternType, SparsePatternConfig,
};
use rstest::rstest;

fn preset(name: &str, n: usize, causal: bool) -> DilatedPattern {
    ring_preset(
        name,
        n,
        causal,
        128,
        SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_size(64)
            .with_sparsity_ratio(0.8),
    )
}

#[rstest]
#[case("seed", false, 2, Partition::Zigzag)]
#[case("seed", true, 3, Partition::Contiguous)]
#[case("longnet", false, 4, Partition::Striped)]
#[case("longnet", true, 4, Partition::Zigzag)]
fn single_device_ring_equals_unchunked(
    #[case] name: &str,
    #[case] causal: bool,
    #[case] p: usize,
    #[case] partition: Partition,
) {
    let n = 3824;
    let device = cpu(40);
    let [q, k, v] = qkv([1, 5, 5, n, 32], &device);
    let mask = Some(padding_mask(1, n, &device));
    let plain = BlockSparseRingDilatedAttention::from_pattern(preset(name, n, causal), None);
    let ring = plain.clone().with_ring(p, partition);
    let (o0, l0) = plain
        .forward_with_lse(q.clone(), k.clone(), v.clone(), mask.clone())
        .unwrap();
    let (o1, l1) = ring.forward_with_lse(q, k, v, mask).unwrap();
    let what = format!("{name} causal={causal} P={p} {partition:?}");
    assert_close(&values(o1), &values(o0), 1e-5, &format!("out {what}"));
    assert_close(&values(l1), &values(l0), 1e-5, &format!("lse {what}"));
}

#[test]
fn ring_across_device_handles_with_gradients() {
    // Three handles of the CPU device: the code path of three GPUs (chunks move with to_device).
    let n = 600;
    let device = cpu(41).autodiff();
    let devices = vec![device.clone(); 3];
    let module = BlockSparseRingDilatedAttention::from_pattern(preset("longnet", n, true), None)
        .with_ring(1, Partition::Zigzag);
    let q = randn([2, 4, n, 16], &device).require_grad();
    let k = randn([2, 2, n, 16], &device).require_grad();
    let v = randn([2, 2, n, 16], &device).require_grad();
    let weights = randn([2, 4, n, 16], &device);

    let ring = module
        .forward_ring(q.clone(), k.clone(), v.clone(), None, &devices)
        .unwrap();
    assert_eq!(ring.outs.len(), 3);
    assert_eq!(ring.tokens.iter().map(Vec::len).sum::<usize>(), n);
    let (o_ring, _) = ring.gather(&device);
    let g_ring = (o_ring.clone() * weights.clone()).sum().backward();
    let (o_plain, _) = module
        .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
        .unwrap();
    let g_plain = (o_plain.clone() * weights).sum().backward();
    assert_close(&values(o_ring), &values(o_plain), 1e-5, "ring output");
    for (name, t) in [("dq", &q), ("dk", &k), ("dv", &v)] {
        assert_close(
            &values(t.grad(&g_ring).unwrap()),
            &values(t.grad(&g_plain).unwrap()),
            1e-5,
            name,
        );
    }
}

#[test]
fn ring_size_in_the_config_and_bad_device_lists() {
    let device = cpu(42);
    let config = dilated_attention::BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![64, 256])
        .with_dilation_rates(vec![1, 2])
        .with_block_size(Some(16))
        .with_causal(true);
    let plain = config.init(&device).unwrap();
    let ring = config.clone().with_ring_size(4).init(&device).unwrap();
    let q = randn([1, 2, 256, 16], &device);
    let a = plain.forward(q.clone(), q.clone(), q.clone()).unwrap();
    let b = ring.forward(q.clone(), q.clone(), q.clone()).unwrap();
    assert_close(&values(b), &values(a), 1e-5, "config ring");
    let schedule = ring.ring_schedule(256, 2, 4).unwrap();
    assert!(schedule.imbalance() < 1.2);
    assert_eq!(
        config.with_ring_size(0).init(&device).unwrap_err().field(),
        "ring_size"
    );
    let err = plain
        .forward_ring(q.clone(), q.clone(), q, None, &[])
        .unwrap_err();
    assert_eq!(err.field(), "devices");
}

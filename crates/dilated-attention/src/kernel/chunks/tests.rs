//! The chunked launches against one launch, and the head-chunk rule.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::Distribution;

use super::super::KernelCall;
use super::super::attention;
use super::{MAX_ELEMENTS, chunking, head_chunk};
use crate::inputs::AttentionShape;
use crate::{BlockLayout, DilatedPattern};

/// The wgpu device, or `None` (the test then passes untested, unless CI asks for a GPU).
fn gpu() -> Option<Device> {
    let device = std::panic::catch_unwind(|| {
        let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        let _ = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        device
    })
    .ok();
    if device.is_none() && std::env::var("DILATED_ATTENTION_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("no wgpu adapter and DILATED_ATTENTION_REQUIRE_GPU=1");
    }
    device
}

/// A call in chunks of heads, each in launches of batches (as at 8M tokens, where one batch
/// passes 2^32 elements and two chunks of four heads are two batches of 2^31), gives the
/// one-launch call's `out`, `lse` and gradients of `q`, `k` and `v` — plain, and with GQA
/// (two query heads a kv head) and a key padding mask.
#[rstest::rstest]
#[case::plain(4, false)]
#[case::gqa_masked(2, true)]
fn chunked_calls_give_the_whole_calls_values_and_gradients(
    #[case] kv_heads: usize,
    #[case] masked: bool,
) {
    let Some(device) = gpu() else { return };
    let (b, h, n, d) = (2, 4, 64, 32);
    let pattern = DilatedPattern::seed(16, false);
    let mut call = KernelCall {
        shape: AttentionShape {
            batch: b,
            heads: h,
            kv_heads,
            n,
            head_dim: d,
        },
        layout: Arc::new(BlockLayout::new(&pattern, n, h).unwrap()),
        scale: 0.25,
        cache: Default::default(),
        window: None,
        strategy: None,
        max_elements: MAX_ELEMENTS,
    };
    // Two heads a chunk (4096 elements), then one batch a launch: four launches.
    let small = KernelCall {
        max_elements: 2 * n * d,
        ..call.clone()
    };
    let c = chunking(&small, [b, h, n, d], [kv_heads, n])
        .unwrap()
        .expect("chunks");
    assert_eq!((c.folds, c.batches, c.ranges(b).count()), (2, 1, 4));
    let ad = device.clone().autodiff();
    let draw = |heads: usize| {
        Tensor::<4>::random([b, heads, n, d], Distribution::Normal(0.0, 1.0), &ad).to_data()
    };
    let (q, k, v, r) = (draw(h), draw(kv_heads), draw(kv_heads), draw(h));
    // Padded keys (`true`): about a fifth, none of a whole row's keys.
    let mask = masked.then(|| {
        Tensor::<2>::random([b, n], Distribution::Uniform(0.0, 1.0), &ad).lower_equal_elem(0.2)
    });
    let mut run = |max: usize| {
        call.max_elements = max;
        let leaf = |x: &TensorData| Tensor::<4>::from_data(x.clone(), &ad).require_grad();
        let (q, k, v) = (leaf(&q), leaf(&k), leaf(&v));
        let (out, lse) = attention(&q, &k, &v, mask.as_ref(), &call).unwrap();
        let loss = (out.clone() * Tensor::<4>::from_data(r.clone(), &ad)).sum() + lse.clone().sum();
        let grads = loss.backward();
        let read = |t: Tensor<4>| t.try_to_vec_as::<f32>().unwrap();
        let grad = |t: &Tensor<4>| read(t.grad(&grads).expect("a gradient"));
        [
            read(out.inner()),
            lse.inner().try_to_vec_as::<f32>().unwrap(),
            grad(&q),
            grad(&k),
            grad(&v),
        ]
    };
    let whole = run(MAX_ELEMENTS);
    let chunked = run(small.max_elements);
    for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
        .iter()
        .zip(whole.iter().zip(&chunked))
    {
        let e = a
            .iter()
            .zip(b)
            .map(|(x, y)| {
                if x.is_nan() && y.is_nan() {
                    0.0
                } else {
                    (x - y).abs()
                }
            })
            .fold(0.0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) });
        assert!(e < 1e-5, "{name}: chunked differs by {e}");
    }
}

#[test]
fn head_chunks_are_the_largest_that_fit() {
    // 8 heads of 2^29 elements (the seed layout at 8M tokens): chunks of 4 heads would
    // be 2^31, 8 would be 2^32 > u32::MAX.
    let max = u32::MAX as usize;
    assert_eq!(head_chunk(8, 1, 1, [1 << 23, 1 << 23, 64], max), Some(4));
    // 16M tokens: 2^30 a head, so two a chunk (four would be 2^32).
    assert_eq!(head_chunk(8, 1, 1, [1 << 24, 1 << 24, 64], max), Some(2));
    // Dilation rates up to 4 and a GQA group of 2: chunks are multiples of 4.
    assert_eq!(head_chunk(16, 2, 4, [1000, 1000, 64], 5 * 64_000), Some(4));
    assert_eq!(head_chunk(16, 2, 4, [1000, 1000, 64], 3 * 64_000), None);
    // Keys longer than queries bound the chunk through the kv heads.
    assert_eq!(head_chunk(8, 2, 2, [10, 100, 1], 200), Some(4));
}

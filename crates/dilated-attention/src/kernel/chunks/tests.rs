//! The chunked launches against one launch, and the head-chunk rule.

use burn::prelude::*;
use burn::tensor::DType;

use super::check::{ChunkCase, chunked_launches};
use super::head_chunk;

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
    let case = ChunkCase {
        dtype: DType::F32,
        kv_heads,
        masked,
        head_dim: 32,
        n: 64,
        block: 16,
    };
    let check = chunked_launches(&device, case).unwrap();
    // Two heads a chunk (4096 elements), then one batch a launch: four launches.
    assert_eq!(check.launches, 4);
    for (name, e) in ["out", "lse", "dq", "dk", "dv"].iter().zip(check.relative) {
        assert!(e < 1e-5, "{name}: chunked differs by {e} (relative)");
    }
}

proptest::proptest! {
    /// Whatever the sizes: a chunk divides the heads, keeps whole GQA groups and dilation
    /// periods (a multiple of `unit`), fits `max` for queries and keys, and no larger
    /// such chunk fits; `None` only where not even `unit` heads fit.
    #[test]
    fn head_chunks_divide_fit_and_are_largest(
        kv_heads in 1usize..8,
        group in 1usize..5,
        rate in 1usize..5,
        rows in 1usize..2000,
        k_rows in 1usize..2000,
        d in 1usize..65,
        max in 1usize..200_000,
    ) {
        let heads = kv_heads * group * rate;
        let unit = (1..=group * rate)
            .find(|u| u.is_multiple_of(group) && u.is_multiple_of(rate))
            .unwrap();
        let fits = |hc: usize| {
            heads.is_multiple_of(hc)
                && hc.is_multiple_of(unit)
                && hc * rows * d <= max
                && hc / group * k_rows * d <= max
        };
        match head_chunk(heads, group, unit, [rows, k_rows, d], max) {
            Some(hc) => {
                proptest::prop_assert!(fits(hc), "{hc} of {heads}");
                proptest::prop_assert!(((hc + 1)..=heads).all(|c| !fits(c)));
            }
            None => proptest::prop_assert!((1..=heads).all(|c| !fits(c))),
        }
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

//! Calls past the kernels' 32-bit offsets: the kernels index q, k, v, out and lse with `u32`
//! offsets, so a call whose tensors pass 2^32 elements runs in chunks that fit — whole batches,
//! or chunks of heads folded into the batch where one batch is too large — each through
//! [`attention`], joined after with Burn ops (autodiff sees through them).

use std::sync::Arc;

use burn::tensor::{Bool, Tensor};
use dilated_attention_kernels::KernelError;

use super::KernelCall;
use super::autodiff::attention_within;
use crate::error::KernelUnavailable;
use crate::inputs::AttentionShape;

/// Elements a tensor may span for the kernels' 32-bit offsets.
pub(crate) const MAX_ELEMENTS: usize = u32::MAX as usize;

/// The call in chunks where its tensors pass `max` elements (the kernels' 32-bit offsets,
/// [`MAX_ELEMENTS`]), `None` where it fits as it is: chunks of whole batches that fit (each its
/// own launch, joined after), and, where one batch passes them, chunks of heads folded into
/// the batch first.
pub(crate) fn split(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    call: &KernelCall,
    max: usize,
) -> Option<Result<(Tensor<4>, Tensor<3>), KernelUnavailable>> {
    let [batch, heads, rows, d] = q.dims();
    let [_, kv_heads, k_rows, _] = k.dims();
    let per_batch = (heads * rows * d).max(kv_heads * k_rows * d);
    if per_batch > max {
        return Some(by_head_chunks(q, k, v, mask, call, max));
    }
    if batch * per_batch <= max {
        return None;
    }
    let step = max / per_batch;
    let mut parts = Vec::new();
    for start in (0..batch).step_by(step) {
        let range = start..(start + step).min(batch);
        let slice = |t: &Tensor<4>| t.clone().slice_dim(0, range.clone());
        let mask = mask.map(|m| m.clone().slice_dim(0, range.clone()));
        match attention_within(&slice(q), &slice(k), &slice(v), mask.as_ref(), call, max) {
            Ok(part) => parts.push(part),
            Err(e) => return Some(Err(e)),
        }
    }
    let (outs, lses): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Some(Ok((Tensor::cat(outs, 0), Tensor::cat(lses, 0))))
}

/// The largest chunk of query heads whose tensors fit the kernels' offsets (`max` elements): a
/// divisor of `heads` and a multiple of `unit` (the GQA group and every dilation rate);
/// `rows`/`k_rows` query/key rows of `d` features, `group` query heads per kv head.
fn head_chunk(
    heads: usize,
    group: usize,
    unit: usize,
    [rows, k_rows, d]: [usize; 3],
    max: usize,
) -> Option<usize> {
    (1..=heads).rev().find(|&hc| {
        heads.is_multiple_of(hc)
            && hc.is_multiple_of(unit)
            && hc * rows * d <= max
            && hc / group * k_rows * d <= max
    })
}

/// A call one batch of which passes the kernels' 32-bit offsets, run with its heads folded into
/// the batch: chunks of [`head_chunk`] query heads, whose layout is the call's for its first
/// heads (`BlockLayout::first_heads`). The reshapes are Burn ops (views of contiguous
/// tensors), so autodiff sees through them.
fn by_head_chunks(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    call: &KernelCall,
    max: usize,
) -> Result<(Tensor<4>, Tensor<3>), KernelUnavailable> {
    let [batch, heads, rows, d] = q.dims();
    let [_, kv_heads, k_rows, _] = k.dims();
    let group = heads / kv_heads;
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let unit = call
        .layout
        .branches
        .iter()
        .fold(group, |m, b| m / gcd(m, b.dilation_rate) * b.dilation_rate);
    let chunk = head_chunk(heads, group, unit, [rows, k_rows, d], max)
        .filter(|&hc| hc < heads)
        .and_then(|hc| Some((hc, call.layout.first_heads(hc)?)));
    let Some((hc, layout)) = chunk else {
        return Err(KernelError::Unsupported {
            field: "n",
            rule: format!(
                "one batch passes the kernels' 32-bit indexing ({max} elements) and \
                 no chunk of heads that is a multiple of {unit} (the GQA group and the \
                 dilation rates) fits; split the sequence"
            ),
        }
        .into());
    };
    let chunks = heads / hc;
    let fold = |t: &Tensor<4>, h: usize, n: usize| t.clone().reshape([batch * chunks, h, n, d]);
    let (q, k, v) = (
        fold(q, hc, rows),
        fold(k, hc / group, k_rows),
        fold(v, hc / group, k_rows),
    );
    let mask = mask.map(|m| {
        m.clone()
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, chunks)
            .reshape([batch * chunks, k_rows])
    });
    let chunked = KernelCall {
        shape: AttentionShape {
            batch: batch * chunks,
            heads: hc,
            kv_heads: hc / group,
            ..call.shape
        },
        layout: Arc::new(layout),
        ..call.clone()
    };
    let (out, lse) = attention_within(&q, &k, &v, mask.as_ref(), &chunked, max)?;
    Ok((
        out.reshape([batch, heads, rows, d]),
        lse.reshape([batch, heads, rows]),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::prelude::*;
    use burn::tensor::Distribution;

    use super::super::KernelCall;
    use super::super::autodiff::attention_within;
    use super::{MAX_ELEMENTS, head_chunk};
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
        if device.is_none()
            && std::env::var("DILATED_ATTENTION_REQUIRE_GPU").is_ok_and(|v| v == "1")
        {
            panic!("no wgpu adapter and DILATED_ATTENTION_REQUIRE_GPU=1");
        }
        device
    }

    /// A call in chunks of heads, each in chunks of batches (as at 8M tokens, where one batch
    /// passes 2^32 elements and two chunks of four heads are two batches of 2^31), gives the
    /// unchunked call's `out`, `lse` and gradients of `q`, `k` and `v`.
    #[test]
    fn chunked_calls_give_the_whole_calls_values_and_gradients() {
        let Some(device) = gpu() else { return };
        let (b, h, n, d) = (2, 4, 64, 32);
        let pattern = DilatedPattern::seed(16, false);
        let call = KernelCall {
            shape: AttentionShape {
                batch: b,
                heads: h,
                kv_heads: h,
                n,
                head_dim: d,
            },
            layout: Arc::new(BlockLayout::new(&pattern, n, h).unwrap()),
            scale: 0.25,
            cache: Default::default(),
            window: None,
            strategy: None,
        };
        let ad = device.clone().autodiff();
        let draw =
            || Tensor::<4>::random([b, h, n, d], Distribution::Normal(0.0, 1.0), &ad).to_data();
        let (q, k, v, r) = (draw(), draw(), draw(), draw());
        let run = |max: usize| {
            let leaf = |x: &TensorData| Tensor::<4>::from_data(x.clone(), &ad).require_grad();
            let (q, k, v) = (leaf(&q), leaf(&k), leaf(&v));
            let (out, lse) = attention_within(&q, &k, &v, None, &call, max).unwrap();
            let loss =
                (out.clone() * Tensor::<4>::from_data(r.clone(), &ad)).sum() + lse.clone().sum();
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
        // Two heads a chunk (4096 elements), then one batch a call.
        let chunked = run(2 * n * d);
        for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
            .iter()
            .zip(whole.iter().zip(&chunked))
        {
            // NaN where exactly one side is NaN (`f32::max` would drop it).
            let e = a
                .iter()
                .zip(b)
                .map(|(x, y)| match (x.is_nan(), y.is_nan()) {
                    (true, true) => 0.0,
                    (false, false) => (x - y).abs(),
                    _ => f32::NAN,
                })
                .fold(0.0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) });
            assert!(e < 1e-5, "{name}: chunked differs by {e}");
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
}

//! Calls past the kernels' 32-bit offsets: the kernels index q, k, v, out and lse with `u32`
//! offsets, so a call whose tensors pass 2^32 elements runs in chunks that fit — whole batches,
//! or chunks of heads folded into the batch where one batch is too large — each through
//! [`attention`], joined after with Burn ops (autodiff sees through them).

use std::sync::Arc;

use burn::tensor::{Bool, Tensor};
use dilated_attention_kernels::KernelError;

use super::KernelCall;
use super::autodiff::attention;
use crate::error::KernelUnavailable;
use crate::inputs::AttentionShape;

/// Elements a tensor may span for the kernels' 32-bit offsets.
const MAX_ELEMENTS: usize = u32::MAX as usize;

/// The call in chunks where its tensors pass the kernels' 32-bit offsets, `None` where it fits
/// as it is: chunks of whole batches that fit (each its own launch, joined after), and, where
/// one batch passes them, chunks of heads folded into the batch first.
pub(crate) fn split(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
    call: &KernelCall,
) -> Option<Result<(Tensor<4>, Tensor<3>), KernelUnavailable>> {
    let [batch, heads, rows, d] = q.dims();
    let [_, kv_heads, k_rows, _] = k.dims();
    let per_batch = (heads * rows * d).max(kv_heads * k_rows * d);
    if per_batch > MAX_ELEMENTS {
        return Some(by_head_chunks(q, k, v, mask, call));
    }
    if batch * per_batch <= MAX_ELEMENTS {
        return None;
    }
    let step = MAX_ELEMENTS / per_batch;
    let mut parts = Vec::new();
    for start in (0..batch).step_by(step) {
        let range = start..(start + step).min(batch);
        let slice = |t: &Tensor<4>| t.clone().slice_dim(0, range.clone());
        let mask = mask.map(|m| m.clone().slice_dim(0, range.clone()));
        match attention(&slice(q), &slice(k), &slice(v), mask.as_ref(), call) {
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
    let chunk = head_chunk(heads, group, unit, [rows, k_rows, d], MAX_ELEMENTS)
        .filter(|&hc| hc < heads)
        .and_then(|hc| Some((hc, call.layout.first_heads(hc)?)));
    let Some((hc, layout)) = chunk else {
        return Err(KernelError::Unsupported {
            field: "n",
            rule: format!(
                "one batch passes the kernels' 32-bit indexing ({MAX_ELEMENTS} elements) and \
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
    let (out, lse) = attention(&q, &k, &v, mask.as_ref(), &chunked)?;
    Ok((
        out.reshape([batch, heads, rows, d]),
        lse.reshape([batch, heads, rows]),
    ))
}

#[cfg(test)]
mod tests {
    use super::head_chunk;

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

//! Calls past the kernels' 32-bit offsets. The kernels index q, k, v, out and lse with `u32`
//! offsets, so a call whose tensors pass 2^32 elements runs as several launches over views of
//! the same buffers: heads folded into the batch in chunks where one batch is too large (a
//! reshape of contiguous tensors), then ranges of that batch (slices, each a view with its own
//! base offset). One Burn operation still covers the whole call, so autodiff keeps the whole
//! `out` once — joining per-chunk outputs with `cat` kept each chunk's output alive beside it
//! (+25.6 % of the needed bytes at 8M tokens, `docs/benchmarks.md`, session 22).
//!
//! Shapes as in `super::run`: `q, out: [batch, heads, q_rows, head_dim]`, `k, v: [batch,
//! kv_heads, k_rows, head_dim]`, `mask: [batch, k_rows]`, `lse: [batch, heads, q_rows]`.

use std::ops::Range;
use std::sync::Arc;

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::tensor::{Shape, Slice};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use dilated_attention_kernels::KernelError;

use super::KernelCall;
use crate::inputs::AttentionShape;

/// Elements a tensor may span for the kernels' 32-bit offsets.
pub(crate) const MAX_ELEMENTS: usize = u32::MAX as usize;

/// How a call too large for one launch is cut: `folds` chunks of `call.shape.heads` query heads
/// each folded into the batch (`folds = 1`: none), then launches of `batches` of that batch.
#[derive(Debug, Clone)]
pub(crate) struct Chunking {
    /// The call of one launch's worth of heads (its layout the call's first heads).
    pub call: KernelCall,
    /// Chunks of heads per batch.
    pub folds: usize,
    /// Batches of the folded tensors a launch takes.
    pub batches: usize,
}

impl Chunking {
    /// The folded batch's ranges, one a launch.
    pub fn ranges(&self, batch: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let total = batch * self.folds;
        (0..total)
            .step_by(self.batches)
            .map(move |start| start..(start + self.batches).min(total))
    }

    /// `t: [batch, heads, rows, ...]` as `[batch · folds, heads / folds, rows, ...]`: a view of
    /// the same buffer (`t` contiguous, which `super::run` makes it).
    pub fn fold(&self, t: CubeTensor) -> CubeTensor {
        if self.folds == 1 {
            return t;
        }
        let mut dims = t.meta.shape().to_vec();
        dims[0] *= self.folds;
        dims[1] /= self.folds;
        CubeBackend::float_reshape(t, Shape::from(dims))
    }

    /// The mask `[batch, k_rows]` for the folded batch: each batch's row once per fold.
    pub fn fold_mask(&self, mask: CubeTensor) -> CubeTensor {
        if self.folds == 1 {
            return mask;
        }
        let [b, k] = [mask.meta.shape()[0], mask.meta.shape()[1]];
        let m = CubeBackend::int_reshape(mask, Shape::from([b, 1, k]));
        let m = CubeBackend::int_repeat_dim(m, 1, self.folds);
        CubeBackend::int_reshape(m, Shape::from([b * self.folds, k]))
    }
}

/// `t`'s batches `range` (dimension 0): a view where the offsets are aligned, which they are
/// for whole batches of the kernels' tensors.
pub(crate) fn batches(t: &CubeTensor, range: Range<usize>) -> CubeTensor {
    let mut ranges: Vec<Range<usize>> = t.meta.shape().iter().map(|&n| 0..n).collect();
    ranges[0] = range;
    burn_cubecl::kernel::slice(t.clone(), &ranges)
}

/// `value` written into `t`'s batches `range` (in place: `t` is the only handle to its buffer).
pub(crate) fn assign_batches(t: CubeTensor, range: Range<usize>, value: CubeTensor) -> CubeTensor {
    let mut slices: Vec<Slice> = t.meta.shape().iter().map(|&n| Slice::from(0..n)).collect();
    slices[0] = Slice::from(range);
    CubeBackend::float_slice_assign(t, &slices, value)
}

/// How `call` on `q: [batch, heads, rows, d]` and `k: [_, kv_heads, k_rows, _]` runs within
/// `call.max_elements` a tensor: `None` where one launch holds it.
pub(crate) fn chunking(
    call: &KernelCall,
    [batch, heads, rows, d]: [usize; 4],
    [kv_heads, k_rows]: [usize; 2],
) -> Result<Option<Chunking>, KernelError> {
    let max = call.max_elements;
    let per_batch = (heads * rows * d).max(kv_heads * k_rows * d);
    if batch * per_batch <= max {
        return Ok(None);
    }
    let group = heads / kv_heads;
    let (hc, layout) = if per_batch <= max {
        (heads, None)
    } else {
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
            .and_then(|hc| Some((hc, Arc::new(call.layout.first_heads(hc)?))));
        let Some((hc, layout)) = chunk else {
            return Err(KernelError::Unsupported {
                field: "n",
                rule: format!(
                    "one batch passes the kernels' 32-bit indexing ({max} elements) and no \
                     chunk of heads that is a multiple of {unit} (the GQA group and the \
                     dilation rates) fits; split the sequence"
                ),
            });
        };
        (hc, Some(layout))
    };
    let folds = heads / hc;
    let per_launch = (hc * rows * d).max(hc / group * k_rows * d);
    Ok(Some(Chunking {
        call: KernelCall {
            shape: AttentionShape {
                batch: batch * folds,
                heads: hc,
                kv_heads: hc / group,
                ..call.shape
            },
            layout: layout.unwrap_or_else(|| call.layout.clone()),
            ..call.clone()
        },
        folds,
        batches: max / per_launch,
    }))
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

mod check;
#[cfg(test)]
mod tests;

pub use check::{ChunkCase, ChunkCheck, chunked_launches};

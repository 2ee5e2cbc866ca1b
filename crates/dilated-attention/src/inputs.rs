//! Checks of the attention inputs: ranks, shapes, dtypes, devices, head grouping, scale.

use burn::tensor::{Bool, Tensor};

use crate::error::{AttentionError, Result};

/// The sizes of one attention call, read off validated inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Batch size.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads % kv_heads == 0`).
    pub kv_heads: usize,
    /// Sequence length.
    pub n: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl AttentionShape {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// The key/value head read by query head `h`.
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.group()
    }

    /// `1 / sqrt(head_dim)`, or the given scale once checked.
    pub fn scale(&self, scale: Option<f64>) -> Result<f64> {
        match scale {
            None => Ok(1.0 / (self.head_dim.max(1) as f64).sqrt()),
            Some(s) if s.is_finite() && s > 0.0 => Ok(s),
            Some(s) => Err(AttentionError::InvalidScale { value: s }),
        }
    }
}

/// Validates `q: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]` and
/// `mask: [batch, n]`: same batch, length and head dim, `heads % kv_heads == 0`, one dtype, one
/// device. Nothing is modified.
pub fn check_inputs(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<2, Bool>>,
) -> Result<AttentionShape> {
    let [batch, heads, n, head_dim] = q.dims();
    let [kb, kv_heads, kn, kd] = k.dims();
    let shape = AttentionShape {
        batch,
        heads,
        kv_heads,
        n,
        head_dim,
    };
    let kv_expected = || format!("[batch, kv_heads, n, head_dim] = [{batch}, _, {n}, {head_dim}]");
    if kb != batch || kn != n || kd != head_dim || kv_heads == 0 {
        return Err(AttentionError::ShapeMismatch {
            tensor: "k",
            expected: kv_expected(),
            got: k.dims().to_vec(),
        });
    }
    if v.dims() != k.dims() {
        return Err(AttentionError::ShapeMismatch {
            tensor: "v",
            expected: format!("the shape of k, {:?}", k.dims()),
            got: v.dims().to_vec(),
        });
    }
    if heads == 0 || head_dim == 0 {
        return Err(AttentionError::ShapeMismatch {
            tensor: "q",
            expected: "[batch, heads >= 1, n, head_dim >= 1]".into(),
            got: q.dims().to_vec(),
        });
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(AttentionError::HeadsNotDivisible { heads, kv_heads });
    }
    if let Some(mask) = mask
        && mask.dims() != [batch, n]
    {
        return Err(AttentionError::ShapeMismatch {
            tensor: "mask",
            expected: format!("[batch, n] = [{batch}, {n}]"),
            got: mask.dims().to_vec(),
        });
    }
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != q.dtype() {
            return Err(AttentionError::DtypeMismatch {
                tensor: name,
                expected: format!("{:?}", q.dtype()),
                got: format!("{:?}", t.dtype()),
            });
        }
    }
    let device = q.device();
    let devices = [("k", k.device()), ("v", v.device())];
    let mask_device = mask.map(|m| ("mask", m.device()));
    for (name, d) in devices.into_iter().chain(mask_device) {
        if d != device {
            return Err(AttentionError::DeviceMismatch { tensor: name });
        }
    }
    Ok(shape)
}

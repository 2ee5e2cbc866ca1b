//! [`MultiHeadDilatedAttention`]: projections around the attention core, a drop-in layer.

use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;

use super::attention::{BlockSparseRingDilatedAttention, BlockSparseRingDilatedAttentionConfig};
use super::projection::chunked_linear;
use crate::error::AttentionError;

/// Configuration of [`MultiHeadDilatedAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadDilatedAttentionConfig {
    /// Model width `E` of the input and output.
    pub embed_dim: usize,
    /// Query heads; `embed_dim` must be a multiple of it.
    pub num_heads: usize,
    /// Key/value heads (GQA/MQA); must divide `num_heads`. Default: unset, meaning `num_heads`.
    pub kv_heads: Option<usize>,
    /// Whether the projections have a bias. Default: `true`.
    #[config(default = true)]
    pub bias: bool,
    /// LongNet/MAGNETO sub-LayerNorm on the attention output, before the output projection.
    /// Default: `false`.
    #[config(default = false)]
    pub sub_layer_norm: bool,
    /// Epsilon of the sub-LayerNorm. Default: `1e-5`.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// The attention core. Default: its own defaults.
    #[config(default = "BlockSparseRingDilatedAttentionConfig::new()")]
    pub attention: BlockSparseRingDilatedAttentionConfig,
    /// Float type the attention core runs in: `q, k, v` are cast to it after the projections
    /// and its output back to the input's type, so an f32 model can use the f16/bf16
    /// tensor-core kernels (gradients flow through the casts). Default: unset, the input's type.
    pub compute_dtype: Option<DType>,
}

impl MultiHeadDilatedAttentionConfig {
    /// Builds the layer with fresh parameters on `device`.
    pub fn init(&self, device: &Device) -> crate::Result<MultiHeadDilatedAttention> {
        for (field, value) in [("embed_dim", self.embed_dim), ("num_heads", self.num_heads)] {
            if value == 0 {
                return Err(AttentionError::ZeroValue {
                    field: field.into(),
                });
            }
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(AttentionError::Invalid {
                field: "embed_dim",
                rule: format!(
                    "must be a multiple of num_heads ({} % {} != 0)",
                    self.embed_dim, self.num_heads
                ),
            });
        }
        let kv_heads = self.kv_heads.unwrap_or(self.num_heads);
        if kv_heads == 0 {
            return Err(AttentionError::ZeroValue {
                field: "kv_heads".into(),
            });
        }
        if !self.num_heads.is_multiple_of(kv_heads) {
            return Err(AttentionError::HeadsNotDivisible {
                heads: self.num_heads,
                kv_heads,
            });
        }
        if let Some(dtype) = self.compute_dtype
            && !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
        {
            return Err(AttentionError::Invalid {
                field: "compute_dtype",
                rule: format!("must be a float type (f64, f32, f16 or bf16), got {dtype:?}"),
            });
        }
        let head_dim = self.embed_dim / self.num_heads;
        let linear = |d_out| {
            LinearConfig::new(self.embed_dim, d_out)
                .with_bias(self.bias)
                .init(device)
        };
        Ok(MultiHeadDilatedAttention {
            query: linear(self.embed_dim),
            key: linear(kv_heads * head_dim),
            value: linear(kv_heads * head_dim),
            output: linear(self.embed_dim),
            sub_norm: self.sub_layer_norm.then(|| {
                LayerNormConfig::new(self.embed_dim)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device)
            }),
            attention: self.attention.init(device)?,
            embed_dim: self.embed_dim,
            num_heads: self.num_heads,
            kv_heads,
            compute_dtype: self.compute_dtype,
        })
    }
}

/// Multi-head self-attention whose core is [`BlockSparseRingDilatedAttention`]:
/// `x → (q, k, v) projections → attention → [sub-LayerNorm] → output projection`.
#[derive(Module, Debug)]
pub struct MultiHeadDilatedAttention {
    /// Query projection `[E, E]`.
    pub query: Linear,
    /// Key projection `[E, kv_heads · head_dim]`.
    pub key: Linear,
    /// Value projection `[E, kv_heads · head_dim]`.
    pub value: Linear,
    /// Output projection `[E, E]`.
    pub output: Linear,
    /// Optional sub-LayerNorm before the output projection.
    pub sub_norm: Option<LayerNorm>,
    /// The attention core.
    pub attention: BlockSparseRingDilatedAttention,
    embed_dim: usize,
    num_heads: usize,
    kv_heads: usize,
    #[module(skip)]
    compute_dtype: Option<DType>,
}

impl MultiHeadDilatedAttention {
    /// Self-attention of `x: [batch, seq, embed_dim]`; returns `[batch, seq, embed_dim]`.
    pub fn forward(&self, x: Tensor<3>) -> crate::Result<Tensor<3>> {
        self.forward_masked(x, None)
    }

    /// Self-attention with a key padding mask `mask: [batch, seq]` (`true` = token present).
    pub fn forward_masked(
        &self,
        x: Tensor<3>,
        mask: Option<Tensor<2, Bool>>,
    ) -> crate::Result<Tensor<3>> {
        let [batch, seq, width] = x.dims();
        if width != self.embed_dim {
            return Err(AttentionError::ShapeMismatch {
                tensor: "x",
                expected: format!("[batch, seq, embed_dim] = [_, _, {}]", self.embed_dim),
                got: x.dims().to_vec(),
            });
        }
        let head_dim = self.embed_dim / self.num_heads;
        let heads = |t: Tensor<3>, h: usize| t.reshape([batch, seq, h, head_dim]).swap_dims(1, 2);
        let dtype = x.dtype();
        let core = self.compute_dtype.unwrap_or(dtype);
        let project = |layer: &Linear, h: usize| {
            let t = heads(chunked_linear(layer, x.clone()), h);
            if core == dtype { t } else { t.cast(core) }
        };
        let q = project(&self.query, self.num_heads);
        let k = project(&self.key, self.kv_heads);
        let v = project(&self.value, self.kv_heads);
        let out = self.attention.forward_masked(q, k, v, mask)?;
        let out = if core == dtype { out } else { out.cast(dtype) };
        let mut out = out.swap_dims(1, 2).reshape([batch, seq, self.embed_dim]);
        if let Some(norm) = &self.sub_norm {
            out = norm.forward(out);
        }
        Ok(chunked_linear(&self.output, out))
    }
}

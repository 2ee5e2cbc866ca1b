//! [`MultiHeadDilatedAttention`]: projections around the attention core, a drop-in layer that
//! takes its inputs the way Burn's `MultiHeadAttention` does ([`DilatedMhaInput`]).

use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use super::attention::BlockSparseRingDilatedAttention;
use super::config::BlockSparseRingDilatedAttentionConfig;
use super::projection::{CHUNK_ROWS, chunked_linear};
use super::setters::setters;
use crate::error::AttentionError;

/// Configuration of [`MultiHeadDilatedAttention`].
///
/// Serde like every config of the crate: `embed_dim` and `num_heads` are required, the other
/// fields take the defaults stated below, unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiHeadDilatedAttentionConfig {
    /// Model width `E` of the inputs and the output.
    pub embed_dim: usize,
    /// Query heads; `embed_dim` must be a multiple of it.
    pub num_heads: usize,
    /// Key/value heads (GQA/MQA); must divide `num_heads`. Default: unset, meaning `num_heads`.
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Whether the projections have a bias. Default: `true`.
    #[serde(default = "yes")]
    pub bias: bool,
    /// LongNet/MAGNETO sub-LayerNorm on the attention output, before the output projection.
    /// Default: `false`.
    #[serde(default)]
    pub sub_layer_norm: bool,
    /// Epsilon of the sub-LayerNorm, finite and positive. Default: `1e-5`.
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// The attention core. Default: its own defaults.
    #[serde(default)]
    pub attention: BlockSparseRingDilatedAttentionConfig,
    /// Float type the attention core runs in: `q, k, v` are cast to it after the projections
    /// and its output back to the input's type, so an f32 model can use the f16/bf16
    /// tensor-core kernels (gradients flow through the casts). Default: unset, the input's type.
    #[serde(default)]
    pub compute_dtype: Option<DType>,
    /// Rows per chunk of the projections' products (their weight gradients are then computed
    /// in parallel over the chunks; `0` keeps one product, as Burn's `Linear`). Default: 2048.
    #[serde(default = "chunk_rows")]
    pub projection_chunk_rows: usize,
}

fn yes() -> bool {
    true
}

fn layer_norm_eps() -> f64 {
    1e-5
}

fn chunk_rows() -> usize {
    CHUNK_ROWS
}

impl Config for MultiHeadDilatedAttentionConfig {}

setters!(MultiHeadDilatedAttentionConfig {
    /// Sets `kv_heads`.
    with_kv_heads: kv_heads: Option<usize>;
    /// Sets `bias`.
    with_bias: bias: bool;
    /// Sets `sub_layer_norm`.
    with_sub_layer_norm: sub_layer_norm: bool;
    /// Sets `layer_norm_eps`.
    with_layer_norm_eps: layer_norm_eps: f64;
    /// Sets `attention`.
    with_attention: attention: BlockSparseRingDilatedAttentionConfig;
    /// Sets `compute_dtype`.
    with_compute_dtype: compute_dtype: Option<DType>;
    /// Sets `projection_chunk_rows`.
    with_projection_chunk_rows: projection_chunk_rows: usize;
});

impl MultiHeadDilatedAttentionConfig {
    /// A layer of width `embed_dim` with `num_heads` heads; the other fields at their defaults.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            kv_heads: None,
            bias: true,
            sub_layer_norm: false,
            layer_norm_eps: layer_norm_eps(),
            attention: BlockSparseRingDilatedAttentionConfig::new(),
            compute_dtype: None,
            projection_chunk_rows: CHUNK_ROWS,
        }
    }

    /// Builds the layer with fresh parameters on `device`, after checking the whole config.
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
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(AttentionError::Invalid {
                field: "layer_norm_eps",
                rule: format!("must be finite and positive, got {}", self.layer_norm_eps),
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
        let attention = self.attention.init(device)?;
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
            attention,
            embed_dim: self.embed_dim,
            num_heads: self.num_heads,
            kv_heads,
            compute_dtype: self.compute_dtype,
            chunk_rows: self.projection_chunk_rows,
        })
    }
}

/// The inputs of [`MultiHeadDilatedAttention::forward`], as Burn's `MhaInput`: `query`,
/// `key`, `value: [batch, seq, embed_dim]` and an optional key padding mask
/// `mask_pad: [batch, seq]` (`true` = padded, as `burn::nn::attention::generate_padding_mask`
/// makes it).
///
/// The three inputs may differ (cross-attention) but must have the same length: the dilated
/// segments pair query and key positions.
#[derive(Debug, Clone)]
pub struct DilatedMhaInput {
    /// `[batch, seq, embed_dim]`.
    pub query: Tensor<3>,
    /// `[batch, seq, embed_dim]`.
    pub key: Tensor<3>,
    /// `[batch, seq, embed_dim]`.
    pub value: Tensor<3>,
    /// `[batch, seq]`, `true` = padded.
    pub mask_pad: Option<Tensor<2, Bool>>,
}

impl DilatedMhaInput {
    /// Self-attention of `x: [batch, seq, embed_dim]`.
    pub fn self_attn(x: Tensor<3>) -> Self {
        Self {
            query: x.clone(),
            key: x.clone(),
            value: x,
            mask_pad: None,
        }
    }

    /// Attention of `query` over `key` and `value` (each `[batch, seq, embed_dim]`).
    pub fn new(query: Tensor<3>, key: Tensor<3>, value: Tensor<3>) -> Self {
        Self {
            query,
            key,
            value,
            mask_pad: None,
        }
    }

    /// With a key padding mask `[batch, seq]`, `true` = padded.
    pub fn mask_pad(mut self, mask_pad: Tensor<2, Bool>) -> Self {
        self.mask_pad = Some(mask_pad);
        self
    }
}

/// Multi-head attention whose core is [`BlockSparseRingDilatedAttention`]:
/// `(query, key, value) → projections → attention → [sub-LayerNorm] → output projection`.
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
    chunk_rows: usize,
}

impl MultiHeadDilatedAttention {
    /// The attention of `input`; returns `[batch, seq, embed_dim]`.
    pub fn forward(&self, input: DilatedMhaInput) -> crate::Result<Tensor<3>> {
        let DilatedMhaInput {
            query,
            key,
            value,
            mask_pad,
        } = input;
        let [batch, seq, width] = query.dims();
        if width != self.embed_dim {
            return Err(AttentionError::ShapeMismatch {
                tensor: "query",
                expected: format!("[batch, seq, embed_dim] = [_, _, {}]", self.embed_dim),
                got: query.dims().to_vec(),
            });
        }
        for (name, t) in [("key", &key), ("value", &value)] {
            if t.dims() != query.dims() {
                return Err(AttentionError::ShapeMismatch {
                    tensor: name,
                    expected: format!(
                        "the shape of query, {:?} (dilated segments pair query and key \
                         positions)",
                        query.dims()
                    ),
                    got: t.dims().to_vec(),
                });
            }
        }
        let head_dim = self.embed_dim / self.num_heads;
        let heads = |t: Tensor<3>, h: usize| t.reshape([batch, seq, h, head_dim]).swap_dims(1, 2);
        let dtype = query.dtype();
        let core = self.compute_dtype.unwrap_or(dtype);
        let project = |layer: &Linear, x: Tensor<3>, h: usize| {
            let t = heads(chunked_linear(layer, x, self.chunk_rows), h);
            if core == dtype { t } else { t.cast(core) }
        };
        let q = project(&self.query, query, self.num_heads);
        let k = project(&self.key, key, self.kv_heads);
        let v = project(&self.value, value, self.kv_heads);
        let out = self.attention.forward_masked(q, k, v, mask_pad)?;
        let out = if core == dtype { out } else { out.cast(dtype) };
        let mut out = out.swap_dims(1, 2).reshape([batch, seq, self.embed_dim]);
        if let Some(norm) = &self.sub_norm {
            out = norm.forward(out);
        }
        Ok(chunked_linear(&self.output, out, self.chunk_rows))
    }
}

//! A factory that builds the attention of a given kind from a config or a JSON file.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::BlockSparseRingDilatedAttention;
use super::config::BlockSparseRingDilatedAttentionConfig;
use crate::error::AttentionError;
use crate::pattern::{DilatedPattern, PatternType, SparsePatternConfig};

/// The attention variants the factory builds. All of them are a
/// [`BlockSparseRingDilatedAttention`] with a particular pattern, so they share every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Plain softmax attention over the whole sequence (`causal` and `scale` are honoured).
    Dense,
    /// The branches of the config, every block kept (LongNet dilated attention).
    Dilated,
    /// One branch over the whole sequence with the config's block layout.
    BlockSparse,
    /// Branches, block layout and ring (`ring_size`, `ring_partition`) as configured.
    BlockSparseRing,
}

/// A kind and a config, as read from JSON:
/// `{"kind": "dilated", "attention": {"segment_lengths": [...], ...}}`.
///
/// Both fields are required and unknown fields are refused (a top-level `"causal": true`
/// belongs inside `attention`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionFactoryConfig {
    /// Which variant.
    pub kind: AttentionKind,
    /// Its configuration (fields a kind does not use are ignored).
    pub attention: BlockSparseRingDilatedAttentionConfig,
}

/// Builds the attention of `kind` from `config`.
pub fn create_attention(
    kind: AttentionKind,
    config: &BlockSparseRingDilatedAttentionConfig,
    _device: &Device,
) -> crate::Result<BlockSparseRingDilatedAttention> {
    let full = config.pattern()?;
    let dense =
        SparsePatternConfig::new(PatternType::Dense).with_block_size(full.sparse.block_size);
    let pattern = match kind {
        AttentionKind::Dense => DilatedPattern::single(dense, full.causal),
        AttentionKind::Dilated => DilatedPattern {
            sparse: dense,
            ..full
        },
        AttentionKind::BlockSparse => DilatedPattern::single(full.sparse, full.causal),
        AttentionKind::BlockSparseRing => full,
    };
    config.check()?;
    let module = config.build(pattern);
    // Only the ring kind runs as a ring.
    Ok(match kind {
        AttentionKind::BlockSparseRing => module,
        _ => module.with_ring(1, config.ring_partition),
    })
}

/// Builds the attention described by a JSON [`AttentionFactoryConfig`].
pub fn attention_from_json(
    json: &str,
    device: &Device,
) -> crate::Result<BlockSparseRingDilatedAttention> {
    let cfg: AttentionFactoryConfig =
        serde_json::from_str(json).map_err(|e| AttentionError::Json {
            message: e.to_string(),
        })?;
    create_attention(cfg.kind, &cfg.attention, device)
}

/// Builds the attention described by a JSON file holding an [`AttentionFactoryConfig`].
pub fn attention_from_file(
    path: impl AsRef<Path>,
    device: &Device,
) -> crate::Result<BlockSparseRingDilatedAttention> {
    let path = path.as_ref();
    let json = std::fs::read_to_string(path).map_err(|e| AttentionError::Json {
        message: format!("{}: {e}", path.display()),
    })?;
    attention_from_json(&json, device)
}

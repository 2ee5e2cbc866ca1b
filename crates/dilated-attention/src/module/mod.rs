//! The Burn modules: the attention core, the multi-head layer and the factory.

mod attention;
mod caches;
mod config;
mod factory;
mod multihead;
mod projection;
mod setters;

pub use attention::BlockSparseRingDilatedAttention;
pub use config::BlockSparseRingDilatedAttentionConfig;
pub use factory::{
    AttentionFactoryConfig, AttentionKind, attention_from_file, attention_from_json,
    create_attention,
};
pub use multihead::{DilatedMhaInput, MultiHeadDilatedAttention, MultiHeadDilatedAttentionConfig};
pub use projection::{CHUNK_ROWS, chunked_linear, chunked_matmul};

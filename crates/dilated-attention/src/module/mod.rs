//! The Burn modules: the attention core, the multi-head layer and the factory.

mod attention;
mod factory;
mod multihead;
mod projection;

pub use attention::{BlockSparseRingDilatedAttention, BlockSparseRingDilatedAttentionConfig};
pub use factory::{
    AttentionFactoryConfig, AttentionKind, attention_from_file, attention_from_json,
    create_attention,
};
pub use multihead::{MultiHeadDilatedAttention, MultiHeadDilatedAttentionConfig};
pub use projection::{CHUNK_ROWS, chunked_linear, chunked_matmul};

//! Quickstart: the layer inside a small Burn model, one forward and one backward pass.
//!
//! `cargo run --release --example quickstart` (wgpu when a GPU or lavapipe answers, else the CPU
//! backend; `BURN_DEVICE=flex` forces the CPU).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use dilated_attention::{
    AttentionShape, BlockSparseRingDilatedAttentionConfig, DilatedMhaInput,
    MultiHeadDilatedAttentionConfig, PatternType, SparsePatternConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    println!("device: {device:?}");
    let (batch, seq, embed, heads) = (1, 4096, 256, 8);
    let attention = BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![1024, 2048, 4096])
        .with_dilation_rates(vec![1, 2, 4])
        .with_sparse_config(
            SparsePatternConfig::new(PatternType::DilatedSparse)
                .with_block_size(64)
                .with_sparsity_ratio(0.9),
        )
        .with_causal(true);
    let layer = MultiHeadDilatedAttentionConfig::new(embed, heads)
        .with_sub_layer_norm(true)
        .with_attention(attention)
        .init(&device)?;
    let stats = layer.attention.layout(seq, heads)?.stats();
    println!(
        "pattern: {} branches, density {:.4} of dense attention ({} of {} candidate blocks)",
        layer.attention.pattern().branches.len(),
        stats.density,
        stats.active_blocks,
        stats.candidate_blocks
    );

    let shape = AttentionShape {
        batch,
        heads,
        kv_heads: heads,
        n: seq,
        head_dim: embed / heads,
    };
    let path = layer
        .attention
        .execution_path(shape, burn::tensor::DType::F32, &device)?;
    println!("execution path: {path:?}");

    let x = Tensor::<3>::random([batch, seq, embed], Distribution::Normal(0.0, 1.0), &device);
    let start = Instant::now();
    let y = layer.forward(DilatedMhaInput::self_attn(x))?;
    let loss = y.powf_scalar(2.0).mean();
    let grads = loss.clone().backward();
    let g = layer.query.weight.val().grad(&grads).expect("gradient");
    println!(
        "forward + backward at n = {seq}: {:.1} ms, loss {:.4}, |dW_q| {:.4}",
        start.elapsed().as_secs_f64() * 1e3,
        loss.into_scalar::<f32>(),
        g.powf_scalar(2.0).sum().sqrt().into_scalar::<f32>()
    );
    Ok(())
}

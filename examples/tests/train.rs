//! CI: a tiny recall run through the attention module; the loss must fall.

use burn::prelude::*;
use dilated_attention_examples::{RecallConfig, train};

#[test]
fn tiny_recall_training_lowers_the_loss() {
    let cfg = RecallConfig::new()
        .with_seq_len(32)
        .with_pairs(4)
        .with_symbols(8)
        .with_d_model(32)
        .with_layers(1)
        .with_block_size(8);
    let mut losses = Vec::new();
    train(&cfg, 40, 16, 3e-3, &Device::flex(), |log| {
        losses.push(log.loss);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.8 * first, "loss {first} -> {last}");
}

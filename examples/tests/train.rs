//! CI: a tiny recall run through the attention module; the loss must fall.

use std::sync::Mutex;

use burn::prelude::*;
use dilated_attention_examples::{RecallConfig, train};

/// Held by every test that draws weights: the CPU backend's random numbers are global, so a
/// model built beside the training run would change its (seeded) initialisation.
static RNG: Mutex<()> = Mutex::new(());

#[test]
fn tiny_recall_training_lowers_the_loss() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = RecallConfig::new()
        .with_seq_len(32)
        .with_pairs(4)
        .with_symbols(8)
        .with_d_model(32)
        .with_layers(1)
        .with_block_size(8);
    let mut losses = Vec::new();
    train(&cfg, 80, 16, 3e-3, &Device::flex(), |log| {
        losses.push(log.loss);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.8 * first, "loss {first} -> {last}");
}

#[test]
fn a_model_is_saved_to_the_path_it_is_given() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    use dilated_attention_examples::{RecallModel, saved_file};
    let dir = std::env::temp_dir().join(format!("recall-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::flex();
    let model = RecallModel::new(
        &RecallConfig::new().with_seq_len(16).with_d_model(16),
        &device,
    )
    .unwrap();
    for (asked, lands) in [("x.bpk", "x.bpk"), ("y", "y.bpk"), ("z.model", "z.model")] {
        model.clone().save_file(dir.join(asked)).unwrap();
        assert_eq!(saved_file(&dir.join(asked)), dir.join(lands));
        assert!(dir.join(lands).exists(), "{asked} should land at {lands}");
    }
    assert!(!dir.join("x.bpk.bpk").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

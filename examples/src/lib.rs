//! A small decoder-only transformer whose attention layers are
//! [`MultiHeadDilatedAttention`], trained on associative recall: key–value pairs early in the
//! sequence, filler tokens, and a query key at the end whose value the model must name. A
//! local window cannot solve it: the pair sits far before the query. Each position embeds its
//! token, the token before it (a token shift: the value carries its key) and its position, so
//! the attention layers' job is the long-range lookup itself. `seq_len` must be a
//! multiple of 4 with room for the pairs (`4 · pairs + 2 <= seq_len`).
//!
//! Used by `examples/train_recall.rs` and by the CI test that checks the loss falls.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::gelu;
use dilated_attention::module::{chunked_linear, chunked_matmul};
use dilated_attention::{
    AttentionError, BlockSparseRingDilatedAttentionConfig, MultiHeadDilatedAttention,
    MultiHeadDilatedAttentionConfig, PatternType, SparsePatternConfig,
};
use std::ops::ControlFlow;

/// The recall task and the model size.
#[derive(Config, Debug)]
pub struct RecallConfig {
    /// Sequence length.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Key–value pairs at the start of each sequence.
    #[config(default = 8)]
    pub pairs: usize,
    /// Distinct keys (and distinct values).
    #[config(default = 16)]
    pub symbols: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub heads: usize,
    /// Transformer blocks.
    #[config(default = 2)]
    pub layers: usize,
    /// Block size of the attention layout (the GPU tensor-core kernels take 64, 128 or 256).
    #[config(default = 16)]
    pub block_size: usize,
    /// Float type the attention layers run in (their `compute_dtype`); unset: the model's f32.
    pub attention_dtype: Option<DType>,
}

impl RecallConfig {
    /// Vocabulary: keys, values, a filler token and a query marker.
    pub fn vocab(&self) -> usize {
        2 * self.symbols + 2
    }

    /// Attention: a local branch and a whole-sequence branch dilated by 4 (heads 0..4 cover the
    /// four offsets), causal, dense blocks.
    pub fn attention(&self) -> BlockSparseRingDilatedAttentionConfig {
        BlockSparseRingDilatedAttentionConfig::new()
            .with_segment_lengths(vec![self.seq_len / 4, self.seq_len])
            .with_dilation_rates(vec![1, 4])
            .with_sparse_config(
                SparsePatternConfig::new(PatternType::Dense).with_block_size(self.block_size),
            )
            .with_causal(true)
    }
}

/// Pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    norm1: LayerNorm,
    attention: MultiHeadDilatedAttention,
    norm2: LayerNorm,
    up: Linear,
    down: Linear,
}

/// The decoder.
#[derive(Module, Debug)]
pub struct RecallModel {
    tokens: Embedding,
    previous: Embedding,
    positions: Embedding,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
}

impl RecallModel {
    /// A fresh model on `device`.
    pub fn new(cfg: &RecallConfig, device: &Device) -> Result<Self, AttentionError> {
        let d = cfg.d_model;
        let blocks = (0..cfg.layers)
            .map(|_| {
                Ok(Block {
                    norm1: LayerNormConfig::new(d).init(device),
                    attention: MultiHeadDilatedAttentionConfig::new(d, cfg.heads)
                        .with_attention(cfg.attention())
                        .with_compute_dtype(cfg.attention_dtype)
                        .init(device)?,
                    norm2: LayerNormConfig::new(d).init(device),
                    up: LinearConfig::new(d, 4 * d).init(device),
                    down: LinearConfig::new(4 * d, d).init(device),
                })
            })
            .collect::<Result<_, AttentionError>>()?;
        Ok(Self {
            tokens: EmbeddingConfig::new(cfg.vocab(), d).init(device),
            previous: EmbeddingConfig::new(cfg.vocab(), d).init(device),
            positions: EmbeddingConfig::new(cfg.seq_len, d).init(device),
            blocks,
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, cfg.vocab()).init(device),
        })
    }

    /// Logits at the last position: `tokens: [batch, seq]` → `[batch, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Result<Tensor<2>, AttentionError> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let [vocab, d] = self.tokens.weight.dims();
        // The embeddings as a one-hot product and a slice of the position table rather than
        // `Embedding::forward`: Burn's embedding backward (`select_assign`) walks all
        // `batch · seq` rows serially per model column, which took most of a training step at
        // 8K tokens on the H200; a matmul and a broadcast sum have fast backwards. The
        // products split their rows into chunks (`chunked_matmul`) so that their weight
        // gradients do not run as one contraction over all `batch · seq` rows.
        let classes = Tensor::<1, Int>::arange(0..vocab as i64, &device)
            .reshape([1, vocab])
            .expand([batch * seq, vocab]);
        let one_hot = tokens
            .reshape([batch * seq, 1])
            .expand([batch * seq, vocab])
            .equal(classes)
            .float();
        let tok =
            chunked_matmul(one_hot.clone(), self.tokens.weight.val()).reshape([batch, seq, d]);
        // Token shift: each position also embeds the token before it (none at position 0), so
        // a value carries its key and the attention's job is the long-range lookup alone.
        let before = Tensor::cat(
            vec![
                Tensor::<3>::zeros([batch, 1, vocab], &device),
                one_hot
                    .reshape([batch, seq, vocab])
                    .slice_dim(1, 0..seq - 1),
            ],
            1,
        );
        let prev = chunked_matmul(before, self.previous.weight.val());
        let pos = self
            .positions
            .weight
            .val()
            .slice_dim(0, 0..seq)
            .reshape([1, seq, d])
            .expand([batch, seq, d]);
        let mut x = tok + prev + pos;
        for block in &self.blocks {
            x = x.clone() + block.attention.forward(block.norm1.forward(x.clone()))?;
            let h = chunked_linear(&block.up, block.norm2.forward(x.clone()));
            x = x + chunked_linear(&block.down, gelu(h));
        }
        let last = self.norm.forward(x).slice_dim(1, seq - 1..seq);
        Ok(self
            .head
            .forward(last)
            .reshape([batch, self.head.weight.val().dims()[1]]))
    }
}

/// A batch of recall sequences: `tokens: [batch, seq]`, `targets: [batch]`.
pub fn batch(
    cfg: &RecallConfig,
    size: usize,
    seed: &mut u64,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<1, Int>) {
    let mut next = |m: usize| {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) % m as u64) as usize
    };
    let (filler, query) = (2 * cfg.symbols, 2 * cfg.symbols + 1);
    let mut tokens = Vec::with_capacity(size * cfg.seq_len);
    let mut targets = Vec::with_capacity(size);
    for _ in 0..size {
        // Distinct keys, random values.
        let mut keys: Vec<usize> = (0..cfg.symbols).collect();
        for i in 0..cfg.pairs {
            let j = i + next(cfg.symbols - i);
            keys.swap(i, j);
        }
        let values: Vec<usize> = (0..cfg.pairs)
            .map(|_| cfg.symbols + next(cfg.symbols))
            .collect();
        let asked = next(cfg.pairs);
        // Pair `i` sits at positions `4i + 2, 4i + 3`: the values share the query's offset
        // class mod 4, so the head of that class sees all of them through the dilated branch.
        let mut seq = vec![filler; cfg.seq_len];
        for i in 0..cfg.pairs {
            seq[4 * i + 2] = keys[i];
            seq[4 * i + 3] = values[i];
        }
        seq[cfg.seq_len - 2] = query;
        seq[cfg.seq_len - 1] = keys[asked];
        tokens.extend(seq.into_iter().map(|t| t as i64));
        targets.push(values[asked] as i64);
    }
    (
        Tensor::from_data(TensorData::new(tokens, [size, cfg.seq_len]), device),
        Tensor::from_data(TensorData::new(targets, [size]), device),
    )
}

/// One logged training step.
#[derive(Debug, Clone, Copy)]
pub struct StepLog {
    /// Step index.
    pub step: usize,
    /// Cross-entropy of the batch.
    pub loss: f32,
    /// Fraction of the batch answered right.
    pub accuracy: f32,
    /// Seconds of the step's forward pass (with the loss), backward pass and optimiser update,
    /// each ended by a device sync.
    pub seconds: [f64; 3],
}

/// Trains up to `steps` steps of `batch_size` sequences with Adam; calls `log` after each step
/// and stops early when it answers [`ControlFlow::Break`].
pub fn train(
    cfg: &RecallConfig,
    steps: usize,
    batch_size: usize,
    lr: f64,
    device: &Device,
    mut log: impl FnMut(StepLog) -> ControlFlow<()>,
) -> Result<RecallModel, AttentionError> {
    let device = device.clone().autodiff();
    let mut model = RecallModel::new(cfg, &device)?;
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut seed = 0x5EED_u64;
    for step in 0..steps {
        let (tokens, targets) = batch(cfg, batch_size, &mut seed, &device);
        let start = std::time::Instant::now();
        let logits = model.forward(tokens)?;
        let accuracy = logits
            .clone()
            .argmax(1)
            .reshape([batch_size])
            .equal(targets.clone())
            .int()
            .float()
            .mean()
            .into_scalar::<f32>();
        let loss = loss_fn.forward(logits, targets);
        let value = loss.clone().into_scalar::<f32>();
        let forward = start.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let _ = device.sync();
        let backward = start.elapsed().as_secs_f64() - forward;
        model = optim.step(lr, model, grads);
        let _ = device.sync();
        let update = start.elapsed().as_secs_f64() - forward - backward;
        if log(StepLog {
            step,
            loss: value,
            accuracy,
            seconds: [forward, backward, update],
        })
        .is_break()
        {
            break;
        }
    }
    Ok(model)
}

//! A small decoder-only transformer whose attention layers are
//! [`MultiHeadDilatedAttention`], trained on associative recall: key–value pairs early in the
//! sequence, filler tokens, and a query key at the end whose value the model must name. A
//! local window cannot solve it: the pair sits far before the query. Each position embeds its
//! token and the token before it (a token shift: the value carries its key), so the attention
//! layers' job is the long-range lookup itself. There is no position embedding: the causal
//! mask and the shift carry all the order the task needs, and a learned vector per position
//! would give each of the thousands of filler keys its own random offset, noise that the
//! lookup must first learn to ignore (at 8K tokens it held the model near chance). `seq_len` must be a
//! multiple of 4 with room for the pairs (`4 · pairs + 2 <= seq_len`).
//!
//! With `start_len` set, training follows a length curriculum: it starts on sequences of
//! `start_len` tokens and doubles their length (up to `seq_len`) each time the model has
//! mastered the current one ([`Mastery`]). The model has no position table, and the attention
//! layers are built for `seq_len` (a shorter sequence is one partial segment of each branch),
//! so the same weights serve every length.
//!
//! Used by `examples/train_recall.rs` and by the CI test that checks the loss falls.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::gelu;
use dilated_attention::module::{CHUNK_ROWS, chunked_linear, chunked_matmul};
use dilated_attention::{
    AttentionError, BlockSparseRingDilatedAttentionConfig, DilatedMhaInput,
    MultiHeadDilatedAttention, MultiHeadDilatedAttentionConfig, PatternType, SparsePatternConfig,
};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

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
    /// First length of the length curriculum (a multiple of 4); unset: train at `seq_len`
    /// throughout.
    pub start_len: Option<usize>,
    /// Seed of the weights' initialisation and of the batches: equal seeds give equal runs
    /// (on a device whose random numbers nothing else draws meanwhile).
    #[config(default = 0x5EED)]
    pub seed: u64,
}

/// Accuracy over the last [`Mastery::WINDOW`] steps, and whether it reached
/// [`Mastery::THRESHOLD`].
#[derive(Debug, Clone, Default)]
pub struct Mastery {
    recent: Vec<f32>,
}

impl Mastery {
    /// Steps averaged.
    pub const WINDOW: usize = 50;
    /// Average accuracy that counts as mastered (chance is `1 / symbols`).
    pub const THRESHOLD: f32 = 0.99;

    /// Records one step's accuracy and returns the running average.
    pub fn push(&mut self, accuracy: f32) -> f32 {
        self.recent.push(accuracy);
        if self.recent.len() > Self::WINDOW {
            self.recent.remove(0);
        }
        self.average()
    }

    /// Average over the recorded steps (0 before any).
    pub fn average(&self) -> f32 {
        self.recent.iter().sum::<f32>() / self.recent.len().max(1) as f32
    }

    /// A full window at or above the threshold.
    pub fn mastered(&self) -> bool {
        self.recent.len() == Self::WINDOW && self.average() >= Self::THRESHOLD
    }

    /// Forgets the recorded steps (a new length starts).
    pub fn reset(&mut self) {
        self.recent.clear();
    }
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
        // The embeddings as a one-hot product rather than `Embedding::forward`: Burn's embedding
        // backward (`select_assign`) walks all `batch · seq` rows serially per model column,
        // which took most of a training step at 8K tokens on the H200; a matmul has a fast
        // backward. The products split their rows into chunks (`chunked_matmul`) so that their
        // weight gradients do not run as one contraction over all `batch · seq` rows.
        let classes = Tensor::<1, Int>::arange(0..vocab as i64, &device)
            .reshape([1, vocab])
            .expand([batch * seq, vocab]);
        let one_hot = tokens
            .reshape([batch * seq, 1])
            .expand([batch * seq, vocab])
            .equal(classes)
            .float();
        let tok = chunked_matmul(one_hot.clone(), self.tokens.weight.val(), CHUNK_ROWS)
            .reshape([batch, seq, d]);
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
        let prev = chunked_matmul(before, self.previous.weight.val(), CHUNK_ROWS);
        let mut x = tok + prev;
        for block in &self.blocks {
            x = x.clone()
                + block
                    .attention
                    .forward(DilatedMhaInput::self_attn(block.norm1.forward(x.clone())))?;
            let h = chunked_linear(&block.up, block.norm2.forward(x.clone()), CHUNK_ROWS);
            x = x + chunked_linear(&block.down, gelu(h), CHUNK_ROWS);
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
    /// Sequence length of the step's batch (the curriculum's current length).
    pub seq_len: usize,
    /// Average accuracy of the last steps at this length, this one included ([`Mastery`]).
    pub recent_accuracy: f32,
    /// Whether the last [`Mastery::WINDOW`] steps at this length reached the threshold.
    pub mastered: bool,
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
    device.seed(cfg.seed);
    let mut model = RecallModel::new(cfg, &device)?;
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut seed = cfg.seed;
    let mut len = cfg.start_len.unwrap_or(cfg.seq_len).min(cfg.seq_len);
    let mut mastery = Mastery::default();
    for step in 0..steps {
        let (tokens, targets) = batch(
            &cfg.clone().with_seq_len(len),
            batch_size,
            &mut seed,
            &device,
        );
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
        let recent_accuracy = mastery.push(accuracy);
        if log(StepLog {
            step,
            loss: value,
            accuracy,
            seq_len: len,
            recent_accuracy,
            mastered: mastery.mastered(),
            seconds: [forward, backward, update],
        })
        .is_break()
        {
            break;
        }
        if len < cfg.seq_len && mastery.mastered() {
            len = (2 * len).min(cfg.seq_len);
            mastery.reset();
        }
    }
    Ok(model)
}

/// The file Burn's recorder writes for `path`: `path` itself, or `path.bpk` where `path` has no
/// extension (burn-pack adds it then, and only then).
pub fn saved_file(path: &Path) -> PathBuf {
    if path.extension().is_some() {
        path.to_path_buf()
    } else {
        path.with_extension("bpk")
    }
}

//! The Burn modules: config, layout cache, multi-head layer, factory, and every error variant.

mod common;

use burn::prelude::*;
use burn::tensor::DType;
use common::{assert_close, cpu, qkv, randn, values};
use dilated_attention::module::{attention_from_file, attention_from_json, create_attention};
use dilated_attention::{
    AttentionError, AttentionKind, BlockSparseRingDilatedAttentionConfig, DilatedMhaInput,
    KernelStrategy, MultiHeadDilatedAttentionConfig, PatternType, Sm80Tuning, SparsePatternConfig,
};

fn small_config() -> BlockSparseRingDilatedAttentionConfig {
    BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![16, 32])
        .with_dilation_rates(vec![1, 2])
        .with_block_size(Some(4))
        .with_sparsity_ratio(Some(0.5))
}

#[test]
fn shortcuts_override_the_sparse_config() {
    let pattern = small_config().pattern().unwrap();
    assert_eq!(pattern.sparse.block_size, 4);
    assert_eq!(pattern.sparse.sparsity_ratio, 0.5);
    assert_eq!(pattern.sparse.pattern_type, PatternType::DilatedSparse);
    let defaults = BlockSparseRingDilatedAttentionConfig::new()
        .pattern()
        .unwrap();
    assert_eq!(defaults.branches.len(), 3);
    assert_eq!(defaults.sparse, SparsePatternConfig::default());
}

#[test]
fn layout_is_built_once_and_cache_changes_nothing() {
    let device = cpu(20);
    let module = small_config().init(&device).unwrap();
    let [q, k, v] = qkv([1, 4, 4, 70, 8], &device);
    let a = module.forward(q.clone(), k.clone(), v.clone()).unwrap();
    let b = module.forward(q.clone(), k.clone(), v.clone()).unwrap();
    assert_eq!(module.cached_layouts(), 1);
    let _ = module
        .forward(
            q.clone().slice_dim(2, 0..30),
            k.clone().slice_dim(2, 0..30),
            v.clone().slice_dim(2, 0..30),
        )
        .unwrap();
    assert_eq!(module.cached_layouts(), 2);
    let uncached = module.clone().without_cache().forward(q, k, v).unwrap();
    assert_eq!(values(a.clone()), values(b));
    assert_eq!(values(a), values(uncached));
}

#[test]
fn multi_head_layer_runs_with_gqa_and_sub_norm() {
    let device = cpu(21);
    let layer = MultiHeadDilatedAttentionConfig::new(32, 8)
        .with_kv_heads(Some(2))
        .with_sub_layer_norm(true)
        .with_attention(small_config().with_causal(true))
        .init(&device)
        .unwrap();
    assert_eq!(layer.key.weight.val().dims(), [32, 8]);
    let x = randn([2, 50, 32], &device);
    let y = layer
        .forward(DilatedMhaInput::self_attn(x.clone()))
        .unwrap();
    assert_eq!(y.dims(), [2, 50, 32]);
    assert!(values(y.clone()).iter().all(|v| v.is_finite()));
    // Causal: the first 10 outputs do not depend on later tokens.
    let y_prefix = layer
        .forward(DilatedMhaInput::self_attn(x.slice_dim(1, 0..10)))
        .unwrap();
    assert_close(
        &values(y.slice_dim(1, 0..10)),
        &values(y_prefix),
        1e-5,
        "causal prefix",
    );
}

#[test]
fn multi_head_layer_trains() {
    let device = cpu(22).autodiff();
    let layer = MultiHeadDilatedAttentionConfig::new(16, 4)
        .with_attention(small_config())
        .init(&device)
        .unwrap();
    let x = randn([1, 20, 16], &device);
    let grads = layer
        .forward(DilatedMhaInput::self_attn(x))
        .unwrap()
        .powf_scalar(2.0)
        .sum()
        .backward();
    let g = layer
        .query
        .weight
        .val()
        .grad(&grads)
        .expect("query weight gradient");
    assert!(values(g).iter().any(|&x| x != 0.0));
}

#[test]
fn multi_head_layer_runs_its_core_in_compute_dtype() {
    // An f32 layer whose attention runs in f16: the output stays f32, close to the f32 core's,
    // and gradients reach the projections through the casts.
    let device = cpu(23).autodiff();
    let config = MultiHeadDilatedAttentionConfig::new(16, 4).with_attention(small_config());
    let layer = config.init(&device).unwrap();
    let half = config
        .clone()
        .with_compute_dtype(Some(DType::F16))
        .init(&device)
        .unwrap()
        .load_record(layer.clone().into_record());
    let x = randn([1, 20, 16], &device);
    let (y32, y16) = (
        layer
            .forward(DilatedMhaInput::self_attn(x.clone()))
            .unwrap(),
        half.forward(DilatedMhaInput::self_attn(x)).unwrap(),
    );
    assert_eq!(y16.dtype(), DType::F32);
    assert_close(&values(y32), &values(y16.clone()), 1e-2, "f16 core");
    let grads = y16.powf_scalar(2.0).sum().backward();
    let g = half
        .query
        .weight
        .val()
        .grad(&grads)
        .expect("query weight gradient");
    assert!(values(g).iter().all(|v| v.is_finite()));
}

#[test]
fn factory_builds_every_kind_from_json() {
    let device = cpu(23);
    let [q, k, v] = qkv([1, 2, 2, 40, 8], &device);
    for kind in ["dense", "dilated", "block_sparse", "block_sparse_ring"] {
        let json = format!(
            r#"{{"kind": "{kind}", "attention": {{"segment_lengths": [8, 16],
                "dilation_rates": [1, 2], "block_size": 4, "sparsity_ratio": 0.5,
                "sparse_config": {{"pattern_type": "local_window"}}, "causal": true}}}}"#
        );
        let module = attention_from_json(&json, &device).unwrap();
        let out = module.forward(q.clone(), k.clone(), v.clone()).unwrap();
        assert_eq!(out.dims(), [1, 2, 40, 8], "{kind}");
        let pattern = module.pattern();
        assert!(pattern.causal);
        match kind {
            "dense" => {
                assert_eq!(pattern.branches.len(), 1);
                assert_eq!(pattern.sparse.pattern_type, PatternType::Dense);
            }
            "dilated" => {
                assert_eq!(pattern.branches.len(), 2);
                assert_eq!(pattern.sparse.pattern_type, PatternType::Dense);
            }
            "block_sparse" => {
                assert_eq!(pattern.branches.len(), 1);
                assert_eq!(pattern.sparse.pattern_type, PatternType::LocalWindow);
            }
            _ => assert_eq!(pattern.branches.len(), 2),
        }
    }
    let dir = std::env::temp_dir().join("dilated-attention-factory.json");
    std::fs::write(
        &dir,
        r#"{"kind": "dilated", "attention": {"segment_lengths": [8], "dilation_rates": [2]}}"#,
    )
    .unwrap();
    let module = attention_from_file(&dir, &device).unwrap();
    assert_eq!(module.pattern().branches[0].dilation_rate, 2);
    let direct = create_attention(AttentionKind::Dense, &small_config(), &device).unwrap();
    assert_eq!(direct.pattern().branches[0].dilation_rate, 1);
}

/// One test per error variant, through the public API.
#[test]
fn every_error_variant_is_reachable() {
    let device = cpu(24);
    let cfg = BlockSparseRingDilatedAttentionConfig::new;
    let err = |c: BlockSparseRingDilatedAttentionConfig| c.init(&device).unwrap_err();

    assert_eq!(
        err(cfg()
            .with_segment_lengths(vec![])
            .with_dilation_rates(vec![])),
        AttentionError::NoBranches
    );
    assert!(matches!(
        err(cfg().with_dilation_rates(vec![1])),
        AttentionError::BranchLengthMismatch { .. }
    ));
    assert_eq!(
        err(cfg().with_dilation_rates(vec![1, 0, 4])).field(),
        "dilation_rates[1]"
    );
    assert!(matches!(
        err(cfg().with_sparsity_ratio(Some(1.5))),
        AttentionError::SparsityOutOfRange { .. }
    ));
    assert!(matches!(
        err(cfg().with_block_size(Some(48))),
        AttentionError::UnsupportedBlockSize { block_size: 48 }
    ));
    assert!(matches!(
        err(cfg().with_sparse_config(SparsePatternConfig::new(PatternType::Custom))),
        AttentionError::InvalidPatternOption {
            field: "custom_blocks",
            ..
        }
    ));
    assert!(matches!(
        err(cfg().with_scale(Some(-1.0))),
        AttentionError::InvalidScale { .. }
    ));

    // Custom pair out of range: detected when the layout of a length is built.
    let custom = small_config().with_sparse_config(
        SparsePatternConfig::new(PatternType::Custom)
            .with_custom_blocks(vec![vec![(9, 0)], vec![]]),
    );
    let module = custom.init(&device).unwrap();
    let t = randn([1, 2, 16, 8], &device);
    assert!(matches!(
        module.forward(t.clone(), t.clone(), t.clone()).unwrap_err(),
        AttentionError::CustomBlockOutOfRange { branch: 0, .. }
    ));

    // Inputs.
    let module = small_config().init(&device).unwrap();
    let q = randn([1, 4, 16, 8], &device);
    let kv = randn([1, 3, 16, 8], &device);
    assert_eq!(
        module.forward(q.clone(), kv.clone(), kv).unwrap_err(),
        AttentionError::HeadsNotDivisible {
            heads: 4,
            kv_heads: 3
        }
    );
    let k = randn([1, 2, 15, 8], &device);
    assert_eq!(
        module.forward(q.clone(), k.clone(), k).unwrap_err().field(),
        "k"
    );
    let k = randn([1, 2, 16, 8], &device);
    let v = randn([1, 2, 16, 4], &device);
    assert_eq!(
        module.forward(q.clone(), k.clone(), v).unwrap_err().field(),
        "v"
    );
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 15], [1, 15]), &device);
    assert_eq!(
        module
            .forward_masked(q.clone(), k.clone(), k.clone(), Some(mask))
            .unwrap_err()
            .field(),
        "mask"
    );
    let empty = randn([1, 0, 16, 8], &device);
    assert_eq!(
        module
            .forward(empty, k.clone(), k.clone())
            .unwrap_err()
            .field(),
        "q"
    );
    let k16 = k.clone().cast(DType::F16);
    assert!(matches!(
        module.forward(q.clone(), k16.clone(), k16).unwrap_err(),
        AttentionError::DtypeMismatch { tensor: "k", .. }
    ));
    #[cfg(feature = "wgpu")]
    if let Some(gpu) = common::wgpu_device() {
        let k_gpu = k.clone().to_device(&gpu);
        assert_eq!(
            module.forward(q.clone(), k_gpu.clone(), k_gpu).unwrap_err(),
            AttentionError::DeviceMismatch { tensor: "k" }
        );
    }

    // Multi-head layer config and input.
    let mha = |e, h, kv: Option<usize>| {
        MultiHeadDilatedAttentionConfig::new(e, h)
            .with_kv_heads(kv)
            .with_attention(small_config())
            .init(&device)
    };
    assert!(matches!(
        mha(30, 4, None).unwrap_err(),
        AttentionError::Invalid {
            field: "embed_dim",
            ..
        }
    ));
    assert_eq!(mha(0, 4, None).unwrap_err().field(), "embed_dim");
    assert!(matches!(
        mha(32, 4, Some(3)).unwrap_err(),
        AttentionError::HeadsNotDivisible { .. }
    ));
    let int_core = MultiHeadDilatedAttentionConfig::new(32, 4)
        .with_compute_dtype(Some(DType::I32))
        .init(&device);
    assert_eq!(int_core.unwrap_err().field(), "compute_dtype");
    let layer = mha(32, 4, None).unwrap();
    assert_eq!(
        layer
            .forward(DilatedMhaInput::self_attn(randn([1, 10, 31], &device)))
            .unwrap_err()
            .field(),
        "query"
    );
    let (x, short) = (randn([1, 10, 32], &device), randn([1, 9, 32], &device));
    assert_eq!(
        layer
            .forward(DilatedMhaInput::new(x, short.clone(), short))
            .unwrap_err()
            .field(),
        "key"
    );

    // JSON.
    let bad = attention_from_json(
        r#"{"kind": "dense", "attention": {"segment_lengths": [-1]}}"#,
        &device,
    );
    assert!(matches!(bad.unwrap_err(), AttentionError::Json { .. }));
}

#[test]
fn errors_do_not_mutate_inputs() {
    let device = cpu(25);
    let module = small_config().init(&device).unwrap();
    let q = randn([1, 4, 16, 8], &device);
    let before = values(q.clone());
    let bad_k = randn([1, 3, 16, 8], &device);
    assert!(module.forward(q.clone(), bad_k.clone(), bad_k).is_err());
    assert_eq!(before, values(q));
}

/// A strategy in JSON names only the tuning fields it changes; a misspelt field is refused by
/// name rather than ignored.
#[test]
fn kernel_strategy_json_fills_defaults_and_refuses_unknown_fields() {
    let s: KernelStrategy = serde_json::from_str(r#"{"sm80": {"wide_chunks": true}}"#).unwrap();
    let want = Sm80Tuning {
        wide_chunks: true,
        ..Sm80Tuning::default()
    };
    assert_eq!(s, KernelStrategy::Sm80(want));
    let err = serde_json::from_str::<KernelStrategy>(r#"{"sm80": {"wide_chunk": true}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wide_chunk"), "{err}");
}

//! Properties over drawn configurations and inputs (proptest), on the CPU reference path:
//!
//! - nothing panics, whatever the draw;
//! - an invalid config or input is a typed `AttentionError` naming a field;
//! - a valid call equals the naive oracle (max abs error ≤ 1e-5 of the output scale, f32);
//! - NaN or infinity in the rows of keys nobody sees (padded keys) changes no output;
//! - a JSON document with an unknown field, or a misspelt one, is refused naming it.
//!
//! `PROPTEST_CASES` sets the number of cases of each property (default 3000: about 20 s on two
//! cores; a longer run: `PROPTEST_CASES=100000 cargo test -p dilated-attention --test
//! properties --release`). About a third of the drawn calls are valid and reach the oracle.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use common::{assert_close, values};
use dilated_attention::inputs::check_inputs;
use dilated_attention::reference::naive_attention;
use dilated_attention::{
    AttentionError, BlockSparseRingDilatedAttentionConfig, KernelPolicy,
    MultiHeadDilatedAttentionConfig, Partition, PatternType, SparsePatternConfig,
};
use proptest::prelude::*;

const KINDS: [PatternType; 6] = PatternType::ALL;

/// A drawn call: its config and its inputs' sizes.
#[derive(Debug, Clone)]
struct Case {
    n: usize,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    branches: Vec<(usize, usize)>,
    kind: PatternType,
    sparsity: f64,
    block: usize,
    causal: bool,
    masked: bool,
    ring: usize,
    partition: Partition,
    scale: Option<f64>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    // Invalid values are drawn now and then (about one draw in ten per field), so that most
    // cases reach the oracle and every error path is still hit.
    let branch = (1usize..200, 1usize..5);
    let branches = prop_oneof![
        19 => prop::collection::vec(branch.clone(), 1..4),
        1 => prop::collection::vec(branch, 0..1),
    ];
    let sparsity = prop_oneof![
        9 => 0.0f64..0.99,
        1 => prop::sample::select(vec![-0.1, 1.0, f64::NAN]),
    ];
    let block = prop_oneof![
        9 => prop::sample::select(vec![1usize, 2, 4, 8, 16, 64]),
        1 => prop::sample::select(vec![0usize, 3, 2048]),
    ];
    let ring = prop_oneof![
        9 => 1usize..4,
        1 => prop::sample::select(vec![0usize, 65, 400]),
    ];
    let scale = prop_oneof![
        6 => Just(None),
        3 => (1e-3f64..4.0).prop_map(Some),
        1 => prop::sample::select(vec![Some(-1.0), Some(0.0), Some(1e39), Some(f64::INFINITY)]),
    ];
    (
        (0usize..300, 0usize..3, 1usize..5, 1usize..4),
        (
            prop::sample::select(vec![1usize, 8, 16, 24]),
            branches,
            0usize..6,
            sparsity,
        ),
        (block, any::<bool>(), any::<bool>(), ring),
        (0usize..3, scale, any::<u64>()),
    )
        .prop_map(
            |(
                (n, batch, heads, kv),
                (head_dim, branches, kind, sparsity),
                (block, causal, masked, ring),
                (part, scale, seed),
            )| Case {
                n,
                batch,
                heads: heads * kv,
                // One case in ten with kv heads that do not divide the heads.
                kv_heads: if seed % 10 == 0 { heads * kv + 1 } else { kv },
                head_dim,
                branches,
                kind: KINDS[kind],
                sparsity,
                block,
                causal,
                masked,
                ring,
                partition: [Partition::Contiguous, Partition::Zigzag, Partition::Striped][part],
                scale,
                seed,
            },
        )
}

impl Case {
    fn config(&self) -> BlockSparseRingDilatedAttentionConfig {
        let mut sparse = SparsePatternConfig::new(self.kind)
            .with_sparsity_ratio(self.sparsity)
            .with_block_size(self.block)
            .with_seed(self.seed);
        if self.kind == PatternType::Custom {
            sparse = sparse.with_custom_blocks(
                self.branches
                    .iter()
                    .map(|_| vec![(0, 0), (1, 0), (2, 1), (1, 1)])
                    .collect(),
            );
        }
        BlockSparseRingDilatedAttentionConfig::new()
            .with_segment_lengths(self.branches.iter().map(|b| b.0).collect())
            .with_dilation_rates(self.branches.iter().map(|b| b.1).collect())
            .with_sparse_config(sparse)
            .with_causal(self.causal)
            .with_scale(self.scale)
            .with_ring_size(self.ring)
            .with_ring_partition(self.partition)
            .with_kernel_policy(KernelPolicy::ReferenceOnly)
    }
}

/// Random values of `shape` from `seed` (never zeros).
fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let len: usize = shape.iter().product();
    let mut x = seed | 1;
    let data: Vec<f32> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// A mask in Burn's polarity with about a third of the keys padded; batch 0 keeps all.
fn mask(batch: usize, n: usize, seed: u64, device: &Device) -> Tensor<2, Bool> {
    let data: Vec<bool> = (0..batch * n)
        .map(|i| i >= n && ((i as u64 * 2_654_435_761) ^ seed).is_multiple_of(3))
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, n]), device)
}

/// Whether `err` names a field of the config or a tensor.
fn names_a_field(err: &AttentionError) -> bool {
    let field = err.field();
    !field.is_empty()
        && err
            .to_string()
            .starts_with(field.split('[').next().unwrap_or(""))
        || matches!(err, AttentionError::KernelUnavailable { .. })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn calls_are_typed_errors_or_equal_the_oracle(case in case()) {
        let device = Device::flex();
        let module = match case.config().init(&device) {
            Ok(module) => module,
            Err(err) => {
                prop_assert!(names_a_field(&err), "{err:?} does not name a field");
                return Ok(());
            }
        };
        let (b, h, kv, d, n) = (case.batch, case.heads, case.kv_heads, case.head_dim, case.n);
        let q = tensor([b, h, n, d], case.seed, &device);
        let k = tensor([b, kv, n, d], case.seed ^ 1, &device);
        let v = tensor([b, kv, n, d], case.seed ^ 2, &device);
        let m = case.masked.then(|| mask(b, n, case.seed, &device));
        let result = module.forward_with_lse(q.clone(), k.clone(), v.clone(), m.clone());
        let (out, lse) = match result {
            Ok(r) => r,
            Err(err) => {
                prop_assert!(names_a_field(&err), "{err:?} does not name a field");
                return Ok(());
            }
        };
        prop_assert_eq!(out.dims(), [b, h, n, d]);
        prop_assert_eq!(lse.dims(), [b, h, n]);
        if b * n == 0 {
            return Ok(());
        }
        let shape = check_inputs(&q, &k, &v, m.as_ref()).unwrap();
        let layout = module.layout(n, h).unwrap();
        let scale = shape.scale(case.scale).unwrap();
        let (o_ref, l_ref) = naive_attention(q.clone(), k.clone(), v.clone(), m.clone(), shape, &layout, scale);
        let what = format!("{case:?}");
        assert_close(&values(out.clone()), &values(o_ref), 1e-5, &format!("out {what}"));
        assert_close(&values(lse.clone()), &values(l_ref), 1e-5, &format!("lse {what}"));

        // Garbage in the rows of padded keys (batch 1 onwards) changes nothing.
        if let Some(m) = m.filter(|_| b > 1) {
            let padded = m.clone().reshape([b, 1, n, 1]).expand([b, kv, n, d]);
            let poison = |t: Tensor<4>, x: f32| t.mask_fill(padded.clone(), x);
            let (o2, l2) = module
                .forward_with_lse(q, poison(k, f32::INFINITY), poison(v, f32::NAN), Some(m))
                .unwrap();
            assert_close(&values(o2), &values(out), 0.0, &format!("poisoned out {what}"));
            assert_close(&values(l2), &values(lse), 0.0, &format!("poisoned lse {what}"));
        }
    }

    #[test]
    fn json_with_unknown_or_misspelt_fields_is_refused(
        field in "[a-z_]{1,16}",
        value in prop_oneof![Just("1".to_string()), Just("true".to_string()), Just("[1, 2]".to_string())],
    ) {
        let known = [
            "segment_lengths", "dilation_rates", "sparsity_ratio", "block_size", "sparse_config",
            "causal", "scale", "ring_size", "ring_partition", "kernel_policy", "kernel_strategy",
            "cache_bytes",
        ];
        let json = format!(r#"{{"{field}": {value}}}"#);
        let parsed: Result<BlockSparseRingDilatedAttentionConfig, _> = serde_json::from_str(&json);
        if known.contains(&field.as_str()) {
            // A known field with a value of the wrong type is refused too, never ignored.
            if let Err(e) = parsed {
                prop_assert!(e.to_string().contains("invalid") || e.to_string().contains("expected"), "{e}");
            }
        } else {
            let err = parsed.unwrap_err().to_string();
            prop_assert!(err.contains("unknown field") && err.contains(&field), "{err}");
        }
        // The factory's top level and the multi-head config refuse them the same way.
        let factory = format!(r#"{{"kind": "dilated", "attention": {{}}, "{field}": {value}}}"#);
        let err = dilated_attention::module::attention_from_json(&factory, &Device::flex())
            .err()
            .map(|e| e.to_string());
        prop_assert!(err.is_some_and(|e| e.contains("unknown field")), "{factory}");
        if !["embed_dim", "num_heads", "kv_heads", "bias", "sub_layer_norm", "layer_norm_eps",
             "attention", "compute_dtype", "projection_chunk_rows"].contains(&field.as_str()) {
            let mha = format!(r#"{{"embed_dim": 8, "num_heads": 2, "{field}": {value}}}"#);
            let parsed: Result<MultiHeadDilatedAttentionConfig, _> = serde_json::from_str(&mha);
            prop_assert!(parsed.is_err(), "{mha}");
        }
    }
}

#[test]
fn misplaced_or_misspelt_fields_are_named() {
    let device = Device::flex();
    for (json, field) in [
        (
            r#"{"kind": "dilated", "attention": {}, "causal": true}"#,
            "causal",
        ),
        (
            r#"{"kind": "dilated", "attention": {"causl": true}}"#,
            "causl",
        ),
        (r#"{"kind": "dilated"}"#, "attention"),
    ] {
        let err = dilated_attention::module::attention_from_json(json, &device).unwrap_err();
        assert!(err.to_string().contains(field), "{json}: {err}");
    }
    let parsed: Result<MultiHeadDilatedAttentionConfig, _> =
        serde_json::from_str(r#"{"embed_dim": 8, "num_heads": 2, "kv_head": 1}"#);
    assert!(parsed.unwrap_err().to_string().contains("kv_head"));
    let parsed: Result<MultiHeadDilatedAttentionConfig, _> =
        serde_json::from_str(r#"{"num_heads": 2}"#);
    assert!(parsed.unwrap_err().to_string().contains("embed_dim"));
}

#[test]
fn an_empty_batch_gives_empty_outputs() {
    let device = Device::flex();
    let module = BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![8])
        .with_dilation_rates(vec![1])
        .with_block_size(Some(4))
        .init(&device)
        .unwrap();
    let q = Tensor::<4>::zeros([0, 2, 16, 8], &device);
    let (out, lse) = module
        .forward_with_lse(q.clone(), q.clone(), q, None)
        .unwrap();
    assert_eq!((out.dims(), lse.dims()), ([0, 2, 16, 8], [0, 2, 16]));
}

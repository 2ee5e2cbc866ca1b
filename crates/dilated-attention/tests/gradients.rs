//! Autodiff gradients of the blockwise reference equal those of the naive oracle.

mod common;

use burn::prelude::*;
use common::{assert_close, cpu, loss, padding_mask, randn, values};
use dilated_attention::inputs::check_inputs;
use dilated_attention::reference::{ReferencePlan, naive_attention, reference_attention};
use dilated_attention::{BlockLayout, DilatedPattern, PatternType, SparsePatternConfig};
use rstest::rstest;

#[rstest]
#[case(PatternType::Dense, &[8, 16], &[1, 2], false, false, 24)]
#[case(PatternType::DilatedSparse, &[16, 32, 64], &[1, 2, 4], true, true, 64)]
#[case(PatternType::LocalWindow, &[20], &[1], true, false, 37)]
#[case(PatternType::GlobalLocal, &[32], &[2], false, true, 45)]
#[case(PatternType::Random, &[8, 48], &[2, 1], true, true, 48)]
fn reference_gradients_equal_naive(
    #[case] kind: PatternType,
    #[case] w: &[usize],
    #[case] r: &[usize],
    #[case] causal: bool,
    #[case] masked: bool,
    #[case] n: usize,
) {
    let sparse = SparsePatternConfig::new(kind)
        .with_block_size(4)
        .with_sparsity_ratio(0.5);
    let pattern = DilatedPattern::new(w, r, sparse, causal).unwrap();
    let device = cpu(9).autodiff();
    let (heads, kv_heads, d) = (4, 2, 8);
    let q = randn([2, heads, n, d], &device).require_grad();
    let k = randn([2, kv_heads, n, d], &device).require_grad();
    let v = randn([2, kv_heads, n, d], &device).require_grad();
    let rw = randn([2, heads, n, d], &device);
    let sw = randn([2, heads, n], &device);
    let mask = masked.then(|| padding_mask(2, n, &device));
    let shape = check_inputs(&q, &k, &v, mask.as_ref()).unwrap();
    let layout = BlockLayout::new(&pattern, n, heads).unwrap();
    let scale = 1.0 / (d as f64).sqrt();

    let grads_of = |use_reference: bool| {
        let (out, lse) = if use_reference {
            let plan = ReferencePlan::new(std::sync::Arc::new(layout.clone()));
            reference_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                mask.clone(),
                shape,
                &plan,
                scale,
            )
        } else {
            naive_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                mask.clone(),
                shape,
                &layout,
                scale,
            )
        };
        let grads = loss(out, lse, &rw, &sw).backward();
        [&q, &k, &v].map(|t| values(t.grad(&grads).expect("gradient")))
    };
    let ours = grads_of(true);
    let oracle = grads_of(false);
    for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(ours.iter().zip(&oracle)) {
        assert_close(a, b, 1e-5, &format!("{name} {kind:?}"));
    }
}

#[test]
fn rows_without_keys_have_zero_gradient() {
    let device = cpu(10).autodiff();
    let sparse = SparsePatternConfig::new(PatternType::Dense).with_block_size(4);
    let module = dilated_attention::BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::new(&[16], &[1], sparse, false).unwrap(),
        None,
    );
    let q = randn([2, 2, 16, 8], &device).require_grad();
    let k = randn([2, 2, 16, 8], &device).require_grad();
    let v = randn([2, 2, 16, 8], &device).require_grad();
    let mask: Vec<bool> = (0..32).map(|i| i >= 16).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [2, 16]), &device);
    let (out, lse) = module
        .forward_with_lse(q.clone(), k.clone(), v.clone(), Some(mask))
        .unwrap();
    let grads = loss(
        out,
        lse,
        &randn([2, 2, 16, 8], &device),
        &randn([2, 2, 16], &device),
    )
    .backward();
    for t in [&q, &k, &v] {
        let g = t.grad(&grads).unwrap();
        assert!(values(g.clone()).iter().all(|x| x.is_finite()));
        assert!(values(g.slice_dim(0, 1..2)).iter().all(|&x| x == 0.0));
    }
}

//! The CubeCL forward kernel against the reference path, on the wgpu device (lavapipe in CI).
//!
//! Inputs are random (never zeros); the module on the wgpu device runs the kernels, the same
//! module restricted to the reference path runs on the CPU. Tolerance: max abs error ≤ 1e-4
//! relative to the output scale (f32), lse likewise. A direct launch checks that every element
//! of a NaN-poisoned output is written.
#![cfg(feature = "wgpu")]

mod common;

use burn::prelude::*;
use burn::tensor::DType;
use common::{Case, assert_close, cpu, gpu, randn, sparse, values};
use dilated_attention::kernel::{KernelClassLayout, Window, tensor_ref};
use dilated_attention::{
    AttentionShape, BlockLayout, BlockSparseRingDilatedAttention, DilatedPattern, ExecutionPath,
    KernelStrategy, PatternType, Sm80Tuning,
};
use rstest::rstest;

fn check(case: Case) {
    let cpu = cpu(case.seed);
    let Some(gpu) = gpu() else { return };
    let [q, k, v] = case.qkv(&cpu);
    let module = case.module();
    let (o_ref, l_ref) = module
        .clone()
        .without_kernels()
        .forward_with_lse(q.clone(), k.clone(), v.clone(), case.mask(&cpu))
        .unwrap();
    let [q, k, v] = [q, k, v].map(|t| t.to_device(&gpu));
    let (o, l) = module.forward_kernels(q, k, v, case.mask(&gpu)).unwrap();
    let what = case.what();
    assert_close(&values(o), &values(o_ref), 1e-4, &format!("out {what}"));
    assert_close(&values(l), &values(l_ref), 1e-4, &format!("lse {what}"));
}

/// Every pattern type, in turn, for each causal/masked pair (a failure names the pattern).
#[rstest]
fn kernel_equals_reference_for_every_pattern(
    #[values(false, true)] causal: bool,
    #[values(false, true)] masked: bool,
) {
    for kind in PatternType::ALL {
        let sparse = sparse(kind, 16, 0.5);
        check(Case {
            pattern: DilatedPattern::new(&[64, 128], &[1, 2], sparse, causal).unwrap(),
            n: 200,
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            masked,
            seed: kind as u64,
        });
    }
}

#[rstest]
#[case::longnet_gqa(&[32, 64, 128], &[1, 2, 4], 16, 150, 8, 2, 64)]
#[case::mqa_tail_block(&[100], &[1], 32, 100, 3, 1, 32)]
#[case::tiny_blocks(&[16, 48], &[1, 3], 4, 61, 5, 5, 32)]
#[case::head_dim_128(&[128], &[2], 64, 130, 2, 2, 128)]
#[case::whole_sequence(&[1 << 20], &[1], 64, 257, 2, 1, 64)]
fn kernel_equals_reference_on_shapes(
    #[case] w: &[usize],
    #[case] r: &[usize],
    #[case] block: usize,
    #[case] n: usize,
    #[case] heads: usize,
    #[case] kv_heads: usize,
    #[case] head_dim: usize,
) {
    for causal in [false, true] {
        check(Case::dilated(
            w, r, block, causal, n, heads, kv_heads, head_dim,
        ));
    }
}

#[test]
fn rows_without_keys_are_zero_and_neg_inf() {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (2, 2, 40, 32);
    let q = randn([b, h, n, d], &gpu);
    let k = randn([b, h, n, d], &gpu);
    let mask: Vec<bool> = (0..b * n).map(|i| i >= n).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [b, n]), &gpu);
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::single(sparse(PatternType::Dense, 16, 0.0), false),
        None,
    );
    let (o, l) = module.forward_kernels(q, k.clone(), k, Some(mask)).unwrap();
    assert!(values(o.slice_dim(0, 1..2)).iter().all(|&x| x == 0.0));
    assert!(
        values(l.slice_dim(0, 1..2))
            .iter()
            .all(|&x| x == f32::NEG_INFINITY)
    );
}

/// A direct launch into NaN-poisoned outputs: every element must be written, also by a
/// windowed launch (a ring step: query rows 20..61 against key rows 5..50, tensors holding
/// only those rows), where a query whose keys all lie outside the window gets `0, -inf`.
#[rstest]
#[case::whole_sequence(None)]
#[case::window(Some(Window { q_start: 20, q_end: 61, k_start: 5, k_end: 50 }))]
fn direct_launch_writes_every_element(#[case] window: Option<Window>) {
    use burn::backend::ops::FloatTensorOps;
    use burn_cubecl::CubeBackend;
    use dilated_attention_kernels::{
        AttnDtype, ClassArgs, ForwardTensors, KernelConfig, Strategy, forward_class, plan, read_f32,
    };

    // Straight on `CubeBackend` (whatever Burn's `Cube` is, with or without Fusion).
    let Some(gpu) = gpu() else { return };
    let cube_device = burn_cubecl::CubeDevice::Wgpu(Default::default());
    let (b, h, n, d) = (1, 2, 77, 64);
    let pattern = DilatedPattern::single(sparse(PatternType::LocalWindow, 16, 0.5), true);
    let layout = BlockLayout::new(&pattern, n, h).unwrap();
    let host = KernelClassLayout::new(&layout.classes[0], 1, 16).unwrap();
    let (n_q, n_k) = window.map_or((n, n), |w| (w.q_end - w.q_start, w.k_end - w.k_start));
    let cube = |t: Tensor<4>| CubeBackend::float_from_data(t.into_data(), &cube_device);
    let view = |name, t: &burn_cubecl::tensor::CubeTensor| tensor_ref(name, t).unwrap();
    let q = cube(randn([b, h, n_q, d], &gpu));
    let k = cube(randn([b, h, n_k, d], &gpu));
    let out = cube(Tensor::<4>::full([b, h, n_q, d], f32::NAN, &gpu));
    let lse = CubeBackend::float_from_data(
        Tensor::<3>::full([b, h, n_q], f32::NAN, &gpu).into_data(),
        &cube_device,
    );
    let client = q.client.clone();
    let mut class = ClassArgs::upload(&client, &host.rows, host.params, h, 16, n).unwrap();
    if let Some(w) = window {
        class = class.with_window(&client, w).unwrap();
    }
    let config = KernelConfig {
        dtype: AttnDtype::F32,
        head_dim: d,
        block: 16,
        causal: true,
        scale: 0.125,
    };
    let plan = plan(&client, &config, window.is_some(), Some(Strategy::Portable)).unwrap();
    let (qr, kr, or, lr) = (
        view("q", &q),
        view("k", &k),
        view("out", &out),
        view("lse", &lse),
    );
    let tensors = ForwardTensors {
        q: &qr,
        k: &kr,
        v: &kr,
        mask: None,
        out: &or,
        lse: &lr,
    };
    forward_class(&client, &plan, &tensors, &class, false).unwrap();
    let out = read_f32(&client, &out.handle).unwrap();
    let lse = read_f32(&client, &lse.handle).unwrap();
    assert!(
        out.iter().all(|x| x.is_finite()),
        "unwritten output element"
    );
    assert!(lse.iter().all(|x| !x.is_nan()), "unwritten lse element");
    if window.is_none() {
        assert!(
            lse.iter().all(|x| x.is_finite()),
            "a causal row without keys"
        );
    } else {
        // Query 20 (the window's first) sees keys 16..=20 of its local block: inside the window.
        assert!(lse[0].is_finite());
    }
}

#[test]
fn unsupported_head_dim_falls_back_to_the_reference_or_errors_under_require() {
    let Some(gpu) = gpu() else { return };
    let q = randn([1, 2, 50, 24], &gpu);
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::single(sparse(PatternType::Dense, 16, 0.0), false),
        None,
    );
    let out = module.forward(q.clone(), q.clone(), q.clone()).unwrap();
    assert!(values(out).iter().all(|x| x.is_finite()));
    let err = module
        .forward_kernels(q.clone(), q.clone(), q, None)
        .unwrap_err();
    assert!(err.to_string().contains("head_dim"), "{err}");
    let config = dilated_attention_kernels::KernelConfig {
        dtype: dilated_attention_kernels::AttnDtype::F32,
        head_dim: 24,
        block: 16,
        causal: false,
        scale: 1.0,
    };
    assert!(matches!(
        config.check(),
        Err(dilated_attention_kernels::KernelError::Unsupported {
            field: "head_dim",
            ..
        })
    ));
}

/// Without warpgroup MMA (lavapipe) a plan never runs the Hopper forward or backward, even under
/// the sm80 tuning that prefers them; the path's label names the family that runs.
#[test]
fn plans_without_warpgroup_mma_name_their_family() {
    let Some(gpu) = gpu() else { return };
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::longnet(256, 128, true).unwrap(),
        None,
    );
    let shape = AttentionShape {
        batch: 1,
        heads: 4,
        kv_heads: 4,
        n: 256,
        head_dim: 64,
    };
    let path = module.execution_path(shape, DType::F32, &gpu).unwrap();
    let ExecutionPath::Kernels(plan) = &path else {
        panic!("the portable kernels serve f32 on wgpu: {path:?}")
    };
    assert_eq!(plan.strategy(), KernelStrategy::Portable);
    assert!(!plan.wgmma_forward() && !plan.wgmma_dq() && !plan.wgmma_dkdv());
    assert_eq!(path.label(), "portable");
    let tuning = Sm80Tuning::default();
    assert!(
        tuning.wgmma_forward && tuning.wgmma_backward,
        "on where they apply"
    );
    let forced = module.with_kernel_strategy(Some(KernelStrategy::Sm80(Sm80Tuning::default())));
    let path = forced.execution_path(shape, DType::F32, &gpu).unwrap();
    assert!(
        matches!(path, ExecutionPath::Reference(_)),
        "sm80 needs manual MMA: {path:?}"
    );
    assert_eq!(path.label(), "reference");
}

/// Inputs with other strides than contiguous `[batch, heads, n, head_dim]` (a head dim that is not
/// the fastest axis, and a heads/sequence transpose) read the same values.
#[test]
fn strided_inputs_equal_contiguous_ones() {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (1, 2, 96, 32);
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::new(
            &[32, 96],
            &[1, 2],
            sparse(PatternType::DilatedSparse, 16, 0.5),
            true,
        )
        .unwrap(),
        None,
    );
    let q = randn([b, h, d, n], &gpu).swap_dims(2, 3);
    let k = randn([b, n, h, d], &gpu).swap_dims(1, 2);
    let v = randn([b, h, n, d], &gpu);
    let (o, l) = module
        .forward_kernels(q.clone(), k.clone(), v.clone(), None)
        .unwrap();
    // The same values, laid out contiguously.
    let contiguous = |t: Tensor<4>| Tensor::<4>::from_data(t.into_data(), &gpu);
    let (o2, l2) = module
        .forward_kernels(contiguous(q), contiguous(k), contiguous(v), None)
        .unwrap();
    assert_close(&values(o), &values(o2), 1e-6, "strided out");
    assert_close(&values(l), &values(l2), 1e-6, "strided lse");
}

/// `(out, lse)` of `module` through the kernels or the reference path, each split per head
/// into the rows before the last query and the last query's row.
#[allow(clippy::type_complexity)]
fn split_last(
    module: &BlockSparseRingDilatedAttention,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    kernels: bool,
) -> ((Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
    let [_, _, n, d] = q.dims();
    let (o, l) = if kernels {
        module.forward_kernels(q, k, v, None)
    } else {
        module.forward_with_lse(q, k, v, None)
    }
    .unwrap();
    let split = |t: Vec<f32>, per_row: usize| {
        let (mut before, mut last) = (Vec::new(), Vec::new());
        for head in t.chunks(n * per_row) {
            before.extend_from_slice(&head[..(n - 1) * per_row]);
            last.extend_from_slice(&head[(n - 1) * per_row..]);
        }
        (before, last)
    };
    (split(values(o), d), split(values(l), 1))
}

/// A NaN in the value row (and `+inf` in the key row) of the last key, which under causal
/// masking only the last query may see, changes no other query's `out` or `lse` by a bit: on
/// the kernels (the portable family on lavapipe) and on the reference path. Every pattern
/// type; `n` not a multiple of the block, so the key also sits in a partial block. Where the
/// last query sees the key (dense blocks), a NaN in its value row or an infinity in its key row
/// reaches it: no silent finite output.
#[rstest]
fn nan_in_a_causal_future_key_reaches_no_query_before_it(#[values(false, true)] kernels: bool) {
    let cpu = cpu(11);
    let Some(gpu) = gpu() else { return };
    let device = if kernels { gpu } else { cpu.clone() };
    let (n, h, kv, d) = (150, 4, 2, 32);
    for kind in PatternType::ALL {
        let pattern =
            DilatedPattern::new(&[64, 128], &[1, 2], sparse(kind, 16, 0.5), true).unwrap();
        let module = BlockSparseRingDilatedAttention::from_pattern(pattern, None);
        let module = if kernels {
            module
        } else {
            module.without_kernels()
        };
        let [q, k, v] = common::qkv([1, h, kv, n, d], &cpu).map(|t| t.to_device(&device));
        let run = |k, v| split_last(&module, q.clone(), k, v, kernels);
        let ((o, _), (l, _)) = run(k.clone(), v.clone());
        let ((o2, _), (l2, _)) = run(
            common::poison_key(k.clone(), n - 1, f32::INFINITY),
            common::poison_key(v.clone(), n - 1, f32::NAN),
        );
        let what = format!("{kind:?}, kernels {kernels}");
        let before = "of the queries before the key";
        assert_close(&o2, &o, 0.0, &format!("out {before}, {what}"));
        assert_close(&l2, &l, 0.0, &format!("lse {before}, {what}"));
        if kind == PatternType::Dense {
            // NaN in the key's value row reaches the last query; so does `+inf` in its key row
            // (a NaN score: `q` has both signs), on the portable kernels too, where WGSL lets
            // the compiler assume finite floats (the kernel tests the score's bits).
            let nan_v = common::poison_key(v.clone(), n - 1, f32::NAN);
            let inf_k = common::poison_key(k.clone(), n - 1, f32::INFINITY);
            for (k, v, poisoned) in [(k, nan_v, "v"), (inf_k, v, "k")] {
                let ((_, last), _) = run(k, v);
                assert!(
                    last.iter().all(|x| x.is_nan()),
                    "the last query's output is not NaN with {poisoned} poisoned, {what}"
                );
            }
        }
    }
}

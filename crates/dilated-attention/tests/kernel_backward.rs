//! The CubeCL backward kernels against autodiff of the reference path, on the wgpu device
//! (lavapipe in CI).
//!
//! Inputs and upstream gradients are random (never zeros). The reference runs with autodiff on
//! the CPU; the kernels get the forward kernels' `out` and `lse` and the same upstream
//! gradients of `out` and of the (finite) `lse`. Tolerance: max abs error ≤ 1e-4 relative to
//! the gradient's scale (f32).
#![cfg(feature = "wgpu")]

mod common;

use burn::prelude::*;
use common::{Case, assert_close, cpu, gpu, loss, padding_mask, qkv, randn, sparse, values};
use dilated_attention::{BlockSparseRingDilatedAttention, DilatedPattern, PatternType};
use rstest::rstest;

/// The case's kernel gradients against the reference path's; `with_dlse` also seeds the
/// gradient of the log-sum-exp.
fn check(case: Case, with_dlse: bool) {
    let cpu = cpu(case.seed);
    let Some(gpu) = gpu() else { return };
    let [q, k, v] = case.qkv(&cpu);
    let r = randn([Case::BATCH, case.heads, case.n, case.head_dim], &cpu);
    let s = randn([Case::BATCH, case.heads, case.n], &cpu) * if with_dlse { 1.0 } else { 0.0 };
    let module = case.module();

    let ad = cpu.clone().autodiff();
    let on_ad = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad);
    let [qa, ka, va] = [&q, &k, &v].map(|t| on_ad(t).require_grad());
    let (o_ref, l_ref) = module
        .clone()
        .without_kernels()
        .forward_with_lse(qa.clone(), ka.clone(), va.clone(), case.mask(&ad))
        .unwrap();
    let s_ad = Tensor::<3>::from_data(s.to_data(), &ad);
    let grads = loss(o_ref, l_ref, &on_ad(&r), &s_ad).backward();
    let expected = [&qa, &ka, &va].map(|t| values(t.grad(&grads).unwrap()));

    let [qg, kg, vg, rg] = [&q, &k, &v, &r].map(|t| t.clone().to_device(&gpu));
    let (o, l) = module
        .forward_kernels(qg.clone(), kg.clone(), vg.clone(), case.mask(&gpu))
        .unwrap();
    let dlse = with_dlse.then(|| s.clone().to_device(&gpu));
    let (dq, dk, dv) = module
        .backward_kernels(qg, kg, vg, case.mask(&gpu), o, l, rg, dlse)
        .unwrap();
    let what = case.what();
    for (name, (got, want)) in ["dq", "dk", "dv"]
        .iter()
        .zip([dq, dk, dv].into_iter().zip(&expected))
    {
        assert_close(&values(got), want, 1e-4, &format!("{name} {what}"));
    }
}

/// Branches `[32, n] × [1, 2]` over blocks of 16 of `kind` at sparsity 0.5.
fn two_branches(n: usize, kind: PatternType, causal: bool) -> BlockSparseRingDilatedAttention {
    let pattern = DilatedPattern::new(&[32, n], &[1, 2], sparse(kind, 16, 0.5), causal).unwrap();
    BlockSparseRingDilatedAttention::from_pattern(pattern, None)
}

/// Every pattern type, in turn, for each causal/masked pair (a failure names the pattern).
#[rstest]
fn backward_equals_reference_for_every_pattern(
    #[values(false, true)] causal: bool,
    #[values(false, true)] masked: bool,
) {
    for kind in PatternType::ALL {
        let sparse = sparse(kind, 16, 0.5);
        let case = Case {
            pattern: DilatedPattern::new(&[64, 128], &[1, 2], sparse, causal).unwrap(),
            n: 150,
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            masked,
            seed: kind as u64,
        };
        check(case, masked);
    }
}

/// Shapes, causality cycled rather than crossed (each shape is its own set of shader compiles
/// on lavapipe; causal and not are both crossed with every pattern above). Causal cases also
/// seed the gradient of the log-sum-exp.
#[rstest]
#[case::longnet_gqa_causal(&[32, 64, 128], &[1, 2, 4], 16, true, 150, (8, 2), 64)]
#[case::mqa_tail_block_causal(&[100], &[1], 32, true, 100, (3, 1), 32)]
#[case::tiny_blocks(&[16, 48], &[1, 3], 4, false, 61, (5, 5), 32)]
#[case::head_dim_128(&[128], &[2], 64, false, 130, (2, 2), 128)]
fn backward_equals_reference_on_shapes(
    #[case] w: &[usize],
    #[case] r: &[usize],
    #[case] block: usize,
    #[case] causal: bool,
    #[case] n: usize,
    #[case] (heads, kv_heads): (usize, usize),
    #[case] head_dim: usize,
) {
    let case = Case::dilated(w, r, block, causal, n, heads, kv_heads, head_dim);
    check(case, causal);
}

/// Batch 1 has every key masked: its rows see nothing, so every gradient there is exactly 0.
#[test]
fn rows_without_keys_have_zero_gradient() {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (2, 2, 40, 32);
    let q = randn([b, h, n, d], &gpu);
    let k = randn([b, h, n, d], &gpu);
    let v = randn([b, h, n, d], &gpu);
    let mask = || {
        let m: Vec<bool> = (0..b * n).map(|i| i >= n).collect();
        Some(Tensor::<2, Bool>::from_data(
            TensorData::new(m, [b, n]),
            &gpu,
        ))
    };
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::single(sparse(PatternType::Dense, 16, 0.0), true),
        None,
    );
    let (o, l) = module
        .forward_kernels(q.clone(), k.clone(), v.clone(), mask())
        .unwrap();
    let (dq, dk, dv) = module
        .backward_kernels(
            q,
            k,
            v,
            mask(),
            o,
            l.clone(),
            randn([b, h, n, d], &gpu),
            Some(l),
        )
        .unwrap();
    for g in [dq, dk, dv] {
        assert!(values(g.clone()).iter().all(|x| x.is_finite()));
        assert!(values(g.slice_dim(0, 1..2)).iter().all(|&x| x == 0.0));
    }
}

/// Which outputs the loss reads.
#[derive(Debug, Clone, Copy)]
enum Uses {
    Out,
    Lse,
    Both,
}

/// `loss.backward()` on an autodiff wgpu device runs the kernels (forward_kernels refuses to
/// fall back) and gives the reference path's gradients, whichever outputs the loss reads.
#[rstest]
fn autodiff_runs_the_kernels(
    #[values(Uses::Out, Uses::Lse, Uses::Both)] uses: Uses,
    #[values(false, true)] causal: bool,
) {
    let (b, h, kvh, n, d) = (1, 4, 2, 90, 32);
    let module = two_branches(90, PatternType::DilatedSparse, causal);
    let cpu = cpu(21);
    let inputs = qkv([b, h, kvh, n, d], &cpu);
    let r = randn([b, h, n, d], &cpu);
    let s = randn([b, h, n], &cpu);
    let grads_on = |device: &Device, kernels: bool| {
        let ad = device.clone().autodiff();
        let [q, k, v] = inputs
            .clone()
            .map(|t| Tensor::<4>::from_data(t.into_data(), &ad).require_grad());
        let (out, lse) = if kernels {
            module.forward_kernels(q.clone(), k.clone(), v.clone(), None)
        } else {
            module
                .clone()
                .without_kernels()
                .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
        }
        .unwrap();
        let r = Tensor::<4>::from_data(r.to_data(), &ad);
        let s = Tensor::<3>::from_data(s.to_data(), &ad);
        let loss = match uses {
            Uses::Out => (out * r).sum(),
            Uses::Lse => (lse * s).sum(),
            Uses::Both => (out * r).sum() + (lse * s).sum(),
        };
        let grads = loss.backward();
        // A loss of `lse` alone does not reach `v` on the reference path: its gradient is 0.
        [q, k, v].map(|t| {
            let zeros = t.zeros_like().without_autodiff();
            values(t.grad(&grads).unwrap_or(zeros))
        })
    };
    let Some(gpu) = gpu() else { return };
    let got = grads_on(&gpu, true);
    let want = grads_on(&cpu, false);
    for (name, (g, w)) in ["dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
        assert_close(g, w, 1e-4, &format!("{name} {uses:?} causal={causal}"));
    }
}

/// A direct launch of the Δ prepass into a NaN-poisoned buffer writes every row, and the
/// per-class launches leave rows of other classes untouched (their accumulators stay 0).
#[test]
fn direct_launch_writes_delta_and_only_class_rows() {
    use burn::backend::ops::FloatTensorOps;
    use burn_cubecl::CubeBackend;
    use dilated_attention::BlockLayout;
    use dilated_attention::kernel::{KernelClassLayout, tensor_ref};
    use dilated_attention_kernels::{
        AttnDtype, BackwardTensors, ClassArgs, KernelConfig, Strategy, backward_class, delta, plan,
        read_f32,
    };

    // Straight on `CubeBackend` (whatever Burn's `Cube` is, with or without Fusion).
    let Some(gpu) = gpu() else { return };
    let cube_device = burn_cubecl::CubeDevice::Wgpu(Default::default());
    let (b, h, n, d) = (1, 2, 70, 32);
    // One branch dilated by 2: head 0 owns the even tokens, head 1 the odd ones.
    let pattern =
        DilatedPattern::new(&[70], &[2], sparse(PatternType::Dense, 16, 0.0), true).unwrap();
    let layout = BlockLayout::new(&pattern, n, h).unwrap();
    let prim = |t: Tensor<4>| CubeBackend::float_from_data(t.into_data(), &cube_device);
    let prim3 = |t: Tensor<3>| CubeBackend::float_from_data(t.into_data(), &cube_device);
    let view = |name, t: &burn_cubecl::tensor::CubeTensor| tensor_ref(name, t).unwrap();
    let [q, k, v, out, dout] = [0; 5].map(|_| prim(randn([b, h, n, d], &gpu)));
    let lse = prim3(randn([b, h, n], &gpu));
    let delta_buf = prim3(Tensor::<3>::full([b, h, n], f32::NAN, &gpu));
    let [dq, dk, dv] = [0; 3].map(|_| prim(Tensor::<4>::zeros([b, h, n, d], &gpu)));
    let client = q.client.clone();
    let config = KernelConfig {
        dtype: AttnDtype::F32,
        head_dim: d,
        block: 16,
        causal: true,
        scale: 0.2,
    };
    let plan = plan(&client, &config, false, Some(Strategy::Portable)).unwrap();
    let deltar = view("delta", &delta_buf);
    delta(
        &client,
        &plan,
        &view("out", &out),
        &view("dout", &dout),
        None,
        &deltar,
    )
    .unwrap();
    // Only class 0 (head 0, even tokens).
    let host = KernelClassLayout::new(&layout.classes[0], 1, 16).unwrap();
    let upload = |csr| ClassArgs::upload(&client, csr, host.params, host.heads, 16, n).unwrap();
    let (qr, kr, vr, gr, lr) = (
        view("q", &q),
        view("k", &k),
        view("v", &v),
        view("dout", &dout),
        view("lse", &lse),
    );
    let (dqr, dkr, dvr) = (view("dq", &dq), view("dk", &dk), view("dv", &dv));
    let tensors = BackwardTensors {
        q: &qr,
        k: &kr,
        v: &vr,
        mask: None,
        dout: &gr,
        lse: &lr,
        delta: &deltar,
        dq: &dqr,
        dk: &dkr,
        dv: &dvr,
    };
    backward_class(
        &client,
        &plan,
        &tensors,
        &upload(&host.rows),
        &upload(&host.cols),
        false,
    )
    .unwrap();
    let delta_v = read_f32(&client, &delta_buf.handle).unwrap();
    assert!(delta_v.iter().all(|x| x.is_finite()), "unwritten Δ row");
    for g in [dq, dk, dv] {
        let g = read_f32(&client, &g.handle).unwrap();
        for i in 0..n {
            let row = &g[i * d..(i + 1) * d];
            assert!(row.iter().all(|x| x.is_finite()));
            if i % 2 == 1 {
                assert!(
                    row.iter().all(|&x| x == 0.0),
                    "head 0, odd token {i} was written"
                );
            } else {
                assert!(
                    row.iter().any(|&x| x != 0.0),
                    "head 0, even token {i} was not written"
                );
            }
        }
        // Head 1 belongs to the other class.
        assert!(g[n * d..].iter().all(|&x| x == 0.0));
    }
}

/// Garbage (NaN, ±∞) in the `k`/`v` rows of padded keys changes no output and no gradient of
/// the kernels (forward and backward, portable family), nor the reference path's.
#[rstest]
fn garbage_in_padded_keys_is_confined(#[values(false, true)] causal: bool) {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (2, 2, 70, 32);
    let module = two_branches(70, PatternType::LocalWindow, causal);
    let cpu = cpu(21);
    let [q, k, v, r] = [0; 4].map(|_| randn([b, h, n, d], &cpu));
    let run = |module: &BlockSparseRingDilatedAttention, device: &Device, poison: bool| {
        let ad = device.clone().autodiff();
        let mask = padding_mask(b, n, &ad);
        let padded = mask.clone().reshape([b, 1, n, 1]).expand([b, h, n, d]);
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad);
        let (k, v) = if poison {
            (
                on(&k).mask_fill(padded.clone(), f32::INFINITY),
                on(&v).mask_fill(padded, f32::NAN),
            )
        } else {
            (on(&k), on(&v))
        };
        let [q, k, v] = [on(&q), k, v].map(|t| t.require_grad());
        let out = module
            .forward_masked(q.clone(), k.clone(), v.clone(), Some(mask.clone()))
            .unwrap();
        let grads = (out.clone() * on(&r)).sum().backward();
        // The gradients of padded keys are 0 either way; compare the rest.
        let keep = mask.bool_not().float().reshape([b, 1, n, 1]);
        let g = |t: &Tensor<4>| values(t.grad(&grads).unwrap() * keep.clone().inner());
        let dq = values(q.grad(&grads).unwrap());
        (values(out), dq, g(&k), g(&v))
    };
    for (device, module, what) in [
        (&gpu, module.clone(), "kernels"),
        (&cpu, module.clone().without_kernels(), "reference"),
    ] {
        let clean = run(&module, device, false);
        let dirty = run(&module, device, true);
        for (name, a, b) in [
            ("out", &dirty.0, &clean.0),
            ("dq", &dirty.1, &clean.1),
            ("dk", &dirty.2, &clean.2),
            ("dv", &dirty.3, &clean.3),
        ] {
            assert_close(a, b, 1e-6, &format!("{what} {name} causal={causal}"));
        }
    }
}

/// A tracked query with keys, values and a mask made on the plain device (constants): the
/// kernels serve the call and the query's gradient equals the reference path's.
#[test]
fn tracked_queries_with_plain_keys_and_mask_run_the_kernels() {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (2, 2, 48, 32);
    let module = BlockSparseRingDilatedAttention::from_pattern(
        DilatedPattern::single(sparse(PatternType::Dense, 16, 0.0), true),
        None,
    );
    let cpu = cpu(5);
    let [q, k, v, r] = [0; 4].map(|_| randn([b, h, n, d], &cpu));
    let grad = |device: &Device, kernels: bool| {
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), device);
        let qa = on(&q).autodiff().require_grad();
        let mask = padding_mask(b, n, device);
        let out = if kernels {
            module
                .forward_kernels(qa.clone(), on(&k), on(&v), Some(mask))
                .expect("the kernels serve the call")
                .0
        } else {
            module
                .clone()
                .without_kernels()
                .forward_masked(qa.clone(), on(&k), on(&v), Some(mask))
                .unwrap()
        };
        let grads = (out * on(&r).autodiff()).sum().backward();
        values(qa.grad(&grads).unwrap())
    };
    assert_close(&grad(&gpu, true), &grad(&cpu, false), 1e-4, "dq");
}

/// NaN in the value row and `+inf` in the key row of the last key, which under causal masking
/// only the last query may see, changes the query gradient of no other query (the kernels'
/// portable backward and the reference path's autodiff), and leaves the last query's own
/// gradient NaN, as its output is. The keys' gradients are not compared:
/// the last query's output is NaN, and through it every key it sees gets NaN gradients, as
/// IEEE arithmetic has it.
#[rstest]
fn nan_in_a_causal_future_key_reaches_no_query_gradient_before_it(
    #[values(PatternType::Dense, PatternType::DilatedSparse)] kind: PatternType,
) {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (1, 2, 90, 32);
    let module = two_branches(n, kind, true);
    let cpu = cpu(23);
    let [q, k, v, r] = [0; 4].map(|_| randn([b, h, n, d], &cpu));
    let run = |module: &BlockSparseRingDilatedAttention, device: &Device, poison: bool| {
        let ad = device.clone().autodiff();
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad);
        let (k, v) = (on(&k), on(&v));
        let (k, v) = if poison {
            (
                common::poison_key(k, n - 1, f32::INFINITY),
                common::poison_key(v, n - 1, f32::NAN),
            )
        } else {
            (k, v)
        };
        let q = on(&q).require_grad();
        let out = module
            .forward_masked(q.clone(), k.require_grad(), v.require_grad(), None)
            .unwrap();
        let grads = (out * on(&r)).sum().backward();
        let dq = values(q.grad(&grads).unwrap());
        let rows = |range: std::ops::Range<usize>| {
            dq.chunks(n * d)
                .flat_map(|head| head[range.start * d..range.end * d].to_vec())
                .collect::<Vec<f32>>()
        };
        (rows(0..n - 1), rows(n - 1..n))
    };
    for (device, module, what) in [
        (&gpu, module.clone(), "kernels"),
        (&cpu, module.clone().without_kernels(), "reference"),
    ] {
        let (clean, _) = run(&module, device, false);
        let (dirty, last) = run(&module, device, true);
        assert_close(&dirty, &clean, 0.0, &format!("{what} dq {kind:?}"));
        // The last query sees the key in both patterns (its own block): its output is NaN,
        // and so is its gradient — no silent finite value.
        assert!(
            last.iter().all(|x| x.is_nan()),
            "{what}: the last query's dq is not NaN, {kind:?}: {:?}",
            &last[..8]
        );
    }
}

/// NaN in the value row of the last key alone (causal; only the last query sees it): `P` does
/// not depend on `v`, so the kernels' `dv = Pᵀ·dO` of every key is what it is without the NaN
/// (the portable kernel wrote NaN into the `dv` of every key the last query sees before
/// `DK_POISONED`); the last query's output is NaN, so the keys it sees get a NaN `dk` (`dS`
/// holds its NaN `Δ`). The reference path is not asked: its guard sets the NaN columns of
/// `P·V` by `mask_fill`, which passes no gradient, so its `dv` leaves out the last query's
/// `P · dO` (docs/notes.md).
#[rstest]
fn nan_in_a_causal_future_value_leaves_every_dv(
    #[values(PatternType::Dense, PatternType::DilatedSparse)] kind: PatternType,
) {
    let Some(gpu) = gpu() else { return };
    let (b, h, n, d) = (1, 2, 90, 32);
    let module = two_branches(n, kind, true);
    let cpu = cpu(29);
    let [q, k, v, r] = [0; 4].map(|_| randn([b, h, n, d], &cpu));
    let run = |module: &BlockSparseRingDilatedAttention, device: &Device, poison: bool| {
        let ad = device.clone().autodiff();
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad);
        let v = on(&v);
        let v = if poison {
            common::poison_key(v, n - 1, f32::NAN)
        } else {
            v
        };
        let (k, v) = (on(&k).require_grad(), v.require_grad());
        let out = module
            .forward_masked(on(&q), k.clone(), v.clone(), None)
            .unwrap();
        let grads = (out * on(&r)).sum().backward();
        (
            values(v.grad(&grads).unwrap()),
            values(k.grad(&grads).unwrap()),
        )
    };
    let (clean, _) = run(&module, &gpu, false);
    let (dirty, dk) = run(&module, &gpu, true);
    assert_close(&dirty, &clean, 0.0, &format!("kernels dv {kind:?}"));
    // The last key is seen by the last query only, whose `Δ` is NaN.
    let last_dk: Vec<f32> = dk
        .chunks(n * d)
        .flat_map(|head| head[(n - 1) * d..].to_vec())
        .collect();
    assert!(
        last_dk.iter().all(|x| x.is_nan()),
        "the last key's dk is not NaN, {kind:?}: {:?}",
        &last_dk[..8]
    );
}

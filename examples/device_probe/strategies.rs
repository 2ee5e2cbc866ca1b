//! `strategies`: every kernel family the device serves, forced through the config, forward
//! and backward on one LongNet case with GQA, a padding mask and a tail, against the f32
//! reference on the CPU, with the mask and without it — families must agree with the reference
//! (f32: 1e-4 relative; f16: within 2× of the larger error of two same-precision paths on the
//! device, the reference path in f16 and dense attention in f16 throughout), NaN in the
//! keys and values of padded keys must change no gradient, NaN in the value row of the last key
//! (causal: only the last query sees it) must change no other query's output or `dq` and no
//! `dv`, and the automatic choice is printed. The case is causal; `--pick` runs the picked
//! families without the mask too (there the last-key check does not apply).

use burn::prelude::*;
use burn::tensor::{DType, Distribution, TensorData};
use dilated_attention::{
    AttentionShape, BlockSparseRingDilatedAttention, DilatedPattern, ExecutionPath, KernelPolicy,
    KernelStrategy,
};

use super::support::{Path, Probe, grads, max_abs_diff, quantised, read, rel};

pub fn run(p: &mut Probe) {
    let families = super::families::all();
    let longnet =
        |block, causal| DilatedPattern::longnet(1024, block, causal).expect("valid preset");
    if let Some(pick) = p.pick.clone() {
        let mut picked = Vec::new();
        for &i in &pick {
            match families.get(i) {
                Some(&family) => picked.push(family),
                None => p.miss(format!(
                    "--pick {i}: no such family (0..{})",
                    families.len()
                )),
            }
        }
        // Causal and not: the two compile to different kernels (a causal step may be skipped,
        // and at head dim 128 the wide overlapped step gives way to the 64-key one there).
        for causal in [true, false] {
            for d in [64, 128] {
                println!("blocks of 128, head dim {d}, causal {causal}, families {pick:?}:");
                case(p, longnet(128, causal), &picked, d);
            }
        }
        return;
    }
    // `--families`: only the first this many of each case's list.
    let first = p.families.unwrap_or(usize::MAX);
    let first = |list: &[KernelStrategy]| list[..first.min(list.len())].to_vec();
    // Blocks of 128, the Hopper forward's shape (it needs two warpgroups' rows per block),
    // first: the sm80 family with and without it, at both of its head dims.
    for d in [64, 128] {
        println!("blocks of 128, head dim {d}:");
        case(
            p,
            longnet(128, true),
            &first(&super::families::BLOCKS_128_ORDER.map(|i| families[i])),
            d,
        );
    }
    println!("blocks of 64:");
    case(p, longnet(64, true), &first(&families), 64);
}

fn case(p: &mut Probe, pattern: DilatedPattern, families: &[KernelStrategy], d: usize) {
    let causal = pattern.causal;
    let device = p.device.clone();
    let (n, heads, kv_heads) = (1500, 8, 2);
    let q = p.randn([1, heads, n, d]);
    let [k, v] = [0; 2].map(|_| p.randn([1, kv_heads, n, d]));
    let r = p.randn([1, heads, n, d]);
    let keep = Tensor::<2>::random([1, n], Distribution::Uniform(0.0, 1.0), &p.cpu);
    let shape = AttentionShape {
        batch: 1,
        heads,
        kv_heads,
        n,
        head_dim: d,
    };
    // `k` or `v` with NaN in the rows of padded keys (`keep <= 0.2`).
    let poison = |t: &Tensor<4>| {
        let padded = keep.clone().lower_equal_elem(0.2).reshape([1, 1, n, 1]);
        t.clone().mask_fill(padded.expand(t.shape()), f32::NAN)
    };
    for dtype in p.dtypes(&[DType::F32, DType::F16]) {
        let auto = BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
        let path = auto
            .execution_path(shape, dtype, &p.device)
            .expect("valid shape");
        println!("{dtype:?}: automatic choice {path:?}");
        // How long the references take (a fresh process compiles and tunes every op of the
        // device's reference and dense paths): the time before the first family's line.
        let started = std::time::Instant::now();
        let quant = |t: &Tensor<4>| quantised(t, dtype);
        let inputs = [&quant(&q), &quant(&k), &quant(&v), &r];
        // Each reference's time as it lands, so a probe cut short shows which one it sat in.
        let lap = |what: &str| {
            println!(
                "{dtype:?}: {what} at {:.1} s",
                started.elapsed().as_secs_f64()
            )
        };
        let truth = grads(
            &auto,
            &p.cpu,
            DType::F32,
            Path::Reference,
            inputs,
            Some(&keep),
        );
        lap("the f32 truth on the CPU");
        let naive = grads(
            &auto,
            &p.device,
            dtype,
            Path::Reference,
            inputs,
            Some(&keep),
        );
        // The same without the mask: chunks away from a segment's edges are then whole, which
        // is where the Hopper kernels' TMA loads serve (a key mask sends the forward's and
        // `dQ`'s chunks through the row copies).
        lap("the reference path on the device");
        let truth_plain = grads(&auto, &p.cpu, DType::F32, Path::Reference, inputs, None);
        let naive_plain = grads(&auto, &p.device, dtype, Path::Reference, inputs, None);
        lap("both without the mask");
        // FlashAttention's yardstick besides the reference path: dense attention in the dtype
        // throughout. The reference path keeps f32 between its ops, which FlashAttention's
        // numerics (P and dS rounded for the products, Δ from the rounded output) do not
        // reach: a model of both on the CPU (`docs/notes.md`, session 26) puts dq at 1.0–2.2×
        // the reference path's error and 0.6–1.1× the dense one's.
        let layout = (dtype != DType::F32).then(|| auto.layout(n, heads).expect("valid layout"));
        let dense = |keep: Option<&Tensor<2>>| {
            let path = Path::DenseSameDtype(layout.as_ref()?);
            Some(grads(&auto, &p.device, dtype, path, inputs, keep))
        };
        let (naive, naive_plain) = (
            Yardsticks::new(naive, dense(Some(&keep))),
            Yardsticks::new(naive_plain, dense(None)),
        );
        println!(
            "{dtype:?}: references in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for &family in families {
            let module = auto
                .clone()
                .with_kernel_policy(KernelPolicy::Require)
                .with_kernel_strategy(Some(family));
            match module.execution_path(shape, dtype, &p.device) {
                Ok(ExecutionPath::Kernels(_)) => {}
                other => {
                    println!("{dtype:?} {family:?}: not served here ({other:?})");
                    continue;
                }
            }
            let ours = grads(
                &module,
                &p.device,
                dtype,
                Path::Kernels,
                inputs,
                Some(&keep),
            );
            let mut line = format!("{dtype:?} {family:?}:");
            let mut ok = grads_within_bar(&mut line, dtype, &ours, &truth, &naive, true);
            let plain = grads(&module, &p.device, dtype, Path::Kernels, inputs, None);
            line += ", unmasked";
            ok &= grads_within_bar(&mut line, dtype, &plain, &truth_plain, &naive_plain, false);
            // The forward alone, through the same family, with the mask and without it (the
            // chunks away from a segment's edges are then whole: the Hopper forward's TMA loads
            // serve only those): its output and relative error against the reference.
            let padded =
                |dev: &Device| Tensor::<2>::from_data(keep.to_data(), dev).lower_equal_elem(0.2);
            let to = |t: &Tensor<4>| t.clone().to_device(&device).cast(dtype);
            let forward = |masked: bool| {
                let mask = |dev: &Device| masked.then(|| padded(dev));
                let out = read(
                    module
                        .forward_masked(to(inputs[0]), to(inputs[1]), to(inputs[2]), mask(&device))
                        .expect("kernels"),
                );
                let want = read(
                    auto.clone()
                        .without_kernels()
                        .forward_masked(
                            inputs[0].clone(),
                            inputs[1].clone(),
                            inputs[2].clone(),
                            mask(&p.cpu),
                        )
                        .expect("reference"),
                );
                let e = rel(&out, &want);
                (out, e)
            };
            let out_bar = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
            let (out, e_out) = forward(true);
            line += &format!(", out {e_out:.2e}");
            ok &= e_out.is_finite() && e_out < out_bar;
            let (_, e_plain) = forward(false);
            line += &format!(", out unmasked {e_plain:.2e}");
            ok &= e_plain.is_finite() && e_plain < out_bar;
            // NaN in the keys and values of padded keys must change no gradient at all.
            let poisoned = grads(
                &module,
                &p.device,
                dtype,
                Path::Kernels,
                [inputs[0], &poison(inputs[1]), &poison(inputs[2]), &r],
                Some(&keep),
            );
            let leak = (0..3)
                .map(|i| max_abs_diff(&poisoned[i], &ours[i]))
                .fold(0.0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) });
            line += &format!(", NaN in padded keys changes the gradients by {leak:.2e}");
            // Exactly 0 where the backward is deterministic; the fused dQ adds with atomics,
            // whose order varies from run to run.
            ok &= leak.is_finite() && leak < 1e-3;
            // NaN in the value row of the last key: the causal diagonal's `0 · v` must not
            // carry it into the queries before it (the tensor cores multiply every pair).
            if causal {
                let nan_v = last_key_nan(inputs[2], n);
                let (before, last_nan) = causal_key_leak(
                    &module, &device, dtype, &ours, &out, inputs, &nan_v, &keep, n, d,
                );
                line += &format!(
                    ", NaN in the last value row: other rows change by {before:.2e}, last row NaN {last_nan}"
                );
                ok &= before.is_finite() && before < 1e-3 && last_nan;
            }
            println!("{line}");
            if !ok {
                p.miss(line);
            }
        }
    }
}

/// Appends each gradient's largest error against `truth` to `line` (with the same-precision
/// paths' beside it where `show_naive`), and whether all are within the bar: f32 within 1e-4
/// relative of `truth`, f16/bf16 within 2× the larger of the [`Yardsticks`]' errors (at least
/// 1e-3).
fn grads_within_bar(
    line: &mut String,
    dtype: DType,
    ours: &[Vec<f32>; 3],
    truth: &[Vec<f32>; 3],
    naive: &Yardsticks,
    show_naive: bool,
) -> bool {
    let mut ok = true;
    for (i, g) in ["dq", "dk", "dv"].iter().enumerate() {
        let e = max_abs_diff(&ours[i], &truth[i]);
        let e_path = max_abs_diff(&naive.reference[i], &truth[i]);
        let e_dense = naive
            .dense
            .as_ref()
            .map_or(0.0, |d| max_abs_diff(&d[i], &truth[i]));
        *line += &format!(" {g} {e:.2e}");
        if show_naive {
            *line += &format!(" (reference path in {dtype:?} {e_path:.2e}");
            if naive.dense.is_some() {
                *line += &format!(", dense in {dtype:?} {e_dense:.2e}");
            }
            *line += ")";
        }
        ok &= e.is_finite()
            && if dtype == DType::F32 {
                rel(&ours[i], &truth[i]) < 1e-4
            } else {
                e <= 2.0 * e_path.max(e_dense).max(1e-3)
            };
    }
    ok
}

/// The same-precision paths an f16/bf16 family's gradients are held to: within 2× of the
/// larger error of the reference path in the dtype (f32 between its ops) and of dense
/// attention in the dtype throughout (FlashAttention's yardstick; `None` for f32).
struct Yardsticks {
    reference: [Vec<f32>; 3],
    dense: Option<[Vec<f32>; 3]>,
}

impl Yardsticks {
    fn new(reference: [Vec<f32>; 3], dense: Option<[Vec<f32>; 3]>) -> Self {
        Self { reference, dense }
    }
}

/// `v` with NaN in the row of key `n − 1` (every head).
fn last_key_nan(v: &Tensor<4>, n: usize) -> Tensor<4> {
    let mut last = vec![0.0f32; n];
    last[n - 1] = 1.0;
    let last = Tensor::<2>::from_data(TensorData::new(last, [1, n]), &v.device())
        .greater_elem(0.5)
        .reshape([1, 1, n, 1]);
    v.clone().mask_fill(last.expand(v.shape()), f32::NAN)
}

/// With `nan_v` for `v` (NaN in the last key's value row; causal, so only the last query sees
/// it): the largest change of the other queries' outputs and `dq` and of every `dv` against
/// the clean run (`grads`, `out`), and whether the last query's output is all NaN (or its key
/// is padded).
#[allow(clippy::too_many_arguments)]
fn causal_key_leak(
    module: &BlockSparseRingDilatedAttention,
    device: &Device,
    dtype: DType,
    clean: &[Vec<f32>; 3],
    out: &[f32],
    inputs: [&Tensor<4>; 4],
    nan_v: &Tensor<4>,
    keep: &Tensor<2>,
    n: usize,
    d: usize,
) -> (f32, bool) {
    let padded = |dev: &Device| Tensor::<2>::from_data(keep.to_data(), dev).lower_equal_elem(0.2);
    let to = |t: &Tensor<4>| t.clone().to_device(device).cast(dtype);
    let out2 = read(
        module
            .forward_masked(
                to(inputs[0]),
                to(inputs[1]),
                to(nan_v),
                Some(padded(device)),
            )
            .expect("kernels"),
    );
    let g2 = grads(
        module,
        device,
        dtype,
        Path::Kernels,
        [inputs[0], inputs[1], nan_v, inputs[3]],
        Some(keep),
    );
    // Rows 0..n − 1 of every head of a `[1, heads, n, d]` tensor.
    let before = |x: &[f32]| -> Vec<f32> {
        x.chunks(n * d)
            .flat_map(|head| head[..(n - 1) * d].iter().copied())
            .collect()
    };
    let change = [
        max_abs_diff(&before(&out2), &before(out)),
        max_abs_diff(&before(&g2[0]), &before(&clean[0])),
        max_abs_diff(&g2[2], &clean[2]),
    ]
    .into_iter()
    .fold(0.0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) });
    let key_padded = read(keep.clone())[n - 1] <= 0.2;
    let last_nan = key_padded
        || out2
            .chunks(n * d)
            .all(|head| head[(n - 1) * d..].iter().all(|x| x.is_nan()));
    (change, last_nan)
}

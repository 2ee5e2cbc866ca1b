//! Forward checks through the kernels, in f16/bf16 against the f32 reference on the same
//! rounded inputs:
//! - `forward`: the seed, LongNet and a dense preset at 2K (the dense one also against Burn's
//!   own attention in the dtype, the "same-precision naive" yardstick);
//! - `edge`: tails, padding, GQA 8/2, head dims 32/64/128, blocks 64/128/256, causal — ours
//!   within 2× of the reference path run in the dtype on the device;
//! - `oracle`: 16K through the kernels in f32/f16/bf16 against an f64 oracle on sampled rows.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::attention as burn_attention;
use dilated_attention::{
    BlockLayout, BlockSparseRingDilatedAttention, DilatedPattern, PatternType, SparsePatternConfig,
};

use super::support::{Probe, max_abs_diff, on_device, padded, quantised, read};

/// The edge cases: `(n, head_dim, block, causal, masked)`.
pub const EDGE: [(usize, usize, usize, bool, bool); 5] = [
    (1000, 64, 128, true, true),
    (777, 128, 64, false, true),
    (1500, 32, 256, true, false),
    (1216, 64, 64, false, false),
    (2100, 128, 128, true, false),
];

/// Branches (512, 1) and (1024, 2), `dilated_sparse` blocks: the edge cases' module.
pub fn edge_module(block: usize, causal: bool) -> BlockSparseRingDilatedAttention {
    let pattern = DilatedPattern::new(
        &[512, 1024],
        &[1, 2],
        SparsePatternConfig::new(PatternType::DilatedSparse)
            .with_block_size(block)
            .with_block_dilation_rates(vec![1, 2]),
        causal,
    )
    .expect("valid pattern");
    BlockSparseRingDilatedAttention::from_pattern(pattern, None)
}

pub fn presets(p: &mut Probe) {
    let device = p.device.clone();
    let n = 2048;
    let presets = [
        ("seed", DilatedPattern::seed(64, false)),
        (
            "longnet-causal",
            DilatedPattern::longnet(2048, 64, true).unwrap(),
        ),
        (
            "dense",
            DilatedPattern::single(
                SparsePatternConfig::new(PatternType::Dense).with_block_size(128),
                false,
            ),
        ),
    ];
    let [q, k, v] = [0; 3].map(|_| p.randn([1, 8, n, 64]));
    for dtype in p.dtypes(&[DType::F16, DType::BF16]) {
        let quant = |t: &Tensor<4>| quantised(t, dtype);
        let (qq, kq, vq) = (quant(&q), quant(&k), quant(&v));
        for (name, pattern) in &presets {
            let module = BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
            let reference = read(
                module
                    .clone()
                    .without_kernels()
                    .forward(qq.clone(), kq.clone(), vq.clone())
                    .unwrap(),
            );
            let to = |t: &Tensor<4>| on_device(t, &device, dtype);
            let ours = read(
                module
                    .forward_kernels(to(&qq), to(&kq), to(&vq), None)
                    .expect("the kernels run these inputs")
                    .0,
            );
            let err = max_abs_diff(&ours, &reference);
            let mut line = format!("{dtype:?} {name}: kernel max abs err {err:.2e}");
            if *name == "dense" {
                let naive =
                    burn_attention(to(&qq), to(&kq), to(&vq), None, None, Default::default());
                let naive_err = max_abs_diff(&read(naive), &reference);
                line += &format!(
                    ", burn attention ({dtype:?}) {naive_err:.2e}, ratio {:.2}",
                    err / naive_err
                );
            }
            println!("{line}");
            if !(err.is_finite() && err < 5e-2) {
                p.miss(line);
            }
        }
    }
}

pub fn edge(p: &mut Probe, lengths: Option<&[usize]>) {
    let device = p.device.clone();
    for (n, hd, block, causal, masked) in EDGE {
        if lengths.is_some_and(|l| !l.contains(&n)) {
            continue;
        }
        let module = edge_module(block, causal);
        let q = p.randn([1, 8, n, hd]);
        let [k, v] = [0; 2].map(|_| p.randn([1, 2, n, hd]));
        let keep = Tensor::<2>::random(
            [1, n],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &p.cpu,
        );
        let mask_on = |dev: &Device| masked.then(|| padded(&keep, dev));
        for dtype in p.dtypes(&[DType::F16, DType::BF16]) {
            let quant = |t: &Tensor<4>| quantised(t, dtype);
            let (qq, kq, vq) = (quant(&q), quant(&k), quant(&v));
            let (o_ref, l_ref) = module
                .clone()
                .without_kernels()
                .forward_with_lse(qq.clone(), kq.clone(), vq.clone(), mask_on(&p.cpu))
                .unwrap();
            let to = |t: &Tensor<4>| on_device(t, &device, dtype);
            let (o, l) = module
                .forward_kernels(to(&qq), to(&kq), to(&vq), mask_on(&device))
                .expect("the kernels run these inputs");
            let (o_naive, _) = module
                .clone()
                .without_kernels()
                .forward_with_lse(to(&qq), to(&kq), to(&vq), mask_on(&device))
                .unwrap();
            let (o_ref, l_ref) = (read(o_ref), read(l_ref));
            let err = max_abs_diff(&read(o), &o_ref);
            let naive = max_abs_diff(&read(o_naive), &o_ref);
            let l = read(l);
            let lse_ok = l.iter().zip(&l_ref).all(|(a, b)| {
                (a.is_infinite() && b.is_infinite()) || (a - b).abs() <= 1e-2 * b.abs().max(1.0)
            });
            let line = format!(
                "{dtype:?} edge n={n} d={hd} block={block} causal={causal} mask={masked}: \
                 kernel {err:.2e}, same-dtype reference path {naive:.2e}, lse ok {lse_ok}"
            );
            println!("{line}");
            if !(err.is_finite() && err <= 2.0 * naive.max(1e-3) && lse_ok) {
                p.miss(line);
            }
        }
    }
}

/// `n` through the kernels in f32, f16 and bf16 against an f64 oracle on 48 sampled rows
/// (every key the layout allows, a key counted once per branch that allows it), the
/// same-dtype reference path on the device as the yardstick for f16/bf16.
pub fn oracle(p: &mut Probe, n: usize) {
    let device = p.device.clone();
    let (heads, d) = (8, 64);
    let [q, k, v] = [0; 3].map(|_| p.randn([1, heads, n, d]));
    let samples: Vec<(usize, usize)> = (0..48).map(|s| (s % heads, (s * 7919 + 13) % n)).collect();
    for (name, pattern) in [
        ("seed", DilatedPattern::seed(128, false)),
        (
            "longnet-causal",
            DilatedPattern::longnet(n, 128, true).unwrap(),
        ),
    ] {
        let layout = BlockLayout::new(&pattern, n, heads).unwrap();
        let module = BlockSparseRingDilatedAttention::from_pattern(pattern.clone(), None);
        for dtype in p.dtypes(&[DType::F32, DType::F16, DType::BF16]) {
            let quant = |t: &Tensor<4>| quantised(t, dtype);
            let (qq, kq, vq) = (quant(&q), quant(&k), quant(&v));
            let (qv, kv, vv) = (read(qq.clone()), read(kq.clone()), read(vq.clone()));
            let to = |t: &Tensor<4>| on_device(t, &device, dtype);
            let ours = read(
                module
                    .forward_kernels(to(&qq), to(&kq), to(&vq), None)
                    .expect("the kernels run these inputs")
                    .0,
            );
            let naive = read(
                module
                    .clone()
                    .without_kernels()
                    .forward(to(&qq), to(&kq), to(&vq))
                    .unwrap(),
            );
            let at = |h: usize, i: usize| (h * n + i) * d;
            let (mut e_ours, mut e_naive) = (0.0f64, 0.0f64);
            for &(h, i) in &samples {
                let scale = 1.0 / (d as f64).sqrt();
                let mut w = Vec::new();
                for j in 0..n {
                    let count = (0..pattern.branches.len())
                        .filter(|&b| layout.allows(b, h, i, j))
                        .count();
                    if count > 0 {
                        let x: f64 = (0..d)
                            .map(|c| qv[at(h, i) + c] as f64 * kv[at(h, j) + c] as f64)
                            .sum();
                        w.push((j, count as f64, x * scale));
                    }
                }
                let m = w.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.2));
                let z: f64 = w.iter().map(|x| x.1 * (x.2 - m).exp()).sum();
                for c in 0..d {
                    let o = w
                        .iter()
                        .map(|x| x.1 * (x.2 - m).exp() * vv[at(h, x.0) + c] as f64)
                        .sum::<f64>()
                        / z;
                    e_ours = e_ours.max((ours[at(h, i) + c] as f64 - o).abs());
                    e_naive = e_naive.max((naive[at(h, i) + c] as f64 - o).abs());
                }
            }
            let line = format!(
                "{dtype:?} {name} n={n} vs f64 ({} rows): kernel {e_ours:.2e}, same-dtype \
                 reference path {e_naive:.2e}",
                samples.len()
            );
            println!("{line}");
            let ok = if dtype == DType::F32 {
                e_ours < 1e-4
            } else {
                e_ours <= 2.0 * e_naive
            };
            if !ok {
                p.miss(line);
            }
        }
    }
}

//! Scale checks:
//! - `chunks`: a small call forced into the launches of a call past the kernels' 32-bit offsets
//!   (heads folded into the batch, one launch per folded batch) against one launch — the
//!   mechanism `scale` relies on at 8M and 16M tokens, checked on values where it is cheap;
//! - `large`: a call whose tensors pass 2^32 elements (f16 `[17, 32, 65536, 128]`, 9 GB each)
//!   equals the same call on single batches (the kernels run it in chunks of whole batches);
//! - `scale`: the seed layout forward and forward + backward at 4M, 8M and 16M tokens (8 heads,
//!   head dim 64, f16): time, and the device's allocated bytes (in use, not the pool's
//!   reservation) against the bytes of the tensors the math needs.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use dilated_attention::kernel::{ChunkCase, chunked_launches};
use dilated_attention::{BlockSparseRingDilatedAttention, DilatedPattern, KernelPolicy};

use super::support::{Probe, max_abs_diff, read};

fn module() -> BlockSparseRingDilatedAttention {
    BlockSparseRingDilatedAttention::from_pattern(DilatedPattern::seed(128, false), None)
        .with_kernel_policy(KernelPolicy::Require)
}

/// Bytes in use once the device's queued work has run. A failed sync is printed: under Fusion
/// the kernels' errors surface only there (session 22's 8M run timed 0.6 ms forwards whose
/// launches had not run, with nothing said).
fn in_use(device: &Device) -> u64 {
    if let Err(e) = device.sync() {
        println!("scale: the device reports a failure: {e:?}");
    }
    device.memory_pool_usage().map_or(0, |u| u.bytes_in_use)
}

/// Whether the first rows of `out` (one head) read back, finite and not all zero: the
/// launches ran.
fn ran(out: &Tensor<4>) -> bool {
    let d = out.dims()[3];
    match out
        .clone()
        .slice([0..1, 0..1, 0..8, 0..d])
        .cast(DType::F32)
        .try_to_vec_as::<f32>()
    {
        Ok(v) => v.iter().all(|x| x.is_finite()) && v.iter().any(|&x| x != 0.0),
        Err(e) => {
            println!("scale: out does not read back: {e:?}");
            false
        }
    }
}

/// Relative differences allowed between the chunked and the one-launch call: the same kernels
/// on the same rows, so only a different summation order of the added (f32) gradients may show.
const CHUNK_BAR: f32 = 1e-5;

pub fn chunks(p: &mut Probe) {
    for dtype in p.dtypes(&[DType::F32, DType::F16, DType::BF16]) {
        for (kv_heads, masked) in [(4, false), (2, true)] {
            // Head dim 64 and blocks of 64: the tensor-core families serve it (on CUDA the
            // default stores its gradients straight into views of the whole ones).
            let case = ChunkCase {
                dtype,
                kv_heads,
                masked,
                head_dim: 64,
                n: 256,
                block: 64,
            };
            let line = match chunked_launches(&p.device, case) {
                Ok(check) => {
                    let [out, lse, dq, dk, dv] = check.relative;
                    let line = format!(
                        "chunks {dtype:?} kv_heads {kv_heads} masked {masked}: {} launches, \
                         relative differences from one launch out {out:.1e} lse {lse:.1e} \
                         dq {dq:.1e} dk {dk:.1e} dv {dv:.1e}",
                        check.launches
                    );
                    // A NaN difference fails too.
                    let within = |e: &f32| e.is_finite() && *e <= CHUNK_BAR;
                    if !check.relative.iter().all(within) || check.launches != 4 {
                        Err(line)
                    } else {
                        Ok(line)
                    }
                }
                Err(e) => Err(format!("chunks {dtype:?} kv_heads {kv_heads}: {e}")),
            };
            match line {
                Ok(line) => println!("{line}"),
                Err(line) => p.miss(line),
            }
        }
    }
}

pub fn large(p: &mut Probe) {
    let device = p.device.clone();
    let (b, h, n, d): (usize, usize, usize, usize) = (17, 32, 65536, 128);
    let elements = b * h * n * d;
    println!(
        "large: [{b}, {h}, {n}, {d}] f16, {elements} elements per tensor (2^32 = {})",
        1u64 << 32
    );
    let rand = || {
        Tensor::<4>::random(
            [b, h, n, d],
            Distribution::Normal(0.0, 1.0),
            (&device, DType::F16),
        )
    };
    let (q, k, v) = (rand(), rand(), rand());
    let module = module();
    let t = Instant::now();
    let out = module
        .forward(q.clone(), k.clone(), v.clone())
        .expect("the kernels serve the call in batch chunks");
    let _ = device.sync();
    println!(
        "large: forward in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    for batch in [0, 8, 16] {
        let one = |t: &Tensor<4>| t.clone().slice_dim(0, batch..batch + 1);
        let alone = module
            .forward(one(&q), one(&k), one(&v))
            .expect("one batch");
        let e = max_abs_diff(&read(one(&out)), &read(alone));
        let line = format!("large: batch {batch} of the whole call vs alone: max abs diff {e:.2e}");
        println!("{line}");
        if e != 0.0 {
            p.miss(line);
        }
    }
}

pub fn scale(p: &mut Probe, lengths: &[usize]) {
    let device = p.device.clone();
    let (h, d) = (8, 64);
    let module = module();
    for &n in lengths {
        device.memory_cleanup();
        forward_only(&device, &module, h, n, d);
        device.memory_cleanup();
        let base = in_use(&device);
        let ad = device.clone().autodiff();
        let rand = || {
            Tensor::<4>::random(
                [1, h, n, d],
                Distribution::Normal(0.0, 1.0),
                (&ad, DType::F16),
            )
            .require_grad()
        };
        let (q, k, v) = (rand(), rand(), rand());
        let tensor = (h * n * d * 2) as u64;
        let inputs = in_use(&device).saturating_sub(base);
        let mut fwd = Vec::new();
        let mut fwdbwd = Vec::new();
        let (mut after_forward, mut after_backward) = (0, 0);
        for i in 0..4 {
            let t = Instant::now();
            let (out, lse) = module
                .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
                .expect("the kernels serve the call");
            let used = in_use(&device).saturating_sub(base);
            let forward_ms = t.elapsed().as_secs_f64() * 1e3;
            let grads = out.backward();
            let dq = q.grad(&grads).expect("gradient");
            let used_backward = in_use(&device).saturating_sub(base);
            let total_ms = t.elapsed().as_secs_f64() * 1e3;
            if !ran(&out.clone().inner()) || !ran(&dq) {
                p.miss(format!(
                    "scale n={n} autodiff run {i}: out or dq did not come out (finite, not all \
                     zero): the launches did not run"
                ));
            }
            drop((out, dq, grads, lse));
            println!(
                "scale n={n} autodiff run {i}: in use after forward {used} B, after backward \
                 {used_backward} B, after the drops {} B",
                in_use(&device).saturating_sub(base)
            );
            if i > 0 {
                fwd.push(forward_ms);
                fwdbwd.push(total_ms);
                after_forward = after_forward.max(used);
                after_backward = after_backward.max(used_backward);
            }
        }
        fwd.sort_by(f64::total_cmp);
        fwdbwd.sort_by(f64::total_cmp);
        // Needed: q, k, v, out (f16) and lse (f32); after the backward also dq, dk, dv.
        let needed_forward = 4 * tensor + (h * n * 4) as u64;
        let needed_backward = needed_forward + 3 * tensor;
        let gib = |b: u64| b as f64 / f64::from(1 << 30);
        let line = format!(
            "scale n={n} ({}M) seed f16: forward {:.1} ms, forward+backward {:.1} ms (median of 3); \
             in use after forward {:.2} GiB (needed {:.2} GiB, +{:.1}%), after backward {:.2} GiB \
             (needed {:.2} GiB, +{:.1}%); inputs {:.2} GiB",
            n >> 20,
            fwd[1],
            fwdbwd[1],
            gib(after_forward),
            gib(needed_forward),
            100.0 * (after_forward as f64 / needed_forward as f64 - 1.0),
            gib(after_backward),
            gib(needed_backward),
            100.0 * (after_backward as f64 / needed_backward as f64 - 1.0),
            gib(inputs),
        );
        println!("{line}");
    }
}

/// The forward alone, without autodiff, at `n` tokens: the device's bytes in use after the
/// inputs, after the forward (q, k, v, out and lse should be all that is alive) and after `out`
/// and `lse` are dropped — to tell the kernels' own allocations from autodiff's saved state.
fn forward_only(
    device: &Device,
    module: &BlockSparseRingDilatedAttention,
    h: usize,
    n: usize,
    d: usize,
) {
    let base = in_use(device);
    let rand = || {
        Tensor::<4>::random(
            [1, h, n, d],
            Distribution::Normal(0.0, 1.0),
            (device, DType::F16),
        )
    };
    let (q, k, v) = (rand(), rand(), rand());
    let inputs = in_use(device).saturating_sub(base);
    let tensor = (h * n * d * 2) as u64;
    for i in 0..2 {
        let (out, lse) = module
            .forward_with_lse(q.clone(), k.clone(), v.clone(), None)
            .expect("the kernels serve the call");
        let after = in_use(device).saturating_sub(base);
        drop((out, lse));
        let dropped = in_use(device).saturating_sub(base);
        println!(
            "scale n={n} forward only, run {i}: inputs {inputs} B (3 tensors of {tensor} B), in use \
             after the forward {after} B (needed {} B, +{:.1}%), after dropping out and lse {dropped} B",
            4 * tensor + (h * n * 4) as u64,
            100.0 * (after as f64 / (4 * tensor + (h * n * 4) as u64) as f64 - 1.0),
        );
    }
}

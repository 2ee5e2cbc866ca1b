//! A one-cube self-test of the warpgroup products (`super::wgmma`) on the device, the first
//! thing to run on a new driver or toolkit: one warpgroup computes, for random `a, b, v` of
//! shape `[64, 64]` (f16 or bf16),
//! - `s = a · bᵀ` — both operands K-major in shared memory, four k-steps in one call;
//! - `o = f16(s) · v` — `P` from the accumulator registers as the `A` fragments, `v` MN-major
//!   (`trans-b`), in two calls of two k-steps, the second accumulating onto the first;
//! - `s` again as a pair of narrow products (`m64n32k16`, `b`'s rows 32–63 first, then 0–31),
//!   issued together;
//!
//! and the host compares both against f64 products of the same rounded inputs.

use cubecl::prelude::*;
use half::{bf16, f16};

use super::wgmma::{
    Frags, Product, k_major, mma_rs, mma_rs_add, mma_ss, mma_ss_pair_narrow, mn_major,
    shared_address, swizzled,
};
use crate::args::{AttnDtype, TensorRef};
use crate::{KernelError, read_f32};

/// Rows, columns and contraction length of every operand of the self-test.
const DIM: usize = 64;
/// Elements of one operand tile.
const TILE: usize = DIM * DIM;

/// Relative errors of the self-test (largest absolute error over the largest reference value).
#[derive(Debug, Clone, Copy)]
pub struct WgmmaCheck {
    /// `s = a · bᵀ` (shared × shared).
    pub scores: f64,
    /// `o = f16(s) · v` (registers × shared, transposed `B`, accumulated over two calls).
    pub output: f64,
    /// `s` from two narrow products (`N = 32`) issued together.
    pub narrow: f64,
}

#[cube(launch_unchecked)]
fn wgmma_selftest_kernel<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    v: &Tensor<F>,
    s: &mut Tensor<f32>,
    o: &mut Tensor<f32>,
    n: &mut Tensor<f32>,
    #[comptime] bf16: bool,
) {
    let unit = UNIT_POS as usize;
    let mut tiles = Shared::<[F]>::new_aligned_slice(comptime!(3 * TILE), 1024usize);
    for i in 0..comptime!(TILE / 128) {
        let idx = unit + 128 * i;
        let (r, c) = (idx / DIM, idx % DIM);
        let off = swizzled(r, c / 8, DIM) * 8 + c % 8;
        tiles[off] = a[idx];
        tiles[TILE + off] = b[idx];
        tiles[2 * TILE + off] = v[idx];
    }
    sync_async_proxy_shared();
    sync_cube();

    let base = shared_address::<F>(&tiles[0..comptime!(3 * TILE)]);
    let tile_bytes = comptime!((TILE * 2) as u32);
    // K-major `a`, `b` (swizzled, 64 columns: one panel).
    let qk = comptime!(Product {
        bf16,
        steps: 4,
        a_panel: 0,
        b_panel: 0,
        b_transposed: false,
        in_flight: false,
    });
    let scores = mma_ss(k_major(base), k_major(base + tile_bytes), qk);

    // `P` fragments of k-steps 0, 1 and 2, 3 (keys 0..32, 32..64).
    let mut lo = Vector::<u32, Frags>::new(0u32);
    let mut hi = Vector::<u32, Frags>::new(0u32);
    #[unroll]
    for step in 0..4usize {
        #[unroll]
        for r in 0..4usize {
            let x = comptime!(8 * step + 2 * r);
            let mut pair = Vector::<F, Const<2>>::new(F::new(0.0));
            pair.insert(0usize, F::cast_from(scores.extract(x)));
            pair.insert(1usize, F::cast_from(scores.extract(comptime!(x + 1))));
            let packed = u32::reinterpret(pair);
            if comptime!(step < 2) {
                lo.insert(comptime!(4 * step + r), packed);
            } else {
                hi.insert(comptime!(4 * (step - 2) + r), packed);
            }
        }
    }
    // MN-major `v`: its rows (keys) are the contraction; keys 32.. start 32 rows (4096 bytes)
    // on.
    let pv = comptime!(Product {
        bf16,
        steps: 2,
        a_panel: 0,
        b_panel: 0,
        b_transposed: true,
        in_flight: false,
    });
    let first = mma_rs(lo, mn_major(base + 2 * tile_bytes), pv);
    let out = mma_rs_add(first, hi, mn_major(base + 2 * tile_bytes + 4096), pv);
    // Columns 32..64 of `s` (`b`'s rows 32.., 4096 bytes on), then 0..32.
    let narrow = mma_ss_pair_narrow(
        k_major(base),
        k_major(base + tile_bytes + 4096),
        k_major(base),
        k_major(base + tile_bytes),
        qk,
    );

    let plane = unit / 32;
    let lane = unit % 32;
    let (g, t) = (lane / 4, lane % 4);
    let row = 16 * plane + g;
    #[unroll]
    for j in 0..8usize {
        #[unroll]
        for e in 0..4usize {
            let r = row + comptime!(8 * (e / 2));
            let c = comptime!(8 * j) + 2 * t + comptime!(e % 2);
            s[r * DIM + c] = scores.extract(comptime!(4 * j + e));
            o[r * DIM + c] = out.extract(comptime!(4 * j + e));
            // Narrow tile `j` is column tile `j + 4` of `s` for `j < 4`, `j − 4` after.
            let nc = (c + 32) % DIM;
            n[r * DIM + nc] = narrow.extract(comptime!(4 * j + e));
        }
    }
}

/// Runs the self-test on `client` in `dtype` (f16 or bf16). Refused (typed) where the device
/// has no `wgmma` (anything before sm_90, or not CUDA).
pub fn wgmma_selftest(client: &Client, dtype: AttnDtype) -> Result<WgmmaCheck, KernelError> {
    if !super::available(client) {
        return Err(KernelError::unsupported(
            "device",
            "wgmma needs CUDA on sm_90 (Hopper) or later",
        ));
    }
    if dtype == AttnDtype::F32 {
        return Err(KernelError::unsupported("dtype", "wgmma takes f16 or bf16"));
    }
    let mut seed = 11u64;
    let mut random = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    // Inputs rounded to `dtype` once, so host and device multiply the same numbers.
    let round = |x: f32| match dtype {
        AttnDtype::BF16 => bf16::from_f32(x).to_f32(),
        _ => f16::from_f32(x).to_f32(),
    };
    let [a, b, v] = [0; 3].map(|_| (0..TILE).map(|_| round(random())).collect::<Vec<f32>>());
    let upload = |x: &[f32]| {
        let bytes: Vec<u8> = match dtype {
            AttnDtype::BF16 => x
                .iter()
                .flat_map(|&e| bf16::from_f32(e).to_le_bytes())
                .collect(),
            _ => x
                .iter()
                .flat_map(|&e| f16::from_f32(e).to_le_bytes())
                .collect(),
        };
        TensorRef::contiguous(
            "operand",
            client.create_from_slice(&bytes),
            vec![DIM, DIM],
            2,
        )
    };
    let poisoned = || {
        TensorRef::contiguous(
            "result",
            crate::upload_f32(client, &vec![f32::NAN; TILE]),
            vec![DIM, DIM],
            4,
        )
    };
    let (ta, tb, tv) = (upload(&a)?, upload(&b)?, upload(&v)?);
    let (ts, to, tn) = (poisoned()?, poisoned()?, poisoned()?);
    macro_rules! launch {
        ($t:ty) => {
            // SAFETY: every tensor holds `DIM · DIM` elements, the kernel's whole range.
            unsafe {
                wgmma_selftest_kernel::launch_unchecked::<$t>(
                    client,
                    CubeCount::Static(1, 1, 1),
                    CubeDim::new_1d(128),
                    ta.arg(),
                    tb.arg(),
                    tv.arg(),
                    ts.arg(),
                    to.arg(),
                    tn.arg(),
                    dtype == AttnDtype::BF16,
                )
            }
        };
    }
    match dtype {
        AttnDtype::BF16 => launch!(bf16),
        _ => launch!(f16),
    }
    let s = read_f32(client, ts.handle())?;
    let o = read_f32(client, to.handle())?;
    let narrow = read_f32(client, tn.handle())?;
    let product = |x: &[f32], y: &[f32], transposed: bool| -> Vec<f64> {
        let mut z = vec![0f64; TILE];
        for i in 0..DIM {
            for j in 0..DIM {
                z[i * DIM + j] = (0..DIM)
                    .map(|k| {
                        let yk = if transposed {
                            y[j * DIM + k]
                        } else {
                            y[k * DIM + j]
                        };
                        x[i * DIM + k] as f64 * yk as f64
                    })
                    .sum();
            }
        }
        z
    };
    let error = |got: &[f32], want: &[f64]| {
        let scale = want.iter().fold(0f64, |m, w| m.max(w.abs()));
        let worst = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| {
                if g.is_finite() {
                    (g as f64 - w).abs()
                } else {
                    f64::INFINITY
                }
            })
            .fold(0f64, f64::max);
        worst / scale
    };
    let s_ref = product(&a, &b, true);
    // `P` as the kernel rounded it.
    let p: Vec<f32> = s.iter().map(|&x| round(x)).collect();
    let o_ref = product(&p, &v, false);
    Ok(WgmmaCheck {
        scores: error(&s, &s_ref),
        output: error(&o, &o_ref),
        narrow: error(&narrow, &s_ref),
    })
}

//! The LSE merge kernel against a host f64 computation, on the wgpu device (lavapipe in CI).
//! Outputs are NaN-poisoned by reading into fresh buffers; parts hold random values and `-inf`
//! rows. Tolerance: 1e-5 relative (f32).

use dilated_attention_kernels::merge::lse_merge_f32;
use dilated_attention_kernels::{read_f32, upload_f32};

fn client() -> cubecl::prelude::Client {
    cubecl::Device::Wgpu(cubecl::wgpu::WgpuDevice::default()).client()
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[test]
fn merge_matches_host() {
    let client = client();
    let (p, rows, d) = (3usize, 37usize, 16usize);
    let mut seed = 7u64;
    let parts: Vec<f32> = (0..p * rows * d).map(|_| lcg(&mut seed)).collect();
    let mut lse: Vec<f32> = (0..p * rows).map(|_| 4.0 * lcg(&mut seed)).collect();
    // Row 0: every part empty. Row 1: only part 2 has keys.
    for q in 0..p {
        lse[q * rows] = f32::NEG_INFINITY;
        if q != 2 {
            lse[q * rows + 1] = f32::NEG_INFINITY;
        }
    }
    let (out, lse_out) = lse_merge_f32(
        &client,
        &upload_f32(&client, &parts),
        &upload_f32(&client, &lse),
        p,
        rows,
        d,
    )
    .unwrap();
    let out = read_f32(&client, &out).unwrap();
    let lse_out = read_f32(&client, &lse_out).unwrap();
    for r in 0..rows {
        let m = (0..p)
            .map(|q| lse[q * rows + r] as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let shift = if m.is_finite() { m } else { 0.0 };
        let w: Vec<f64> = (0..p)
            .map(|q| (lse[q * rows + r] as f64 - shift).exp())
            .collect();
        let s: f64 = w.iter().sum();
        let expect_lse = if s > 0.0 {
            shift + s.ln()
        } else {
            f64::NEG_INFINITY
        };
        if expect_lse.is_finite() {
            assert!((lse_out[r] as f64 - expect_lse).abs() < 1e-5 * (1.0 + expect_lse.abs()));
        } else {
            assert_eq!(lse_out[r], f32::NEG_INFINITY, "row {r}");
        }
        for c in 0..d {
            let o: f64 = if s > 0.0 {
                (0..p)
                    .map(|q| w[q] * parts[(q * rows + r) * d + c] as f64)
                    .sum::<f64>()
                    / s
            } else {
                0.0
            };
            let got = out[r * d + c] as f64;
            assert!(
                !got.is_nan() && (got - o).abs() < 1e-5,
                "row {r} col {c}: {got} vs {o}"
            );
        }
    }
}

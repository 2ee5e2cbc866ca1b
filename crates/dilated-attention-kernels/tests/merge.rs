//! The LSE merge kernel against a host f64 computation, on the wgpu device (lavapipe in CI).
//! Outputs are NaN-poisoned before the launch; parts hold random values and `-inf` rows.
//! Tolerance: 1e-5 relative (f32).

use dilated_attention_kernels::merge::lse_merge;
use dilated_attention_kernels::{AttnDtype, KernelError, TensorRef, read_f32, upload_f32};

fn client() -> cubecl::prelude::Client {
    cubecl::Device::Wgpu(cubecl::wgpu::WgpuDevice::default()).client()
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// An f32 tensor of `shape` holding `values`.
fn f32_tensor(client: &cubecl::prelude::Client, values: &[f32], shape: Vec<usize>) -> TensorRef {
    TensorRef::contiguous("t", upload_f32(client, values), shape, 4).unwrap()
}

/// `out: [rows, d]` and `lse_out: [rows]`, NaN-poisoned so that unwritten elements show.
fn poisoned_outputs(
    client: &cubecl::prelude::Client,
    rows: usize,
    d: usize,
) -> (TensorRef, TensorRef) {
    (
        f32_tensor(client, &vec![f32::NAN; rows * d], vec![rows, d]),
        f32_tensor(client, &vec![f32::NAN; rows], vec![rows]),
    )
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
    let tensor = |values: &[f32], shape: Vec<usize>| f32_tensor(&client, values, shape);
    let (out, lse_out) = poisoned_outputs(&client, rows, d);
    lse_merge(
        &client,
        AttnDtype::F32,
        &tensor(&parts, vec![p, rows, d]),
        &tensor(&lse, vec![p, rows]),
        &out,
        &lse_out,
    )
    .unwrap();
    let out = read_f32(&client, out.handle()).unwrap();
    let lse_out = read_f32(&client, lse_out.handle()).unwrap();
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

#[test]
fn merge_rejects_mismatched_shapes_and_short_buffers() {
    let client = client();
    let parts =
        TensorRef::contiguous("parts", upload_f32(&client, &[0.0; 12]), vec![2, 3, 2], 4).unwrap();
    let lse = TensorRef::contiguous("lse", upload_f32(&client, &[0.0; 6]), vec![2, 3], 4).unwrap();
    let out = TensorRef::contiguous("out", upload_f32(&client, &[0.0; 8]), vec![4, 2], 4).unwrap();
    let lse_out =
        TensorRef::contiguous("lse_out", upload_f32(&client, &[0.0; 3]), vec![3], 4).unwrap();
    let err = lse_merge(&client, AttnDtype::F32, &parts, &lse, &out, &lse_out).unwrap_err();
    assert!(
        matches!(err, KernelError::Shape { arg: "out", .. }),
        "{err}"
    );
    // A buffer smaller than its shape is refused where the reference is built.
    let short = TensorRef::contiguous("short", upload_f32(&client, &[0.0; 5]), vec![2, 3], 4);
    assert!(matches!(
        short,
        Err(KernelError::Shape { arg: "short", .. })
    ));
}

/// More output elements than 65 535 cubes of 256 units hold (lavapipe's and WebGPU's limit per
/// grid dimension): the launch spreads its cubes over two dimensions and writes every element.
/// One part, so that each buffer stays under lavapipe's 128 MiB binding; with one finite part
/// the merge is a copy.
#[test]
fn merge_past_one_grid_dimension_writes_every_element() {
    let client = client();
    let max_x = client.properties().hardware.max_cube_count.0 as usize;
    let d = 64usize;
    let rows = (max_x * 256).div_ceil(d) + 3;
    let mut seed = 11u64;
    let parts: Vec<f32> = (0..rows * d).map(|_| lcg(&mut seed)).collect();
    let lse: Vec<f32> = (0..rows).map(|_| lcg(&mut seed)).collect();
    let tensor = |values: &[f32], shape: Vec<usize>| f32_tensor(&client, values, shape);
    let (out, lse_out) = poisoned_outputs(&client, rows, d);
    lse_merge(
        &client,
        AttnDtype::F32,
        &tensor(&parts, vec![1, rows, d]),
        &tensor(&lse, vec![1, rows]),
        &out,
        &lse_out,
    )
    .unwrap();
    let out = read_f32(&client, out.handle()).unwrap();
    let lse_out = read_f32(&client, lse_out.handle()).unwrap();
    let bad = out
        .iter()
        .zip(&parts)
        .position(|(o, p)| o.is_nan() || (o - p).abs() > 1e-6);
    assert_eq!(bad, None, "first element not copied (of {})", rows * d);
    let bad = lse_out
        .iter()
        .zip(&lse)
        .position(|(o, l)| o.is_nan() || (o - l).abs() > 1e-6);
    assert_eq!(bad, None, "first lse not copied (of {rows})");
}

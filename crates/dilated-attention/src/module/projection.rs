//! Projections whose weight gradient stays parallel at long sequences.
//!
//! `y = x · W (+ b)` for `x: [..., d_in]`, `W: [d_in, d_out]`. Burn's `Linear` computes the
//! weight gradient as one product `xᵀ · dy` of `[d_in, rows] · [rows, d_out]` with
//! `rows = batch · seq`: at 8K tokens and batch 32 that is a contraction over 262 144 rows
//! into a `128 × 512` output, which CubeCL's matmul tiles into a handful of cubes that each walk
//! the whole contraction, so most of the GPU idles. Here the rows are split into chunks of about
//! [`CHUNK_ROWS`]: the forward is a batched product against the broadcast weight, and the
//! weight gradient becomes one partial product per chunk (`[chunks, d_in, d_out]`, parallel
//! over chunks) and a sum over them. Same values, other rounding order.

use burn::nn::Linear;
use burn::prelude::*;

/// Rows per chunk the split aims for by default (`0` keeps one product, as Burn's `Linear`
/// does).
pub const CHUNK_ROWS: usize = 2048;

/// Chunks for `rows` rows: a divisor of `rows` near `rows / target`, keeping at least
/// `target / 8` rows a chunk; 1 where the rows are few or no such divisor exists.
fn chunks(rows: usize, target: usize) -> usize {
    if target == 0 || rows < 2 * target {
        return 1;
    }
    let ideal = rows.div_ceil(target);
    let min_rows = (target / 8).max(1);
    (ideal..=rows / min_rows)
        .find(|&g| rows.is_multiple_of(g))
        .or_else(|| (1..ideal).rev().find(|&g| rows.is_multiple_of(g)))
        .unwrap_or(1)
}

/// `x · weight` with the rows of `x` split into chunks of about `chunk_rows` (see the module
/// docs; 0 keeps one product).
///
/// - `x: [..., d_in]`;
/// - `weight: [d_in, d_out]`;
///
/// returns `[..., d_out]`.
pub fn chunked_matmul<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    chunk_rows: usize,
) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let g = chunks(rows, chunk_rows);
    let y = x
        .reshape([g, rows / g, d_in])
        .matmul(weight.unsqueeze::<3>());
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// `layer.forward(x)` with the rows of `x` split into chunks of about `chunk_rows`, so that the
/// weight gradient is computed in parallel over them (see the module docs).
///
/// - `x: [..., d_in]`; returns `[..., d_out]`.
pub fn chunked_linear<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    chunk_rows: usize,
) -> Tensor<D> {
    let y = chunked_matmul(x, layer.weight.val(), chunk_rows);
    match &layer.bias {
        Some(b) => y + b.val().unsqueeze::<D>(),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};
    use rstest::rstest;

    #[rstest]
    #[case(4096, 2048, 2)]
    #[case(262_144, 2048, 128)]
    #[case(1000, 2048, 1)]
    #[case(6000, 2048, 3)]
    #[case(5 * 3824, 2048, 10)]
    #[case(8191, 2048, 1)] // prime: no divisor with enough rows a chunk
    #[case(8192, 0, 1)]
    fn chunk_counts(#[case] rows: usize, #[case] target: usize, #[case] expected: usize) {
        let g = chunks(rows, target);
        assert_eq!(g, expected);
        assert_eq!(rows % g, 0);
    }

    #[test]
    fn chunked_linear_matches_linear_values_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let layer = LinearConfig::new(16, 24).init(&device);
        // 3 · 2048 rows: three chunks.
        let x = Tensor::<3>::random([3, 2048, 16], Distribution::Default, &device).require_grad();
        let plain = layer.forward(x.clone());
        let split = chunked_linear(&layer, x.clone(), CHUNK_ROWS);
        split
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&plain.clone().into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        let grads_plain = (plain.clone() * plain).sum().backward();
        let grads_split = (split.clone() * split).sum().backward();
        let close = |a: TensorData, b: TensorData| {
            b.assert_approx_eq::<f32>(&a, Tolerance::rel_abs(1e-4, 1e-4))
        };
        let weight = |g| layer.weight.val().grad(g).unwrap().into_data();
        let bias = |g| {
            layer
                .bias
                .as_ref()
                .unwrap()
                .val()
                .grad(g)
                .unwrap()
                .into_data()
        };
        let input = |g| x.grad(g).unwrap().into_data();
        close(weight(&grads_plain), weight(&grads_split));
        close(bias(&grads_plain), bias(&grads_split));
        close(input(&grads_plain), input(&grads_split));
    }
}

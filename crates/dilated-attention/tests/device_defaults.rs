//! A device whose default float type is f64 and default int type i64: the attention still
//! computes in f32 and reads its mask right (its own test binary, since a device is configured
//! before its first use).

mod common;

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use common::{assert_close, values};
use dilated_attention::BlockSparseRingDilatedAttentionConfig;
use dilated_attention::inputs::check_inputs;
use dilated_attention::reference::naive_attention;

/// Random values of `shape` (never zeros).
fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|i| ((((i as u64 + 1) * 2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, shape), (device, DType::F32))
}

#[test]
fn a_device_defaulting_to_f64_and_i64_still_computes_in_f32() {
    use burn::tensor::{FloatDType, IntDType};
    let mut device = Device::flex();
    device
        .configure(
            burn::tensor::DeviceConfig::default()
                .float_dtype(FloatDType::F64)
                .int_dtype(IntDType::I64),
        )
        .unwrap();
    let module = BlockSparseRingDilatedAttentionConfig::new()
        .with_segment_lengths(vec![16, 32])
        .with_dilation_rates(vec![1, 2])
        .with_block_size(Some(4))
        .with_causal(true)
        .init(&device)
        .unwrap();
    let f32_of = |t: Tensor<4>| t.cast(DType::F32);
    let q = f32_of(tensor([2, 2, 40, 8], 1, &device));
    let k = f32_of(tensor([2, 2, 40, 8], 2, &device));
    let m = padded(&device);
    let (out, lse) = module
        .forward_with_lse(q.clone(), k.clone(), k.clone(), Some(m.clone()))
        .unwrap();
    assert_eq!((out.dtype(), lse.dtype()), (DType::F32, DType::F32));
    let shape = check_inputs(&q, &k, &k, Some(&m)).unwrap();
    let layout = module.layout(40, 2).unwrap();
    let (o_ref, _) = naive_attention(
        q,
        k.clone(),
        k,
        Some(m),
        shape,
        &layout,
        shape.scale(None).unwrap(),
    );
    assert_close(&values(out), &values(o_ref), 1e-5, "f64-default device");
}

/// Batch 1 pads every third key (Burn's polarity).
fn padded(device: &Device) -> Tensor<2, Bool> {
    let data: Vec<bool> = (0..80).map(|i| i >= 40 && i % 3 == 0).collect();
    Tensor::from_data(TensorData::new(data, [2, 40]), device)
}

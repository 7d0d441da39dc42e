//! The fused conv ops of the TCDecoder give the composed ops' values on the CPU, bit for bit,
//! and check their shapes; and a 1×1 conv commutes with nearest upsampling (the TCDecoder runs
//! its temporal growth before the upsampling), bit for bit.

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, PadMode, Tensor};

mod common;
use common::values;

fn tensor(cpu: &BackendRef, shape: &[usize], seed: u32, centre: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_slice(cpu, &values(n, seed, centre), shape).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

const ZERO: PadMode = PadMode::Zero;

#[test]
fn conv3d_add_relu_is_relu_of_the_residual_sum() {
    let cpu = CpuBackend::new_ref();
    let x = tensor(&cpu, &[6, 3, 7, 9], 1, 0.0);
    let w = tensor(&cpu, &[6, 6, 1, 3, 3], 2, 0.0);
    let b = tensor(&cpu, &[6], 3, 0.0);
    let r = tensor(&cpu, &[6, 3, 7, 9], 4, 0.0);
    let fused = x.conv3d_add_relu(&w, Some(&b), 1, 1, ZERO, &r).unwrap();
    let composed = x.conv3d(&w, Some(&b), 1, 1, ZERO).unwrap().add(&r).unwrap();
    let composed = composed.relu().unwrap();
    assert_eq!(fused.shape(), &[6, 3, 7, 9]);
    assert_eq!(bits(&fused), bits(&composed));
    let values = fused.to_vec().unwrap();
    assert!(values.contains(&0.0) && values.iter().any(|&v| v > 0.0));
    let wrong = tensor(&cpu, &[6, 3, 7, 8], 4, 0.0);
    assert!(x.conv3d_add_relu(&w, Some(&b), 1, 1, ZERO, &wrong).is_err());
}

#[test]
fn upsample_conv_relu_is_relu_of_the_upsampled_conv() {
    let cpu = CpuBackend::new_ref();
    let x = tensor(&cpu, &[5, 2, 4, 6], 5, 0.0);
    let w = tensor(&cpu, &[7, 5, 1, 3, 3], 6, 0.0);
    let b = tensor(&cpu, &[7], 7, 0.0);
    for bias in [Some(&b), None] {
        let fused = x.upsample_nearest2x_conv_relu(&w, bias).unwrap();
        let composed = x.upsample_nearest2x_conv(&w, bias).unwrap().relu().unwrap();
        assert_eq!(fused.shape(), &[7, 2, 8, 12]);
        assert_eq!(bits(&fused), bits(&composed));
    }
    let k1 = tensor(&cpu, &[7, 5, 1, 1, 1], 8, 0.0);
    assert!(x.upsample_nearest2x_conv_relu(&k1, None).is_err());
}

#[test]
fn pointwise_conv_commutes_with_nearest_upsampling() {
    let cpu = CpuBackend::new_ref();
    let x = tensor(&cpu, &[6, 2, 5, 7], 9, 0.0);
    let w = tensor(&cpu, &[12, 6, 1, 1, 1], 10, 0.0);
    let after = x.upsample_nearest2x().unwrap().conv3d(&w, None, 1, 0, ZERO);
    let before = x.conv3d(&w, None, 1, 0, ZERO).unwrap().upsample_nearest2x();
    assert_eq!(bits(&after.unwrap()), bits(&before.unwrap()));
}

mod common;

use flashvsr_media::resize::torch_bicubic_f32;

const A: f64 = -0.75;

/// Weights of taps x0−1 … x0+2 for phase t, written as in the spec §2.2.
fn spec_weights(t: f64) -> [f64; 4] {
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// 1-D torch bicubic in f64 straight from the spec.
fn reference_1d(src: &[f64], n_out: usize) -> Vec<f64> {
    let n = src.len() as i64;
    let scale = src.len() as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let u = (i as f64 + 0.5) * scale - 0.5;
            let x0 = u.floor();
            let w = spec_weights(u - x0);
            (0..4)
                .map(|j| src[(x0 as i64 - 1 + j as i64).clamp(0, n - 1) as usize] * w[j])
                .sum()
        })
        .collect()
}

#[test]
fn two_pixels_upscaled_four_times_along_x() {
    let src = [0.0f32, 1.0];
    let got = torch_bicubic_f32(&src, 2, 1, 1, 8, 1);
    let want = reference_1d(&[0.0, 1.0], 8);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    // Output 0 samples u = −0.375 (x0 = −1, t = 0.625): only the clamped tap x0+2 = 1 is 1, so
    // the value is w(+2) at t = 0.625, negative: torch does not clamp.
    assert!((got[0] as f64 - -0.10986328125).abs() < 1e-7, "{}", got[0]);
    // Symmetric input, symmetric output.
    for i in 0..8 {
        assert!((got[i] + got[7 - i] - 1.0).abs() < 1e-6);
    }
}

#[test]
fn phases_of_x4_are_the_spec_ones_and_weights_sum_to_one() {
    for t in [0.625, 0.875, 0.125, 0.375] {
        let s: f64 = spec_weights(t).iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
    }
    let src: Vec<f64> = (0..10).map(|i| ((i * 37) % 11) as f64).collect();
    let src32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
    let got = torch_bicubic_f32(&src32, 10, 1, 1, 40, 1);
    let want = reference_1d(&src, 40);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[test]
fn separable_along_both_axes_with_channels() {
    // A product image f(x)·g(y) upscales to the product of the 1-D results.
    let fx = [0.2, 0.9, 0.4];
    let gy = [1.0, 0.1, 0.7, 0.3];
    let (w, h, c) = (3, 4, 2);
    let mut src = Vec::new();
    for gv in gy {
        for fv in fx {
            src.extend([(fv * gv) as f32, (1.0 - fv * gv) as f32]);
        }
    }
    let (ow, oh) = (12, 16);
    let got = torch_bicubic_f32(&src, w, h, c, ow, oh);
    let (ux, uy) = (reference_1d(&fx, ow), reference_1d(&gy, oh));
    for y in 0..oh {
        for x in 0..ow {
            let want = ux[x] * uy[y];
            assert!((got[(y * ow + x) * c] as f64 - want).abs() < 1e-5);
            // Channel 1 is 1 − channel 0 and interpolation is affine-exact.
            assert!((got[(y * ow + x) * c + 1] as f64 - (1.0 - want)).abs() < 1e-5);
        }
    }
}

#[test]
fn downscale_uses_the_same_taps_without_antialias() {
    let src: Vec<f64> = (0..8).map(|i| (i * i) as f64).collect();
    let src32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
    let got = torch_bicubic_f32(&src32, 8, 1, 1, 3, 1);
    let want = reference_1d(&src, 3);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
    }
}

#[test]
fn constant_image_stays_constant() {
    let src = vec![0.37f32; 5 * 3 * 3];
    for v in torch_bicubic_f32(&src, 5, 3, 3, 20, 12) {
        assert!((v - 0.37).abs() < 1e-6, "{v}");
    }
}

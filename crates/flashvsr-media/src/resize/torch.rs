//! `torch.nn.functional.interpolate(mode="bicubic", align_corners=False, antialias=False)` as
//! ATen's CPU kernel computes it for float32 (`UpSampleKernel.cpp`, `HelperInterpCubic`).

use rayon::prelude::*;

use super::check_len;

const A: f32 = -0.75;

/// Four source indices (edge-replicated) and weights of one output index.
#[derive(Clone, Copy)]
struct Taps {
    idx: [usize; 4],
    w: [f32; 4],
}

fn cubic_convolution1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic_convolution2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// ATen's `get_cubic_upsample_coefficients`.
fn cubic_coefficients(t: f32) -> [f32; 4] {
    [
        cubic_convolution2(t + 1.0),
        cubic_convolution1(t),
        cubic_convolution1(1.0 - t),
        cubic_convolution2((1.0 - t) + 1.0),
    ]
}

/// Scale, source index and `guard_index_and_lambda` all in f32 as ATen's `opmath_t` is for f32.
/// The scale is `in/out`; torch uses `1/scale_factor` when called with `scale_factor`, which is
/// the same f32 for the integer factors 2, 3 and 4.
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f32 / out_size as f32;
    let last = in_size as i64 - 1;
    (0..out_size)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let x0 = (real.floor() as i64).min(last);
            let t = (real - x0 as f32).clamp(0.0, 1.0);
            let idx = std::array::from_fn(|j| (x0 - 1 + j as i64).clamp(0, last) as usize);
            Taps {
                idx,
                w: cubic_coefficients(t),
            }
        })
        .collect()
}

/// Bicubic resize in f32 with torch's semantics: A = −0.75, source coordinate
/// `(i + 0.5)·in/out − 0.5`, taps clamped to the edge, no antialiasing (also when downscaling),
/// no clamping of the result (it over/undershoots near edges in the image content).
///
/// Separable, horizontal (width) pass first over every source row, then the vertical pass; each
/// output is the sum `v0·w0 + v1·w1 + v2·w2 + v3·w3` evaluated left to right in f32. That is the
/// evaluation order of ATen's kernel (inner width interpolation of four rows, then the height
/// one), so the result equals torch's CPU float32 output unless its build contracts the products
/// into fused multiply-adds (then it differs in the last bits).
pub fn torch_bicubic_f32(
    src: &[f32],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    check_len(src.len(), width, height, channels);
    if out_w == 0 || out_h == 0 || width == 0 || height == 0 {
        return vec![0.0; out_w * out_h * channels];
    }
    let tx = taps(width, out_w);
    let mut horizontal = vec![0f32; out_w * height * channels];
    horizontal
        .par_chunks_mut(out_w * channels)
        .enumerate()
        .for_each(|(y, row)| {
            let src_row = &src[y * width * channels..(y + 1) * width * channels];
            for (x, t) in tx.iter().enumerate() {
                for ch in 0..channels {
                    let v = |j: usize| src_row[t.idx[j] * channels + ch];
                    row[x * channels + ch] =
                        v(0) * t.w[0] + v(1) * t.w[1] + v(2) * t.w[2] + v(3) * t.w[3];
                }
            }
        });
    let ty = taps(height, out_h);
    let row_len = out_w * channels;
    let mut out = vec![0f32; out_h * row_len];
    out.par_chunks_mut(row_len)
        .zip(ty.par_iter())
        .for_each(|(row, t)| {
            let r = |j: usize| &horizontal[t.idx[j] * row_len..][..row_len];
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            for (i, o) in row.iter_mut().enumerate() {
                *o = r0[i] * t.w[0] + r1[i] * t.w[1] + r2[i] * t.w[2] + r3[i] * t.w[3];
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x4_phases_are_the_spec_ones() {
        let t = taps(10, 40);
        // Output 9: source 9.5·0.25 − 0.5 = 1.875 → x0 1, t 0.875.
        assert_eq!(t[9].idx, [0, 1, 2, 3]);
        assert_eq!(t[9].w, cubic_coefficients(0.875));
        // Output 0: source −0.375 → x0 −1, taps clamped to 0,0,0,1.
        assert_eq!(t[0].idx, [0, 0, 0, 1]);
        assert_eq!(t[0].w, cubic_coefficients(0.625));
        // Last output: source 9.375 → x0 9, taps 8,9,9,9.
        assert_eq!(t[39].idx, [8, 9, 9, 9]);
    }

    #[test]
    fn coefficients_sum_to_one() {
        for t in [0.0f32, 0.125, 0.375, 0.5, 0.625, 0.875, 1.0] {
            let s: f32 = cubic_coefficients(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "t={t} sum={s}");
        }
    }
}

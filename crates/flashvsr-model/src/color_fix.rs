//! Colour correction of decoded frames against the bicubic LQ frame of the same index (spec §8).
//! Works on host frames `(3, H, W)` in [-1, 1]; both methods clamp to [-1, 1]. The wavelet fix
//! also runs on whole chunks on their device ([`wavelet_on_device`]).

mod on_device;
pub use on_device::wavelet_on_device;

use flashvsr_tensor::cpu::blur::dilated_blur;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorFix {
    AdaIn,
    Wavelet,
    None,
}

const ADAIN_EPS: f64 = 1e-5;
const WAVELET_LEVELS: usize = 5;

pub fn apply(method: ColorFix, frame: &mut [f32], reference: &[f32], height: usize, width: usize) {
    match method {
        ColorFix::AdaIn => adain(frame, reference),
        ColorFix::Wavelet => wavelet(frame, reference, height, width),
        ColorFix::None => {}
    }
}

fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, (var + ADAIN_EPS).sqrt())
}

/// Per channel: `(y − μ_y)/σ_y · σ_x + μ_x`, population variance plus 1e-5.
pub fn adain(frame: &mut [f32], reference: &[f32]) {
    let plane = frame.len() / 3;
    frame
        .par_chunks_mut(plane)
        .zip(reference.par_chunks(plane))
        .for_each(|(y, x)| {
            let (my, sy) = mean_std(y);
            let (mx, sx) = mean_std(x);
            for v in y.iter_mut() {
                *v = (((*v as f64 - my) / sy * sx + mx) as f32).clamp(-1.0, 1.0);
            }
        });
}

/// `(high frequencies, lowest band)` of one plane after 5 levels.
fn decompose(z: &[f32], h: usize, w: usize) -> (Vec<f32>, Vec<f32>) {
    let mut high = vec![0.0f32; z.len()];
    let mut low = z.to_vec();
    for level in 0..WAVELET_LEVELS {
        let next = dilated_blur(&low, h, w, 1 << level);
        for ((hv, &l), &n) in high.iter_mut().zip(&low).zip(&next) {
            *hv += l - n;
        }
        low = next;
    }
    (high, low)
}

pub fn wavelet(frame: &mut [f32], reference: &[f32], h: usize, w: usize) {
    let plane = h * w;
    for c in 0..3 {
        let (high, _) = decompose(&frame[c * plane..(c + 1) * plane], h, w);
        let (_, low) = decompose(&reference[c * plane..(c + 1) * plane], h, w);
        for (i, v) in frame[c * plane..(c + 1) * plane].iter_mut().enumerate() {
            *v = (high[i] + low[i]).clamp(-1.0, 1.0);
        }
    }
}

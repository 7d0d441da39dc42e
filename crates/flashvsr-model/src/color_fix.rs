//! Colour correction of decoded frames against the bicubic LQ frame of the same index (spec §8).
//! Works on host frames `(3, H, W)` in [-1, 1]; both methods clamp to [-1, 1]. The wavelet fix
//! also runs on whole chunks on their device ([`wavelet_on_device`]).

mod on_device;
pub use on_device::wavelet_on_device;

use flashvsr_tensor::cpu::adain as plane_adain;
use flashvsr_tensor::cpu::blur::dilated_blur;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorFix {
    AdaIn,
    Wavelet,
    None,
}

const WAVELET_LEVELS: usize = 5;

pub fn apply(method: ColorFix, frame: &mut [f32], reference: &[f32], height: usize, width: usize) {
    match method {
        ColorFix::AdaIn => adain(frame, reference),
        ColorFix::Wavelet => wavelet(frame, reference, height, width),
        ColorFix::None => {}
    }
}

/// Per channel: `(y − μ_y)/σ_y · σ_x + μ_x`, population variance plus 1e-5 (the tensor op's
/// CPU code, on a host frame).
pub fn adain(frame: &mut [f32], reference: &[f32]) {
    let plane = frame.len() / 3;
    frame
        .par_chunks_mut(plane)
        .zip(reference.par_chunks(plane))
        .for_each(|(y, x)| {
            let stats = plane_adain::plane_mean_std(y);
            plane_adain::transfer(y, stats, plane_adain::plane_mean_std(x));
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

//! Colour correction of decoded frames against the bicubic LQ frame of the same index (spec §8).
//! Works on host frames `(3, H, W)` in [-1, 1]; both methods clamp to [-1, 1].

use flashvsr_tensor::cpu::adain as plane_adain;
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

/// Dilated 3×3 binomial blur with replicate padding.
fn blur(z: &[f32], h: usize, w: usize, r: usize) -> Vec<f32> {
    const K: [f32; 3] = [1.0, 2.0, 1.0];
    let at = |y: isize, x: isize| {
        z[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize]
    };
    let r = r as isize;
    let mut out = vec![0.0f32; h * w];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, o) in row.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (i, ky) in K.iter().enumerate() {
                for (j, kx) in K.iter().enumerate() {
                    acc += ky
                        * kx
                        * at(
                            y as isize + (i as isize - 1) * r,
                            x as isize + (j as isize - 1) * r,
                        );
                }
            }
            *o = acc / 16.0;
        }
    });
    out
}

/// `(high frequencies, lowest band)` of one plane after 5 levels.
fn decompose(z: &[f32], h: usize, w: usize) -> (Vec<f32>, Vec<f32>) {
    let mut high = vec![0.0f32; z.len()];
    let mut low = z.to_vec();
    for level in 0..WAVELET_LEVELS {
        let next = blur(&low, h, w, 1 << level);
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

//! The wavelet colour fix of a whole decoded chunk where it was decoded: on the host it costs
//! about 30 ms of CPU per 1408×768 frame, on a GPU a few passes over the chunk.
//!
//! The host fix is `high(y) + L₅(x)` (FLASHVSR.md §8), with `L₅ = B(·)` the five successive blurs
//! (dilations 1, 2, 4, 8, 16) and `high(z) = Σₖ (L_k − L_{k+1})`. That sum telescopes to
//! `z − B(z)`, and B is linear, so `high(y) + B(x) = y − B(y) + B(x) = y + B(x − y)`: one
//! decomposition instead of two, and no high band to accumulate. Only the f32 rounding differs
//! (about 1e-7 relative).

use flashvsr_tensor::Tensor;

use super::WAVELET_LEVELS;
use crate::{ModelError, Result};

/// `clamp(y + B(x − y), −1, 1)` for decoded frames `y` and their LQ frames `x`, both of one shape
/// whose last two dims are the frame `(H, W)` (a chunk `(3, n, H, W)` or a frame `(3, H, W)`).
pub fn wavelet_on_device(decoded: &Tensor, reference: &Tensor) -> Result<Tensor> {
    if decoded.shape() != reference.shape() || decoded.rank() < 2 {
        return Err(ModelError::Settings(format!(
            "wavelet colour fix of decoded frames {:?} against LQ frames {:?}",
            decoded.shape(),
            reference.shape()
        )));
    }
    let mut low = reference.sub(decoded)?;
    for level in 0..WAVELET_LEVELS {
        low = low.dilated_blur(1 << level)?;
    }
    let fixed = decoded.add(&low)?;
    // A chunk-sized buffer less at the clamp: the first chunk's 21 frames at 1408×768 are 272 MB.
    drop(low);
    Ok(fixed.clamp(-1.0, 1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::color_fix::wavelet;
    use flashvsr_tensor::cpu::CpuBackend;

    /// Uniform values in [-scale, scale).
    fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn equals_the_host_fix_on_a_random_frame() {
        let backend = CpuBackend::new_ref();
        // Smaller than the largest dilation, odd sides: every border case of every level.
        let (h, w) = (23, 37);
        let decoded = noise(3 * h * w, 1, 1.1);
        let reference = noise(3 * h * w, 2, 0.9);
        let mut want = decoded.clone();
        wavelet(&mut want, &reference, h, w);
        let y = Tensor::from_slice(&backend, &decoded, &[3, h, w]).unwrap();
        let x = Tensor::from_slice(&backend, &reference, &[3, h, w]).unwrap();
        let got = wavelet_on_device(&y, &x).unwrap().to_vec().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "max abs difference {worst:e}");
        assert!(got.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn fixes_each_frame_of_a_chunk_against_its_own_reference() {
        let backend = CpuBackend::new_ref();
        let (n, h, w) = (3, 9, 14);
        let plane = h * w;
        let decoded = noise(3 * n * plane, 3, 1.0);
        let reference = noise(3 * n * plane, 4, 1.0);
        let y = Tensor::from_slice(&backend, &decoded, &[3, n, h, w]).unwrap();
        let x = Tensor::from_slice(&backend, &reference, &[3, n, h, w]).unwrap();
        let chunk = wavelet_on_device(&y, &x).unwrap().to_vec().unwrap();
        // Frame f of channel c sits at (c·n + f)·plane in the chunk.
        let frame_of = |v: &[f32], f: usize| -> Vec<f32> {
            (0..3)
                .flat_map(|c| v[(c * n + f) * plane..][..plane].to_vec())
                .collect()
        };
        for f in 0..n {
            let (yf, xf) = (frame_of(&decoded, f), frame_of(&reference, f));
            let one = Tensor::from_slice(&backend, &yf, &[3, h, w]).unwrap();
            let reference = Tensor::from_slice(&backend, &xf, &[3, h, w]).unwrap();
            let want = wavelet_on_device(&one, &reference)
                .unwrap()
                .to_vec()
                .unwrap();
            assert_eq!(frame_of(&chunk, f), want, "frame {f}");
        }
    }

    #[test]
    fn frames_of_different_shapes_are_an_error() {
        let backend = CpuBackend::new_ref();
        let y = Tensor::zeros(&backend, &[3, 2, 4, 4]).unwrap();
        let x = Tensor::zeros(&backend, &[3, 1, 4, 4]).unwrap();
        assert!(wavelet_on_device(&y, &x).is_err());
    }
}

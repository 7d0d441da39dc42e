//! The initial latent: our own seeded Gaussian generator, or a tensor injected from a file.
//! Noise is generated per latent frame from (seed, frame index), so any chunk can be produced
//! without the frames before it (streaming, resume, parallel segments).

use crate::dit::config::LATENT_CHANNELS;
use crate::{ModelError, Result};

/// SplitMix64: a tiny counter-based generator with good statistical quality.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(bits: u64) -> f64 {
    // 53 random bits in (0, 1]: never 0, so the logarithm below is finite.
    ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

pub enum NoiseSource {
    Seeded(u64),
    /// Another source's latent frames from `first` on: a cold segment starting `first` latents
    /// into the video sees the video's noise.
    Offset {
        base: Box<NoiseSource>,
        first: usize,
    },
    /// A window of another source's canvas: tiles see exactly the noise of the untiled run.
    Crop {
        base: Box<NoiseSource>,
        full: (usize, usize),
        offset: (usize, usize),
    },
    /// `(16, T, H/8, W/8)` values, row-major.
    Injected {
        values: Vec<f32>,
        frames: usize,
        rows: usize,
        cols: usize,
    },
}

impl NoiseSource {
    /// Latent frames `first..first+count` as `(16, count, rows, cols)`.
    pub fn frames(&self, first: usize, count: usize, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let plane = rows * cols;
        let mut out = vec![0.0f32; LATENT_CHANNELS * count * plane];
        match self {
            NoiseSource::Offset { base, first: shift } => {
                return base.frames(first + shift, count, rows, cols)
            }
            NoiseSource::Crop { base, full, offset } => {
                let whole = base.frames(first, count, full.0, full.1)?;
                let full_plane = full.0 * full.1;
                for cf in 0..LATENT_CHANNELS * count {
                    for r in 0..rows {
                        let src = cf * full_plane + (offset.0 + r) * full.1 + offset.1;
                        out[(cf * rows + r) * cols..][..cols]
                            .copy_from_slice(&whole[src..src + cols]);
                    }
                }
            }
            NoiseSource::Seeded(seed) => {
                for f in 0..count {
                    let frame = seeded_frame(*seed, (first + f) as u64, LATENT_CHANNELS * plane);
                    for c in 0..LATENT_CHANNELS {
                        out[(c * count + f) * plane..][..plane]
                            .copy_from_slice(&frame[c * plane..(c + 1) * plane]);
                    }
                }
            }
            NoiseSource::Injected {
                values,
                frames,
                rows: r,
                cols: k,
            } => {
                if (*r, *k) != (rows, cols) || first + count > *frames {
                    return Err(ModelError::Settings(format!(
                        "injected noise has {frames} latent frames of {r}×{k}; this video needs frames up to {} of {rows}×{cols}",
                        first + count
                    )));
                }
                for c in 0..LATENT_CHANNELS {
                    for f in 0..count {
                        out[(c * count + f) * plane..][..plane]
                            .copy_from_slice(&values[(c * frames + first + f) * plane..][..plane]);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl NoiseSource {
    /// This source's latent frames from `first` on.
    pub fn offset(self, first: usize) -> NoiseSource {
        NoiseSource::Offset {
            base: Box::new(self),
            first,
        }
    }

    /// The `rows × cols` window at `offset` (latent pixels) of this source's `full` canvas.
    pub fn crop(self, full: (usize, usize), offset: (usize, usize)) -> NoiseSource {
        NoiseSource::Crop {
            base: Box::new(self),
            full,
            offset,
        }
    }
}

/// Standard normal values (Box–Muller) for one latent frame.
fn seeded_frame(seed: u64, frame: u64, len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    gaussian_fill(seed, frame, &mut out);
    out
}

/// Fills `out` with standard normal values of stream `stream` of `seed`; value pairs are computed
/// independently, so the fill runs in parallel and any prefix is reproducible.
pub fn gaussian_fill(seed: u64, stream: u64, out: &mut [f32]) {
    gaussian_fill_scaled(seed, stream, 1.0, out);
}

/// [`gaussian_fill`] times `std` (each value rounded to f32 first, then scaled in f32).
pub fn gaussian_fill_scaled(seed: u64, stream: u64, std: f32, out: &mut [f32]) {
    use rayon::prelude::*;
    let base = splitmix(seed ^ splitmix(stream.wrapping_mul(0xD1B5_4A32_D192_ED03)));
    out.par_chunks_mut(2).enumerate().for_each(|(i, pair)| {
        let i = i as u64;
        let u1 = uniform(splitmix(base.wrapping_add(2 * i)));
        let u2 = uniform(splitmix(base.wrapping_add(2 * i + 1)));
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = sin_cos(std::f64::consts::TAU * u2);
        pair[0] = (r * cos) as f32 * std;
        if let Some(second) = pair.get_mut(1) {
            *second = (r * sin) as f32 * std;
        }
    });
}

/// `(sin x, cos x)`. glibc's `sincos` shares its reduction between the two and returns exactly
/// what `sin` and `cos` return (checked bit for bit on 2·10⁸ angles), at about half the cost of
/// the two calls: it is most of the time of building random release-size weights.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sin_cos(x: f64) -> (f64, f64) {
    extern "C" {
        fn sincos(x: f64, sin: *mut f64, cos: *mut f64);
    }
    let (mut s, mut c) = (0.0, 0.0);
    // SAFETY: glibc writes the two outputs and nothing else.
    unsafe { sincos(x, &mut s, &mut c) };
    (s, c)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn sin_cos(x: f64) -> (f64, f64) {
    x.sin_cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_fills_are_the_plain_box_muller_values_bit_for_bit() {
        let std = 0.37f32;
        let mut got = vec![0.0f32; 20_001];
        gaussian_fill_scaled(11, 5, std, &mut got);
        let base = splitmix(11 ^ splitmix(5u64.wrapping_mul(0xD1B5_4A32_D192_ED03)));
        for (i, &v) in got.iter().enumerate() {
            let pair = (i / 2) as u64;
            let u1 = uniform(splitmix(base.wrapping_add(2 * pair)));
            let u2 = uniform(splitmix(base.wrapping_add(2 * pair + 1)));
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            let z = if i % 2 == 0 { r * a.cos() } else { r * a.sin() };
            assert_eq!(v.to_bits(), (z as f32 * std).to_bits(), "value {i}");
        }
    }

    #[test]
    fn seeded_noise_is_standard_normal_and_chunk_independent() {
        let src = NoiseSource::Seeded(7);
        let all = src.frames(0, 4, 8, 8).unwrap();
        let n = all.len() as f64;
        let mean = all.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = all.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((var - 1.0).abs() < 0.15, "var {var}");
        // Frames 2..4 requested alone equal the same frames of the whole request.
        let tail = src.frames(2, 2, 8, 8).unwrap();
        for c in 0..LATENT_CHANNELS {
            assert_eq!(
                &all[(c * 4 + 2) * 64..(c * 4 + 4) * 64],
                &tail[c * 2 * 64..(c + 1) * 2 * 64]
            );
        }
        assert_ne!(
            NoiseSource::Seeded(8).frames(0, 1, 8, 8).unwrap(),
            src.frames(0, 1, 8, 8).unwrap()
        );
    }
}

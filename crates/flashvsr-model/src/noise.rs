//! The initial latent: our own seeded Gaussian generator, or a tensor injected from a file.
//! Noise is generated per latent frame from (seed, frame index), so any chunk can be produced
//! without the frames before it (streaming, resume, parallel segments).

use flashvsr_tensor::random;

use crate::dit::config::LATENT_CHANNELS;
use crate::{ModelError, Result};

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
            NoiseSource::Seeded(seed) if plane > 0 => {
                // Each (channel, frame) plane of `out` is one run of its frame's stream (channel
                // c's values start at c · plane): filled in place, the planes in parallel. The
                // engine thread makes a chunk's noise while the device waits for its first block.
                use rayon::prelude::*;
                out.par_chunks_mut(plane).enumerate().for_each(|(cf, dst)| {
                    let (c, f) = (cf / count, cf % count);
                    let base = random::stream_base(*seed, (first + f) as u64);
                    random::normal_fill_from(base, 1.0, (c * plane) as u64, dst);
                });
            }
            NoiseSource::Seeded(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout `frames` promises, made the plain way: each latent frame's whole stream, then its
    /// channels' planes copied into place.
    fn seeded_reference(seed: u64, first: usize, count: usize, plane: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; LATENT_CHANNELS * count * plane];
        for f in 0..count {
            let mut frame = vec![0.0f32; LATENT_CHANNELS * plane];
            random::normal_fill(
                random::stream_base(seed, (first + f) as u64),
                1.0,
                &mut frame,
            );
            for c in 0..LATENT_CHANNELS {
                out[(c * count + f) * plane..][..plane]
                    .copy_from_slice(&frame[c * plane..(c + 1) * plane]);
            }
        }
        out
    }

    #[test]
    fn seeded_noise_is_each_frames_stream_bit_for_bit() {
        // Odd planes put a channel's first value in the middle of a Box–Muller pair.
        for (first, count, rows, cols) in [(0, 6, 8, 12), (6, 2, 3, 5), (3, 1, 1, 1), (0, 2, 0, 4)]
        {
            let got = NoiseSource::Seeded(5)
                .frames(first, count, rows, cols)
                .unwrap();
            let want = seeded_reference(5, first, count, rows * cols);
            assert_eq!(got.len(), want.len());
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "frames {first}..{} of {rows}×{cols}", first + count);
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

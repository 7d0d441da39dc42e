//! Frame-count and size policy (spec §2.3, §2.4), fixed so that nothing is lost: every input frame
//! comes out, and the output is exactly scale × input.

use crate::{ModelError, Result};

/// Model sizes are multiples of one attention window: 8 tokens of 16 pixels.
pub const SIZE_MULTIPLE: usize = 128;
/// Frames the first DiT chunk consumes (6 latents, with the projector's 4-frame look-ahead).
pub const FIRST_CHUNK_FRAMES: usize = 25;
pub const FRAMES_PER_CHUNK: usize = 8;

/// `F = max(25, 8·⌈(N+3)/8⌉ + 1)`: N input frames padded with copies of the last one.
pub fn padded_frame_count(n: usize) -> usize {
    FIRST_CHUNK_FRAMES.max(FRAMES_PER_CHUNK * (n + 3).div_ceil(FRAMES_PER_CHUNK) + 1)
}

/// Number of DiT chunks for F padded frames: `(F − 1)/8 − 2`.
pub fn chunk_count(padded_frames: usize) -> usize {
    (padded_frames - 1) / FRAMES_PER_CHUNK - 2
}

/// Frames (exclusive end) that chunk c needs before it can run.
pub fn frames_needed(chunk: usize) -> usize {
    FIRST_CHUNK_FRAMES + FRAMES_PER_CHUNK * chunk
}

/// Latent frames of chunk c: `(first, count)`.
pub fn chunk_latents(chunk: usize) -> (usize, usize) {
    if chunk == 0 {
        (0, 6)
    } else {
        (4 + 2 * chunk, 2)
    }
}

/// Output frames chunk c decodes: `(first, count)`; also its conditioning LQ frames.
pub fn chunk_output_frames(chunk: usize) -> (usize, usize) {
    if chunk == 0 {
        (0, 21)
    } else {
        (8 * chunk + 13, 8)
    }
}

/// How an input frame maps onto the model canvas and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizePlan {
    /// The bicubic-upscaled frame.
    pub scaled: (usize, usize),
    /// The model canvas (multiples of 128): padded (replicate right/bottom) or cropped.
    pub model: (usize, usize),
    /// Centre-crop offset of the model canvas inside the scaled frame (`--crop-to-128`).
    pub crop_offset: (usize, usize),
    /// What is written: exactly scale × input, or the cropped canvas with `--crop-to-128`.
    pub output: (usize, usize),
}

impl SizePlan {
    /// `(width, height)` pairs throughout.
    pub fn new(input: (usize, usize), scale: usize, crop_to_128: bool) -> Result<SizePlan> {
        if input.0 == 0 || input.1 == 0 || scale == 0 {
            return Err(ModelError::Settings(format!(
                "cannot upscale a {}×{} frame by {scale}",
                input.0, input.1
            )));
        }
        let scaled = (input.0 * scale, input.1 * scale);
        if crop_to_128 {
            let model = (
                scaled.0 / SIZE_MULTIPLE * SIZE_MULTIPLE,
                scaled.1 / SIZE_MULTIPLE * SIZE_MULTIPLE,
            );
            if model.0 == 0 || model.1 == 0 {
                return Err(ModelError::Settings(format!(
                    "--crop-to-128: the scaled frame {}×{} is smaller than 128 pixels",
                    scaled.0, scaled.1
                )));
            }
            return Ok(SizePlan {
                scaled,
                model,
                crop_offset: ((scaled.0 - model.0) / 2, (scaled.1 - model.1) / 2),
                output: model,
            });
        }
        let model = (
            scaled.0.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE,
            scaled.1.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE,
        );
        Ok(SizePlan {
            scaled,
            model,
            crop_offset: (0, 0),
            output: scaled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_policy_keeps_every_frame_and_matches_the_reference_when_it_drops_none() {
        assert_eq!(padded_frame_count(1), 25);
        assert_eq!(padded_frame_count(21), 25);
        assert_eq!(padded_frame_count(22), 33);
        assert_eq!(padded_frame_count(37), 41);
        assert_eq!(padded_frame_count(100), 105);
        for n in 1..300 {
            let f = padded_frame_count(n);
            assert_eq!(f % 8, 1);
            assert!(f - 4 >= n, "n {n}: {} outputs", f - 4);
            // The reference (F = L8(N+4)) drops nothing exactly when N ≡ 5 (mod 8); there F agrees.
            if n >= 21 && n % 8 == 5 {
                assert_eq!(f, n + 4);
            }
            let chunks = chunk_count(f);
            let (first, count) = chunk_output_frames(chunks - 1);
            assert_eq!(first + count, f - 4);
            assert_eq!(frames_needed(chunks - 1), f);
        }
    }

    #[test]
    fn size_policy() {
        let p = SizePlan::new((50, 30), 4, false).unwrap();
        assert_eq!(
            (p.scaled, p.model, p.output),
            ((200, 120), (256, 128), (200, 120))
        );
        let c = SizePlan::new((72, 40), 4, true).unwrap();
        assert_eq!((c.model, c.crop_offset), ((256, 128), (16, 16)));
        assert!(SizePlan::new((30, 20), 4, true).is_err());
        assert!(SizePlan::new((0, 20), 4, false).is_err());
    }
}

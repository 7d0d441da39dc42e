//! Input preparation (spec §2): bicubic ×s, then onto the model canvas (replicate-padded right and
//! bottom, or centre-cropped), as planar RGB f32 in [-1, 1].

use rayon::prelude::*;

use crate::resize::{
    pil_bicubic_taps, pil_bicubic_u16_to_f32, pil_bicubic_u8, pil_horizontal_first,
    torch_bicubic_f32, PilTaps, PIL_PRECISION_BITS,
};
use crate::{Frame, FrameData};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resampler {
    /// Pillow's bicubic on 8-bit images (the official scripts; the golden data).
    Pil,
    /// torch `interpolate(bicubic)` on float frames (the Ultra_Fast nodes).
    Torch,
}

/// `(width, height)` pairs: the upscaled frame, the model canvas and the canvas origin inside the
/// upscaled frame. Canvas pixels beyond the upscaled frame replicate its last row/column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareGeometry {
    pub scaled: (usize, usize),
    pub model: (usize, usize),
    pub crop_offset: (usize, usize),
}

/// An RGB frame → `(3, H, W)` f32 on the model canvas.
pub fn prepare_frame(frame: &Frame, g: &PrepareGeometry, resampler: Resampler) -> Vec<f32> {
    let (sw, sh) = g.scaled;
    match (resampler, &frame.data) {
        // The reference maps u8 to [-1, 1] as float32(u8) / 255 · 2 − 1, in f32.
        (Resampler::Pil, FrameData::U8(d)) => {
            let scaled = pil_bicubic_u8(d, frame.width, frame.height, 3, sw, sh);
            let signed: Vec<f32> = (0..=255u8).map(|v| v as f32 / 255.0 * 2.0 - 1.0).collect();
            onto_canvas(&scaled, g, |v| signed[v as usize])
        }
        (Resampler::Pil, FrameData::U16(d)) => {
            let scaled = pil_bicubic_u16_to_f32(d, frame.width, frame.height, 3, sw, sh);
            onto_canvas(&scaled, g, |v| v / 65535.0 * 2.0 - 1.0)
        }
        (Resampler::Torch, _) => {
            let scaled =
                torch_bicubic_f32(&frame.to_unit_f32(), frame.width, frame.height, 3, sw, sh);
            onto_canvas(&scaled, g, |v| v * 2.0 - 1.0)
        }
    }
}

/// What [`prepare_frame`] does to an 8-bit frame with [`Resampler::Pil`], as tables another
/// implementation (the device) can apply: Pillow's fixed-point taps `x` from the source width to
/// the scaled width and `y` for the heights, run horizontal pass first, each pass rounded to 8
/// bits with `precision_bits` of fixed point; then the canvas placement of [`PrepareGeometry`]
/// and `v / 255 · 2 − 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PilLevelsPlan {
    /// `(width, height)` of the frames the taps are for.
    pub source: (usize, usize),
    pub x: PilTaps,
    pub y: PilTaps,
    pub precision_bits: u32,
}

/// The plan for 8-bit frames of `source` `(width, height)` under `g` and `resampler`, or None
/// where [`prepare_frame`] works otherwise: the torch resampler, a Pillow resize that runs its
/// vertical pass first (a shrinking height), an empty frame or canvas.
pub fn pil_levels_plan(
    source: (usize, usize),
    g: &PrepareGeometry,
    resampler: Resampler,
) -> Option<PilLevelsPlan> {
    let ((w, h), (sw, sh)) = (source, g.scaled);
    let empty = [w, h, sw, sh, g.model.0, g.model.1].contains(&0);
    if resampler != Resampler::Pil || empty || !pil_horizontal_first(w, h, sw, sh) {
        return None;
    }
    Some(PilLevelsPlan {
        source,
        x: pil_bicubic_taps(w, sw),
        y: pil_bicubic_taps(h, sh),
        precision_bits: PIL_PRECISION_BITS,
    })
}

/// An 8-bit frame's samples as f32 levels 0 … 255, interleaved as stored; None for 16-bit
/// frames.
pub fn frame_levels(frame: &Frame) -> Option<Vec<f32>> {
    match &frame.data {
        FrameData::U8(d) => Some(d.iter().map(|&v| v as f32).collect()),
        FrameData::U16(_) => None,
    }
}

/// The interleaved upscaled frame → planar `(3, H, W)` on the canvas, each sample mapped to
/// [-1, 1] by `to_signed`; rows in parallel.
fn onto_canvas<T: Copy + Sync>(
    scaled: &[T],
    g: &PrepareGeometry,
    to_signed: impl Fn(T) -> f32 + Sync,
) -> Vec<f32> {
    let (sw, sh) = g.scaled;
    let (w, h) = g.model;
    let mut out = vec![0.0f32; 3 * w * h];
    if w == 0 || sw == 0 || sh == 0 {
        return out;
    }
    // Where each canvas column reads in the interleaved row.
    let columns: Vec<usize> = (0..w)
        .map(|x| (x + g.crop_offset.0).min(sw - 1) * 3)
        .collect();
    // One pass over each interleaved row fills the row in all three planes.
    let (red, rest) = out.split_at_mut(w * h);
    let (green, blue) = rest.split_at_mut(w * h);
    red.par_chunks_mut(w)
        .zip(green.par_chunks_mut(w))
        .zip(blue.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, ((r, gr), b))| {
            let sy = (y + g.crop_offset.1).min(sh - 1);
            let src = &scaled[sy * sw * 3..][..sw * 3];
            for (x, &sx) in columns.iter().enumerate() {
                let px = &src[sx..sx + 3];
                r[x] = to_signed(px[0]);
                gr[x] = to_signed(px[1]);
                b[x] = to_signed(px[2]);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canvas sample by sample: `scaled[(min(y+oy, sh−1), min(x+ox, sw−1))]` of channel c.
    fn reference(frame: &Frame, g: &PrepareGeometry) -> Vec<f32> {
        let FrameData::U8(d) = &frame.data else {
            unreachable!()
        };
        let (sw, sh) = g.scaled;
        let scaled = pil_bicubic_u8(d, frame.width, frame.height, 3, sw, sh);
        let (w, h) = g.model;
        let mut out = Vec::new();
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let sy = (y + g.crop_offset.1).min(sh - 1);
                    let sx = (x + g.crop_offset.0).min(sw - 1);
                    out.push(scaled[(sy * sw + sx) * 3 + c] as f32 / 255.0 * 2.0 - 1.0);
                }
            }
        }
        out
    }

    /// One fixed-point pass of the plan at one output, as `PilLevelsPlan` describes it.
    fn pass(t: &PilTaps, i: usize, bits: u32, read: impl Fn(usize) -> i32) -> i32 {
        let taps = &t.coeffs[i * t.ksize..][..t.count[i]];
        let sum = taps
            .iter()
            .enumerate()
            .fold(1i32 << (bits - 1), |acc, (j, &k)| {
                acc.wrapping_add(read(t.start[i] + j).wrapping_mul(k))
            });
        (sum >> bits).clamp(0, 255)
    }

    #[test]
    fn the_levels_plan_applied_sample_by_sample_is_prepare_frame() {
        let (w, h) = (9, 6);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 97 % 256) as u8).collect();
        let frame = Frame::from_u8(w, h, data.clone());
        for g in [
            // ×4 padded, ×3 cropped, and an unchanged height (a skipped pass).
            PrepareGeometry {
                scaled: (36, 24),
                model: (40, 32),
                crop_offset: (0, 0),
            },
            PrepareGeometry {
                scaled: (27, 18),
                model: (16, 16),
                crop_offset: (5, 1),
            },
            PrepareGeometry {
                scaled: (18, 6),
                model: (18, 6),
                crop_offset: (0, 0),
            },
        ] {
            let plan = pil_levels_plan((w, h), &g, Resampler::Pil).unwrap();
            let bits = plan.precision_bits;
            let (sw, sh) = g.scaled;
            let mut want = Vec::new();
            for c in 0..3 {
                for y in 0..g.model.1 {
                    for x in 0..g.model.0 {
                        let (sx, sy) = (
                            (x + g.crop_offset.0).min(sw - 1),
                            (y + g.crop_offset.1).min(sh - 1),
                        );
                        let v = pass(&plan.y, sy, bits, |r| {
                            pass(&plan.x, sx, bits, |col| data[(r * w + col) * 3 + c] as i32)
                        });
                        want.push(v as f32 / 255.0 * 2.0 - 1.0);
                    }
                }
            }
            assert_eq!(prepare_frame(&frame, &g, Resampler::Pil), want, "{g:?}");
        }
        assert!(
            pil_levels_plan(
                (w, h),
                &PrepareGeometry {
                    scaled: (18, 3),
                    model: (18, 3),
                    crop_offset: (0, 0),
                },
                Resampler::Pil
            )
            .is_none(),
            "vertical pass first"
        );
    }

    #[test]
    fn padded_and_cropped_canvases_match_the_sample_by_sample_layout() {
        let (w, h) = (7, 5);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let frame = Frame::from_u8(w, h, data);
        for g in [
            // Padded right and bottom (replicated last column and row).
            PrepareGeometry {
                scaled: (28, 20),
                model: (32, 24),
                crop_offset: (0, 0),
            },
            // Centre-cropped.
            PrepareGeometry {
                scaled: (28, 20),
                model: (16, 16),
                crop_offset: (6, 2),
            },
        ] {
            let got = prepare_frame(&frame, &g, Resampler::Pil);
            assert_eq!(got.len(), 3 * g.model.0 * g.model.1);
            assert_eq!(got, reference(&frame, &g), "{g:?}");
        }
    }
}

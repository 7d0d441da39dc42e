//! Input preparation (spec §2): bicubic ×s, then onto the model canvas (replicate-padded right and
//! bottom, or centre-cropped), as planar RGB f32 in [-1, 1].

use crate::resize::{pil_bicubic_u16_to_f32, pil_bicubic_u8, torch_bicubic_f32};
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
    let scaled: Vec<f32> = match (resampler, &frame.data) {
        // The reference maps u8 to [-1, 1] as float32(u8) / 255 · 2 − 1, in f32.
        (Resampler::Pil, FrameData::U8(d)) => {
            pil_bicubic_u8(d, frame.width, frame.height, 3, sw, sh)
                .into_iter()
                .map(|v| v as f32 / 255.0 * 2.0 - 1.0)
                .collect()
        }
        (Resampler::Pil, FrameData::U16(d)) => {
            pil_bicubic_u16_to_f32(d, frame.width, frame.height, 3, sw, sh)
                .into_iter()
                .map(|v| v / 65535.0 * 2.0 - 1.0)
                .collect()
        }
        (Resampler::Torch, _) => {
            torch_bicubic_f32(&frame.to_unit_f32(), frame.width, frame.height, 3, sw, sh)
                .into_iter()
                .map(|v| v * 2.0 - 1.0)
                .collect()
        }
    };
    let (w, h) = g.model;
    let mut out = vec![0.0f32; 3 * w * h];
    for y in 0..h {
        let sy = (y + g.crop_offset.1).min(sh - 1);
        for x in 0..w {
            let sx = (x + g.crop_offset.0).min(sw - 1);
            let src = (sy * sw + sx) * 3;
            for c in 0..3 {
                out[(c * h + y) * w + x] = scaled[src + c];
            }
        }
    }
    out
}

//! Finished model frames `(3, H, W)` in [-1, 1] → output RGB frames cropped to the output size.

use flashvsr_media::Frame;

/// Quantisation of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// `trunc(clip((y + 1) · 127.5, 0, 255))`, the official scripts' conversion.
    Eight,
    /// `round((y + 1) / 2 · 65535)`, clipped.
    Sixteen,
}

pub fn to_frame(
    pixels: &[f32],
    model: (usize, usize),
    output: (usize, usize),
    depth: Depth,
) -> Frame {
    let (mw, mh) = model;
    let (ow, oh) = output;
    let plane = mw * mh;
    let sample = |x: usize, y: usize, c: usize| pixels[c * plane + y * mw + x];
    match depth {
        Depth::Eight => {
            let mut data = Vec::with_capacity(ow * oh * 3);
            for y in 0..oh {
                for x in 0..ow {
                    for c in 0..3 {
                        data.push(((sample(x, y, c) + 1.0) * 127.5).clamp(0.0, 255.0) as u8);
                    }
                }
            }
            Frame::from_u8(ow, oh, data)
        }
        Depth::Sixteen => {
            let mut data = Vec::with_capacity(ow * oh * 3);
            for y in 0..oh {
                for x in 0..ow {
                    for c in 0..3 {
                        let v = ((sample(x, y, c) + 1.0) / 2.0 * 65535.0).round();
                        data.push(v.clamp(0.0, 65535.0) as u16);
                    }
                }
            }
            Frame::from_u16(ow, oh, data)
        }
    }
}

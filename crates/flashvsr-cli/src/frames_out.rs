//! Finished model frames `(3, H, W)` in [-1, 1] → output RGB frames cropped to the output size.

use flashvsr_media::Frame;
use rayon::prelude::*;

/// Quantisation of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// `trunc(clip((y + 1) · 127.5, 0, 255))`, the official scripts' conversion.
    Eight,
    /// `round((y + 1) / 2 · 65535)`, clipped.
    Sixteen,
}

/// Rows in parallel (on a host worker they run in turn, on its own thread).
pub fn to_frame(
    pixels: &[f32],
    model: (usize, usize),
    output: (usize, usize),
    depth: Depth,
) -> Frame {
    let plane = model.0 * model.1;
    let (r, gb) = pixels.split_at(plane);
    let (g, b) = gb.split_at(plane);
    planes_to_frame([r, g, &b[..plane]], model, output, depth)
}

/// [`to_frame`] from the three planes, wherever they are (a frame read in its decoded chunk).
pub fn planes_to_frame(
    planes: [&[f32]; 3],
    model: (usize, usize),
    output: (usize, usize),
    depth: Depth,
) -> Frame {
    let (mw, _) = model;
    let (ow, oh) = output;
    // Each output row from the model row of the same index, samples interleaved RGB.
    fn rows<T: Send + Default + Copy>(
        planes: [&[f32]; 3],
        mw: usize,
        (ow, oh): (usize, usize),
        convert: impl Fn(f32) -> T + Sync,
    ) -> Vec<T> {
        let mut data = vec![T::default(); ow * oh * 3];
        if ow > 0 {
            data.par_chunks_mut(ow * 3)
                .enumerate()
                .for_each(|(y, row)| {
                    let [r, g, b] = planes.map(|p| &p[y * mw..y * mw + ow]);
                    for (x, px) in row.chunks_exact_mut(3).enumerate() {
                        px[0] = convert(r[x]);
                        px[1] = convert(g[x]);
                        px[2] = convert(b[x]);
                    }
                });
        }
        data
    }
    match depth {
        Depth::Eight => Frame::from_u8(
            ow,
            oh,
            rows(planes, mw, output, |v| {
                ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8
            }),
        ),
        Depth::Sixteen => Frame::from_u16(
            ow,
            oh,
            rows(planes, mw, output, |v| {
                let v = ((v + 1.0) / 2.0 * 65535.0).round();
                v.clamp(0.0, 65535.0) as u16
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_samples_are_cropped_interleaved_and_quantised() {
        // Model 3×2, output 2×2: planes R = x + 10y, G = −1, B = 1, scaled into [-1, 1].
        let (mw, mh) = (3, 2);
        let mut pixels = vec![0.0f32; 3 * mw * mh];
        for y in 0..mh {
            for x in 0..mw {
                pixels[y * mw + x] = (x + 10 * y) as f32 / 20.0 - 0.5;
                pixels[mw * mh + y * mw + x] = -1.0;
                pixels[2 * mw * mh + y * mw + x] = 1.0;
            }
        }
        let f = to_frame(&pixels, (mw, mh), (2, 2), Depth::Eight);
        assert_eq!((f.width, f.height), (2, 2));
        // trunc((v + 1) · 127.5): R of (1, 1) is 11/20 − 0.5 = 0.05 → 133.875 → 133.
        assert_eq!(
            f.to_u8_samples(),
            vec![63, 0, 255, 70, 0, 255, 127, 0, 255, 133, 0, 255]
        );
        let f = to_frame(&pixels, (mw, mh), (2, 2), Depth::Sixteen);
        assert_eq!(f.to_u16_samples()[..3], [16384, 0, 65535]);
    }
}

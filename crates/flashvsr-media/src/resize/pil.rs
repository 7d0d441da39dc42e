//! Pillow `ImagingResample` with the bicubic filter (Pillow 13, `libImaging/Resample.c`).
//! The coefficients are computed in f64 exactly as Pillow does, truncating casts included.

use rayon::prelude::*;

use super::check_len;

/// Fixed-point precision of Pillow's 8-bit passes: 32 − 8 − 2.
const PRECISION_BITS: u32 = 22;

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Taps of one axis: output `i` reads `count[i]` inputs from `start[i]` with the weights
/// `weights[i * ksize ..][.. count[i]]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<f64>,
}

/// `precompute_coeffs` of Pillow, including its downscaling (filterscale > 1) branch and its
/// truncating `(int)` casts. Taps outside the image are dropped and the rest renormalised.
fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut c = Coeffs {
        ksize,
        start: Vec::with_capacity(out_size),
        count: Vec::with_capacity(out_size),
        weights: vec![0.0; out_size * ksize],
    };
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like C's `(int)`, which is what Pillow does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let k = &mut c.weights[i * ksize..i * ksize + n];
        let mut total = 0.0;
        for (x, w) in k.iter_mut().enumerate() {
            *w = bicubic_filter(((x + xmin) as f64 - center + 0.5) * ss);
            total += *w;
        }
        if total != 0.0 {
            k.iter_mut().for_each(|w| *w /= total);
        }
        c.start.push(xmin);
        c.count.push(n);
    }
    c
}

/// Pillow's 8-bit taps of one axis in fixed point: output `i` is
/// `clip8((2^(bits−1) + Σⱼ input[start[i] + j] · coeffs[i·ksize + j]) >> bits)` over
/// `j < count[i]`, with `bits` = [`PIL_PRECISION_BITS`]. [`pil_bicubic_u8`] runs its passes with
/// these, and the device resamples with the same tables, so both give the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PilTaps {
    pub ksize: usize,
    pub start: Vec<usize>,
    pub count: Vec<usize>,
    pub coeffs: Vec<i32>,
}

impl PilTaps {
    /// The outputs of the axis.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// The one-tap copy that stands for a pass Pillow skips (an axis whose size does not change):
    /// `(2^(bits−1) + v · 2^bits) >> bits = v`.
    fn identity(size: usize) -> PilTaps {
        PilTaps {
            ksize: 1,
            start: (0..size).collect(),
            count: vec![1; size],
            coeffs: vec![1 << PRECISION_BITS; size],
        }
    }
}

/// Fixed-point bits of Pillow's 8-bit passes.
pub const PIL_PRECISION_BITS: u32 = PRECISION_BITS;

/// Pillow's bicubic taps from `in_size` to `out_size` samples, in its fixed point; an axis whose
/// size does not change gets the one-tap copy (Pillow skips that pass).
pub fn pil_bicubic_taps(in_size: usize, out_size: usize) -> PilTaps {
    if in_size == out_size {
        return PilTaps::identity(out_size);
    }
    let c = precompute_coeffs(in_size, out_size);
    PilTaps {
        ksize: c.ksize,
        coeffs: fixed_point(&c.weights),
        start: c.start,
        count: c.count,
    }
}

/// Pillow 13 runs the vertical pass first when the height shrinks and the width does not (see
/// [`pil_bicubic_u8`]); resizing `(width, height)` to `(out_w, out_h)` otherwise goes horizontal
/// first.
pub fn pil_horizontal_first(width: usize, height: usize, out_w: usize, out_h: usize) -> bool {
    !vertical_first(width, height, out_w, out_h)
}

fn fixed_point(weights: &[f64]) -> Vec<i32> {
    let one = (1u32 << PRECISION_BITS) as f64;
    weights
        .iter()
        .map(|&w| {
            if w < 0.0 {
                (-0.5 + w * one) as i32
            } else {
                (0.5 + w * one) as i32
            }
        })
        .collect()
}

/// Pillow accumulates in C `int`: i32 with wrapping adds gives its results exactly (and runs in
/// twice the SIMD lanes of i64).
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow 13 runs the vertical pass first when the height shrinks and the width does not (for
/// speed; Pillow 12 and older always go horizontal first). The two orders round differently, so
/// only this case depends on the Pillow version; the reference upscales both axes, where all
/// versions agree.
fn vertical_first(width: usize, height: usize, out_w: usize, out_h: usize) -> bool {
    out_w >= width && out_h < height
}

fn horizontal_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
) -> Vec<u8> {
    if out_w == width {
        return src.to_vec();
    }
    let c = pil_bicubic_taps(width, out_w);
    let k = &c.coeffs;
    let mut out = vec![0u8; out_w * height * channels];
    out.par_chunks_mut(out_w * channels)
        .enumerate()
        .for_each(|(y, row)| {
            let src_row = &src[y * width * channels..(y + 1) * width * channels];
            if channels == 3 {
                // RGB together: one pass over the taps for the three bands.
                for (x, out) in row.chunks_exact_mut(3).enumerate() {
                    let taps = &k[x * c.ksize..x * c.ksize + c.count[x]];
                    let first = &src_row[c.start[x] * 3..];
                    let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                    for (px, &kj) in first.chunks_exact(3).zip(taps) {
                        for (a, &p) in acc.iter_mut().zip(px) {
                            *a = a.wrapping_add((p as i32).wrapping_mul(kj));
                        }
                    }
                    for (o, a) in out.iter_mut().zip(acc) {
                        *o = clip8(a);
                    }
                }
                return;
            }
            for x in 0..out_w {
                let taps = &k[x * c.ksize..x * c.ksize + c.count[x]];
                for ch in 0..channels {
                    let mut acc = 1i32 << (PRECISION_BITS - 1);
                    for (j, &kj) in taps.iter().enumerate() {
                        let p = src_row[(c.start[x] + j) * channels + ch] as i32;
                        acc = acc.wrapping_add(p.wrapping_mul(kj));
                    }
                    row[x * channels + ch] = clip8(acc);
                }
            }
        });
    out
}

fn vertical_u8(src: &[u8], width: usize, height: usize, channels: usize, out_h: usize) -> Vec<u8> {
    if out_h == height {
        return src.to_vec();
    }
    let c = pil_bicubic_taps(height, out_h);
    let k = &c.coeffs;
    let row_len = width * channels;
    let mut out = vec![0u8; out_h * row_len];
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(y, row)| {
            let mut acc = vec![1i32 << (PRECISION_BITS - 1); row_len];
            for (j, &kj) in k[y * c.ksize..y * c.ksize + c.count[y]].iter().enumerate() {
                let src_row = &src[(c.start[y] + j) * row_len..][..row_len];
                for (a, &p) in acc.iter_mut().zip(src_row) {
                    *a = a.wrapping_add((p as i32).wrapping_mul(kj));
                }
            }
            for (o, a) in row.iter_mut().zip(acc) {
                *o = clip8(a);
            }
        });
    out
}

/// Bit-exact Pillow 13 `Image.resize((out_w, out_h), Image.BICUBIC)` of an 8-bit image with
/// `channels` interleaved bands, upscaling or downscaling (no `reducing_gap`, as `resize`'s
/// default): two separable passes, each rounded to uint8 in 22-bit fixed point, horizontal first
/// (see `vertical_first` for the one exception). An axis whose size does not change is copied,
/// as Pillow skips that pass.
pub fn pil_bicubic_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    check_len(src.len(), width, height, channels);
    if out_w == 0 || out_h == 0 || width == 0 || height == 0 {
        return vec![0; out_w * out_h * channels];
    }
    if vertical_first(width, height, out_w, out_h) {
        let v = vertical_u8(src, width, height, channels, out_h);
        horizontal_u8(&v, width, out_h, channels, out_w)
    } else {
        let h = horizontal_u8(src, width, height, channels, out_w);
        vertical_u8(&h, out_w, height, channels, out_h)
    }
}

const MAX16: f32 = 65535.0;

fn horizontal_f32(
    src: &[f32],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
) -> Vec<f32> {
    if out_w == width {
        return src.to_vec();
    }
    let c = precompute_coeffs(width, out_w);
    let k: Vec<f32> = c.weights.iter().map(|&w| w as f32).collect();
    let mut out = vec![0f32; out_w * height * channels];
    out.par_chunks_mut(out_w * channels)
        .enumerate()
        .for_each(|(y, row)| {
            let src_row = &src[y * width * channels..(y + 1) * width * channels];
            for x in 0..out_w {
                let taps = &k[x * c.ksize..x * c.ksize + c.count[x]];
                for ch in 0..channels {
                    let mut acc = 0f32;
                    for (j, &kj) in taps.iter().enumerate() {
                        acc += src_row[(c.start[x] + j) * channels + ch] * kj;
                    }
                    row[x * channels + ch] = acc.clamp(0.0, MAX16);
                }
            }
        });
    out
}

fn vertical_f32(
    src: &[f32],
    width: usize,
    height: usize,
    channels: usize,
    out_h: usize,
) -> Vec<f32> {
    if out_h == height {
        return src.to_vec();
    }
    let c = precompute_coeffs(height, out_h);
    let k: Vec<f32> = c.weights.iter().map(|&w| w as f32).collect();
    let row_len = width * channels;
    let mut out = vec![0f32; out_h * row_len];
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(y, row)| {
            for (j, &kj) in k[y * c.ksize..y * c.ksize + c.count[y]].iter().enumerate() {
                let src_row = &src[(c.start[y] + j) * row_len..][..row_len];
                for (o, &p) in row.iter_mut().zip(src_row) {
                    *o += p * kj;
                }
            }
            row.iter_mut().for_each(|o| *o = o.clamp(0.0, MAX16));
        });
    out
}

/// Pillow's bicubic geometry and kernel applied to a 16-bit image in f32, for 16-bit inputs that
/// have no Pillow reference: the taps, normalised weights and pass order of [`pil_bicubic_u8`],
/// but f32 weights and sums, without fixed point and without rounding between or after the
/// passes. Each pass clamps to [0, 65535] as Pillow's 8-bit passes clamp to [0, 255], so the
/// result is in the source scale (0 … 65535): an 8-bit image widened by 257 gives about 257 ×
/// Pillow's output.
pub fn pil_bicubic_u16_to_f32(
    src: &[u16],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    check_len(src.len(), width, height, channels);
    if out_w == 0 || out_h == 0 || width == 0 || height == 0 {
        return vec![0.0; out_w * out_h * channels];
    }
    let src: Vec<f32> = src.iter().map(|&v| v as f32).collect();
    if vertical_first(width, height, out_w, out_h) {
        let v = vertical_f32(&src, width, height, channels, out_h);
        horizontal_f32(&v, width, out_h, channels, out_w)
    } else {
        let h = horizontal_f32(&src, width, height, channels, out_w);
        vertical_f32(&h, out_w, height, channels, out_h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_weights_match_the_spec_phases() {
        // ×4: interior outputs sit at centre offsets 0.625, 0.875, 0.125, 0.375 from a pixel.
        let c = precompute_coeffs(10, 40);
        let i = 17; // centre 4.375
        assert_eq!(c.start[i], 2);
        assert_eq!(c.count[i], 4);
        let w = &c.weights[i * c.ksize..i * c.ksize + 4];
        let expect: Vec<f64> = (2..6)
            .map(|j| bicubic_filter(j as f64 + 0.5 - 4.375))
            .collect();
        let total: f64 = expect.iter().sum();
        for (a, b) in w.iter().zip(&expect) {
            assert!((a - b / total).abs() < 1e-15);
        }
    }

    #[test]
    fn an_unchanged_axis_gets_the_one_tap_copy_that_bicubic_weights_give_too() {
        let copy = pil_bicubic_taps(7, 7);
        assert_eq!(copy.ksize, 1);
        assert_eq!(copy.start, (0..7).collect::<Vec<_>>());
        assert!(copy.coeffs.iter().all(|&k| k == 1 << PRECISION_BITS));
        // Bicubic weights at scale 1 are 1 at the centre and 0 elsewhere: the same copy.
        let c = precompute_coeffs(7, 7);
        let k = fixed_point(&c.weights);
        for i in 0..7 {
            let taps = &k[i * c.ksize..][..c.count[i]];
            let centre = i - c.start[i];
            for (j, &w) in taps.iter().enumerate() {
                assert_eq!(w, if j == centre { 1 << PRECISION_BITS } else { 0 });
            }
        }
    }

    #[test]
    fn downscale_widens_the_support() {
        let c = precompute_coeffs(40, 10);
        assert_eq!(c.ksize, 8 * 2 + 1);
        assert_eq!(c.start[5], 14); // centre 22, support 8: trunc(14.5)
        assert_eq!(c.count[5], 16); // trunc(30.5) − 14
    }
}

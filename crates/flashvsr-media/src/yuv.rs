//! YUV ↔ RGB for y4m: matrix, range and chroma upsampling.
//!
//! Defaults (no y4m tag carries the matrix): BT.709 for frames at least 720 rows tall, BT.601
//! below, as players guess; limited range unless `XCOLORRANGE=FULL`. Chroma is upsampled
//! bilinearly with edge clamping, placed as the colourspace tag says: centred between luma samples
//! (420jpeg, 420 and every high-bit 4:2:0), left co-sited (420mpeg2, 422, 411) or top-left
//! co-sited (420paldv).

use rayon::prelude::*;

use crate::frame::{Frame, FrameData, YuvMatrix, YuvRange};

/// The rule used where a stream does not say which matrix it uses.
pub(crate) fn default_matrix(height: usize) -> YuvMatrix {
    if height >= 720 {
        YuvMatrix::Bt709
    } else {
        YuvMatrix::Bt601
    }
}

fn kr_kb(m: YuvMatrix) -> (f32, f32) {
    match m {
        YuvMatrix::Bt601 => (0.299, 0.114),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
    }
}

/// Code values of black, of the chroma zero and the code spans of luma and chroma.
#[derive(Clone, Copy)]
pub(crate) struct Levels {
    y_off: f32,
    y_span: f32,
    c_off: f32,
    c_span: f32,
}

impl Levels {
    pub(crate) fn new(bits: u32, range: YuvRange) -> Self {
        let mul = (1u32 << (bits - 8)) as f32;
        let c_off = (1u32 << (bits - 1)) as f32;
        match range {
            YuvRange::Limited => Levels {
                y_off: 16.0 * mul,
                y_span: 219.0 * mul,
                c_off,
                c_span: 224.0 * mul,
            },
            YuvRange::Full => {
                let max = ((1u32 << bits) - 1) as f32;
                Levels {
                    y_off: 0.0,
                    y_span: max,
                    c_off,
                    c_span: max,
                }
            }
        }
    }
}

/// Where chroma samples sit relative to luma, per axis: true = on the first luma sample of each
/// group (co-sited), false = centred in the group.
#[derive(Clone, Copy)]
pub(crate) struct Siting {
    pub h_cosited: bool,
    pub v_cosited: bool,
}

/// Planar YUV of one frame, samples widened to u16 (8-bit values stay 0…255).
pub(crate) struct Planes<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u16],
    /// Cb and Cr with their plane size and subsampling; `None` for mono.
    pub chroma: Option<Chroma<'a>>,
}

pub(crate) struct Chroma<'a> {
    pub u: &'a [u16],
    pub v: &'a [u16],
    pub width: usize,
    pub height: usize,
    pub sub_x: usize,
    pub sub_y: usize,
    pub siting: Siting,
}

/// Bilinear taps of each luma position along one axis: (lower index, upper index, upper weight).
fn axis_taps(
    n_luma: usize,
    n_chroma: usize,
    sub: usize,
    cosited: bool,
) -> Vec<(usize, usize, f32)> {
    let last = n_chroma.saturating_sub(1) as f32;
    (0..n_luma)
        .map(|i| {
            let pos = if sub == 1 {
                i as f32
            } else if cosited {
                i as f32 / sub as f32
            } else {
                (i as f32 + 0.5) / sub as f32 - 0.5
            };
            let pos = pos.clamp(0.0, last);
            let i0 = pos.floor() as usize;
            let i1 = (i0 + 1).min(n_chroma - 1);
            (i0, i1, pos - i0 as f32)
        })
        .collect()
}

/// RGB output of [`yuv_to_rgb`]: 8-bit when `out16` is false, else 16-bit full scale.
pub(crate) enum Rgb {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

pub(crate) fn yuv_to_rgb(
    p: &Planes,
    bits: u32,
    range: YuvRange,
    matrix: YuvMatrix,
    out16: bool,
) -> Rgb {
    let lv = Levels::new(bits, range);
    let (kr, kb) = kr_kb(matrix);
    let kg = 1.0 - kr - kb;
    let (cr_r, cb_b) = (2.0 * (1.0 - kr), 2.0 * (1.0 - kb));
    let (cb_g, cr_g) = (cb_b * kb / kg, cr_r * kr / kg);
    let scale = if out16 { 65535.0 } else { 255.0 };
    let w = p.width;
    let taps = p.chroma.as_ref().map(|c| {
        (
            axis_taps(w, c.width, c.sub_x, c.siting.h_cosited),
            axis_taps(p.height, c.height, c.sub_y, c.siting.v_cosited),
        )
    });
    let convert_row = |y: usize, out: &mut dyn FnMut(usize, [f32; 3])| {
        let luma = &p.y[y * w..(y + 1) * w];
        match (&p.chroma, &taps) {
            (Some(c), Some((tx, ty))) => {
                let (r0, r1, fy) = ty[y];
                let lerp_row = |plane: &[u16]| -> Vec<f32> {
                    let a = &plane[r0 * c.width..(r0 + 1) * c.width];
                    let b = &plane[r1 * c.width..(r1 + 1) * c.width];
                    a.iter()
                        .zip(b)
                        .map(|(&a, &b)| a as f32 + (b as f32 - a as f32) * fy)
                        .collect()
                };
                let (ur, vr) = (lerp_row(c.u), lerp_row(c.v));
                for (x, &(i0, i1, fx)) in tx.iter().enumerate() {
                    let yy = (luma[x] as f32 - lv.y_off) / lv.y_span;
                    let pb = (ur[i0] + (ur[i1] - ur[i0]) * fx - lv.c_off) / lv.c_span;
                    let pr = (vr[i0] + (vr[i1] - vr[i0]) * fx - lv.c_off) / lv.c_span;
                    out(
                        x,
                        [yy + cr_r * pr, yy - cb_g * pb - cr_g * pr, yy + cb_b * pb],
                    );
                }
            }
            _ => {
                for (x, &l) in luma.iter().enumerate() {
                    let yy = (l as f32 - lv.y_off) / lv.y_span;
                    out(x, [yy; 3]);
                }
            }
        }
    };
    let quant = |v: f32| (v * scale).round().clamp(0.0, scale);
    if out16 {
        let mut rgb = vec![0u16; w * p.height * 3];
        rgb.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
            convert_row(y, &mut |x, px| {
                for c in 0..3 {
                    row[x * 3 + c] = quant(px[c]) as u16;
                }
            })
        });
        Rgb::U16(rgb)
    } else {
        let mut rgb = vec![0u8; w * p.height * 3];
        rgb.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
            convert_row(y, &mut |x, px| {
                for c in 0..3 {
                    row[x * 3 + c] = quant(px[c]) as u8;
                }
            })
        });
        Rgb::U8(rgb)
    }
}

/// A frame as y4m 4:4:4 planes (Y, then Cb, then Cr) of `frame.bit_depth`-bit codes, bytes as
/// they go to the file (16-bit little endian). Rows are converted in parallel straight into the
/// output bytes: no intermediate 16-bit copy or per-plane buffers, which made the writer the
/// slowest stage of a long job.
pub(crate) fn frame_to_yuv444_bytes(frame: &Frame, range: YuvRange, matrix: YuvMatrix) -> Vec<u8> {
    let bits = frame.bit_depth as u32;
    let bytes = if bits == 16 { 2 } else { 1 };
    let lv = Levels::new(bits, range);
    let (kr, kb) = kr_kb(matrix);
    let kg = 1.0 - kr - kb;
    let top = ((1u32 << bits) - 1) as f32;
    // round() clamped: + 0.5 and truncation round half up, the same for these non-negative values,
    // without a libm call per sample.
    let code = |v: f32| (v.clamp(0.0, top) + 0.5) as u16;
    let row_bytes = frame.width * bytes;
    let plane_bytes = row_bytes * frame.height;
    let mut out = vec![0u8; 3 * plane_bytes];
    if plane_bytes == 0 {
        return out;
    }
    // The same f32 value the 16-bit path sees for an 8-bit sample (v · 257 / 65535).
    let unit8: Vec<f32> = (0..256u32).map(|v| (v * 257) as f32 / 65535.0).collect();
    let convert = |rgb: [f32; 3]| -> [u16; 3] {
        let [r, g, b] = rgb;
        let luma = kr * r + kg * g + kb * b;
        [
            code(lv.y_off + lv.y_span * luma),
            code(lv.c_off + lv.c_span * (b - luma) / (2.0 * (1.0 - kb))),
            code(lv.c_off + lv.c_span * (r - luma) / (2.0 * (1.0 - kr))),
        ]
    };
    let (y, chroma) = out.split_at_mut(plane_bytes);
    let (u, v) = chroma.split_at_mut(plane_bytes);
    y.par_chunks_mut(row_bytes)
        .zip(u.par_chunks_mut(row_bytes))
        .zip(v.par_chunks_mut(row_bytes))
        .enumerate()
        .for_each(|(row, ((y, u), v))| {
            let mut put = |x: usize, c: [u16; 3]| {
                if bytes == 2 {
                    y[2 * x..2 * x + 2].copy_from_slice(&c[0].to_le_bytes());
                    u[2 * x..2 * x + 2].copy_from_slice(&c[1].to_le_bytes());
                    v[2 * x..2 * x + 2].copy_from_slice(&c[2].to_le_bytes());
                } else {
                    (y[x], u[x], v[x]) = (c[0] as u8, c[1] as u8, c[2] as u8);
                }
            };
            let start = row * frame.width * 3;
            let end = start + frame.width * 3;
            match &frame.data {
                FrameData::U8(d) => {
                    for (x, px) in d[start..end].chunks_exact(3).enumerate() {
                        let rgb = [px[0], px[1], px[2]].map(|s| unit8[s as usize]);
                        put(x, convert(rgb));
                    }
                }
                FrameData::U16(d) => {
                    for (x, px) in d[start..end].chunks_exact(3).enumerate() {
                        put(
                            x,
                            convert([px[0], px[1], px[2]].map(|s| s as f32 / 65535.0)),
                        );
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's earlier conversion (16-bit samples, then planes), kept as the reference that
    /// the direct byte conversion must match exactly.
    fn planes_via_u16(frame: &Frame, range: YuvRange, matrix: YuvMatrix) -> Vec<u8> {
        let bits = frame.bit_depth as u32;
        let lv = Levels::new(bits, range);
        let (kr, kb) = kr_kb(matrix);
        let kg = 1.0 - kr - kb;
        let top = ((1u32 << bits) - 1) as f32;
        let code = |v: f32| v.round().clamp(0.0, top) as u16;
        let rgb = frame.to_u16_samples();
        let mut planes = [Vec::new(), Vec::new(), Vec::new()];
        for px in rgb.chunks_exact(3) {
            let [r, g, b] = [px[0], px[1], px[2]].map(|v| v as f32 / 65535.0);
            let luma = kr * r + kg * g + kb * b;
            planes[0].push(code(lv.y_off + lv.y_span * luma));
            planes[1].push(code(lv.c_off + lv.c_span * (b - luma) / (2.0 * (1.0 - kb))));
            planes[2].push(code(lv.c_off + lv.c_span * (r - luma) / (2.0 * (1.0 - kr))));
        }
        planes
            .iter()
            .flat_map(|p| {
                p.iter().flat_map(move |&v| {
                    if bits == 16 {
                        v.to_le_bytes().to_vec()
                    } else {
                        vec![v as u8]
                    }
                })
            })
            .collect()
    }

    #[test]
    fn direct_yuv_bytes_match_the_sample_by_sample_conversion() {
        let (w, h) = (37, 11);
        let mut seed = 0x9e37_79b9_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut eight: Vec<u8> = (0..w * h * 3).map(|_| next() as u8).collect();
        // Every 8-bit code appears, so each table entry is checked.
        eight[..256]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as u8);
        let sixteen: Vec<u16> = (0..w * h * 3).map(|_| next() as u16).collect();
        for frame in [Frame::from_u8(w, h, eight), Frame::from_u16(w, h, sixteen)] {
            for range in [YuvRange::Limited, YuvRange::Full] {
                for matrix in [YuvMatrix::Bt601, YuvMatrix::Bt709] {
                    let direct = frame_to_yuv444_bytes(&frame, range, matrix);
                    assert_eq!(direct.len(), w * h * 3 * (frame.bit_depth as usize / 8));
                    assert_eq!(direct, planes_via_u16(&frame, range, matrix));
                }
            }
        }
    }
}

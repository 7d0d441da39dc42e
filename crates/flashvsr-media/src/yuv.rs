//! YUV ↔ RGB for y4m: matrix, range and chroma upsampling.
//!
//! Defaults (no y4m tag carries the matrix): BT.709 for frames at least 720 rows tall, BT.601
//! below, as players guess; limited range unless `XCOLORRANGE=FULL`. Chroma is upsampled
//! bilinearly with edge clamping, placed as the colourspace tag says: centred between luma samples
//! (420jpeg, 420 and every high-bit 4:2:0), left co-sited (420mpeg2, 422, 411) or top-left
//! co-sited (420paldv).

use rayon::prelude::*;

use crate::frame::{YuvMatrix, YuvRange};

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

/// Interleaved 16-bit RGB to three full-size planes of `bits`-bit codes.
pub(crate) fn rgb_to_yuv444(
    rgb: &[u16],
    bits: u32,
    range: YuvRange,
    matrix: YuvMatrix,
) -> [Vec<u16>; 3] {
    let lv = Levels::new(bits, range);
    let (kr, kb) = kr_kb(matrix);
    let kg = 1.0 - kr - kb;
    let top = ((1u32 << bits) - 1) as f32;
    let code = |v: f32| v.round().clamp(0.0, top) as u16;
    let n = rgb.len() / 3;
    let (mut y, mut u, mut v) = (vec![0u16; n], vec![0u16; n], vec![0u16; n]);
    y.par_iter_mut()
        .zip(u.par_iter_mut().zip(v.par_iter_mut()))
        .zip(rgb.par_chunks_exact(3))
        .for_each(|((y, (u, v)), px)| {
            let [r, g, b] = [px[0], px[1], px[2]].map(|v| v as f32 / 65535.0);
            let luma = kr * r + kg * g + kb * b;
            *y = code(lv.y_off + lv.y_span * luma);
            *u = code(lv.c_off + lv.c_span * (b - luma) / (2.0 * (1.0 - kb)));
            *v = code(lv.c_off + lv.c_span * (r - luma) / (2.0 * (1.0 - kr)));
        });
    [y, u, v]
}

use rayon::prelude::*;

use super::gemm::{sgemm, View};
use crate::backend::PadMode;

/// Geometry of one `conv3d` call (see [`crate::backend::Backend::conv3d`]).
pub struct Conv3d {
    c: usize,
    t: usize,
    h: usize,
    w: usize,
    o: usize,
    kt: usize,
    kh: usize,
    kw: usize,
    stride_t: usize,
    pad: usize,
    mode: PadMode,
    t_out: usize,
    ho: usize,
    wo: usize,
}

impl Conv3d {
    pub fn new(x: &[usize], w: &[usize], stride_t: usize, pad: usize, mode: PadMode) -> Self {
        let (c, t, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, kt, kh, kw) = (w[0], w[2], w[3], w[4]);
        Conv3d {
            c,
            t,
            h,
            w: wd,
            o,
            kt,
            kh,
            kw,
            stride_t,
            pad,
            mode,
            t_out: (t - kt) / stride_t + 1,
            ho: h + 2 * pad - kh + 1,
            wo: wd + 2 * pad - kw + 1,
        }
    }

    fn is_pointwise(&self) -> bool {
        self.kt == 1 && self.kh == 1 && self.kw == 1 && self.pad == 0
    }

    pub fn run(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let plane = self.ho * self.wo;
        let kdim = self.c * self.kt * self.kh * self.kw;
        let mut out = vec![0.0f32; self.o * self.t_out * plane];
        if let Some(b) = bias {
            out.par_chunks_mut(self.t_out * plane)
                .zip(b)
                .for_each(|(d, &b)| d.fill(b));
        }
        let beta = if bias.is_some() { 1.0 } else { 0.0 };
        let a = View::new(weight, 0, kdim, 1);
        let out_rs = self.t_out * plane;
        if self.is_pointwise() {
            let frame = self.h * self.w;
            for t in 0..self.t_out {
                let col = View::new(x, t * self.stride_t * frame, self.t * frame, 1);
                sgemm(
                    self.o,
                    kdim,
                    plane,
                    1.0,
                    a,
                    col,
                    beta,
                    &mut out,
                    t * plane,
                    out_rs,
                    1,
                );
            }
            return out;
        }
        let mut col = vec![0.0f32; kdim * plane];
        for t in 0..self.t_out {
            self.im2col(x, t * self.stride_t, &mut col);
            let b = View::new(&col, 0, plane, 1);
            sgemm(
                self.o,
                kdim,
                plane,
                1.0,
                a,
                b,
                beta,
                &mut out,
                t * plane,
                out_rs,
                1,
            );
        }
        out
    }

    /// Row `((ci·kt + dt)·kh + dy)·kw + dx` holds the input samples that tap meets at every output position.
    fn im2col(&self, x: &[f32], t0: usize, col: &mut [f32]) {
        let plane = self.ho * self.wo;
        let (h, w, pad) = (self.h as isize, self.w as isize, self.pad as isize);
        let zero = self.mode == PadMode::Zero;
        col.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(row, dst)| {
                let dx = row % self.kw;
                let dy = (row / self.kw) % self.kh;
                let dt = (row / (self.kw * self.kh)) % self.kt;
                let ci = row / (self.kw * self.kh * self.kt);
                let src = &x[(ci * self.t + t0 + dt) * self.h * self.w..][..self.h * self.w];
                for oy in 0..self.ho {
                    let iy = oy as isize + dy as isize - pad;
                    let out_row = &mut dst[oy * self.wo..(oy + 1) * self.wo];
                    if zero && (iy < 0 || iy >= h) {
                        out_row.fill(0.0);
                        continue;
                    }
                    let iy = iy.clamp(0, h - 1) as usize;
                    let in_row = &src[iy * self.w..(iy + 1) * self.w];
                    for (ox, o) in out_row.iter_mut().enumerate() {
                        let ix = ox as isize + dx as isize - pad;
                        *o = if ix < 0 || ix >= w {
                            if zero {
                                0.0
                            } else {
                                in_row[ix.clamp(0, w - 1) as usize]
                            }
                        } else {
                            in_row[ix as usize]
                        };
                    }
                }
            });
    }
}

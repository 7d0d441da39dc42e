use rayon::prelude::*;

use crate::backend::{BinaryOp, UnaryOp};

const PAR_CHUNK: usize = 1 << 14;

pub fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + (K * (x + 0.044715 * x * x * x)).tanh())
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn unary(x: &[f32], op: UnaryOp) -> Vec<f32> {
    let f = move |v: f32| match op {
        UnaryOp::Silu => silu(v),
        UnaryOp::Relu => v.max(0.0),
        UnaryOp::GeluTanh => gelu_tanh(v),
        UnaryOp::Tanh => v.tanh(),
        UnaryOp::Affine { mul, add } => v * mul + add,
        UnaryOp::Clamp { min, max } => v.clamp(min, max),
    };
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d = f(s)));
    y
}

pub fn binary(a: &[f32], b: &[f32], op: BinaryOp) -> Vec<f32> {
    let f = move |x: f32, y: f32| match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
    };
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(PAR_CHUNK)
        .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
        .for_each(|(d, (a, b))| {
            for ((d, &x), &y) in d.iter_mut().zip(a).zip(b) {
                *d = f(x, y);
            }
        });
    out
}

pub fn add_gated(x: &[f32], y: &[f32], gate: &[f32]) -> Vec<f32> {
    let dim = gate.len();
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim).zip(y.par_chunks(dim)))
        .for_each(|(d, (x, y))| {
            for c in 0..dim {
                d[c] = x[c] + y[c] * gate[c];
            }
        });
    out
}

pub fn channel_affine(x: &[f32], mul: &[f32], add: &[f32]) -> Vec<f32> {
    let plane = x.len() / mul.len();
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(c, (d, s))| {
            for (d, &s) in d.iter_mut().zip(s) {
                *d = s * mul[c] + add[c];
            }
        });
    out
}

pub fn rope(x: &[f32], dim: usize, cos: &[f32], sin: &[f32], heads: usize) -> Vec<f32> {
    let half = dim / heads / 2;
    let mut out = x.to_vec();
    out.par_chunks_mut(dim).enumerate().for_each(|(row, d)| {
        let angles = row * half..(row + 1) * half;
        rope_row(d, &cos[angles.clone()], &sin[angles], heads);
    });
    out
}

/// One row of [`rope`], rotated in place: `cos`, `sin` are the row's `head_dim / 2` angles.
pub fn rope_row(d: &mut [f32], cos: &[f32], sin: &[f32], heads: usize) {
    let half = cos.len();
    for h in 0..heads {
        let base = h * 2 * half;
        for m in 0..half {
            let (a, b) = (d[base + 2 * m], d[base + 2 * m + 1]);
            d[base + 2 * m] = a * cos[m] - b * sin[m];
            d[base + 2 * m + 1] = a * sin[m] + b * cos[m];
        }
    }
}

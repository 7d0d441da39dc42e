//! The self-attention's q, k, v from the fused q/k/v projection, one pass over its rows with the
//! row kernels of `rms_norm` and `rope`: the values of the composed ops, bit for bit, without
//! their narrowed copies and intermediates.

use rayon::prelude::*;

use super::{elementwise, norm};

/// The rms norm gains of q and k, and the rope both get: angle tables `(rows, head_dim / 2)`.
pub struct QkNormRope<'a> {
    pub norm_q: &'a [f32],
    pub norm_k: &'a [f32],
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub heads: usize,
    pub eps: f32,
}

/// `x (rows, 3·dim)` → `(q, k, v)`, each `(rows, dim)`.
pub fn qkv_split_norm_rope(
    x: &[f32],
    dim: usize,
    p: &QkNormRope,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = x.len() / 3;
    let (mut q, mut k, mut v) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
    if len == 0 {
        return (q, k, v);
    }
    let half = dim / p.heads / 2;
    q.par_chunks_mut(dim)
        .zip(k.par_chunks_mut(dim))
        .zip(v.par_chunks_mut(dim))
        .zip(x.par_chunks(3 * dim))
        .enumerate()
        .for_each(|(row, (((q, k), v), x))| {
            let angles = row * half..(row + 1) * half;
            let (cos, sin) = (&p.cos[angles.clone()], &p.sin[angles]);
            norm::rms_norm_row(&x[..dim], p.norm_q, p.eps, q);
            elementwise::rope_row(q, cos, sin, p.heads);
            norm::rms_norm_row(&x[dim..2 * dim], p.norm_k, p.eps, k);
            elementwise::rope_row(k, cos, sin, p.heads);
            v.copy_from_slice(&x[2 * dim..]);
        });
    (q, k, v)
}

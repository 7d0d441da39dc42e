use rayon::prelude::*;

/// Layer norm over rows of `dim`; `finish(normalised value, channel)` applies the affine part.
/// Statistics accumulate in f64 so that long rows keep f32 parity with the reference.
pub fn layer_norm(
    x: &[f32],
    dim: usize,
    eps: f32,
    finish: impl Fn(f32, usize) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(d, s)| {
            let mean = s.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            for c in 0..dim {
                d[c] = finish(((s[c] as f64 - mean) * inv) as f32, c);
            }
        });
    out
}

pub fn rms_norm(x: &[f32], dim: usize, weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(d, s)| rms_norm_row(s, weight, eps, d));
    out
}

/// One row of [`rms_norm`], `s` into `d`; the statistic in f64.
pub fn rms_norm_row(s: &[f32], weight: &[f32], eps: f32, d: &mut [f32]) {
    let dim = s.len();
    let ms = s.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / dim as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    for c in 0..dim {
        d[c] = ((s[c] as f64) * inv) as f32 * weight[c];
    }
}

/// Norm across the channel axis (dim 0) at every position.
pub fn channel_rms_norm(x: &[f32], channels: usize, gamma: &[f32]) -> Vec<f32> {
    let plane = x.len() / channels;
    let mut scale = vec![0.0f32; plane];
    const CHUNK: usize = 4096;
    scale
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(ci, dst)| {
            let start = ci * CHUNK;
            let mut acc = vec![0.0f64; dst.len()];
            for c in 0..channels {
                let row = &x[c * plane + start..c * plane + start + dst.len()];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += (v as f64) * (v as f64);
                }
            }
            for (d, a) in dst.iter_mut().zip(acc) {
                *d = ((channels as f64).sqrt() / a.sqrt().max(1e-12)) as f32;
            }
        });
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(c, (d, s))| {
            for ((d, &v), &k) in d.iter_mut().zip(s).zip(&scale) {
                *d = v * k * gamma[c];
            }
        });
    out
}

pub fn group_mean(x: &[f32], group: usize, dim: usize) -> Vec<f32> {
    let n = x.len() / (group * dim);
    let mut out = vec![0.0f32; n * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, d)| {
        let mut acc = vec![0.0f64; dim];
        for g in 0..group {
            let row = &x[(i * group + g) * dim..(i * group + g + 1) * dim];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as f64;
            }
        }
        for (d, a) in d.iter_mut().zip(acc) {
            *d = (a / group as f64) as f32;
        }
    });
    out
}

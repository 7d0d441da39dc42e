use rayon::prelude::*;

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

pub fn permute(x: &[f32], shape: &[usize], dims: &[usize]) -> Vec<f32> {
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let src_strides: Vec<usize> = dims.iter().map(|&d| in_strides[d]).collect();
    let rank = out_shape.len();
    let inner = out_shape[rank - 1];
    let inner_stride = src_strides[rank - 1];
    let mut y = vec![0.0f32; x.len()];
    if inner == 0 {
        return y;
    }
    // Each output row (all but the last axis fixed) is filled independently.
    y.par_chunks_mut(inner).enumerate().for_each(|(row, dst)| {
        let mut rem = row;
        let mut base = 0;
        for ax in (0..rank - 1).rev() {
            base += (rem % out_shape[ax]) * src_strides[ax];
            rem /= out_shape[ax];
        }
        for (j, d) in dst.iter_mut().enumerate() {
            *d = x[base + j * inner_stride];
        }
    });
    y
}

pub fn narrow(x: &[f32], shape: &[usize], dim: usize, start: usize, len: usize) -> Vec<f32> {
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let mut y = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * shape[dim] + start) * inner;
        y.extend_from_slice(&x[base..base + len * inner]);
    }
    y
}

pub fn cat(parts: &[(&[f32], &[usize])], dim: usize) -> Vec<f32> {
    let shape = parts[0].1;
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let total: usize = parts.iter().map(|(d, _)| d.len()).sum();
    let mut y = Vec::with_capacity(total);
    for o in 0..outer {
        for (d, s) in parts {
            let block = s[dim] * inner;
            y.extend_from_slice(&d[o * block..(o + 1) * block]);
        }
    }
    y
}

/// `planes` images of `h × w` to `2h × 2w`.
pub fn upsample_nearest2x(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; planes * 4 * h * w];
    y.par_chunks_mut(4 * h * w)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, src)| {
            for yy in 0..2 * h {
                let row = &src[(yy / 2) * w..(yy / 2 + 1) * w];
                let out_row = &mut dst[yy * 2 * w..(yy + 1) * 2 * w];
                for (xx, o) in out_row.iter_mut().enumerate() {
                    *o = row[xx / 2];
                }
            }
        });
    y
}

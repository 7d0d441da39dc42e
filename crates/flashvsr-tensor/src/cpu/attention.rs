use rayon::prelude::*;

use super::gemm::{sgemm, View};

const QUERY_ROWS: usize = 128;

fn softmax_rows(scores: &mut [f32], width: usize) {
    for row in scores.chunks_mut(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Output pieces `(row0, head, rows × head_dim values)` are computed in parallel and scattered after.
fn scatter(out: &mut [f32], dim: usize, head_dim: usize, pieces: Vec<(usize, usize, Vec<f32>)>) {
    for (row0, head, piece) in pieces {
        for (r, src) in piece.chunks(head_dim).enumerate() {
            let base = (row0 + r) * dim + head * head_dim;
            out[base..base + head_dim].copy_from_slice(src);
        }
    }
}

pub fn dense(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lq: usize,
    lk: usize,
    dim: usize,
    heads: usize,
) -> Vec<f32> {
    let hd = dim / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let row_blocks = lq.div_ceil(QUERY_ROWS);
    let pieces: Vec<_> = (0..heads * row_blocks)
        .into_par_iter()
        .map(|task| {
            let (h, rb) = (task / row_blocks, task % row_blocks);
            let r0 = rb * QUERY_ROWS;
            let rows = QUERY_ROWS.min(lq - r0);
            let mut s = vec![0.0f32; rows * lk];
            let qa = View::new(q, r0 * dim + h * hd, dim, 1);
            let kt = View::new(k, h * hd, 1, dim);
            sgemm(rows, hd, lk, scale, qa, kt, 0.0, &mut s, 0, lk, 1);
            softmax_rows(&mut s, lk);
            let mut o = vec![0.0f32; rows * hd];
            let p = View::new(&s, 0, lk, 1);
            let vb = View::new(v, h * hd, dim, 1);
            sgemm(rows, lk, hd, 1.0, p, vb, 0.0, &mut o, 0, hd, 1);
            (r0, h, o)
        })
        .collect();
    let mut out = vec![0.0f32; lq * dim];
    scatter(&mut out, dim, hd, pieces);
    out
}

/// Block layout of a sparse attention: `selected` is `[head][query block][key block]`, non-zero
/// = attend.
pub struct SparseLayout<'a> {
    pub selected: &'a [f32],
    pub heads: usize,
    pub query_blocks: usize,
    pub key_blocks: usize,
    pub query_block: usize,
    pub key_block: usize,
}

pub fn block_sparse(q: &[f32], k: &[f32], v: &[f32], dim: usize, mask: &SparseLayout) -> Vec<f32> {
    let hd = dim / mask.heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (qb, kb) = (mask.query_block, mask.key_block);
    let pieces: Vec<_> = (0..mask.heads * mask.query_blocks)
        .into_par_iter()
        .map(|task| {
            let (h, bq) = (task / mask.query_blocks, task % mask.query_blocks);
            let row = &mask.selected[task * mask.key_blocks..][..mask.key_blocks];
            let selected: Vec<usize> = (0..mask.key_blocks).filter(|&bk| row[bk] != 0.0).collect();
            let mut o = vec![0.0f32; qb * hd];
            if selected.is_empty() {
                return (bq * qb, h, o);
            }
            let width = selected.len() * kb;
            let mut s = vec![0.0f32; qb * width];
            let qa = View::new(q, bq * qb * dim + h * hd, dim, 1);
            for (j, &bk) in selected.iter().enumerate() {
                let kt = View::new(k, bk * kb * dim + h * hd, 1, dim);
                sgemm(qb, hd, kb, scale, qa, kt, 0.0, &mut s, j * kb, width, 1);
            }
            softmax_rows(&mut s, width);
            for (j, &bk) in selected.iter().enumerate() {
                let p = View::new(&s, j * kb, width, 1);
                let vb = View::new(v, bk * kb * dim + h * hd, dim, 1);
                sgemm(qb, kb, hd, 1.0, p, vb, 1.0, &mut o, 0, hd, 1);
            }
            (bq * qb, h, o)
        })
        .collect();
    let mut out = vec![0.0f32; mask.query_blocks * qb * dim];
    scatter(&mut out, dim, hd, pieces);
    out
}

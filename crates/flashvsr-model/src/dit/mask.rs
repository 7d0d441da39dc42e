//! Block selection for the locality-constrained sparse attention (spec §5.2–5.6).

use flashvsr_tensor::BlockMask;
use rayon::prelude::*;

use super::config::HEAD_DIM;
use super::windows::WINDOW_TOKENS;
use crate::{ModelError, Result};

/// Key block geometry: `Block` = the official 128 × 128 blocks, `Sage` = Ultra_Fast's 128 × 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMode {
    Block,
    Sage,
}

impl AttentionMode {
    pub fn key_block(self) -> usize {
        match self {
            AttentionMode::Block => WINDOW_TOKENS,
            AttentionMode::Sage => WINDOW_TOKENS / 2,
        }
    }
}

/// The knobs of §5 resolved for one model resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseSettings {
    pub mode: AttentionMode,
    /// `⌊S²·topk_ratio⌋ − 1`; may be ≤ 0, which selects nothing.
    pub topk: i64,
    pub local_range: usize,
    /// Number of temporal groups kept in the KV cache, `int(kv_ratio)`.
    pub kv_len: usize,
    pub window_rows: usize,
    pub window_cols: usize,
}

impl SparseSettings {
    /// `height`, `width`: model resolution in output pixels (multiples of 128).
    pub fn new(
        mode: AttentionMode,
        sparse_ratio: f64,
        kv_ratio: f64,
        local_range: usize,
        height: usize,
        width: usize,
    ) -> Result<SparseSettings> {
        if !(sparse_ratio.is_finite() && sparse_ratio > 0.0) {
            return Err(ModelError::Settings(format!(
                "--sparse-ratio must be a positive number, got {sparse_ratio}"
            )));
        }
        if !(kv_ratio.is_finite() && kv_ratio >= 1.0) {
            return Err(ModelError::Settings(format!(
                "--kv-ratio must be at least 1, got {kv_ratio}"
            )));
        }
        if local_range == 0 {
            return Err(ModelError::Settings(
                "--local-range must be at least 1".into(),
            ));
        }
        let (window_rows, window_cols) = (height / WINDOW_PX, width / WINDOW_PX);
        let s = (window_rows * window_cols) as f64;
        let topk_ratio = ((sparse_ratio * 768.0) * 1280.0) / (height as f64 * width as f64);
        let topk = (s * s * topk_ratio).floor() as i64 - 1;
        Ok(SparseSettings {
            mode,
            topk,
            local_range,
            kv_len: kv_ratio as usize,
            window_rows,
            window_cols,
        })
    }

    pub fn windows_per_group(&self) -> usize {
        self.window_rows * self.window_cols
    }

    /// `loc[σq·S + σk]` (spec §5.3): not clamped at the border, asymmetric for even ranges.
    pub fn local_mask(&self) -> Vec<bool> {
        local_window_mask(self.window_rows, self.window_cols, self.local_range)
    }
}

/// One attention window covers 8 tokens of 16 px per axis.
const WINDOW_PX: usize = 128;

pub fn local_window_mask(rows: usize, cols: usize, range: usize) -> Vec<bool> {
    let s = rows * cols;
    let half = (range / 2) as isize;
    let mut m = vec![false; s * s];
    for q in 0..s {
        let (rq, uq) = ((q / cols) as isize, (q % cols) as isize);
        for k in 0..s {
            let (rk, uk) = ((k / cols) as isize, (k % cols) as isize);
            let (r0, u0) = (rq - half, uq - half);
            let inside = |v: isize, start: isize| v >= start && v < start + range as isize;
            m[q * s + k] = inside(rk, r0) && inside(uk, u0);
        }
    }
    m
}

/// Selects key blocks from the unscaled per-head scores `q̄·k̄` of pooled query windows and pooled
/// key blocks, `(heads, query_groups·S, key_blocks)` (key blocks: cached groups first).
pub fn select_blocks(
    scores: &[f32],
    heads: usize,
    query_groups: usize,
    settings: &SparseSettings,
) -> BlockMask {
    let s = settings.windows_per_group();
    let nq = query_groups * s;
    let nk = scores.len() / (heads * nq).max(1);
    let blocks_per_window = WINDOW_TOKENS / settings.mode.key_block();
    let loc = settings.local_mask();
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    let mut selected = vec![0u8; heads * nq * nk];
    // Heads are independent: mask, softmax and select each on its own thread.
    selected
        .par_chunks_mut(nq * nk)
        .enumerate()
        .for_each(|(h, head_selected)| {
            let mut probs = vec![0.0f64; nq * nk];
            for bq in 0..nq {
                let raw = &scores[(h * nq + bq) * nk..][..nk];
                let row = &mut probs[bq * nk..(bq + 1) * nk];
                for (bk, p) in row.iter_mut().enumerate() {
                    let spatial = (bk / blocks_per_window) % s;
                    *p = if loc[(bq % s) * s + spatial] {
                        raw[bk] as f64 * scale
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                softmax(row);
            }
            for g in 0..query_groups {
                let group = &probs[g * s * nk..(g + 1) * s * nk];
                let dst = &mut head_selected[g * s * nk..(g + 1) * s * nk];
                select_top(group, settings.topk, dst);
            }
        });
    BlockMask {
        heads,
        query_blocks: nq,
        key_blocks: nk,
        query_block: WINDOW_TOKENS,
        key_block: settings.mode.key_block(),
        selected,
    }
}

fn softmax(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Keeps the entries strictly greater than the (K+1)-th largest, K = min(n − 1, topk) (§5.4).
fn select_top(values: &[f64], topk: i64, dst: &mut [u8]) {
    let n = values.len() as i64;
    let k = (n - 1).min(topk);
    if k <= 0 {
        return;
    }
    let mut sorted = values.to_vec();
    let (_, tau, _) = sorted.select_nth_unstable_by(k as usize, |a, b| b.total_cmp(a));
    let tau = *tau;
    for (d, &v) in dst.iter_mut().zip(values) {
        *d = u8::from(v > tau);
    }
}

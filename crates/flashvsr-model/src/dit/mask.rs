//! Block selection for the locality-constrained sparse attention (spec §5.2–5.6).

use flashvsr_tensor::cpu::sparse_mask::select_top_blocks;
use flashvsr_tensor::BlockMask;

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

    /// The eligibility pattern of one (query group, key group) pair as the top-k op takes it:
    /// `(S, S·b, values)`, b = key blocks per window (sage splits each window in two, §5.6), entry
    /// `[σq][σk·b + half] = loc[σq][σk]`.
    pub fn allowed_pattern(&self) -> (usize, usize, Vec<f32>) {
        let s = self.windows_per_group();
        let b = WINDOW_TOKENS / self.mode.key_block();
        let loc = self.local_mask();
        let values = (0..s * s * b).map(|i| f32::from(loc[i / b])).collect();
        (s, s * b, values)
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

/// `1/√128`: the block scores are unscaled `q̄·k̄` (§5.2).
pub fn score_scale() -> f64 {
    1.0 / (HEAD_DIM as f64).sqrt()
}

/// Selects key blocks from the unscaled per-head scores `q̄·k̄` of pooled query windows and pooled
/// key blocks, `(heads, query_groups·S, key_blocks)` (key blocks: cached groups first). The host
/// form of [`flashvsr_tensor::Tensor::sparse_topk_mask`] with [`SparseSettings::allowed_pattern`]
/// (the same code as the CPU backend's).
pub fn select_blocks(
    scores: &[f32],
    heads: usize,
    query_groups: usize,
    settings: &SparseSettings,
) -> BlockMask {
    let s = settings.windows_per_group();
    let nq = query_groups * s;
    let nk = scores.len() / (heads * nq).max(1);
    let (rows, cols, allowed) = settings.allowed_pattern();
    let selected = select_top_blocks(
        scores,
        [heads, nq, nk],
        &allowed,
        [rows, cols],
        settings.topk,
        score_scale(),
    );
    BlockMask {
        heads,
        query_blocks: nq,
        key_blocks: nk,
        query_block: WINDOW_TOKENS,
        key_block: settings.mode.key_block(),
        selected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: AttentionMode, topk: i64) -> SparseSettings {
        // 2 × 2 windows, range 1: each query window is eligible for its own window only.
        SparseSettings {
            mode,
            topk,
            local_range: 1,
            kv_len: 2,
            window_rows: 2,
            window_cols: 2,
        }
    }

    #[test]
    fn the_sage_pattern_repeats_each_window_for_its_two_key_blocks() {
        let (rows, cols, p) = settings(AttentionMode::Sage, 3).allowed_pattern();
        assert_eq!((rows, cols), (4, 8));
        // Query window 1: key blocks 2 and 3 (both halves of window 1).
        assert_eq!(&p[8..16], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let (rows, cols, p) = settings(AttentionMode::Block, 3).allowed_pattern();
        assert_eq!((rows, cols), (4, 4));
        assert_eq!(&p[4..8], &[0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn selection_is_local_and_global_over_the_group() {
        // One head, one query group, two key groups (8 key blocks): query window σ may attend
        // to key blocks σ and 4 + σ. Scores favour the cached group for windows 0 and 1.
        let mut scores = vec![0.0f32; 4 * 8];
        for q in 0..4 {
            scores[q * 8 + q] = if q < 2 { 40.0 } else { 0.0 };
        }
        let m = select_blocks(&scores, 1, 1, &settings(AttentionMode::Block, 3));
        // Probabilities: windows 0, 1 (.97, .03); windows 2, 3 (½, ½). The 4th largest of the
        // group is ½, so only the two near-1 entries survive.
        let kept: Vec<(usize, usize)> = (0..4)
            .flat_map(|q| (0..8).map(move |k| (q, k)))
            .filter(|&(q, k)| m.get(0, q, k))
            .collect();
        assert_eq!(kept, vec![(0, 0), (1, 1)]);
        assert_eq!((m.query_block, m.key_block), (128, 128));
    }
}

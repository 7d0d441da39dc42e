//! Separable fixed-point resampling of 8-bit levels onto a canvas window: the LQ frames'
//! bicubic upscale done where the model runs, so that only the small source frames cross to the
//! device (FLASHVSR.md §2). The op applies whatever taps it is given; which taps (Pillow's
//! bicubic) is the caller's business.
//!
//! Everything is integer arithmetic on values f32 holds exactly, so every backend gives the same
//! bits: the levels are integers 0 … 255, the tables hold integers below 2²⁴.

use crate::error::shape_err;
use crate::{Result, Tensor};

/// Fixed-point taps of one axis: output `i` reads `count[i]` inputs from `start[i]` with the
/// integer weights `coeffs[i·ksize ..][.. count[i]]`, scaled by `2^bits` (the op's `bits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedTaps {
    ksize: usize,
    start: Vec<usize>,
    count: Vec<usize>,
    coeffs: Vec<i32>,
}

/// Table entries are f32: integers up to 2²⁴ are exact there.
const EXACT_IN_F32: i64 = 1 << 24;

impl FixedTaps {
    /// Checks that every output has its start, count (≤ `ksize`) and `ksize` weights, and that
    /// the table's f32 entries hold every value exactly.
    pub fn new(
        ksize: usize,
        start: Vec<usize>,
        count: Vec<usize>,
        coeffs: Vec<i32>,
    ) -> Result<FixedTaps> {
        let n = start.len();
        let bad = if ksize == 0 || count.len() != n || coeffs.len() != n * ksize {
            Some(format!(
                "{n} starts, {} counts, {} weights for {ksize} taps",
                count.len(),
                coeffs.len()
            ))
        } else if count.iter().any(|&c| c > ksize) {
            Some(format!("a count above {ksize} taps"))
        } else if start.iter().any(|&s| s as i64 >= EXACT_IN_F32)
            || coeffs.iter().any(|&c| (c as i64).abs() >= EXACT_IN_F32)
        {
            Some("a start or weight of 2^24 or more".into())
        } else {
            None
        };
        match bad {
            Some(detail) => shape_err("FixedTaps", detail),
            None => Ok(FixedTaps {
                ksize,
                start,
                count,
                coeffs,
            }),
        }
    }

    /// The outputs of the axis.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// One past the last input any output reads: the taps fit inputs of at least this length.
    pub fn input_span(&self) -> usize {
        self.start
            .iter()
            .zip(&self.count)
            .map(|(s, c)| s + c)
            .max()
            .unwrap_or(0)
    }

    /// The shape of [`FixedTaps::table`]: `(outputs, 2 + ksize)`.
    pub fn table_shape(&self) -> [usize; 2] {
        [self.len(), 2 + self.ksize]
    }

    /// The table [`Tensor::resample_levels`] reads: per output, the row
    /// `[start, count, w₀, …, w_{ksize−1}]`.
    pub fn table(&self) -> Vec<f32> {
        let mut t = Vec::with_capacity(self.len() * (2 + self.ksize));
        for i in 0..self.len() {
            t.push(self.start[i] as f32);
            t.push(self.count[i] as f32);
            t.extend(
                self.coeffs[i * self.ksize..(i + 1) * self.ksize]
                    .iter()
                    .map(|&c| c as f32),
            );
        }
        t
    }
}

/// The part of the resampled frame an output covers, `(x, y)` and `(width, height)` pairs: output
/// pixel `(y, x)` is resampled pixel `(min(y + origin.1, rows − 1), min(x + origin.0, cols − 1))`,
/// so a window past the frame's right or bottom edge repeats its last column or row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CanvasWindow {
    pub origin: (usize, usize),
    pub size: (usize, usize),
}

/// Fixed-point bits the op accepts: the rounding offset `2^(bits−1)` needs one, and a level times
/// a weight below 2²⁴ must stay far from the i32 accumulator's range.
pub const MAX_FIXED_POINT_BITS: u32 = 30;

impl Tensor {
    /// Source frames of levels `(n, h, w, c)` (channels interleaved; integers 0 … 255 stored as
    /// f32) resampled by separable fixed-point taps and placed on a canvas window: `(c, n, H, W)`
    /// in [-1, 1], `(W, H)` = `window.size`.
    ///
    /// `taps_x` is a [`FixedTaps::table`] from `w` to the resampled width, `taps_y` one from `h`
    /// to the resampled height. Each pass is Pillow's 8-bit pass, in this order: horizontal (every
    /// needed row at the needed columns), then vertical on those results, each output
    /// `clamp((2^(bits−1) + Σ level · weight) >> bits, 0, 255)` with the sum in wrapping i32;
    /// the final level `v` becomes `v / 255 · 2 − 1` in f32. Reads past a source edge (which a
    /// valid table never makes) repeat the edge.
    pub fn resample_levels(
        &self,
        taps_x: &Tensor,
        taps_y: &Tensor,
        window: CanvasWindow,
        bits: u32,
    ) -> Result<Tensor> {
        const OP: &str = "resample_levels";
        let s = self.shape();
        let (tx, ty) = (taps_x.shape(), taps_y.shape());
        let ok = s.len() == 4
            && s[1..].iter().all(|&d| d > 0)
            && [tx, ty]
                .iter()
                .all(|t| t.len() == 2 && t[0] > 0 && t[1] > 2)
            && (1..=MAX_FIXED_POINT_BITS).contains(&bits);
        if !ok {
            return shape_err(
                OP,
                format!(
                    "levels {s:?}, tables {tx:?} and {ty:?}, {bits} bits (want (n, h, w, c) \
                     with h, w, c > 0, tables (outputs, 2 + taps), 1 to {MAX_FIXED_POINT_BITS} \
                     bits)"
                ),
            );
        }
        let buffer = self
            .backend()
            .resample_levels(self, taps_x, taps_y, window, bits)?;
        let (width, height) = window.size;
        Tensor::from_buffer(self.backend(), buffer, &[s[3], s[0], height, width])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_start_count_and_every_weight() {
        let t = FixedTaps::new(3, vec![0, 2], vec![2, 3], vec![5, -1, 0, 7, 8, 9]).unwrap();
        assert_eq!(t.table_shape(), [2, 5]);
        assert_eq!(
            t.table(),
            vec![0.0, 2.0, 5.0, -1.0, 0.0, 2.0, 3.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(t.input_span(), 5);
    }

    #[test]
    fn inconsistent_or_inexact_taps_are_refused() {
        assert!(FixedTaps::new(2, vec![0], vec![3], vec![1, 1]).is_err());
        assert!(FixedTaps::new(2, vec![0], vec![1], vec![1]).is_err());
        assert!(FixedTaps::new(1, vec![0], vec![1], vec![1 << 24]).is_err());
        assert!(FixedTaps::new(1, vec![0], vec![1], vec![-(1 << 24) + 1]).is_ok());
    }
}

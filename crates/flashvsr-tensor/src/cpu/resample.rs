//! [`Tensor::resample_levels`](crate::Tensor::resample_levels) on the host: the CPU backend's op
//! and the engine's host copies of LQ frames both call it, and the CUDA kernel (resample.cu)
//! computes the same integers, so all agree bit for bit.

use rayon::prelude::*;

use crate::CanvasWindow;

/// A [`FixedTaps::table`](crate::FixedTaps::table) as the op reads it: rows of `columns` values.
#[derive(Clone, Copy, Debug)]
pub struct TapTable<'a> {
    pub values: &'a [f32],
    pub columns: usize,
}

impl TapTable<'_> {
    fn outputs(&self) -> usize {
        self.values.len().checked_div(self.columns).unwrap_or(0)
    }

    /// Output `i`'s first input and weights. Entries are integers; the casts saturate, as the
    /// kernel's conversions do.
    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let row = &self.values[i * self.columns..][..self.columns];
        let count = (row[1] as usize).min(self.columns - 2);
        (row[0] as usize, &row[2..2 + count])
    }
}

/// The source frames' shape: `(frames, height, width, channels)`.
pub type LevelsShape = (usize, usize, usize, usize);

/// One fixed-point pass at one output: Pillow's `clip8` of the weighted sum of the inputs from
/// `start` (`read(i)` for `i < len`; reads past the end repeat the last input), summed in
/// wrapping i32 like Pillow's C `int`.
fn pass(start: usize, weights: &[f32], len: usize, bits: u32, read: impl Fn(usize) -> i32) -> u8 {
    let last = len - 1;
    let start = start.min(last);
    let mut acc = 1i32 << (bits - 1);
    for (j, &w) in weights.iter().enumerate() {
        let v = read((start + j).min(last));
        acc = acc.wrapping_add(v.wrapping_mul(w as i32));
    }
    (acc >> bits).clamp(0, 255) as u8
}

/// `(c, n, H, W)` from levels `(n, h, w, c)`: see
/// [`Tensor::resample_levels`](crate::Tensor::resample_levels). Zeros where there is nothing to
/// resample from (an empty source or table; the tensor op refuses those).
pub fn resample_levels(
    levels: &[f32],
    (frames, height, width, channels): LevelsShape,
    taps_x: TapTable,
    taps_y: TapTable,
    window: CanvasWindow,
    bits: u32,
) -> Vec<f32> {
    let (out_w, out_h) = window.size;
    let mut out = vec![0.0f32; channels * frames * out_h * out_w];
    let (cols, rows) = (taps_x.outputs(), taps_y.outputs());
    let nothing = [out_w, out_h, height, width, cols, rows].contains(&0);
    if out.is_empty() || nothing || taps_x.columns < 2 || taps_y.columns < 2 || bits == 0 {
        return out;
    }
    let bits = bits.min(crate::resample::MAX_FIXED_POINT_BITS);
    let signed: Vec<f32> = (0..=255u8).map(|v| v as f32 / 255.0 * 2.0 - 1.0).collect();
    // The horizontal pass of every source row at the window's columns: `(n, h, W, c)` levels.
    let column_of = |x: usize| x.saturating_add(window.origin.0).min(cols - 1);
    let row_len = out_w * channels;
    let mut horizontal = vec![0u8; frames * height * row_len];
    horizontal
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(fr, out_row)| {
            let src = &levels[fr * width * channels..][..width * channels];
            for (x, px) in out_row.chunks_exact_mut(channels).enumerate() {
                let (start, weights) = taps_x.taps(column_of(x));
                for (c, o) in px.iter_mut().enumerate() {
                    *o = pass(start, weights, width, bits, |i| {
                        src[i * channels + c] as i32
                    });
                }
            }
        });
    // The vertical pass, one output row `(c, t, y)` at a time.
    out.par_chunks_mut(out_w)
        .enumerate()
        .for_each(|(index, out_row)| {
            let y = index % out_h;
            let (c, t) = (index / out_h / frames, index / out_h % frames);
            let (start, weights) = taps_y.taps(y.saturating_add(window.origin.1).min(rows - 1));
            let frame = &horizontal[t * height * row_len..][..height * row_len];
            for (x, o) in out_row.iter_mut().enumerate() {
                let v = pass(start, weights, height, bits, |r| {
                    frame[r * row_len + x * channels + c] as i32
                });
                *o = signed[v as usize];
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(usize, &[i32])], ksize: usize) -> Vec<f32> {
        rows.iter()
            .flat_map(|(start, w)| {
                let mut row = vec![*start as f32, w.len() as f32];
                row.extend(w.iter().map(|&v| v as f32));
                row.resize(2 + ksize, 0.0);
                row
            })
            .collect()
    }

    fn signed(v: u8) -> f32 {
        v as f32 / 255.0 * 2.0 - 1.0
    }

    #[test]
    fn one_tap_copies_place_the_source_on_the_window_with_replicated_edges() {
        // A 2×3 single-channel frame copied (weight 2^4, 4 bits), window from (1, 1), 4×3.
        let levels = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let x = table(&[(0, &[16]), (1, &[16]), (2, &[16])], 1);
        let y = table(&[(0, &[16]), (1, &[16])], 1);
        let window = CanvasWindow {
            origin: (1, 1),
            size: (4, 3),
        };
        let got = resample_levels(
            &levels,
            (1, 2, 3, 1),
            TapTable {
                values: &x,
                columns: 3,
            },
            TapTable {
                values: &y,
                columns: 3,
            },
            window,
            4,
        );
        let row: Vec<f32> = [50, 60, 60, 60].map(signed).to_vec();
        assert_eq!(got, [row.clone(), row.clone(), row].concat());
    }

    #[test]
    fn each_pass_rounds_and_clips_to_eight_bits() {
        // Horizontal: (8 + 200·24 − 100·8) >> 4 = 250, and (8 + 200·32) >> 4 = 400 → 255;
        // vertical (one row, weight 1.5): (8 + 250·24) >> 4 = 375 → 255, and the negative
        // (8 − 250·16) >> 4 → 0.
        let levels = [200.0, 100.0];
        let x = table(&[(0, &[24, -8]), (0, &[32])], 2);
        let y = table(&[(0, &[24]), (0, &[-16])], 1);
        let at = |ox, oy| {
            let window = CanvasWindow {
                origin: (ox, oy),
                size: (1, 1),
            };
            let taps_x = TapTable {
                values: &x,
                columns: 4,
            };
            let taps_y = TapTable {
                values: &y,
                columns: 3,
            };
            resample_levels(&levels, (1, 1, 2, 1), taps_x, taps_y, window, 4)[0]
        };
        assert_eq!(at(0, 0), signed(255));
        assert_eq!(at(1, 0), signed(255));
        assert_eq!(at(0, 1), signed(0));
    }

    #[test]
    fn frames_and_channels_go_to_their_planes() {
        // Two 1×1 frames of two channels, copied: (c, n, 1, 1) = [f0c0, f1c0, f0c1, f1c1].
        let levels = [1.0, 2.0, 3.0, 4.0];
        let copy = table(&[(0, &[2])], 1);
        let taps = TapTable {
            values: &copy,
            columns: 3,
        };
        let window = CanvasWindow {
            origin: (0, 0),
            size: (1, 1),
        };
        let got = resample_levels(&levels, (2, 1, 1, 2), taps, taps, window, 1);
        assert_eq!(got, [1, 3, 2, 4].map(signed).to_vec());
    }

    #[test]
    fn nothing_to_read_gives_zeros_not_a_panic() {
        let window = CanvasWindow {
            origin: (0, 0),
            size: (2, 2),
        };
        let empty = TapTable {
            values: &[],
            columns: 3,
        };
        let got = resample_levels(&[], (1, 0, 0, 3), empty, empty, window, 22);
        assert_eq!(got, vec![0.0; 12]);
    }
}

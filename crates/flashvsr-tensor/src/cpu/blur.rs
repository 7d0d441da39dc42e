//! The dilated 3×3 binomial blur of the wavelet colour fix (FLASHVSR.md §8). The one host
//! implementation: the CPU backend's `dilated_blur` and the model's host colour fix both call it,
//! and the CUDA kernel sums in the same order.

use rayon::prelude::*;

/// The separable binomial taps; the 3×3 kernel is their outer product, divided by 16.
const TAPS: [f32; 3] = [1.0, 2.0, 1.0];

/// Every `(h, w)` plane of `x` (planes back to back) blurred by `[1 2 1]ᵀ[1 2 1] / 16` with taps
/// `dilation` apart; a tap outside the plane reads the nearest border pixel (replicate padding by
/// `dilation`). Summed row by row of the kernel in f32 and divided by 16 at the end: the weights
/// are powers of two, so every product is exact and any backend summing in this order agrees.
pub fn dilated_blur(x: &[f32], h: usize, w: usize, dilation: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if h == 0 || w == 0 {
        return out;
    }
    let plane = h * w;
    out.par_chunks_mut(w)
        .enumerate()
        .for_each(|(row_index, out_row)| {
            let (p, y) = (row_index / h, row_index % h);
            let src = &x[p * plane..(p + 1) * plane];
            let rows = neighbours(y, h, dilation).map(|r| &src[r * w..(r + 1) * w]);
            for (col, o) in out_row.iter_mut().enumerate() {
                let cols = neighbours(col, w, dilation);
                let mut acc = 0.0f32;
                for (ky, row) in TAPS.iter().zip(rows) {
                    for (kx, &c) in TAPS.iter().zip(&cols) {
                        acc += ky * kx * row[c];
                    }
                }
                *o = acc / 16.0;
            }
        });
    out
}

/// The positions `i − d`, `i`, `i + d` clamped to `0..len`.
fn neighbours(i: usize, len: usize, d: usize) -> [usize; 3] {
    [i.saturating_sub(d), i, i.saturating_add(d).min(len - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, tap by tap: a clamped read for each of the nine taps.
    fn reference(z: &[f32], h: usize, w: usize, d: usize) -> Vec<f32> {
        let at = |y: isize, x: isize| {
            z[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize]
        };
        let d = d as isize;
        let mut out = vec![0.0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0f32;
                for (i, ky) in TAPS.iter().enumerate() {
                    for (j, kx) in TAPS.iter().enumerate() {
                        let (dy, dx) = ((i as isize - 1) * d, (j as isize - 1) * d);
                        acc += ky * kx * at(y as isize + dy, x as isize + dx);
                    }
                }
                out[y * w + x] = acc / 16.0;
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_the_tap_by_tap_definition_bit_for_bit() {
        // Dilations below, at and beyond the plane's sides: replicate borders everywhere.
        for (h, w) in [(1, 1), (1, 5), (4, 1), (5, 7), (9, 4)] {
            let z = values(h * w, 7);
            for d in [1, 2, 3, 4, 8, 16] {
                assert_eq!(
                    dilated_blur(&z, h, w, d),
                    reference(&z, h, w, d),
                    "{h}×{w}, dilation {d}"
                );
            }
        }
    }

    #[test]
    fn a_dilation_past_the_plane_reads_only_its_borders() {
        let (h, w) = (5, 7);
        let z = values(h * w, 3);
        let edges = reference(&z, h, w, 7);
        assert_eq!(dilated_blur(&z, h, w, 7), edges);
        assert_eq!(dilated_blur(&z, h, w, usize::MAX), edges);
    }

    #[test]
    fn blurs_each_plane_on_its_own() {
        let (h, w) = (3, 4);
        let planes = values(3 * h * w, 11);
        let out = dilated_blur(&planes, h, w, 2);
        for p in 0..3 {
            let plane = &planes[p * h * w..(p + 1) * h * w];
            assert_eq!(&out[p * h * w..(p + 1) * h * w], reference(plane, h, w, 2));
        }
    }

    #[test]
    fn keeps_a_constant_plane_and_a_vertical_ramp_away_from_the_border() {
        let (h, w) = (6, 5);
        assert!(dilated_blur(&[0.25; 30], h, w, 2)
            .iter()
            .all(|&v| v == 0.25));
        // A linear ramp is kept by a symmetric kernel wherever no tap is clamped.
        let ramp: Vec<f32> = (0..h * w).map(|i| (i / w) as f32).collect();
        let out = dilated_blur(&ramp, h, w, 1);
        for y in 1..h - 1 {
            assert!(out[y * w..(y + 1) * w].iter().all(|&v| v == y as f32));
        }
        // Row 0 reads row 0 for its upper taps: (1·0 + 2·0 + 1·1) / 4.
        assert!(out[..w].iter().all(|&v| v == 0.25));
    }

    #[test]
    fn an_empty_plane_gives_an_empty_output() {
        assert!(dilated_blur(&[], 0, 5, 1).is_empty());
        assert!(dilated_blur(&[], 3, 0, 1).is_empty());
    }
}

//! 3-D rotary position tables: per head, the 64 rotation pairs are split 22 / 21 / 21 between the
//! latent frame, the token row and the token column. Angles are computed analytically in f64 for
//! any position, so there is no 1024-position limit (spec §4.7; identical to the reference's table
//! for every position it can represent).

use flashvsr_tensor::{BackendRef, Tensor};
use rayon::prelude::*;

use super::config::HEAD_DIM;
use crate::Result;

const THETA: f64 = 10000.0;
const PAIRS: usize = HEAD_DIM / 2;
const TIME_PAIRS: usize = 22;
const SPACE_PAIRS: usize = 21;

fn frequencies(pairs: usize, dims: usize) -> Vec<f64> {
    (0..pairs)
        .map(|m| THETA.powf(-2.0 * m as f64 / dims as f64))
        .collect()
}

/// cos and sin of `position · frequency` for positions `0..=last`, `(last + 1, pairs)` each.
/// Row `at` of a `pairs`-wide axis table.
fn pieces(table: &(Vec<f32>, Vec<f32>), at: usize, pairs: usize) -> (&[f32], &[f32]) {
    let range = at * pairs..(at + 1) * pairs;
    (&table.0[range.clone()], &table.1[range])
}

fn axis_table(freqs: &[f64], last: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..=last {
        for t in freqs {
            let a = p as f64 * t;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// cos/sin tables, `(tokens, 64)`, for tokens in the order given by `positions` (frame, row, col).
/// Each position's row is assembled from per-axis tables (a chunk has a few frames, rows and
/// columns, but thousands of tokens), and the upload is queued behind the device's work: this
/// runs once per chunk on the engine's thread, which must not stall the device.
pub fn tables(
    backend: &BackendRef,
    positions: impl Iterator<Item = (usize, usize, usize)>,
) -> Result<(Tensor, Tensor)> {
    let positions: Vec<(usize, usize, usize)> = positions.collect();
    let last = |axis: fn(&(usize, usize, usize)) -> usize| positions.iter().map(axis).max();
    let (Some(f_max), Some(i_max), Some(j_max)) = (last(|p| p.0), last(|p| p.1), last(|p| p.2))
    else {
        return Ok((
            Tensor::from_slice(backend, &[], &[0, PAIRS])?,
            Tensor::from_slice(backend, &[], &[0, PAIRS])?,
        ));
    };
    let time = axis_table(&frequencies(TIME_PAIRS, 2 * TIME_PAIRS), f_max);
    let space_freqs = frequencies(SPACE_PAIRS, 2 * SPACE_PAIRS);
    let rows = axis_table(&space_freqs, i_max);
    let cols = axis_table(&space_freqs, j_max);
    // The rows in parallel: a first chunk at 1080p has 51,840 tokens, and the engine thread
    // builds them while the device waits for its first block.
    let mut cos = vec![0.0f32; positions.len() * PAIRS];
    let mut sin = vec![0.0f32; positions.len() * PAIRS];
    cos.par_chunks_mut(PAIRS)
        .zip(sin.par_chunks_mut(PAIRS))
        .zip(positions.par_iter())
        .with_min_len(1024)
        .for_each(|((c, s), &(f, i, j))| {
            let parts = [
                (0, pieces(&time, f, TIME_PAIRS)),
                (TIME_PAIRS, pieces(&rows, i, SPACE_PAIRS)),
                (TIME_PAIRS + SPACE_PAIRS, pieces(&cols, j, SPACE_PAIRS)),
            ];
            for (start, (pc, ps)) in parts {
                c[start..start + pc.len()].copy_from_slice(pc);
                s[start..start + ps.len()].copy_from_slice(ps);
            }
        });
    let shape = [positions.len(), PAIRS];
    Ok((
        Tensor::from_slice_queued(backend, &cos, &shape)?,
        Tensor::from_slice_queued(backend, &sin, &shape)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashvsr_tensor::cpu::CpuBackend;

    #[test]
    fn rows_are_each_tokens_angles_in_its_order() {
        // More tokens than one parallel piece (1,024 rows), in a scrambled order.
        let positions: Vec<(usize, usize, usize)> = (0..3000)
            .map(|n| ((n * 7) % 5 + 2, (n * 13) % 31, (n * 29) % 47))
            .collect();
        let (cos, sin) = tables(&CpuBackend::new_ref(), positions.iter().copied()).unwrap();
        assert_eq!(cos.shape(), &[positions.len(), PAIRS]);
        let (cos, sin) = (cos.to_vec().unwrap(), sin.to_vec().unwrap());
        let time = frequencies(TIME_PAIRS, 2 * TIME_PAIRS);
        let space = frequencies(SPACE_PAIRS, 2 * SPACE_PAIRS);
        for (n, &(f, i, j)) in positions.iter().enumerate() {
            let angles = time
                .iter()
                .map(|t| f as f64 * t)
                .chain(space.iter().map(|t| i as f64 * t))
                .chain(space.iter().map(|t| j as f64 * t));
            for (m, a) in angles.enumerate() {
                assert_eq!(cos[n * PAIRS + m].to_bits(), (a.cos() as f32).to_bits());
                assert_eq!(sin[n * PAIRS + m].to_bits(), (a.sin() as f32).to_bits());
            }
        }
    }
}

//! 3-D rotary position tables: per head, the 64 rotation pairs are split 22 / 21 / 21 between the
//! latent frame, the token row and the token column. Angles are computed analytically in f64 for
//! any position, so there is no 1024-position limit (spec §4.7; identical to the reference's table
//! for every position it can represent).

use flashvsr_tensor::{BackendRef, Tensor};

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

/// cos/sin tables, `(tokens, 64)`, for tokens in the order given by `positions` (frame, row, col).
pub fn tables(
    backend: &BackendRef,
    positions: impl Iterator<Item = (usize, usize, usize)>,
) -> Result<(Tensor, Tensor)> {
    let ft = frequencies(TIME_PAIRS, 2 * TIME_PAIRS);
    let fs = frequencies(SPACE_PAIRS, 2 * SPACE_PAIRS);
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    let mut rows = 0;
    for (f, i, j) in positions {
        let angles = ft
            .iter()
            .map(|t| f as f64 * t)
            .chain(fs.iter().map(|t| i as f64 * t))
            .chain(fs.iter().map(|t| j as f64 * t));
        for a in angles {
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
        rows += 1;
    }
    Ok((
        Tensor::from_slice(backend, &cos, &[rows, PAIRS])?,
        Tensor::from_slice(backend, &sin, &[rows, PAIRS])?,
    ))
}

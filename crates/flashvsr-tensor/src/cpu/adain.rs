//! AdaIN colour transfer per plane (spec §8): each plane of `x` gets the mean and standard
//! deviation of the same plane of `reference`, then is clamped to [-1, 1]. Statistics in f64,
//! population variance plus 1e-5.

use rayon::prelude::*;

const EPS: f64 = 1e-5;

/// `(mean, √(var + 1e-5))` of one plane, each sum in order.
pub fn plane_mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, (var + EPS).sqrt())
}

/// `(y − μ_y)/σ_y · σ_r + μ_r`, clamped, in place on one plane.
pub fn transfer(y: &mut [f32], (my, sy): (f64, f64), (mr, sr): (f64, f64)) {
    for v in y.iter_mut() {
        *v = (((*v as f64 - my) / sy * sr + mr) as f32).clamp(-1.0, 1.0);
    }
}

/// Every `plane`-sized plane of `x` matched to the same plane of `reference`; planes in parallel.
pub fn adain(x: &[f32], reference: &[f32], plane: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    if plane == 0 {
        return out;
    }
    out.par_chunks_mut(plane)
        .zip(reference.par_chunks(plane))
        .for_each(|(y, r)| {
            let stats = plane_mean_std(y);
            transfer(y, stats, plane_mean_std(r));
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plane_takes_its_reference_planes_mean_and_deviation() {
        // Plane 0: [-0.3, 0.1] (mean -0.1, σ ≈ 0.2) onto [0.4, 0.6] (mean 0.5, σ ≈ 0.1).
        // Plane 1: [0, 1] onto [0.9, 2.9] gives [0.9, 2.9], the second clamped to 1.
        let x = [-0.3, 0.1, 0.0, 1.0];
        let reference = [0.4, 0.6, 0.9, 2.9];
        let y = adain(&x, &reference, 2);
        for (got, want) in y.iter().zip([0.4, 0.6, 0.9, 1.0]) {
            assert!((got - want).abs() < 1e-3, "{y:?}");
        }
        assert_eq!(y[3], 1.0);
        let (mean, std) = plane_mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((mean, std), (2.5, (1.25 + EPS).sqrt()));
    }
}

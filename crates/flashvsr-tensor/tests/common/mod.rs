//! Helpers shared by the integration tests.

/// Deterministic values in [centre − 1, centre + 1).
pub fn values(n: usize, seed: u32, centre: f32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13) ^ seed;
            (h % 20_011) as f32 / 10_005.5 - 1.0 + centre
        })
        .collect()
}

//! The seeded normal generator of noise and random weights: SplitMix64 counters and Box–Muller in
//! f64, so that any value is computed from its index alone (parallel fills, any prefix, any chunk
//! of a stream). [`Backend::random_normal`](crate::Backend::random_normal) makes the same values
//! on a device.

/// SplitMix64: a tiny counter-based generator with good statistical quality.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 53 random bits in (0, 1]: never 0, so the logarithm of Box–Muller is finite.
fn uniform(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// The counter base of stream `stream` of `seed`: value pair i uses counters base + 2i, base + 2i + 1.
pub fn stream_base(seed: u64, stream: u64) -> u64 {
    splitmix(seed ^ splitmix(stream.wrapping_mul(0xD1B5_4A32_D192_ED03)))
}

/// Values `2i` and `2i + 1` of the stream at `base`, times `std` (rounded to f32 first, then scaled
/// in f32).
pub fn normal_pair(base: u64, i: u64, std: f32) -> (f32, f32) {
    let u1 = uniform(splitmix(base.wrapping_add(2 * i)));
    let u2 = uniform(splitmix(base.wrapping_add(2 * i + 1)));
    let r = (-2.0 * u1.ln()).sqrt();
    let (sin, cos) = sin_cos(std::f64::consts::TAU * u2);
    ((r * cos) as f32 * std, (r * sin) as f32 * std)
}

/// Fills `out` with the stream at `base` times `std`, in parallel.
pub fn normal_fill(base: u64, std: f32, out: &mut [f32]) {
    use rayon::prelude::*;
    out.par_chunks_mut(2).enumerate().for_each(|(i, pair)| {
        let (a, b) = normal_pair(base, i as u64, std);
        pair[0] = a;
        if let Some(second) = pair.get_mut(1) {
            *second = b;
        }
    });
}

/// Fills `out` with values `first..first + out.len()` of the stream at `base` times `std`, on the
/// calling thread: the same values as the same range of [`normal_fill`]'s output. For callers that
/// fill many pieces of streams in parallel themselves.
pub fn normal_fill_from(base: u64, std: f32, first: u64, out: &mut [f32]) {
    let mut rest = out;
    let mut next = first;
    if next % 2 == 1 {
        let Some((head, tail)) = rest.split_first_mut() else {
            return;
        };
        *head = normal_pair(base, next / 2, std).1;
        rest = tail;
        next += 1;
    }
    // `next` is even from here: value `next + k` is half of pair `(next + k) / 2`.
    let whole_pairs = (rest.len() / 2) as u64;
    let mut pairs = rest.chunks_exact_mut(2);
    for (k, pair) in (&mut pairs).enumerate() {
        let (a, b) = normal_pair(base, next / 2 + k as u64, std);
        pair[0] = a;
        pair[1] = b;
    }
    if let [last] = pairs.into_remainder() {
        *last = normal_pair(base, next / 2 + whole_pairs, std).0;
    }
}

/// `(sin x, cos x)`. glibc's `sincos` shares its reduction between the two and returns exactly
/// what `sin` and `cos` return (checked bit for bit on 2·10⁸ angles), at about half the cost of
/// the two calls: it is most of the time of building random release-size weights on the host.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sin_cos(x: f64) -> (f64, f64) {
    extern "C" {
        fn sincos(x: f64, sin: *mut f64, cos: *mut f64);
    }
    let (mut s, mut c) = (0.0, 0.0);
    // SAFETY: glibc writes the two outputs and nothing else.
    unsafe { sincos(x, &mut s, &mut c) };
    (s, c)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn sin_cos(x: f64) -> (f64, f64) {
    x.sin_cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_from_any_value_are_slices_of_the_whole_fill() {
        let (std, base) = (0.37f32, stream_base(3, 9));
        let mut whole = vec![0.0f32; 1_001];
        normal_fill(base, std, &mut whole);
        for (first, len) in [
            (0, 1_001),
            (1, 1_000),
            (2, 7),
            (3, 8),
            (5, 0),
            (999, 2),
            (1_000, 1),
        ] {
            let mut part = vec![f32::NAN; len];
            normal_fill_from(base, std, first as u64, &mut part);
            let want = &whole[first..first + len];
            let same = part
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "values {first}..{}", first + len);
        }
    }

    #[test]
    fn fills_are_the_plain_box_muller_values_bit_for_bit() {
        let std = 0.37f32;
        let base = stream_base(11, 5);
        let mut got = vec![0.0f32; 20_001];
        normal_fill(base, std, &mut got);
        for (i, &v) in got.iter().enumerate() {
            let pair = (i / 2) as u64;
            let u1 = uniform(splitmix(base.wrapping_add(2 * pair)));
            let u2 = uniform(splitmix(base.wrapping_add(2 * pair + 1)));
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            let z = if i % 2 == 0 { r * a.cos() } else { r * a.sin() };
            assert_eq!(v.to_bits(), (z as f32 * std).to_bits(), "value {i}");
        }
    }
}

//! The LQ frames' resampling of source levels onto the canvas (`resample_levels`) against the
//! CPU: bit for bit, as both do the same integer arithmetic. Pillow's bicubic tables (the real
//! use: ×4 at 1408×768, odd sources on a padded canvas, a centre crop, a tile's window inside the
//! canvas, ×2 and ×3), then random tables whose sums wrap around i32 and clip both ways, with
//! entries that point past the source (clamped alike) and channel counts other than 3. Outputs
//! are poisoned, so a pixel the kernel skips fails.

use flashvsr_media::resize::{pil_bicubic_taps, PIL_PRECISION_BITS};
use flashvsr_tensor::{CanvasWindow, FixedTaps};

use super::{Input, Suite, EXACT};

/// Pillow's table from `n_in` to `n_out` samples, as a suite input.
fn pil_table(n_in: usize, n_out: usize) -> Input {
    let t = pil_bicubic_taps(n_in, n_out);
    let t = FixedTaps::new(t.ksize, t.start, t.count, t.coeffs).expect("Pillow taps fit");
    (t.table(), t.table_shape().to_vec())
}

/// `(n, h, w, c)` integer levels 0 … 255.
fn levels(s: &mut Suite, shape: [usize; 4]) -> Input {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| ((s.rng.uniform() * 0.5 + 0.5) * 256.0).floor().min(255.0))
        .collect();
    (v, shape.to_vec())
}

fn window(origin: (usize, usize), size: (usize, usize)) -> CanvasWindow {
    CanvasWindow { origin, size }
}

fn run_case(s: &mut Suite, name: &str, inputs: [Input; 3], w: CanvasWindow, bits: u32) {
    s.case(name, EXACT, &inputs, &|t| {
        t[0].resample_levels(&t[1], &t[2], w, bits)
    });
}

pub fn run(s: &mut Suite) {
    let bits = PIL_PRECISION_BITS;
    // (source w, h), scale, frames, window.
    let pillow = [
        ((352, 192), 4, 4, window((0, 0), (1408, 768))),
        ((37, 23), 4, 3, window((0, 0), (256, 128))),
        ((45, 37), 4, 2, window((26, 10), (128, 128))),
        ((352, 192), 4, 2, window((512, 256), (384, 512))),
        ((131, 67), 2, 2, window((3, 3), (256, 128))),
        ((43, 45), 3, 2, window((0, 0), (256, 256))),
    ];
    for ((w, h), scale, n, win) in pillow {
        let name = format!(
            "resample_levels pil {w}x{h} x{scale} n{n} at {:?} {:?}",
            win.origin, win.size
        );
        let inputs = [
            levels(s, [n, h, w, 3]),
            pil_table(w, w * scale),
            pil_table(h, h * scale),
        ];
        run_case(s, &name, inputs, win, bits);
    }
    random_tables(s);
}

/// A table of `outputs` rows of `ksize` random weights below `2^max_bits`, each row starting
/// anywhere in `0 .. n_in + 2` (past the end: clamped reads) with up to `ksize + 1` taps (more
/// than the row holds: clamped).
fn random_table(s: &mut Suite, n_in: usize, outputs: usize, ksize: usize, max_bits: u32) -> Input {
    let mut t = Vec::with_capacity(outputs * (2 + ksize));
    let pick = |s: &mut Suite, n: usize| ((s.rng.uniform() * 0.5 + 0.5) * n as f32) as usize;
    for _ in 0..outputs {
        t.push(pick(s, n_in + 2) as f32);
        t.push(pick(s, ksize + 2) as f32);
        for _ in 0..ksize {
            t.push((s.rng.uniform() * (1u32 << max_bits) as f32).trunc());
        }
    }
    (t, vec![outputs, 2 + ksize])
}

fn random_tables(s: &mut Suite) {
    // (source w, h, channels), resampled (w, h), taps, weight bits, fixed-point bits, window.
    let cases = [
        ((9, 7, 3), (30, 20), 5, 23, 22, window((2, 1), (32, 24))),
        ((16, 5, 1), (16, 11), 3, 12, 8, window((0, 0), (16, 11))),
        ((6, 6, 4), (13, 17), 7, 20, 30, window((5, 9), (9, 9))),
        ((4, 3, 2), (8, 6), 2, 3, 1, window((7, 5), (3, 2))),
    ];
    for (i, ((w, h, c), (ow, oh), k, max_bits, bits, win)) in cases.into_iter().enumerate() {
        let name = format!("resample_levels random tables {i}: c{c} k{k} bits {bits}");
        let inputs = [
            levels(s, [2, h, w, c]),
            random_table(s, w, ow, k, max_bits),
            random_table(s, h, oh, k, max_bits),
        ];
        run_case(s, &name, inputs, win, bits);
    }
    // Levels off the 8-bit range convert alike (truncated and saturated).
    let mut off = levels(s, [1, 5, 6, 3]);
    for (i, v) in off.0.iter_mut().enumerate() {
        *v = *v * 1e7 * if i % 2 == 0 { -1.3 } else { 0.37 };
    }
    let inputs = [off, pil_table(6, 24), pil_table(5, 20)];
    let name = "resample_levels levels off the 8-bit range";
    run_case(
        s,
        name,
        inputs,
        window((0, 0), (24, 20)),
        PIL_PRECISION_BITS,
    );
}

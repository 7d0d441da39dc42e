//! The wavelet colour fix's dilated blur against the CPU: bit for bit (power-of-two weights make
//! every product exact, and both sum in the same order), on planes smaller and larger than the
//! dilation, on a full 1408×768 frame, on a bf16-stored input, and in the colour fix's chain
//! `clamp(y + B(x − y), −1, 1)` over a chunk.

use flashvsr_tensor::{BackendRef, Result, Tensor};

use super::{round_bf16, Suite, EXACT};

/// The five blurs of the wavelet fix, and the fix of decoded frames `y` against LQ frames `x`.
fn wavelet_fix(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut low = x.sub(y)?;
    for level in 0..5 {
        low = low.dilated_blur(1 << level)?;
    }
    y.add(&low)?.clamp(-1.0, 1.0)
}

pub fn run(s: &mut Suite, fast: &BackendRef) {
    for shape in [[3, 2, 37, 53], [3, 1, 768, 1408]] {
        let x = s.input(&shape, 1.0);
        for d in [1, 2, 16] {
            let name = format!("dilated_blur {shape:?} dilation {d}");
            s.case(&name, EXACT, std::slice::from_ref(&x), &|t| {
                t[0].dilated_blur(d)
            });
        }
    }
    // Dilations past the plane's sides (every tap a border read), and a rank-2 plane.
    let x = s.input(&[5, 3], 1.0);
    for d in [4, 1000] {
        let name = format!("dilated_blur [5, 3] dilation {d}");
        s.case(&name, EXACT, std::slice::from_ref(&x), &|t| {
            t[0].dilated_blur(d)
        });
    }
    let (y, x) = (s.input(&[3, 8, 40, 72], 1.2), s.input(&[3, 8, 40, 72], 1.0));
    // Sums of up to five blurs apart from the CPU only if a blur is; the add's rounding is the
    // same on both, so this is exact too.
    s.case(
        "wavelet colour fix chain [3, 8, 40, 72]",
        EXACT,
        &[y, x],
        &|t| wavelet_fix(&t[0], &t[1]),
    );
    bf16_input(s, fast);
}

/// A bf16-stored input (widened by the op's input path) blurs to the CPU's blur of the rounded
/// values.
fn bf16_input(s: &mut Suite, fast: &BackendRef) {
    let name = "dilated_blur of a bf16-stored input";
    if s.skip(name) {
        return;
    }
    s.cases += 1;
    let (values, shape) = s.input(&[3, 2, 37, 53], 1.0);
    let rounded: Vec<f32> = values.iter().map(|&v| round_bf16(v)).collect();
    let got = Tensor::from_slice(fast, &values, &shape)
        .and_then(|t| t.compact()?.dilated_blur(2)?.to_vec());
    let want =
        Tensor::from_slice(&s.cpu, &rounded, &shape).and_then(|t| t.dilated_blur(2)?.to_vec());
    match (got, want) {
        (Err(e), _) => s.fail(name, format!("CUDA error: {e}")),
        (_, Err(e)) => s.fail(name, format!("CPU error: {e}")),
        (Ok(g), Ok(w)) if g != w => {
            let differ = g.iter().zip(&w).filter(|(a, b)| a != b).count();
            s.fail(name, format!("{differ} of {} values differ", w.len()));
        }
        (Ok(_), Ok(_)) => println!("ok    {name:<44} bit for bit"),
    }
}

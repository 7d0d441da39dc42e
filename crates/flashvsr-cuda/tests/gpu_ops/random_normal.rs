//! Random weights made on the device (`Backend::random_normal`) against the host generator
//! (`flashvsr_tensor::random::normal_fill`): the same counters and formula, so every value is the
//! host's except where the device's f64 log or sincos rounds its last bit differently and the f32
//! result sat on a rounding boundary. Odd lengths check the lone last value; poisoned outputs
//! check that every value is written.

use flashvsr_tensor::random::{normal_fill, stream_base};
use flashvsr_tensor::Tensor;

use super::Suite;

pub fn run(s: &mut Suite) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !"random normal".contains(f.as_str()))
    {
        return;
    }
    for (len, std, stream) in [
        (1usize, 1.0f32, 0u64),
        (4_097, 0.05, 7),
        (3_000_001, 0.02, 11),
    ] {
        let name = format!("random normal n{len} std {std}");
        s.cases += 1;
        let base = stream_base(0, stream);
        let mut want = vec![0.0f32; len];
        normal_fill(base, std, &mut want);
        let got = match s.gpu.random_normal(base, std, len) {
            None => {
                s.fail(&name, "the CUDA backend has no generator".into());
                continue;
            }
            Some(made) => made
                .and_then(|b| Tensor::from_buffer(&s.gpu, b, &[len]))
                .and_then(|t| t.to_vec()),
        };
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                s.fail(&name, format!("CUDA error: {e}"));
                continue;
            }
        };
        let differing = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / w.abs().max(1e-30))
            .fold(0.0f32, f32::max);
        // One f32 ulp is a relative 1.2e-7; at most one value in 10⁵ may differ.
        if got.iter().any(|v| !v.is_finite()) || worst > 2.4e-7 || differing * 100_000 > len {
            s.fail(
                &name,
                format!("{differing} values differ, worst relative {worst:.2e}"),
            );
        } else {
            println!("ok    {name:<44} {differing} of {len} differ in the last bit");
        }
    }
}

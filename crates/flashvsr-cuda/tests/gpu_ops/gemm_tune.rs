//! The fast mode's GEMM tuning (`CudaOptions::gemm_tune`, gemm.rs): a shape's first call times
//! cuBLASLt's candidates and keeps one whose output has the heuristic's bits. Each fused GEMM of
//! the DiT (bias, GELU with its bf16 output, residual) at a size that is tuned must give the same
//! bits on a tuning backend as on one without tuning, at the first call (which tunes) and later
//! ones (the tuned algorithm), and stay close to the CPU.

use flashvsr_cuda::{CudaBackend, CudaOptions};
use flashvsr_tensor::{BackendRef, HostData, Result, Tensor};

use super::{rel_l2, round_bf16, Suite};

/// bf16 inputs against the CPU on the rounded inputs, relative L2 (fp32 accumulation in another
/// order; the GELU output is rounded to bf16).
const VS_CPU: f64 = 5e-3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fused {
    Bias,
    Gelu,
    Residual,
}

fn gemm(
    backend: &BackendRef,
    fused: Fused,
    (x, w, b, r): (&[f32], &[f32], &[f32], &[f32]),
    (m, n, k): (usize, usize, usize),
) -> Result<HostData> {
    let wt = Tensor::from_slice(backend, w, &[n, k])?.compact()?;
    let xt = Tensor::from_slice(backend, x, &[m, k])?;
    let bt = Tensor::from_slice(backend, b, &[n])?;
    let y = match fused {
        Fused::Bias => xt.linear(&wt, Some(&bt))?,
        Fused::Gelu => xt.linear_gelu(&wt, Some(&bt))?,
        Fused::Residual => {
            xt.linear_add(&wt, Some(&bt), &Tensor::from_slice(backend, r, &[m, n])?)?
        }
    };
    y.to_host_data()
}

fn bits(d: &HostData) -> Vec<u32> {
    match d {
        HostData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        HostData::Bf16(v) => v.iter().map(|&x| x as u32).collect(),
    }
}

pub fn run(s: &mut Suite, ordinal: usize, options: &CudaOptions) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !"gemm tuning".contains(f.as_str()))
    {
        return;
    }
    let fast = options.clone().with_fast_mode(true);
    let backends = CudaBackend::create(
        ordinal,
        CudaOptions {
            gemm_tune: true,
            ..fast.clone()
        },
    )
    .and_then(|tuned| Ok((tuned, CudaBackend::create(ordinal, fast)?)));
    let (tuned, plain): (BackendRef, BackendRef) = match backends {
        Ok((t, p)) => (t, p),
        Err(e) => {
            s.fail("gemm tuning", format!("backend: {e}"));
            return;
        }
    };
    // 2048 tokens of the DiT's widths: above the tuning threshold (4·2³⁰ multiply-adds).
    let (m, d, f) = (2048, 1536, 8960);
    for (fused, n, k) in [
        (Fused::Bias, 3 * d, d),
        (Fused::Gelu, f, d),
        (Fused::Residual, d, f),
        (Fused::Residual, d, d),
    ] {
        let name = format!("gemm tuning {fused:?} {m}x{k} · {n}x{k}ᵀ");
        s.cases += 1;
        let x = s.rng.vec(m * k, 1.0);
        let w = s.rng.vec(n * k, 0.05);
        let b = s.rng.vec(n, 0.5);
        let r = s.rng.vec(m * n, 1.0);
        let inputs = (&x[..], &w[..], &b[..], &r[..]);
        let runs = (|| -> Result<_> {
            let want = gemm(&plain, fused, inputs, (m, n, k))?;
            let first = gemm(&tuned, fused, inputs, (m, n, k))?;
            let again = gemm(&tuned, fused, inputs, (m, n, k))?;
            let rounded = |v: &[f32]| v.iter().map(|&x| round_bf16(x)).collect::<Vec<_>>();
            let cpu = gemm(
                &s.cpu,
                fused,
                (&rounded(&x), &rounded(&w), &b, &r),
                (m, n, k),
            )?;
            Ok((want, first, again, cpu))
        })();
        let (want, first, again, cpu) = match runs {
            Ok(r) => r,
            Err(e) => {
                s.fail(&name, format!("error: {e}"));
                continue;
            }
        };
        let mut problems = Vec::new();
        for (which, got) in [("first call", &first), ("second call", &again)] {
            let (g, w) = (bits(got), bits(&want));
            let differing = g.iter().zip(&w).filter(|(a, b)| a != b).count();
            if g.len() != w.len() || differing > 0 {
                problems.push(format!(
                    "{which}: {differing} of {} values differ from the untuned GEMM's bits",
                    w.len()
                ));
            }
        }
        let cpu = match fused {
            Fused::Gelu => cpu.to_f32().iter().map(|&v| round_bf16(v)).collect(),
            _ => cpu.to_f32(),
        };
        let (err, nan) = rel_l2(&want.to_f32(), &cpu);
        if nan > 0 || err > VS_CPU {
            problems.push(format!(
                "vs CPU: rel L2 {err:.3e} (tol {VS_CPU:.0e}), {nan} NaN"
            ));
        }
        if problems.is_empty() {
            println!("ok    {name:<44} same bits as untuned; vs CPU {err:.2e}");
        } else {
            s.fail(&name, problems.join("; "));
        }
    }
}

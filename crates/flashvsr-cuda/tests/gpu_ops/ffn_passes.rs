//! The DiT's feed-forward net in row passes (`Tensor::modulated_ffn`): the CUDA backend runs the
//! passes on the stream's rows in place (no narrow, no cat). Its output must have the bits, in
//! the storage, of the composed ops on the same device (`modulated_ffn_composed`: narrow,
//! modulate, linear_gelu, linear_add, cat), in the exact mode and in the fast mode (bf16
//! weights, GEMM tuning on) at a multi-pass size of the DiT's width whose GEMMs are tuned; and
//! be close to the CPU's.

use std::sync::Arc;

use flashvsr_cuda::{CudaBackend, CudaOptions};
use flashvsr_tensor::{modulated_ffn_composed, BackendRef, HostData, ModulatedFfn, Result, Tensor};

use super::bits::difference;
use super::{rel_l2, Suite};

const EPS: f32 = 1e-6;
/// The exact mode against the CPU, relative L2 (fp32 GEMMs summing in other orders).
const EXACT_VS_CPU: f64 = 1e-5;

struct Case {
    tokens: usize,
    dim: usize,
    hidden: usize,
    pass_rows: usize,
    /// x, shift, scale, up weight, up bias, down weight, down bias.
    values: [Vec<f32>; 7],
}

impl Case {
    fn new(s: &mut Suite, tokens: usize, dim: usize, hidden: usize, pass_rows: usize) -> Case {
        let up_scale = 1.0 / (dim as f32).sqrt();
        let down_scale = 1.0 / (hidden as f32).sqrt();
        Case {
            tokens,
            dim,
            hidden,
            pass_rows,
            values: [
                s.rng.normal_vec(tokens * dim, 1.0),
                s.rng.vec(dim, 0.5),
                s.rng.vec(dim, 0.5),
                s.rng.vec(hidden * dim, up_scale),
                s.rng.vec(hidden, 0.1),
                s.rng.vec(dim * hidden, down_scale),
                s.rng.vec(dim, 0.1),
            ],
        }
    }

    fn name(&self, mode: &str) -> String {
        format!(
            "ffn passes {mode} [{}, {}]→{} by {}",
            self.tokens, self.dim, self.hidden, self.pass_rows
        )
    }

    /// The output as stored, by the backend's `modulated_ffn` (`composed`: by the composed ops).
    fn run(&self, backend: &BackendRef, compact: bool, composed: bool) -> Result<HostData> {
        let [x, shift, scale, up_w, up_b, down_w, down_b] = &self.values;
        let (dim, hidden) = (self.dim, self.hidden);
        let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(backend, v, shape);
        let weight = |v: &[f32], shape: &[usize]| -> Result<Tensor> {
            let w = t(v, shape)?;
            if compact {
                w.compact()
            } else {
                Ok(w)
            }
        };
        let x = t(x, &[self.tokens, dim])?;
        let (shift, scale) = (t(shift, &[dim])?, t(scale, &[dim])?);
        let up = (weight(up_w, &[hidden, dim])?, t(up_b, &[hidden])?);
        let down = (weight(down_w, &[dim, hidden])?, t(down_b, &[dim])?);
        let ffn = ModulatedFfn {
            shift: &shift,
            scale: &scale,
            eps: EPS,
            up: (&up.0, &up.1),
            down: (&down.0, &down.1),
        };
        let y = if composed {
            let buffer = modulated_ffn_composed(&x, &ffn, self.pass_rows)?;
            Tensor::from_buffer(backend, buffer, x.shape())?
        } else {
            x.modulated_ffn(&ffn, self.pass_rows)?
        };
        y.to_host_data()
    }
}

/// What is wrong with the backend's `modulated_ffn` of `case`: whether it ran in place as
/// `in_place` says it should, its bits against the composed ops, its distance to `cpu`.
fn problems(
    case: &Case,
    backend: &Arc<CudaBackend>,
    fast: bool,
    in_place: bool,
    cpu: Option<&HostData>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let probe = Tensor::zeros(&(backend.clone() as BackendRef), &[case.tokens, case.dim])?;
    if backend.modulated_ffn_runs_in_place(&probe, case.hidden, case.pass_rows) != in_place {
        problems.push(format!("runs in place: want {in_place}"));
    }
    let dyn_backend: BackendRef = backend.clone();
    let got = case.run(&dyn_backend, fast, false)?;
    let want = case.run(&dyn_backend, fast, true)?;
    if let Some(d) = difference(&got, &want) {
        problems.push(format!("vs the composed ops: {d}"));
    }
    // Twice: the second call of each GEMM shape takes the tuned algorithm.
    let again = case.run(&dyn_backend, fast, false)?;
    if let Some(d) = difference(&again, &want) {
        problems.push(format!("second call vs the composed ops: {d}"));
    }
    if let Some(cpu) = cpu {
        let (err, nan) = rel_l2(&got.to_f32(), &cpu.to_f32());
        if nan > 0 || err > EXACT_VS_CPU {
            problems.push(format!(
                "vs CPU: rel L2 {err:.3e} (tol {EXACT_VS_CPU:.0e}), {nan} NaN"
            ));
        }
    }
    Ok(problems)
}

pub fn run(s: &mut Suite, ordinal: usize, options: &CudaOptions) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !"ffn passes".contains(f.as_str()))
    {
        return;
    }
    let create = |fast: bool| {
        CudaBackend::create(
            ordinal,
            CudaOptions {
                gemm_tune: true,
                ..options.clone().with_fast_mode(fast)
            },
        )
    };
    let (exact, fast) = match (create(false), create(true)) {
        (Ok(e), Ok(f)) => (e, f),
        (Err(e), _) | (_, Err(e)) => {
            s.fail("ffn passes", format!("backend: {e}"));
            return;
        }
    };
    // (tokens, dim, hidden, pass rows, in place, against the CPU): the DiT's widths in three
    // passes of tuned GEMMs (512 × 8960 × 1536) and a short last pass; small ones against the
    // CPU, one of them with passes that do not start 256-byte aligned (composed instead).
    for (tokens, dim, hidden, pass_rows, in_place, vs_cpu) in [
        (1300, 1536, 8960, 512, true, false),
        (300, 256, 512, 128, true, true),
        (37, 96, 160, 5, false, true),
        (64, 128, 256, 64, true, true),
    ] {
        let case = Case::new(s, tokens, dim, hidden, pass_rows);
        let cpu = if vs_cpu {
            match case.run(&s.cpu, false, false) {
                Ok(v) => Some(v),
                Err(e) => {
                    s.fail(&case.name("cpu"), format!("CPU error: {e}"));
                    continue;
                }
            }
        } else {
            None
        };
        for (mode, backend) in [("exact", &exact), ("fast", &fast)] {
            let name = case.name(mode);
            s.cases += 1;
            // The fast mode's bf16 GEMMs are checked against the GPU's own composition only.
            let against_cpu = cpu.as_ref().filter(|_| mode == "exact");
            match problems(&case, backend, mode == "fast", in_place, against_cpu) {
                Err(e) => s.fail(&name, format!("CUDA error: {e}")),
                Ok(p) if !p.is_empty() => s.fail(&name, p.join("; ")),
                Ok(_) => println!("ok    {name:<44} bit-identical to the composed ops"),
            }
        }
    }
}

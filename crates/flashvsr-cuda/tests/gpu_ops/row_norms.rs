//! The row norms' register forms (`CudaOptions::row_norm_regs`: norm.cu `layer_norm_warp_regs_f32`
//! and `rms_norm_regs_f32`) against the forms they replace (`layer_norm_warp_f32`, `rms_norm_f32`)
//! on the same device: the same bits in the same storage, in the exact mode (f32 outputs) and in
//! the fast mode (layer norms and modulations stored as bf16). Each form's distance to the CPU is
//! checked by the `norms` cases; this checks that the register forms change no bit.

use flashvsr_cuda::{CudaBackend, CudaOptions};
use flashvsr_tensor::{BackendRef, HostData, Result, Tensor};

use super::bits::difference;
use super::Suite;

const NAME: &str = "row norm forms";

/// The op's output as stored on `backend`: x, weight, bias (shift and scale for modulate).
type Op = fn(&[Tensor; 3]) -> Result<Tensor>;

fn output(backend: &BackendRef, values: &[Vec<f32>; 3], rows: usize, op: Op) -> Result<HostData> {
    let dim = values[1].len();
    let t = [
        Tensor::from_slice(backend, &values[0], &[rows, dim])?,
        Tensor::from_slice(backend, &values[1], &[dim])?,
        Tensor::from_slice(backend, &values[2], &[dim])?,
    ];
    op(&t)?.to_host_data()
}

pub fn run(s: &mut Suite, ordinal: usize, options: &CudaOptions) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !NAME.contains(f.as_str()))
    {
        return;
    }
    let ops: [(&str, Op); 5] = [
        ("layer_norm affine", |t| {
            t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-6)
        }),
        ("layer_norm plain", |t| t[0].layer_norm(None, None, 1e-6)),
        ("modulate", |t| t[0].modulate(&t[1], &t[2], 1e-6)),
        ("rms_norm", |t| t[0].rms_norm(&t[1], 1e-6)),
        // Fast mode: x stored bf16 (as `linear_compact` leaves it), read as stored by the
        // register form, widened to f32 first by the loop form.
        ("rms_norm compact x", |t| {
            t[0].compact()?.rms_norm(&t[1], 1e-6)
        }),
    ];
    for fast in [false, true] {
        let mode = if fast { "fast" } else { "exact" };
        let create = |regs: bool| -> Option<BackendRef> {
            let options = CudaOptions {
                row_norm_regs: regs,
                ..options.clone().with_fast_mode(fast)
            };
            CudaBackend::create(ordinal, options)
                .ok()
                .map(|b| b as BackendRef)
        };
        let (Some(regs), Some(loops)) = (create(true), create(false)) else {
            s.fail(NAME, format!("{mode}: a backend did not start"));
            continue;
        };
        // The DiT's 1536 over many blocks (layer norms: 12 float4s a lane, 301 rows: a last
        // block of one warp; RMS norm: 6 values a thread), 128 (one float4 a lane), 1280 (10
        // float4s a lane; 5 values a thread) and 96 (the layer norms' float4 block kernel in both
        // forms; an RMS norm block of 96 threads); values offset from zero (a mean to subtract)
        // over a range of magnitudes.
        for (rows, dim) in [(301, 1536), (33, 128), (37, 96), (9, 1280)] {
            let mut x = s.rng.normal_vec(rows * dim, 3.0);
            let offsets = s.rng.vec(dim, 2.0);
            for (i, v) in x.iter_mut().enumerate() {
                *v = *v * (1.0 + (i % 7) as f32) + offsets[i % dim];
            }
            let values = [x, s.rng.vec(dim, 1.0), s.rng.vec(dim, 1.0)];
            for (op_name, op) in ops {
                let name = format!("{NAME} {mode} {op_name} [{rows}, {dim}]");
                s.cases += 1;
                let got = output(&regs, &values, rows, op);
                let want = output(&loops, &values, rows, op);
                match (got, want) {
                    (Ok(got), Ok(want)) => match difference(&got, &want) {
                        Some(d) => s.fail(&name, format!("register form vs loop form: {d}")),
                        None => println!("ok    {name:<44} bit-identical to the loop form"),
                    },
                    (Err(e), _) | (_, Err(e)) => s.fail(&name, format!("CUDA error: {e}")),
                }
            }
        }
    }
}

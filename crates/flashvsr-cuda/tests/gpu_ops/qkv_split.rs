//! The fused q/k/v split of the DiT's self-attention (`Tensor::qkv_split_norm_rope`, one kernel)
//! against the ops it replaces (narrow, rms_norm, rope, compact) on the same device: the same
//! bits in the same storage, in the exact mode and in the fast mode (k and v in bf16). In the
//! exact mode also against the CPU's composition.

use flashvsr_tensor::{BackendRef, HostData, Result, Tensor};

use super::bits::{difference, stored_bits};
use super::{rel_l2, Suite};

const EPS: f32 = 1e-6;
/// The exact mode against the CPU, relative L2 (rope's multiply-adds are fused on the GPU).
const EXACT_VS_CPU: f64 = 1e-6;

struct Inputs {
    rows: usize,
    heads: usize,
    /// KV-cache groups k and v come in.
    groups: usize,
    /// The fused projection's output, `(rows, 3·dim)`.
    x: Vec<f32>,
    norm_q: Vec<f32>,
    norm_k: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Inputs {
    fn new(s: &mut Suite, rows: usize, heads: usize, groups: usize) -> Inputs {
        let dim = heads * 128;
        let half = 64;
        // Projection outputs with a bias (non-zero means), gains around 1, and the angle tables
        // of positions 0..rows (theta 10000, as the DiT's).
        let bias = s.rng.vec(3 * dim, 1.0);
        let mut x = s.rng.normal_vec(rows * 3 * dim, 2.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += bias[i % (3 * dim)];
        }
        let gain =
            |s: &mut Suite| -> Vec<f32> { s.rng.vec(dim, 0.5).iter().map(|g| g + 1.0).collect() };
        let angle =
            |i: usize| (i / half) as f64 * 10_000f64.powf(-((i % half) as f64) / half as f64);
        Inputs {
            rows,
            heads,
            groups,
            x,
            norm_q: gain(s),
            norm_k: gain(s),
            cos: (0..rows * half).map(|i| angle(i).cos() as f32).collect(),
            sin: (0..rows * half).map(|i| angle(i).sin() as f32).collect(),
        }
    }

    fn dim(&self) -> usize {
        self.heads * 128
    }

    /// `(x, norm_q, norm_k, cos, sin)` on `backend`; x in compact storage when `compact_x` (as
    /// `linear_compact` leaves the projection: bf16 in fast mode).
    fn tensors(&self, backend: &BackendRef, compact_x: bool) -> Result<[Tensor; 5]> {
        let (rows, dim) = (self.rows, self.dim());
        let x = Tensor::from_slice(backend, &self.x, &[rows, 3 * dim])?;
        Ok([
            if compact_x { x.compact()? } else { x },
            Tensor::from_slice(backend, &self.norm_q, &[dim])?,
            Tensor::from_slice(backend, &self.norm_k, &[dim])?,
            Tensor::from_slice(backend, &self.cos, &[rows, 64])?,
            Tensor::from_slice(backend, &self.sin, &[rows, 64])?,
        ])
    }

    /// q, k, v as stored, by the fused op (k and v's groups joined on the host).
    fn fused(&self, backend: &BackendRef, compact_x: bool) -> Result<[HostData; 3]> {
        let [x, norm_q, norm_k, cos, sin] = self.tensors(backend, compact_x)?;
        if compact_x && !matches!(x.to_host_data()?, HostData::Bf16(_)) {
            return Err(test_error(
                "the compact projection is not stored bf16".into(),
            ));
        }
        let split =
            x.qkv_split_norm_rope(&norm_q, &norm_k, &cos, &sin, self.heads, EPS, self.groups)?;
        if split.k.len() != self.groups || split.v.len() != self.groups {
            return Err(test_error(format!(
                "{} k and {} v groups, want {}",
                split.k.len(),
                split.v.len(),
                self.groups
            )));
        }
        Ok([
            split.q.to_host_data()?,
            joined(&split.k)?,
            joined(&split.v)?,
        ])
    }

    /// q, k, v as stored, by the ops the DiT block used before the fused op.
    fn composed(&self, backend: &BackendRef, compact_x: bool) -> Result<[HostData; 3]> {
        let [x, norm_q, norm_k, cos, sin] = self.tensors(backend, compact_x)?;
        let dim = self.dim();
        let q = x
            .narrow(1, 0, dim)?
            .rms_norm(&norm_q, EPS)?
            .rope(&cos, &sin, self.heads)?;
        let k = x
            .narrow(1, dim, dim)?
            .rms_norm(&norm_k, EPS)?
            .rope(&cos, &sin, self.heads)?
            .compact()?;
        let v = x.narrow(1, 2 * dim, dim)?.compact()?;
        Ok([q.to_host_data()?, k.to_host_data()?, v.to_host_data()?])
    }
}

fn test_error(detail: String) -> flashvsr_tensor::TensorError {
    flashvsr_tensor::TensorError::Backend {
        backend: "test".into(),
        detail,
    }
}

/// The groups' stored values one after the other (a group stored otherwise than the first shows
/// as a storage mismatch).
fn joined(groups: &[Tensor]) -> Result<HostData> {
    let mut all = groups[0].to_host_data()?;
    for g in &groups[1..] {
        match (&mut all, g.to_host_data()?) {
            (HostData::F32(a), HostData::F32(b)) => a.extend(b),
            (HostData::Bf16(a), HostData::Bf16(b)) => a.extend(b),
            _ => return Err(test_error("groups stored differently".into())),
        }
    }
    Ok(all)
}

const PARTS: [&str; 3] = ["q", "k", "v"];

/// What is wrong with the fused op on `backend` (fast: k and v in bf16): its storage, its bits
/// against the composed ops there, and, given the CPU's values, its distance to them.
fn problems(
    inputs: &Inputs,
    backend: &BackendRef,
    (fast, compact_x): (bool, bool),
    cpu: Option<&[HostData; 3]>,
) -> Result<Vec<String>> {
    let got = inputs.fused(backend, compact_x)?;
    let want = inputs.composed(backend, compact_x)?;
    let mut problems = Vec::new();
    for (i, part) in PARTS.iter().enumerate() {
        let storage = stored_bits(&got[i]).0;
        let expected = if fast && i > 0 { "bf16" } else { "f32" };
        if storage != expected {
            problems.push(format!("{part} stored as {storage}, want {expected}"));
        }
        if let Some(d) = difference(&got[i], &want[i]) {
            problems.push(format!("{part} vs the composed ops: {d}"));
        }
        if let Some(cpu) = cpu {
            let (err, nan) = rel_l2(&got[i].to_f32(), &cpu[i].to_f32());
            if nan > 0 || err > EXACT_VS_CPU {
                problems.push(format!(
                    "{part} vs CPU: rel L2 {err:.3e} (tol {EXACT_VS_CPU:.0e}), {nan} NaN"
                ));
            }
        }
    }
    Ok(problems)
}

/// The projection feeding the split (`linear_compact`): with bf16 weights (fast mode) stored
/// bf16, within bf16 rounding of `linear`'s f32 output; with f32 weights, `linear`'s bits.
fn linear_compact(s: &mut Suite, fast: &BackendRef) {
    let (rows, k, n) = (300, 256, 768);
    let x = s.rng.normal_vec(rows * k, 1.0);
    let w = s.rng.normal_vec(n * k, 1.0 / 16.0);
    let b = s.rng.vec(n, 1.0);
    for (mode, backend) in [("exact", s.gpu.clone()), ("fast", fast.clone())] {
        let name = format!("qkv split: linear_compact {mode} [{rows}, {k}] · [{n}, {k}]ᵀ");
        s.cases += 1;
        let run = || -> Result<(HostData, HostData)> {
            let xt = Tensor::from_slice(&backend, &x, &[rows, k])?;
            let wt = Tensor::from_slice(&backend, &w, &[n, k])?.compact()?;
            let bt = Tensor::from_slice(&backend, &b, &[n])?;
            let compact = xt.linear_compact(&wt, Some(&bt))?.to_host_data()?;
            Ok((compact, xt.linear(&wt, Some(&bt))?.to_host_data()?))
        };
        let verdict = match (mode, run()) {
            (_, Err(e)) => Err(format!("CUDA error: {e}")),
            ("exact", Ok((got, want))) => match difference(&got, &want) {
                None => Ok("the bits of linear".to_string()),
                Some(d) => Err(d),
            },
            (_, Ok((HostData::Bf16(got), HostData::F32(want)))) => {
                // bf16 keeps 8 significant bits (half an ulp: 2⁻⁹ of a value). The output is
                // rounded once and so is the bias (cuBLASLt's bias of a bf16 output is bf16):
                // each element within 2⁻⁸ of (|value| + |bias|), in units of which the worst is
                // reported.
                let got = HostData::Bf16(got).to_f32();
                let worst = got
                    .iter()
                    .zip(&want)
                    .enumerate()
                    .map(|(i, (g, w))| (g - w).abs() / (w.abs() + b[i % n].abs()).max(1e-6))
                    .fold(0f32, f32::max);
                if worst <= 2f32.powi(-8) {
                    Ok(format!("bf16, max err {worst:.2e} of |value| + |bias|"))
                } else {
                    Err(format!("max err {worst:.2e} of |value| + |bias| > 2^-8"))
                }
            }
            (_, Ok((got, _))) => Err(format!("stored {}, want bf16", stored_bits(&got).0)),
        };
        match verdict {
            Ok(what) => println!("ok    {name:<44} {what}"),
            Err(e) => s.fail(&name, e),
        }
    }
}

pub fn run(s: &mut Suite, fast: &BackendRef) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !"qkv split".contains(f.as_str()))
    {
        return;
    }
    linear_compact(s, fast);
    // Row widths of 128, 256 and 1536 (the DiT's): one block-wide stride and six of the
    // block-per-row kernel; k and v in one group or several (the first chunk's three).
    for (rows, heads, groups) in [(7, 1, 1), (130, 2, 2), (300, 12, 3)] {
        let inputs = Inputs::new(s, rows, heads, groups);
        let cpu = match inputs.composed(&s.cpu, false) {
            Ok(values) => values,
            Err(e) => {
                s.fail("qkv split", format!("CPU error: {e}"));
                continue;
            }
        };
        // "fast bf16 in": the projection stored bf16, as the DiT's `linear_compact` leaves it.
        let modes = [
            ("exact", s.gpu.clone()),
            ("fast", fast.clone()),
            ("fast bf16 in", fast.clone()),
        ];
        for (mode, backend) in modes {
            let name = format!(
                "qkv split {mode} [{rows}, 3×{}] {heads}h {groups}g",
                inputs.dim()
            );
            s.cases += 1;
            // The fast mode's bf16 storage is checked against the GPU's own composition only.
            let against_cpu = (mode == "exact").then_some(&cpu);
            let storage = (mode != "exact", mode == "fast bf16 in");
            match problems(&inputs, &backend, storage, against_cpu) {
                Err(e) => s.fail(&name, format!("CUDA error: {e}")),
                Ok(p) if !p.is_empty() => s.fail(&name, p.join("; ")),
                Ok(_) => println!("ok    {name:<44} bit-identical to the composed ops"),
            }
        }
    }
}

//! Copies of channels-last tensors (`copy_groups` in ops/channels_last.rs: cat along channels and
//! frames, channel and frame slices, the temporal growth's permute) move bytes and change none:
//! each against the same op on the CPU over the values the GPU's inputs hold, bit for bit, with
//! the inputs checked to be channels-last (frame convs of the fast mode's cuDNN backend).

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, PadMode, Result, Tensor};

use super::cudnn_conv::FastBackends;
use super::Suite;

struct CopyCase {
    name: &'static str,
    /// `(channels, frames)` of each input map, all of `HEIGHT × WIDTH`.
    maps: &'static [(usize, usize)],
    op: fn(&[Tensor]) -> Result<Tensor>,
}

const HEIGHT: usize = 9;
const WIDTH: usize = 13;

const CASES: [CopyCase; 6] = [
    CopyCase {
        name: "cat channels 16 + 24",
        maps: &[(16, 2), (24, 2)],
        op: |t| Tensor::cat(&[&t[0], &t[1]], 0),
    },
    CopyCase {
        name: "cat channels 128 + 128 (the MemBlock's)",
        maps: &[(128, 1), (128, 1)],
        op: |t| Tensor::cat(&[&t[0], &t[1]], 0),
    },
    CopyCase {
        name: "cat frames 1 + 2 + 1",
        maps: &[(16, 1), (16, 2), (16, 1)],
        op: |t| Tensor::cat(&[&t[0], &t[1], &t[2]], 1),
    },
    CopyCase {
        name: "narrow channels 8..32 of 40",
        maps: &[(40, 2)],
        op: |t| t[0].narrow(0, 8, 24),
    },
    CopyCase {
        name: "narrow frames 1..3 of 3",
        maps: &[(16, 3)],
        op: |t| t[0].narrow(1, 1, 2),
    },
    CopyCase {
        name: "temporal growth permute 2 × 16",
        maps: &[(32, 2)],
        op: |t| {
            let x = &t[0];
            x.reshape(&[2, 16, 2, HEIGHT, WIDTH])?
                .permute(&[1, 2, 0, 3, 4])?
                .reshape(&[16, 4, HEIGHT, WIDTH])
        },
    },
];

/// Bits of `got` against `want`: None when identical.
fn difference(got: &[f32], want: &[f32]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} values, want {}", got.len(), want.len()));
    }
    let differing = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    (differing > 0).then(|| format!("{differing} of {} values differ", got.len()))
}

pub fn run(s: &mut Suite, fast: &FastBackends) {
    if s.skip("channels-last copies") || !fast.cudnn.uses_cudnn() {
        return;
    }
    let gpu: BackendRef = fast.cudnn.clone();
    let cpu = CpuBackend::new_ref();
    for case in &CASES {
        let name = format!("channels-last copies: {}", case.name);
        s.cases += 1;
        // Each map a frame conv of an f32 input: channels-last bf16 on this backend.
        let inputs: Vec<(Vec<f32>, Vec<f32>, (usize, usize))> = case
            .maps
            .iter()
            .map(|&(c, t)| {
                let x = s.rng.vec(8 * t * HEIGHT * WIDTH, 1.0);
                let w = s.rng.vec(c * 8 * 9, 0.3);
                (x, w, (c, t))
            })
            .collect();
        let verdict = (|| -> Result<Option<String>> {
            let mut maps = Vec::new();
            for (x, w, (c, t)) in &inputs {
                let x = Tensor::from_slice(&gpu, x, &[8, *t, HEIGHT, WIDTH])?;
                let w = Tensor::from_slice(&gpu, w, &[*c, 8, 1, 3, 3])?;
                maps.push(x.conv3d(&w, None, 1, 1, PadMode::Zero)?);
            }
            if let Some(i) = maps.iter().position(|m| !fast.cudnn.is_channels_last(m)) {
                return Ok(Some(format!("input {i} is not channels-last")));
            }
            let on_cpu = maps
                .iter()
                .map(|m| Tensor::from_slice(&cpu, &m.to_vec()?, m.shape()))
                .collect::<Result<Vec<_>>>()?;
            let got = (case.op)(&maps)?;
            let want = (case.op)(&on_cpu)?;
            if got.shape() != want.shape() {
                return Ok(Some(format!(
                    "shape {:?}, want {:?}",
                    got.shape(),
                    want.shape()
                )));
            }
            Ok(difference(&got.to_vec()?, &want.to_vec()?))
        })();
        match verdict {
            Ok(None) => println!("ok    {name:<44} bit for bit"),
            Ok(Some(why)) => s.fail(&name, why),
            Err(e) => s.fail(&name, format!("error: {e}")),
        }
    }
}

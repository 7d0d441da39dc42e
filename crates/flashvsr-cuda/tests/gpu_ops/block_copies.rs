//! Block copies move bytes and change none, whichever kernel moves them (32-bit or 64-bit
//! indices, 16-byte groups or single elements: `copy_groups` and `copy_blocks`):
//! - channels-last tensors (cat along channels and frames, channel and frame slices, the temporal
//!   growth's permute) against the same op on the CPU over the values the GPU's inputs hold, with
//!   the inputs checked to be channels-last (frame convs of the fast mode's cuDNN backend);
//! - row-major f32 narrows and cats of whole 16-byte groups (and of parts of groups) against the
//!   CPU;
//! - f32 permutes of the model's shapes against the CPU;
//! - row-major bf16 narrows and cats (the KV cache's storage) against the same copies of the
//!   stored bits on the host.
//!
//! All bit for bit.

use flashvsr_cuda::{CudaBackend, CudaOptions};
use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, HostData, PadMode, Result, Tensor};

use super::cudnn_conv::FastBackends;
use super::{Suite, EXACT};

struct CopyCase {
    name: &'static str,
    /// `(channels, frames)` of each input map, all of `HEIGHT × WIDTH`.
    maps: &'static [(usize, usize)],
    op: fn(&[Tensor]) -> Result<Tensor>,
}

/// A frame conv's input values, weight values and `(channels, frames)` out.
type ConvInput = (Vec<f32>, Vec<f32>, (usize, usize));

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

pub fn run(s: &mut Suite, fast: &FastBackends, ordinal: usize, options: &CudaOptions) {
    row_major_f32(s);
    permutes(s);
    row_major_bf16(s, ordinal, options);
    channels_last(s, fast);
}

/// f32 narrows and cats: rows of whole 16-byte groups (one group per thread), and of parts of
/// groups (one element per thread).
fn row_major_f32(s: &mut Suite) {
    for (shape, dim, start, len) in [
        ([6, 16, 12], 1, 4, 8),
        ([1, 40, 1536], 1, 8, 16),
        ([6, 16, 3], 1, 1, 5),
        ([3, 10, 8], 2, 4, 4),
        ([3, 10, 8], 2, 2, 4),
    ] {
        let x = s.input(&shape, 1.0);
        let name = format!("block copies: narrow {shape:?} dim {dim} [{start}, +{len})");
        s.case(&name, EXACT, &[x], &|t| t[0].narrow(dim, start, len));
    }
    for (shapes, dim) in [
        (vec![[1, 5, 1536], [1, 3, 1536], [1, 1, 1536]], 1),
        (vec![[4, 8, 12], [4, 4, 12], [4, 1, 12]], 1),
        (vec![[4, 8, 3], [4, 4, 3], [4, 1, 3]], 1),
        (vec![[2, 3, 8], [2, 3, 4], [2, 3, 12]], 2),
    ] {
        let xs: Vec<_> = shapes.iter().map(|sh| s.input(sh, 1.0)).collect();
        let name = format!("block copies: cat {shapes:?} dim {dim}");
        s.case(&name, EXACT, &xs, &|t| {
            Tensor::cat(&[&t[0], &t[1], &t[2]], dim)
        });
    }
}

/// f32 permutes of the LQ projector's and the DiT's shapes (smaller frames).
fn permutes(s: &mut Suite) {
    for (shape, dims) in [
        (vec![3, 1, 4, 18, 8, 30, 8], vec![0, 2, 4, 6, 1, 3, 5]),
        (vec![3, 4, 9, 16, 15, 16], vec![0, 3, 5, 1, 2, 4]),
        (vec![384, 1080], vec![1, 0]),
    ] {
        let x = s.input(&shape, 1.0);
        let name = format!("block copies: permute {shape:?} by {dims:?}");
        s.case(&name, EXACT, &[x], &|t| t[0].permute(&dims));
    }
}

/// bf16 row slices and joins of compact tensors stay bf16, with the stored bits copied.
fn row_major_bf16(s: &mut Suite, ordinal: usize, options: &CudaOptions) {
    let name = "block copies: bf16 rows narrowed and joined";
    if s.skip(name) {
        return;
    }
    s.cases += 1;
    let fast = match CudaBackend::create(ordinal, options.clone().with_fast_mode(true)) {
        Ok(b) => b as BackendRef,
        Err(e) => return s.fail(name, format!("backend: {e}")),
    };
    let (rows, width) = (40, 1536);
    let values = s.rng.vec(rows * width, 1.0);
    let verdict = (|| -> Result<Option<String>> {
        let x = Tensor::from_slice(&fast, &values, &[rows, width])?.compact()?;
        let HostData::Bf16(stored) = x.to_host_data()? else {
            return Ok(Some("the compact tensor is not bf16".into()));
        };
        let slice = |from: usize, n: usize| stored[from * width..(from + n) * width].to_vec();
        // Row slices (whole 16-byte groups, one starting at an odd row), their join, and a
        // slice of columns (parts of groups: one element per thread).
        let a = x.narrow(0, 8, 16)?;
        let b = x.narrow(0, 5, 3)?;
        let joined = Tensor::cat(&[&a, &b], 0)?;
        let part = x.reshape(&[rows * width / 12, 12])?.narrow(1, 2, 5)?;
        let want_part: Vec<u16> = stored
            .chunks(12)
            .flat_map(|row| row[2..7].to_vec())
            .collect();
        let mut want_joined = slice(8, 16);
        want_joined.extend(slice(5, 3));
        for (what, got, want) in [
            ("rows 8..24", a, slice(8, 16)),
            ("rows 5..8", b, slice(5, 3)),
            ("rows 8..24 and 5..8 joined", joined, want_joined),
            ("columns 2..7 of rows of 12", part, want_part),
        ] {
            match got.to_host_data()? {
                HostData::Bf16(g) if g == want => {}
                HostData::Bf16(_) => return Ok(Some(format!("{what}: other bits"))),
                HostData::F32(_) => return Ok(Some(format!("{what}: stored as f32"))),
            }
        }
        Ok(None)
    })();
    match verdict {
        Ok(None) => println!("ok    {name:<44} bit for bit"),
        Ok(Some(why)) => s.fail(name, why),
        Err(e) => s.fail(name, format!("error: {e}")),
    }
}

fn channels_last(s: &mut Suite, fast: &FastBackends) {
    if s.skip("block copies: channels-last") || !fast.cudnn.uses_cudnn() {
        return;
    }
    let gpu: BackendRef = fast.cudnn.clone();
    let cpu = CpuBackend::new_ref();
    for case in &CASES {
        let name = format!("block copies: channels-last {}", case.name);
        s.cases += 1;
        // Each map a frame conv of an f32 input: channels-last bf16 on this backend.
        let inputs: Vec<ConvInput> = case
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

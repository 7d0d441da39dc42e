//! Every op of the CUDA backend against the CPU reference, on random inputs of realistic small
//! shapes. Outputs are poisoned with NaN before kernels run, so an element no kernel wrote fails
//! the comparison. Skips (and passes) without a CUDA device.
//!
//! Own `main` (harness = false): the library resolver may re-exec this binary once, which must
//! happen before any thread starts. Optional argument: a substring filter on case names.
//! `gpu_ops "flash bench"` runs the flash kernels' benchmark (gpu_ops/flash_bench.rs), which runs
//! only when asked for.

#[path = "gpu_ops/async_copies.rs"]
mod async_copies;
#[path = "gpu_ops/bf16_copies.rs"]
mod bf16_copies;
#[path = "gpu_ops/bits.rs"]
mod bits;
#[path = "gpu_ops/block_copies.rs"]
mod block_copies;
#[path = "gpu_ops/channels_last.rs"]
mod channels_last;
#[path = "gpu_ops/cudnn_conv.rs"]
mod cudnn_conv;
#[path = "gpu_ops/dense_persistent.rs"]
mod dense_persistent;
#[path = "gpu_ops/dilated_blur.rs"]
mod dilated_blur;
#[path = "gpu_ops/ffn_passes.rs"]
mod ffn_passes;
#[path = "gpu_ops/flash_bench.rs"]
mod flash_bench;
#[path = "gpu_ops/flash_instances.rs"]
mod flash_instances;
#[path = "gpu_ops/gemm_tune.rs"]
mod gemm_tune;
#[path = "gpu_ops/kv_segments.rs"]
mod kv_segments;
#[path = "gpu_ops/qkv_split.rs"]
mod qkv_split;
#[path = "gpu_ops/random_normal.rs"]
mod random_normal;
#[path = "gpu_ops/resample_levels.rs"]
mod resample_levels;
#[path = "gpu_ops/row_norms.rs"]
mod row_norms;
#[path = "gpu_ops/sage_int8.rs"]
mod sage_int8;
#[path = "gpu_ops/vae_ops.rs"]
mod vae_ops;
#[path = "gpu_ops/wide_attention.rs"]
mod wide_attention;

use std::sync::Arc;
use std::time::Instant;

use flashvsr_cuda::{AttentionPrecision, CudaBackend, CudaOptions};
use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, BlockMask, HostData, PadMode, Result, Tensor, UnaryOp};

/// Layout ops move values: bit-exact.
const EXACT: f32 = 0.0;
const ELEMENTWISE: f32 = 1e-5;
const GEMM: f32 = 1e-4;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }

    /// N(0, scale²) by Box–Muller.
    fn normal_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = (self.uniform() * 0.5 + 0.5).max(1e-7) as f64;
            let u2 = (self.uniform() * 0.5 + 0.5) as f64;
            let r = (-2.0 * u1.ln()).sqrt();
            let th = std::f64::consts::TAU * u2;
            out.push((r * th.cos()) as f32 * scale);
            out.push((r * th.sin()) as f32 * scale);
        }
        out.truncate(n);
        out
    }
}

type Input = (Vec<f32>, Vec<usize>);
type Op<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

struct Suite {
    cpu: BackendRef,
    gpu: BackendRef,
    /// Same device, tiny im2col budget: conv3d runs in many column chunks.
    gpu_chunked: BackendRef,
    /// Same device, bf16 tensor-core attention (the suite's `gpu` is the fp32 parity mode).
    gpu_bf16: BackendRef,
    rng: Rng,
    filter: Option<String>,
    failures: Vec<String>,
    cases: usize,
}

/// The backend the benchmarks time: fast mode with bf16 attention, outputs not poisoned (the
/// NaN fill would be timed with the kernels); None (and a failure named `name`) where it does
/// not start.
fn bench_backend(s: &mut Suite, ordinal: usize, name: &str) -> Option<Arc<CudaBackend>> {
    let options = CudaOptions {
        poison_outputs: false,
        attention: AttentionPrecision::Bf16,
        ..CudaOptions::default()
    }
    .with_fast_mode(true);
    match CudaBackend::create(ordinal, options) {
        Ok(b) => Some(b),
        Err(e) => {
            s.fail(name, format!("backend: {e}"));
            None
        }
    }
}

fn max_rel_err(got: &[f32], want: &[f32]) -> (f32, usize) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    let mut nan = 0;
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(want) {
        if g.is_nan() != w.is_nan() {
            nan += 1;
        } else if !w.is_nan() {
            worst = worst.max((g - w).abs() / scale);
        }
    }
    (worst, nan)
}

impl Suite {
    fn input(&mut self, shape: &[usize], scale: f32) -> Input {
        let n = shape.iter().product();
        (self.rng.vec(n, scale), shape.to_vec())
    }

    fn tensors(backend: &BackendRef, inputs: &[Input]) -> Result<Vec<Tensor>> {
        inputs
            .iter()
            .map(|(d, s)| Tensor::from_slice(backend, d, s))
            .collect()
    }

    fn run_on(backend: &BackendRef, inputs: &[Input], op: Op) -> Result<(Vec<usize>, Vec<f32>)> {
        let xs = Suite::tensors(backend, inputs)?;
        let y = op(&xs)?;
        Ok((y.shape().to_vec(), y.to_vec()?))
    }

    /// Runs `op` on both backends and compares; `check` may inspect the GPU result further.
    fn case_with(
        &mut self,
        name: &str,
        tol: f32,
        inputs: &[Input],
        op: Op,
        check: &dyn Fn(&[f32]) -> Option<String>,
    ) {
        self.case_on(name, tol, inputs, op, check, false)
    }

    fn case(&mut self, name: &str, tol: f32, inputs: &[Input], op: Op) {
        self.case_on(name, tol, inputs, op, &|_| None, false)
    }

    fn case_on(
        &mut self,
        name: &str,
        tol: f32,
        inputs: &[Input],
        op: Op,
        check: &dyn Fn(&[f32]) -> Option<String>,
        chunked: bool,
    ) {
        if self
            .filter
            .as_ref()
            .is_some_and(|f| !name.contains(f.as_str()))
        {
            return;
        }
        self.cases += 1;
        let gpu = if chunked {
            &self.gpu_chunked
        } else {
            &self.gpu
        };
        let started = Instant::now();
        let want = Suite::run_on(&self.cpu, inputs, op);
        let cpu_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let got = Suite::run_on(gpu, inputs, op);
        let gpu_s = started.elapsed().as_secs_f64();
        let verdict = match (got, want) {
            (Err(e), _) => Err(format!("CUDA error: {e}")),
            (_, Err(e)) => Err(format!("CPU error: {e}")),
            (Ok((gs, g)), Ok((ws, w))) => {
                let (err, nan) = max_rel_err(&g, &w);
                if gs != ws || g.len() != w.len() {
                    Err(format!("shape {gs:?} vs CPU {ws:?}"))
                } else if nan > 0 {
                    Err(format!(
                        "{nan} elements NaN on one side only (unwritten output?)"
                    ))
                } else if err > tol {
                    Err(format!("max rel err {err:.3e} > {tol:.0e}"))
                } else if let Some(msg) = check(&g) {
                    Err(msg)
                } else {
                    Ok(err)
                }
            }
        };
        match verdict {
            Ok(err) => println!(
                "ok    {name:<44} max rel err {err:.2e} (tol {tol:.0e})  cpu {cpu_s:.3}s gpu {gpu_s:.3}s"
            ),
            Err(msg) => {
                println!("FAIL  {name:<44} {msg}");
                self.failures.push(format!("{name}: {msg}"));
            }
        }
    }

    fn fail(&mut self, name: &str, msg: String) {
        println!("FAIL  {name:<44} {msg}");
        self.failures.push(format!("{name}: {msg}"));
    }
}

fn layout(s: &mut Suite) {
    for (shape, dims) in [
        (vec![33, 65], vec![1, 0]),
        (vec![2, 3, 4, 5], vec![0, 2, 3, 1]),
        (vec![4, 3, 7, 5], vec![3, 1, 0, 2]),
        (vec![2, 3, 2, 4, 3, 2], vec![5, 0, 3, 1, 4, 2]),
        (vec![2, 2, 3, 2, 3, 2, 2, 3], vec![7, 6, 5, 4, 3, 2, 1, 0]),
    ] {
        let x = s.input(&shape, 1.0);
        let name = format!("permute {shape:?} by {dims:?}");
        s.case(&name, EXACT, &[x], &|t| t[0].permute(&dims));
    }
    for (dim, start, len) in [(0, 1, 2), (1, 3, 5), (2, 0, 1), (2, 2, 4)] {
        let x = s.input(&[4, 10, 6], 1.0);
        let name = format!("narrow [4, 10, 6] dim {dim} [{start}, +{len})");
        s.case(&name, EXACT, &[x], &|t| t[0].narrow(dim, start, len));
    }
    for dim in 0..3 {
        let mut shapes = [[2, 3, 5], [2, 3, 5], [2, 3, 5]];
        for (i, sh) in shapes.iter_mut().enumerate() {
            sh[dim] = i + 1;
        }
        let xs: Vec<Input> = shapes.iter().map(|sh| s.input(sh, 1.0)).collect();
        let name = format!("cat of 3 along dim {dim}");
        s.case(&name, EXACT, &xs, &|t| {
            Tensor::cat(&[&t[0], &t[1], &t[2]], dim)
        });
    }
    let x = s.input(&[3, 2, 5, 7], 1.0);
    s.case("upsample_nearest2x [3, 2, 5, 7]", EXACT, &[x], &|t| {
        t[0].upsample_nearest2x()
    });
}

fn pointwise(s: &mut Suite) {
    let ops = [
        ("silu", UnaryOp::Silu),
        ("relu", UnaryOp::Relu),
        ("gelu_tanh", UnaryOp::GeluTanh),
        ("tanh", UnaryOp::Tanh),
        (
            "affine",
            UnaryOp::Affine {
                mul: 1.7,
                add: -0.3,
            },
        ),
        (
            "clamp",
            UnaryOp::Clamp {
                min: -0.5,
                max: 1.25,
            },
        ),
    ];
    for (name, op) in ops {
        let x = s.input(&[7, 1001], 4.0);
        s.case(&format!("unary {name}"), ELEMENTWISE, &[x], &|t| {
            t[0].unary(op)
        });
    }
    let (a, b) = (s.input(&[3, 1001], 2.0), s.input(&[3, 1001], 2.0));
    let inputs = [a, b];
    s.case("binary add", ELEMENTWISE, &inputs, &|t| t[0].add(&t[1]));
    s.case("binary sub", ELEMENTWISE, &inputs, &|t| t[0].sub(&t[1]));
    s.case("binary mul", ELEMENTWISE, &inputs, &|t| t[0].mul(&t[1]));
    let inputs = [
        s.input(&[7, 96], 1.0),
        s.input(&[7, 96], 1.0),
        s.input(&[96], 1.0),
    ];
    s.case("add_gated [7, 96]", ELEMENTWISE, &inputs, &|t| {
        t[0].add_gated(&t[1], &t[2])
    });
    let inputs = [
        s.input(&[16, 3, 5, 7], 1.0),
        s.input(&[16], 2.0),
        s.input(&[16], 1.0),
    ];
    s.case("channel_affine [16, 3, 5, 7]", ELEMENTWISE, &inputs, &|t| {
        t[0].channel_affine(&t[1], &t[2])
    });
    for (rows, heads, hd) in [(50, 12, 128), (9, 2, 8)] {
        let dim = heads * hd;
        let inputs = [
            s.input(&[rows, dim], 1.0),
            s.input(&[rows, hd / 2], 1.0),
            s.input(&[rows, hd / 2], 1.0),
        ];
        let name = format!("rope [{rows}, {dim}] {heads} heads");
        s.case(&name, ELEMENTWISE, &inputs, &|t| {
            t[0].rope(&t[1], &t[2], heads)
        });
    }
}

fn norms(s: &mut Suite) {
    // 128, 1536 and 2048 take the warp-per-row layer norm (1, 12 and 16 float4s per lane; 33
    // rows: a last block of one warp); with FLASHVSR_CUDA_NORM_WARP=0 they and 96 and 4096 take
    // the layer norm's block per row of float4s; 5 and 4100 the row loop.
    for dim in [1536, 96, 5, 4096, 4100, 128, 2048] {
        let inputs = [
            s.input(&[33, dim], 3.0),
            s.input(&[dim], 1.0),
            s.input(&[dim], 1.0),
        ];
        s.case(
            &format!("layer_norm affine [33, {dim}]"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-6),
        );
        s.case(
            &format!("layer_norm plain [33, {dim}]"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].layer_norm(None, None, 1e-6),
        );
        s.case(
            &format!("layer_norm weight only [33, {dim}]"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].layer_norm(Some(&t[1]), None, 1e-5),
        );
        s.case(
            &format!("modulate [33, {dim}]"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].modulate(&t[1], &t[2], 1e-6),
        );
        s.case(
            &format!("rms_norm [33, {dim}]"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].rms_norm(&t[1], 1e-6),
        );
    }
    // Positions not a multiple of the f32 kernel's 32 a block, channels not of its 16 warps;
    // the LQ projector's 3072 channels.
    for shape in [
        [16, 2, 9, 11],
        [384, 1, 4, 5],
        [3, 4, 30, 40],
        [3072, 1, 6, 11],
    ] {
        let inputs = [s.input(&shape, 2.0), s.input(&[shape[0]], 1.0)];
        s.case(
            &format!("channel_rms_norm {shape:?}"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].channel_rms_norm(&t[1]),
        );
        s.case(
            &format!("channel_rms_norm_silu {shape:?}"),
            ELEMENTWISE,
            &inputs,
            &|t| t[0].channel_rms_norm_silu(&t[1], None),
        );
    }
    // Even rows take the two-outputs-per-thread kernel: groups of 128 (the DiT's query blocks,
    // whole batches of 8 loads), 13 (a batch and a tail), 4 and 1 (tails only); odd rows the
    // one-output-per-thread kernel.
    for shape in [
        [10, 4, 96],
        [3, 1, 1536],
        [2, 7, 5],
        [4, 128, 1536],
        [3, 13, 96],
    ] {
        let x = s.input(&shape, 1.0);
        s.case(&format!("group_mean {shape:?}"), ELEMENTWISE, &[x], &|t| {
            t[0].group_mean()
        });
    }
}

fn linear(s: &mut Suite) {
    for (m, k, n) in [
        (37, 96, 80),
        (5, 3, 7),
        (256, 1536, 1536),
        (333, 1536, 2048),
        (1, 64, 1),
    ] {
        let inputs = [
            s.input(&[m, k], 1.0),
            s.input(&[n, k], 0.1),
            s.input(&[n], 1.0),
        ];
        s.case(
            &format!("linear {m}x{k} · {n}x{k}ᵀ + b"),
            GEMM,
            &inputs,
            &|t| t[0].linear(&t[1], Some(&t[2])),
        );
        s.case(
            &format!("linear {m}x{k} · {n}x{k}ᵀ"),
            GEMM,
            &inputs,
            &|t| t[0].linear(&t[1], None),
        );
        let with_residual = [
            inputs[0].clone(),
            inputs[1].clone(),
            inputs[2].clone(),
            s.input(&[m, n], 1.0),
        ];
        s.case(
            &format!("linear_add {m}x{k} · {n}x{k}ᵀ + b + residual"),
            GEMM,
            &with_residual,
            &|t| t[0].linear_add(&t[1], Some(&t[2]), &t[3]),
        );
    }
    let inputs = [
        s.input(&[2, 3, 64], 1.0),
        s.input(&[48, 64], 0.1),
        s.input(&[48], 1.0),
    ];
    s.case("linear rank-3 input [2, 3, 64]", GEMM, &inputs, &|t| {
        t[0].linear(&t[1], Some(&t[2]))
    });
}

/// The AdaIN colour fix per plane: decoded frames against their LQ references.
fn colour_fix(s: &mut Suite) {
    for shape in [[3, 2, 37, 53], [3, 1, 768, 1408], [1, 1, 1, 5]] {
        let inputs = [s.input(&shape, 1.0), s.input(&shape, 0.5)];
        s.case(&format!("adain {shape:?}"), 1e-6, &inputs, &|t| {
            t[0].adain(&t[1])
        });
    }
}

fn conv(s: &mut Suite) {
    struct Conv {
        name: &'static str,
        x: [usize; 4],
        w: [usize; 5],
        stride_t: usize,
        pad: usize,
        mode: PadMode,
        bias: bool,
    }
    let cases = [
        Conv {
            name: "3x3x3 replicate pad 1",
            x: [8, 6, 9, 11],
            w: [12, 8, 3, 3, 3],
            stride_t: 1,
            pad: 1,
            mode: PadMode::Replicate,
            bias: true,
        },
        Conv {
            name: "3x3x3 zero pad 1",
            x: [8, 6, 9, 11],
            w: [12, 8, 3, 3, 3],
            stride_t: 1,
            pad: 1,
            mode: PadMode::Zero,
            bias: true,
        },
        Conv {
            name: "3x3x3 no bias",
            x: [5, 3, 7, 6],
            w: [4, 5, 3, 3, 3],
            stride_t: 1,
            pad: 1,
            mode: PadMode::Zero,
            bias: false,
        },
        Conv {
            name: "kt=4 stride 2 replicate",
            x: [6, 10, 7, 8],
            w: [5, 6, 4, 3, 3],
            stride_t: 2,
            pad: 1,
            mode: PadMode::Replicate,
            bias: true,
        },
        Conv {
            name: "kt=4 stride 2 no pad",
            x: [6, 10, 7, 8],
            w: [5, 6, 4, 1, 1],
            stride_t: 2,
            pad: 0,
            mode: PadMode::Zero,
            bias: true,
        },
        Conv {
            name: "1x1x1",
            x: [16, 3, 10, 12],
            w: [24, 16, 1, 1, 1],
            stride_t: 1,
            pad: 0,
            mode: PadMode::Zero,
            bias: true,
        },
        Conv {
            name: "1x1x1 stride 2 no bias",
            x: [16, 5, 10, 12],
            w: [24, 16, 1, 1, 1],
            stride_t: 2,
            pad: 0,
            mode: PadMode::Zero,
            bias: false,
        },
        Conv {
            name: "1x1x1 pad 1 replicate",
            x: [4, 2, 5, 6],
            w: [3, 4, 1, 1, 1],
            stride_t: 1,
            pad: 1,
            mode: PadMode::Replicate,
            bias: true,
        },
        Conv {
            name: "2d 3x3 replicate (kt=1)",
            x: [7, 3, 13, 9],
            w: [9, 7, 1, 3, 3],
            stride_t: 1,
            pad: 1,
            mode: PadMode::Replicate,
            bias: true,
        },
        Conv {
            name: "3x3x3 96->96 VAE-sized",
            x: [96, 6, 24, 40],
            w: [96, 96, 3, 3, 3],
            stride_t: 1,
            pad: 1,
            mode: PadMode::Replicate,
            bias: true,
        },
    ];
    for c in cases {
        let scale = 1.0 / ((c.w[1] * c.w[2] * c.w[3] * c.w[4]) as f32).sqrt();
        let inputs = [
            s.input(&c.x, 1.0),
            s.input(&c.w, scale),
            s.input(&[c.w[0]], 1.0),
        ];
        let op = |t: &[Tensor]| {
            let b = c.bias.then_some(&t[2]);
            t[0].conv3d(&t[1], b, c.stride_t, c.pad, c.mode)
        };
        s.case(&format!("conv3d {}", c.name), GEMM, &inputs, &op);
        s.case_on(
            &format!("conv3d {} (chunked)", c.name),
            GEMM,
            &inputs,
            &op,
            &|_| None,
            true,
        );
    }
}

fn attention(s: &mut Suite) {
    for (lq, lk, heads, hd) in [
        (300, 512, 2, 128),
        (1024, 512, 12, 128),
        (200, 200, 1, 16),
        (150, 150, 1, 384),
        (77, 77, 3, 64),
        (33, 45, 2, 20),
    ] {
        let dim = heads * hd;
        let inputs = [
            s.input(&[lq, dim], 1.0),
            s.input(&[lk, dim], 1.0),
            s.input(&[lk, dim], 1.0),
        ];
        let name = format!("attention q{lq} k{lk} {heads}x{hd}");
        s.case(&name, GEMM, &inputs, &|t| {
            t[0].attention(&t[1], &t[2], heads)
        });
    }
}

fn block_sparse(s: &mut Suite) {
    for (key_block, query_blocks, key_blocks, heads) in
        [(128, 2, 4, 2), (64, 2, 8, 2), (128, 8, 16, 12)]
    {
        let hd = 128;
        let dim = heads * hd;
        let mut selected: Vec<u8> = (0..heads * query_blocks * key_blocks)
            .map(|_| (s.rng.uniform() > 0.0) as u8)
            .collect();
        // (head 0, query block 1) attends to nothing: its rows must come out exactly zero.
        selected[key_blocks..2 * key_blocks].fill(0);
        // (head 1, query block 0) attends to everything.
        selected[query_blocks * key_blocks..(query_blocks + 1) * key_blocks].fill(1);
        let mask = BlockMask {
            heads,
            query_blocks,
            key_blocks,
            query_block: 128,
            key_block,
            selected,
        };
        let (lq, lk) = (query_blocks * 128, key_blocks * key_block);
        let inputs = [
            s.input(&[lq, dim], 1.0),
            s.input(&[lk, dim], 1.0),
            s.input(&[lk, dim], 1.0),
            mask_input(&mask),
        ];
        let name = format!("block_sparse q{lq} k{lk} kb{key_block} {heads}x{hd}");
        let empty_rows_zero = |out: &[f32]| {
            let bad = (128..256)
                .flat_map(|r| out[r * dim..r * dim + hd].iter())
                .filter(|v| **v != 0.0)
                .count();
            (bad > 0).then(|| format!("{bad} non-zero values in a query block with no key block"))
        };
        s.case_with(
            &name,
            GEMM,
            &inputs,
            &|t| t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block),
            &empty_rows_zero,
        );
        let mut full = mask.clone();
        full.selected.fill(1);
        let mut inputs = inputs;
        inputs[3] = mask_input(&full);
        s.case(&format!("{name} all selected"), GEMM, &inputs, &|t| {
            t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block)
        });
    }
}

/// Per-head block scores: odd tiles, a head dim below the kernel's tile, the DiT's shapes
/// (1408×768 steady, 1920×1080 steady). The register-tiled kernel (the default) must give the
/// one-entry-a-load kernel's bits (`FLASHVSR_CUDA_HEAD_SCORES_TILED=0`): the same sums in order.
fn head_scores(s: &mut Suite) {
    let shapes = [
        (5, 7, 3, 16),
        (33, 70, 2, 40),
        (66, 396, 12, 128),
        (135, 1080, 12, 128),
    ];
    for (nq, nk, heads, hd) in shapes {
        let q = s.input(&[nq, heads * hd], 1.0);
        let k = s.input(&[nk, heads * hd], 1.0);
        let name = format!(
            "head_scores q [{nq}, {}] k [{nk}, ..] {heads} heads",
            heads * hd
        );
        let inputs = [q, k];
        s.case(&name, GEMM, &inputs, &|t| t[0].head_scores(&t[1], heads));
        let name = format!("{name}: tiled = untiled bits");
        if s.skip(&name) {
            continue;
        }
        s.cases += 1;
        let scores = |tiled: &str| -> Result<Vec<f32>> {
            std::env::set_var("FLASHVSR_CUDA_HEAD_SCORES_TILED", tiled);
            let t = Suite::tensors(&s.gpu, &inputs)?;
            t[0].head_scores(&t[1], heads)?.to_vec()
        };
        let (tiled, untiled) = (scores("1"), scores("0"));
        std::env::remove_var("FLASHVSR_CUDA_HEAD_SCORES_TILED");
        match (tiled, untiled) {
            (Ok(a), Ok(b)) => {
                let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits());
                match differ.count() {
                    0 if a.len() == heads * nq * nk => println!("ok    {name}"),
                    n => s.fail(&name, format!("{n} of {} values differ", a.len())),
                }
            }
            (Err(e), _) | (_, Err(e)) => s.fail(&name, e.to_string()),
        }
    }
}

/// The local-window pattern of a `rows × cols` window grid (FLASHVSR.md §5.3), each window
/// repeated for its `per_window` key blocks: `(S, S·per_window)` of 0/1.
fn window_pattern(rows: usize, cols: usize, range: usize, per_window: usize) -> Input {
    let s = rows * cols;
    let half = (range / 2) as isize;
    let inside = |v: usize, centre: usize| {
        let start = centre as isize - half;
        (v as isize) >= start && (v as isize) < start + range as isize
    };
    let values = (0..s * s * per_window)
        .map(|i| {
            let (q, k) = (i / (s * per_window), i % (s * per_window) / per_window);
            f32::from(inside(k / cols, q / cols) && inside(k % cols, q % cols))
        })
        .collect();
    (values, vec![s, s * per_window])
}

/// Differing entries of two 0/1 masks (none, when the shapes differ, is reported by the case).
fn mask_diff(got: &[f32], want: &[f32]) -> usize {
    got.iter().zip(want).filter(|(a, b)| a != b).count()
}

/// The device top-k selection must reproduce the CPU masks exactly: DiT shapes at 1408×768 (66
/// windows, range 11, topk 7919; steady state 1 query group × 4 key groups, first chunk 3 × 3;
/// block and sage), budgets at and past the group size, K ≤ 0, a fully masked pattern row, and
/// scores quantised so that equal probabilities (ties at τ) occur. Then masks computed on the
/// device feed the sparse attention, and the selection is timed at the real shape.
fn sparse_masks(s: &mut Suite) {
    let scale = 1.0 / 128f64.sqrt();
    let mut cases: Vec<(String, Input, Input, i64)> = Vec::new();
    for (mode, per_window) in [("block", 1usize), ("sage", 2)] {
        for (qg, kg) in [(1usize, 4usize), (3, 3)] {
            let (heads, windows) = (12, 66);
            let nk = kg * windows * per_window;
            let scores = s.normal_input(&[heads, qg * windows, nk], 60.0);
            let name = format!("sparse_topk {mode} 6x11 q{qg} k{kg} topk 7919");
            cases.push((name, scores, window_pattern(6, 11, 11, per_window), 7919));
        }
    }
    // A steady chunk of a 1920×1152 canvas (9 × 15 windows a frame, sage): the groups the
    // cluster form of the selection splits (the default on sm_90; `FLASHVSR_CUDA_TOPK_CLUSTER=0`
    // gives each group one CTA).
    let scores = s.normal_input(&[12, 2 * 135, 4 * 135 * 2], 60.0);
    cases.push((
        "sparse_topk sage 9x15 q2 k4 topk 33139".into(),
        scores,
        window_pattern(9, 15, 11, 2),
        33139,
    ));
    let small = |s: &mut Suite| s.normal_input(&[2, 4, 8], 20.0);
    for topk in [100i64, 15, 1, 0, -1] {
        let name = format!("sparse_topk 2x2 q2 k2 topk {topk}");
        let scores = small(s);
        cases.push((name, scores, window_pattern(2, 2, 1, 1), topk));
    }
    let mut holes = window_pattern(2, 2, 3, 1);
    holes.0[4..8].fill(0.0);
    let scores = small(s);
    cases.push(("sparse_topk fully masked row".into(), scores, holes, 5));
    // Steps of 4 in score units (0.35 after scaling): many equal values per row.
    let mut quantised = s.normal_input(&[12, 66, 264], 60.0);
    quantised
        .0
        .iter_mut()
        .for_each(|v| *v = (*v / 4.0).round() * 4.0);
    let name = "sparse_topk quantised scores (ties) topk 7919".to_string();
    cases.push((name, quantised, window_pattern(6, 11, 11, 1), 7919));

    for (name, scores, allowed, topk) in &cases {
        let op = |t: &[Tensor]| t[0].sparse_topk_mask(&t[1], *topk, scale);
        let inputs = [scores.clone(), allowed.clone()];
        let cpu_mask = Suite::run_on(&s.cpu, &inputs, &op).map(|r| r.1);
        let check = |got: &[f32]| match &cpu_mask {
            Ok(want) => {
                let selected = want.iter().filter(|&&v| v != 0.0).count();
                let diff = mask_diff(got, want);
                (diff > 0).then(|| format!("{diff} entries differ ({selected} selected)"))
            }
            Err(e) => Some(format!("CPU error: {e}")),
        };
        s.case_with(name, EXACT, &inputs, &op, &check);
    }

    // Device masks straight into the attention: selection and compaction never leave the GPU.
    let (heads, hd, windows) = (2usize, 128usize, 4usize);
    let dim = heads * hd;
    for (key_block, per_window) in [(128usize, 1usize), (64, 2)] {
        let (lq, lk) = (windows * 128, 2 * windows * 128);
        let inputs = [
            s.input(&[lq, dim], 1.0),
            s.input(&[lk, dim], 1.0),
            s.input(&[lk, dim], 1.0),
            s.normal_input(&[heads, windows, lk / key_block], 30.0),
            window_pattern(2, 2, 3, per_window),
        ];
        let name = format!("sparse_topk → block_sparse kb{key_block}");
        s.case(&name, GEMM, &inputs, &|t| {
            let mask = t[3].sparse_topk_mask(&t[4], 5, scale)?;
            t[0].block_sparse_attention(&t[1], &t[2], &mask, key_block)
        });
    }

    if !s.skip("bench topk") {
        for (name, scores, allowed, topk) in cases.iter().take(5) {
            let op = |t: &[Tensor]| t[0].sparse_topk_mask(&t[1], *topk, scale);
            let inputs = [scores.clone(), allowed.clone()];
            let row = bench_op("topk", &s.gpu, &inputs, &op, 0.0, 30);
            println!("bench topk {name}:{row}");
        }
    }
}

/// A DiT-like chain, so that ops feed each other on the device and buffers are freed mid-way.
fn chain(s: &mut Suite) {
    let (rows, heads, hd) = (256, 4, 64);
    let dim = heads * hd;
    let inputs = [
        s.input(&[rows, dim], 1.0),
        s.input(&[3 * dim, dim], 0.06),
        s.input(&[3 * dim], 0.1),
        s.input(&[dim], 0.5),
        s.input(&[dim], 0.5),
        s.input(&[rows, hd / 2], 1.0),
        s.input(&[rows, hd / 2], 1.0),
        s.input(&[dim, dim], 0.06),
    ];
    s.case(
        "chain modulate→qkv→rope→attention→proj→gate",
        GEMM,
        &inputs,
        &|t| {
            let h = t[0].modulate(&t[3], &t[4], 1e-6)?;
            let qkv = h.linear(&t[1], Some(&t[2]))?;
            let q = qkv.narrow(1, 0, dim)?.rope(&t[5], &t[6], heads)?;
            let k = qkv.narrow(1, dim, dim)?.rope(&t[5], &t[6], heads)?;
            let v = qkv.narrow(1, 2 * dim, dim)?;
            let a = q.attention(&k, &v, heads)?.linear(&t[7], None)?;
            t[0].add_gated(&a.gelu_tanh()?, &t[4])
        },
    );
}

/// Relative L2 error in f64 and the count of elements NaN on one side only.
fn rel_l2(got: &[f32], want: &[f32]) -> (f64, usize) {
    let (mut num, mut den, mut nan) = (0.0f64, 0.0f64, 0usize);
    for (g, w) in got.iter().zip(want) {
        if g.is_nan() || w.is_nan() {
            nan += (g.is_nan() != w.is_nan()) as usize;
            continue;
        }
        num += (*g as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    ((num / den.max(1e-300)).sqrt(), nan)
}

/// Tolerances of the bf16 tensor-core attention, relative L2: vs exact fp32 attention on the same
/// inputs (FLASHVSR.md §5.6: exact attention on bf16-rounded inputs is 0.5e-2 off for N(0,1) q, k
/// and up to 2.3e-2 for 2.5× larger ones, so those get 3e-2), and vs exact fp32 attention on the
/// bf16-rounded inputs (the kernel's own error: P in bf16, summation order).
const BF16_ATTENTION: (f64, f64) = (2e-2, 1e-2);
const BF16_ATTENTION_LARGE_QK: (f64, f64) = (3e-2, 1e-2);

/// Round to the nearest bf16 (ties to even), as `cvt.rn.bf16.f32`.
fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// Non-zero values in the head-0 columns of query block 1 (the test masks leave it empty).
fn nonzero_in_block(out: &[f32], dim: usize, hd: usize, qblock: usize) -> usize {
    (qblock * 128..(qblock + 1) * 128)
        .flat_map(|r| out[r * dim..r * dim + hd].iter())
        .filter(|v| **v != 0.0)
        .count()
}

/// A host mask as the device-side input `(heads, query blocks, key blocks)` of 0/1.
fn mask_input(m: &BlockMask) -> Input {
    (
        m.selected.iter().map(|&b| f32::from(b)).collect(),
        vec![m.heads, m.query_blocks, m.key_blocks],
    )
}

fn random_mask(
    rng: &mut Rng,
    heads: usize,
    query_blocks: usize,
    key_blocks: usize,
    key_block: usize,
    density: f32,
) -> BlockMask {
    let mut selected: Vec<u8> = (0..heads * query_blocks * key_blocks)
        .map(|_| (rng.uniform() * 0.5 + 0.5 < density) as u8)
        .collect();
    // (head 0, query block 1) attends to nothing: its rows must come out exactly zero.
    selected[key_blocks..2 * key_blocks].fill(0);
    // (head 1 or 0, query block 0) attends to everything.
    let h = 1.min(heads - 1);
    let at = h * query_blocks * key_blocks;
    selected[at..at + key_blocks].fill(1);
    BlockMask {
        heads,
        query_blocks,
        key_blocks,
        query_block: 128,
        key_block,
        selected,
    }
}

impl Suite {
    fn skip(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_some_and(|f| !name.contains(f.as_str()))
    }

    /// `op` on the bf16 GPU backend against `reference` (the CPU, or the exact fp32 GPU kernels at
    /// sizes the CPU is too slow for), twice: on the inputs as they are (relative L2 ≤ `tol`),
    /// and on the inputs rounded to bf16 (relative L2 ≤ `tol_rounded`: what the kernel adds to
    /// the rounding of its operands: P in bf16, summation order). No NaN, and `check`.
    #[allow(clippy::too_many_arguments)]
    fn bf16_case(
        &mut self,
        name: &str,
        (tol, tol_rounded): (f64, f64),
        reference: &BackendRef,
        inputs: &[Input],
        op: Op,
        check: &dyn Fn(&[f32]) -> Option<String>,
    ) {
        if self.skip(name) {
            return;
        }
        self.cases += 1;
        let rounded: Vec<Input> = inputs
            .iter()
            .map(|(d, sh)| (d.iter().map(|&x| round_bf16(x)).collect(), sh.clone()))
            .collect();
        let started = Instant::now();
        let want = Suite::run_on(reference, inputs, op);
        let want_rounded = Suite::run_on(reference, &rounded, op);
        let ref_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let got = Suite::run_on(&self.gpu_bf16, inputs, op);
        let gpu_s = started.elapsed().as_secs_f64();
        let verdict = match (got, want, want_rounded) {
            (Err(e), _, _) => Err(format!("CUDA error: {e}")),
            (_, Err(e), _) | (_, _, Err(e)) => Err(format!("reference error: {e}")),
            (Ok((gs, g)), Ok((ws, w)), Ok((_, wr))) => {
                let (err, _) = rel_l2(&g, &w);
                let (err_r, _) = rel_l2(&g, &wr);
                let nan_total = g.iter().filter(|v| v.is_nan()).count();
                if gs != ws || g.len() != w.len() {
                    Err(format!("shape {gs:?} vs reference {ws:?}"))
                } else if nan_total > 0 {
                    Err(format!("{nan_total} NaN in the output"))
                } else if err.is_nan() || err > tol {
                    Err(format!("relative L2 {err:.3e} > {tol:.0e} (vs exact on bf16-rounded inputs {err_r:.3e})"))
                } else if err_r.is_nan() || err_r > tol_rounded {
                    Err(format!("relative L2 vs exact on bf16-rounded inputs {err_r:.3e} > {tol_rounded:.0e} (vs exact {err:.3e})"))
                } else if let Some(msg) = check(&g) {
                    Err(msg)
                } else {
                    Ok((err, err_r))
                }
            }
        };
        match verdict {
            Ok((err, err_r)) => println!(
                "ok    {name:<44} rel L2 {err:.2e} (tol {tol:.0e}), vs bf16-rounded inputs {err_r:.2e} (tol {tol_rounded:.0e})  ref {ref_s:.3}s gpu {gpu_s:.3}s"
            ),
            Err(msg) => self.fail(name, msg),
        }
    }

    fn normal_input(&mut self, shape: &[usize], scale: f32) -> Input {
        let n = shape.iter().product();
        (self.rng.normal_vec(n, scale), shape.to_vec())
    }
}

/// The bf16 tensor-core attention against the CPU at small shapes: dense (head_dim 128 takes the
/// flash kernel, other head dims keep the exact kernel), key counts that are not a multiple of the
/// 64-key tile, query counts that are not a multiple of 128, block and sage masks.
fn bf16_attention(s: &mut Suite) {
    let cpu = s.cpu.clone();
    for (lq, lk, heads, hd) in [
        (300, 512, 2, 128),
        (1024, 512, 12, 128),
        (77, 200, 3, 128),
        (129, 1, 1, 128),
        (256, 65, 2, 128),
        (150, 150, 2, 64),
    ] {
        let dim = heads * hd;
        let inputs = [
            s.normal_input(&[lq, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
        ];
        // head_dim 64 stays on the exact fp32 kernel: hold it to the parity tolerance.
        let tol = if hd == 128 {
            BF16_ATTENTION
        } else {
            (1e-5, 1.0)
        };
        let name = format!("bf16 small attention q{lq} k{lk} {heads}x{hd}");
        s.bf16_case(
            &name,
            tol,
            &cpu,
            &inputs,
            &|t| t[0].attention(&t[1], &t[2], heads),
            &|_| None,
        );
    }
    for (key_block, query_blocks, key_blocks, heads, qk_scale) in [
        (128, 2, 4, 2, 1.0),
        (64, 2, 8, 2, 1.0),
        (128, 8, 16, 12, 1.0),
        (64, 3, 10, 3, 2.5),
        (128, 3, 5, 2, 2.5),
    ] {
        let hd = 128;
        let dim = heads * hd;
        let mask = random_mask(&mut s.rng, heads, query_blocks, key_blocks, key_block, 0.5);
        let (lq, lk) = (query_blocks * 128, key_blocks * key_block);
        let inputs = [
            s.normal_input(&[lq, dim], qk_scale),
            s.normal_input(&[lk, dim], qk_scale),
            s.normal_input(&[lk, dim], 1.0),
            mask_input(&mask),
        ];
        let name =
            format!("bf16 small block_sparse q{lq} k{lk} kb{key_block} {heads}x{hd} x{qk_scale}");
        let empty = |out: &[f32]| {
            let bad = nonzero_in_block(out, dim, hd, 1);
            (bad > 0).then(|| format!("{bad} non-zero values in a query block with no key block"))
        };
        let tol = if qk_scale > 1.0 {
            BF16_ATTENTION_LARGE_QK
        } else {
            BF16_ATTENTION
        };
        s.bf16_case(
            &name,
            tol,
            &cpu,
            &inputs,
            &|t| t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block),
            &empty,
        );
    }
}

/// The flash kernel's work orders (`FLASHVSR_CUDA_FLASH_ORDER`, read per call): the order list
/// must be a permutation of the work items, or poisoned rows stay NaN. The second geometry has
/// more by-head sort bins (12 × 1001) than the default 48 KiB of shared memory holds, as a
/// 1920×1152 sage steady chunk (12 × 1081): the kernel's limit is raised for it.
fn flash_work_orders(s: &mut Suite) {
    let cpu = s.cpu.clone();
    let heads = 12;
    let dim = heads * 128;
    for (query_blocks, key_blocks, key_block, density) in [(8, 16, 128, 0.5), (2, 1000, 64, 0.05)] {
        let mask = random_mask(
            &mut s.rng,
            heads,
            query_blocks,
            key_blocks,
            key_block,
            density,
        );
        let inputs = [
            s.normal_input(&[query_blocks * 128, dim], 1.0),
            s.normal_input(&[key_blocks * key_block, dim], 1.0),
            s.normal_input(&[key_blocks * key_block, dim], 1.0),
            mask_input(&mask),
        ];
        for order in ["head", "grid", "lpt"] {
            // The suite runs on this one thread: nothing reads the environment concurrently.
            std::env::set_var("FLASHVSR_CUDA_FLASH_ORDER", order);
            s.bf16_case(
                &format!("bf16 block_sparse work order {order} q{query_blocks} k{key_blocks}x{key_block}"),
                BF16_ATTENTION,
                &cpu,
                &inputs,
                &|t| t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block),
                &|_| None,
            );
        }
    }
    std::env::remove_var("FLASHVSR_CUDA_FLASH_ORDER");
}

/// Median of `reps` timed runs of `f` (after two warm-ups), in ms; `f` must synchronize.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[reps / 2]
}

/// The DiT's real attention shapes at 1408×768 (S = 66 windows): one query group (8448 rows)
/// against 4 key groups (33792 rows), 12 heads of 128, the budget of 7919 selected blocks per
/// head (block mode 45 % of 66 × 264; sage mode the same count of 66 × 528). The reference is the
/// exact fp32 GPU kernel. Then a micro-benchmark: whole op (mask upload, bf16 conversion, kernel)
/// in ms and TFLOP/s over the selected blocks (4·128·kb·128 FLOP each).
fn bf16_real_shapes(s: &mut Suite) {
    let (heads, hd, qb, groups) = (12usize, 128usize, 66usize, 4usize);
    let dim = heads * hd;
    let (lq, lk) = (qb * 128, groups * qb * 128);
    let budget = 7919usize;
    let any = ["bf16 real", "bench block", "bench sage", "bench cross"]
        .iter()
        .any(|n| !s.skip(n));
    if !any {
        return;
    }
    let reference = s.gpu.clone();
    let mut summary = Vec::new();
    for qk_scale in [1.0f32, 2.5] {
        let inputs = [
            s.normal_input(&[lq, dim], qk_scale),
            s.normal_input(&[lk, dim], qk_scale),
            s.normal_input(&[lk, dim], 1.0),
        ];
        for key_block in [128usize, 64] {
            let kblocks = lk / key_block;
            let density = budget as f32 / (qb * kblocks) as f32;
            let mask = random_mask(&mut s.rng, heads, qb, kblocks, key_block, density);
            let selected: usize = mask.selected.iter().map(|&b| b as usize).sum();
            let mut inputs = inputs.to_vec();
            inputs.push(mask_input(&mask));
            let mode = if key_block == 128 { "block" } else { "sage" };
            let name = format!(
                "bf16 real {mode} q{lq} k{lk} kb{key_block} {heads}x{hd} x{qk_scale} ({:.1}%)",
                100.0 * selected as f64 / mask.selected.len() as f64
            );
            let empty = |out: &[f32]| {
                let bad = nonzero_in_block(out, dim, hd, 1);
                (bad > 0).then(|| format!("{bad} non-zero values in an empty query block"))
            };
            let tol = if qk_scale > 1.0 {
                BF16_ATTENTION_LARGE_QK
            } else {
                BF16_ATTENTION
            };
            s.bf16_case(
                &name,
                tol,
                &reference,
                &inputs,
                &|t| t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block),
                &empty,
            );
            if qk_scale != 1.0 || s.skip(&format!("bench {mode}")) {
                continue;
            }
            let flop = 4.0 * 128.0 * key_block as f64 * 128.0 * selected as f64;
            let op = |t: &[Tensor]| t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block);
            let mut row = format!("bench {mode:<5} q{lq} k{lk} kb{key_block} sel {selected}:");
            row += &bench_op("bf16", &s.gpu_bf16, &inputs, &op, flop, 10);
            // The same op with nothing selected: mask compaction, conversion, zero writes.
            let mut none = mask.clone();
            none.selected.fill(0);
            let mut inputs0 = inputs.clone();
            inputs0[3] = mask_input(&none);
            row += &bench_op("(empty mask", &s.gpu_bf16, &inputs0, &op, 0.0, 10);
            row += ")";
            if bench_fp32() {
                row += &bench_op("fp32", &s.gpu, &inputs, &op, flop, 1);
            }
            summary.push(row);
        }
    }
    if !s.skip("bench cross") {
        // Cross-attention: every token of a 3-group chunk against 512 context keys.
        let (lq, lk) = (3 * lq, 512);
        let inputs = [
            s.normal_input(&[lq, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
        ];
        let flop = 4.0 * lq as f64 * lk as f64 * hd as f64 * heads as f64;
        let op = |t: &[Tensor]| t[0].attention(&t[1], &t[2], heads);
        let mut row = format!("bench cross q{lq} k{lk} {heads}x{hd}:");
        row += &bench_op("bf16", &s.gpu_bf16, &inputs, &op, flop, 10);
        if bench_fp32() {
            row += &bench_op("fp32", &s.gpu, &inputs, &op, flop, 1);
        }
        summary.push(row);
    }
    for row in summary {
        println!("{row}");
    }
}

/// `FLASHVSR_BENCH_FP32=0` leaves the (slow) fp32 kernels out of the benchmark.
fn bench_fp32() -> bool {
    std::env::var("FLASHVSR_BENCH_FP32").map_or(true, |v| v != "0")
}

/// Times `op` on `backend`: one op then synchronize (median of 5), and `pipelined` ops enqueued
/// back to back before one synchronize (so host work overlaps the GPU, as in the model), per op.
fn bench_op(
    label: &str,
    backend: &BackendRef,
    inputs: &[Input],
    op: Op,
    flop: f64,
    pipelined: usize,
) -> String {
    let t = Suite::tensors(backend, inputs).expect("upload");
    let run = |n: usize| {
        for _ in 0..n {
            drop(op(&t).expect("op"));
        }
        backend.synchronize().expect("sync");
    };
    let sync_ms = time_ms(5, || run(1));
    let pipe_ms = time_ms(3, || run(pipelined)) / pipelined as f64;
    let rate = |ms: f64| {
        if flop > 0.0 {
            format!(" {:6.1} TFLOP/s", flop / ms / 1e9)
        } else {
            String::new()
        }
    };
    format!(
        "  {label} sync {sync_ms:.3} ms{}, pipelined {pipe_ms:.3} ms{}",
        rate(sync_ms),
        rate(pipe_ms)
    )
}

/// The paged allocator (every allocation paged, so that small cases churn pages too): tensors of
/// many sizes made, combined and dropped in a mixed order, so that freed blocks come back from the
/// cache and their pages move to blocks of other sizes while earlier kernels were still queued
/// on the old addresses. Every value is checked exactly against the host's arithmetic.
fn paged_blocks(s: &mut Suite, ordinal: usize, options: &CudaOptions) {
    let name = "paged blocks: churn of sizes, exact values";
    if s.filter
        .as_ref()
        .is_some_and(|f| !name.contains(f.as_str()))
    {
        return;
    }
    s.cases += 1;
    let paged = match CudaBackend::create(
        ordinal,
        CudaOptions {
            paged_min_bytes: Some(1),
            // For the allocator's counters in the report line.
            op_profile: true,
            ..options.clone()
        },
    ) {
        Ok(b) => b,
        Err(e) => return s.fail(name, format!("backend: {e}")),
    };
    let backend: BackendRef = paged.clone();
    let run = || -> Result<Option<String>> {
        let mut kept: Vec<(Tensor, Vec<f32>)> = Vec::new();
        let mut state = 7u64;
        for step in 0..400usize {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // 1 KiB to ~9 MiB: one to five 2 MiB pages and tiny blocks.
            let len = 256 + ((state >> 33) as usize % (9 << 18));
            let a: Vec<f32> = (0..len).map(|i| ((i * 7 + step) % 1000) as f32).collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 3 + step * 5) % 100) as f32)
                .collect();
            let ta = Tensor::from_slice(&backend, &a, &[len])?;
            let tb = Tensor::from_slice(&backend, &b, &[len])?;
            // (a + b) * b: exact in f32 for these small integers.
            let y = ta.add(&tb)?.mul(&tb)?;
            drop((ta, tb));
            let want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| (a + b) * b).collect();
            kept.push((y, want));
            if kept.len() > 6 || (state >> 40).is_multiple_of(3) {
                let (y, want) = kept.remove((state >> 20) as usize % kept.len());
                if y.to_vec()? != want {
                    return Ok(Some(format!("step {step}: values differ")));
                }
            }
        }
        for (i, (y, want)) in kept.into_iter().enumerate() {
            if y.to_vec()? != want {
                return Ok(Some(format!("kept tensor {i}: values differ")));
            }
        }
        Ok(None)
    };
    match run() {
        Ok(None) => {
            let stats = backend.op_profile_report().unwrap_or_default();
            println!("ok    {name} {}", stats.lines().last().unwrap_or(""));
        }
        Ok(Some(msg)) => s.fail(name, msg),
        Err(e) => s.fail(name, e.to_string()),
    }
}

fn plumbing(s: &mut Suite, gpu: &Arc<CudaBackend>) {
    match gpu
        .unwritten_output(1000)
        .map(|b| Tensor::from_buffer(&s.gpu, b, &[1000]))
    {
        Ok(Ok(t)) => match t.to_vec() {
            Ok(v) if v.iter().all(|x| x.is_nan()) => {
                println!("ok    poisoned outputs start as NaN")
            }
            Ok(_) => s.fail("poison", "an unwritten output is not all NaN".into()),
            Err(e) => s.fail("poison", e.to_string()),
        },
        Ok(Err(e)) => s.fail("poison", e.to_string()),
        Err(e) => s.fail("poison", e.to_string()),
    }
    let empty = Tensor::from_slice(&s.gpu, &[], &[0, 5]).and_then(|t| t.to_vec());
    match empty {
        Ok(v) if v.is_empty() => println!("ok    empty tensor round trip"),
        other => s.fail("empty tensor", format!("{other:?}")),
    }
    match Tensor::zeros(&s.gpu, &[3, 4]).and_then(|t| t.to_vec()) {
        Ok(v) if v == vec![0.0; 12] => println!("ok    zeros"),
        other => s.fail("zeros", format!("{other:?}")),
    }
    match flashvsr_cuda::auto_backend() {
        Ok(b) => println!("ok    auto_backend: {b:?}"),
        Err(e) => s.fail("auto_backend", e),
    }
    // Tensors handed between backend instances (the devices of a split stream): device to device,
    // bit for bit, bf16 kept bf16, and usable by ops of the receiving backend.
    let values = s.rng.vec(3 * 1007, 3.0);
    let copies = Tensor::from_slice(&s.gpu, &values, &[3, 1007]).and_then(|t| {
        let bits: Vec<u16> = values.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let compact = Tensor::from_host_data(&s.gpu, &HostData::Bf16(bits), &[3, 1007])?;
        s.gpu.synchronize()?;
        let f32_copy = t.to_backend(&s.gpu_chunked)?;
        let bf16_copy = compact.to_backend(&s.gpu_chunked)?;
        Ok((
            f32_copy.to_vec()?,
            f32_copy.unary(UnaryOp::Relu)?.to_vec()?,
            compact.to_host_data()?,
            bf16_copy.to_host_data()?,
        ))
    });
    s.cases += 1;
    match copies {
        Ok((copy, relu, bf16_src, bf16_copy)) => {
            let relu_want: Vec<f32> = values.iter().map(|v| v.max(0.0)).collect();
            let bf16_kept = matches!(bf16_copy, HostData::Bf16(_));
            if copy == values && relu == relu_want && bf16_kept && bf16_src == bf16_copy {
                println!("ok    tensors copied between backend instances, bf16 kept bf16")
            } else {
                s.fail("copy between backends", "values or storage changed".into())
            }
        }
        Err(e) => s.fail("copy between backends", e.to_string()),
    }
    let cpu_t = Tensor::from_slice(&s.cpu, &[1.0, 2.0], &[2]).expect("cpu tensor");
    match s.gpu.unary(&cpu_t, UnaryOp::Relu) {
        Err(e) => println!("ok    CPU tensor refused by the CUDA backend: {e}"),
        Ok(_) => s.fail("foreign tensor", "a CPU tensor was accepted".into()),
    }
}

/// Fast mode's bf16 storage (`Tensor::compact`): exact rounding, layout ops that keep bf16,
/// ops that widen it, and bf16 GEMMs (plain, bias, fused GELU) against the CPU on the rounded
/// values.
fn bf16_storage(s: &mut Suite, fast: &BackendRef) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !"bf16 storage".contains(f.as_str()))
    {
        return;
    }
    let check = |s: &mut Suite, name: &str, got: Result<Vec<f32>>, want: &[f32], tol: f64| {
        s.cases += 1;
        match got {
            Err(e) => s.fail(name, format!("CUDA error: {e}")),
            Ok(g) if g.len() != want.len() => s.fail(name, format!("{} values", g.len())),
            Ok(g) => {
                let (err, nan) = rel_l2(&g, want);
                if nan > 0 || err > tol || g.iter().any(|v| v.is_nan()) {
                    s.fail(name, format!("rel L2 {err:.3e} (tol {tol:.0e}), {nan} NaN"));
                } else {
                    println!("ok    {name:<44} rel L2 {err:.2e} (tol {tol:.0e})");
                }
            }
        }
    };
    let rounded = |v: &[f32]| v.iter().map(|&x| round_bf16(x)).collect::<Vec<_>>();
    let (m, k, n) = (300, 1536, 640);
    let x = s.rng.normal_vec(m * k, 1.0);
    let w = s.rng.normal_vec(n * k, 0.05);
    let b = s.rng.vec(n, 1.0);
    let on = |be: &BackendRef, v: &[f32], shape: &[usize]| Tensor::from_slice(be, v, shape);

    let compact = || on(fast, &x, &[m, k])?.compact();
    let got = compact().and_then(|t| t.to_vec());
    check(
        s,
        "bf16 storage: compact rounds to nearest even",
        got,
        &rounded(&x),
        0.0,
    );
    let got = compact().and_then(|t| t.narrow(1, 3, 100)?.to_vec());
    let want: Vec<f32> = rounded(&x)
        .chunks(k)
        .flat_map(|r| r[3..103].to_vec())
        .collect();
    check(s, "bf16 storage: narrow keeps bf16", got, &want, 0.0);
    let got = compact().and_then(|t| {
        let f = on(fast, &x, &[m, k])?;
        Tensor::cat(&[&t, &t, &f], 0)?.to_vec()
    });
    let mut want = rounded(&x);
    want.extend(rounded(&x));
    want.extend(&x);
    check(s, "bf16 storage: cat of bf16 and f32", got, &want, 0.0);
    let got = compact().and_then(|t| Tensor::cat(&[&t, &t], 1)?.narrow(1, k - 2, 4)?.to_vec());
    let r = rounded(&x);
    let want: Vec<f32> = r
        .chunks(k)
        .flat_map(|row| [row[k - 2], row[k - 1], row[0], row[1]])
        .collect();
    check(s, "bf16 storage: cat of bf16 stays bf16", got, &want, 0.0);
    let got = compact().and_then(|t| t.relu()?.to_vec());
    let want: Vec<f32> = rounded(&x).iter().map(|v| v.max(0.0)).collect();
    check(s, "bf16 storage: an f32-only op widens", got, &want, 0.0);

    // Pooling reads the bf16 storage directly (no widened copy): the mean of the rounded values.
    let got = compact().and_then(|t| t.reshape(&[m / 4, 4, k])?.group_mean()?.to_vec());
    let want = Tensor::from_slice(&s.cpu, &rounded(&x), &[m / 4, 4, k])
        .and_then(|t| t.group_mean()?.to_vec())
        .unwrap_or_default();
    check(s, "bf16 storage: group_mean of bf16", got, &want, 1e-7);
    // Groups of 20: two batches of loads and a tail of the pairs kernel.
    let got = compact().and_then(|t| t.reshape(&[m / 20, 20, k])?.group_mean()?.to_vec());
    let want = Tensor::from_slice(&s.cpu, &rounded(&x), &[m / 20, 20, k])
        .and_then(|t| t.group_mean()?.to_vec())
        .unwrap_or_default();
    check(
        s,
        "bf16 storage: group_mean of bf16, groups of 20",
        got,
        &want,
        1e-7,
    );
    // Host copies keep the bf16 storage, and come back bit for bit.
    let got = compact().and_then(|t| {
        let host = t.to_host_data()?;
        if !matches!(host, flashvsr_tensor::HostData::Bf16(_)) {
            return Ok(Vec::new());
        }
        Tensor::from_host_data(fast, &host, &[m, k])?.to_vec()
    });
    check(
        s,
        "bf16 storage: host round trip stays bf16",
        got,
        &rounded(&x),
        0.0,
    );

    let cpu = s.cpu.clone();
    let reference = |gelu: bool| -> Result<Vec<f32>> {
        let xt = on(&cpu, &rounded(&x), &[m, k])?;
        let wt = on(&cpu, &rounded(&w), &[n, k])?;
        let bt = on(&cpu, &b, &[n])?;
        let y = xt.linear(&wt, Some(&bt))?;
        if gelu {
            // The fused GELU's output is stored bf16 (only the next bf16 GEMM reads it).
            Ok(rounded(&y.gelu_tanh()?.to_vec()?))
        } else {
            y.to_vec()
        }
    };
    for gelu in [false, true] {
        let got = (|| {
            let wt = on(fast, &w, &[n, k])?.compact()?;
            let xt = on(fast, &x, &[m, k])?;
            let bt = on(fast, &b, &[n])?;
            let y = if gelu {
                xt.linear_gelu(&wt, Some(&bt))?
            } else {
                xt.linear(&wt, Some(&bt))?
            };
            y.to_vec()
        })();
        let name = if gelu {
            "bf16 storage: linear_gelu, bf16 weights"
        } else {
            "bf16 storage: linear, bf16 weights"
        };
        match reference(gelu) {
            Ok(want) => check(s, name, got, &want, 2e-3),
            Err(e) => s.fail(name, format!("CPU error: {e}")),
        }
    }
    // The residual read by the GEMM as C, with bf16 weights.
    let r = s.input(&[m, n], 1.0).0;
    let got = (|| {
        let wt = on(fast, &w, &[n, k])?.compact()?;
        let y = on(fast, &x, &[m, k])?.linear_add(
            &wt,
            Some(&on(fast, &b, &[n])?),
            &on(fast, &r, &[m, n])?,
        )?;
        y.to_vec()
    })();
    let name = "bf16 storage: linear_add, bf16 weights";
    let want = (|| {
        let y = on(&cpu, &rounded(&x), &[m, k])?.linear(
            &on(&cpu, &rounded(&w), &[n, k])?,
            Some(&on(&cpu, &b, &[n])?),
        )?;
        y.add(&on(&cpu, &r, &[m, n])?)?.to_vec()
    })();
    match want {
        Ok(want) => check(s, name, got, &want, 2e-3),
        Err(e) => s.fail(name, format!("CPU error: {e}")),
    }
}

fn main() {
    if let Err(e) = flashvsr_cuda::prepare_and_reexec_if_needed() {
        println!("gpu_ops: library resolver: {e}");
    }
    let info = match flashvsr_cuda::probe() {
        Ok(info) => info,
        Err(why) => {
            println!("gpu_ops: skipped: no CUDA device ({why})");
            return;
        }
    };
    print!("gpu_ops: {info}");
    // Sage masks take the int8 Q·Kᵀ kernel by default on sm_90; the bf16 cases here check the
    // bf16 kernel, and the int8 ones (gpu_ops/sage_int8.rs) ask for it. The suite runs on this
    // one thread: nothing reads the environment concurrently.
    if std::env::var_os("FLASHVSR_CUDA_SAGE_INT8").is_none() {
        std::env::set_var("FLASHVSR_CUDA_SAGE_INT8", "0");
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let options = CudaOptions {
        poison_outputs: true,
        attention: AttentionPrecision::Fp32,
        ..CudaOptions::default()
    };
    let started = Instant::now();
    let gpu = match CudaBackend::create(info.ordinal, options.clone()) {
        Ok(b) => b,
        Err(e) => {
            println!("gpu_ops: FAILED: the device is there but the backend did not start: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "gpu_ops: backend {gpu:?} ready in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let chunked = CudaBackend::create(
        info.ordinal,
        CudaOptions {
            im2col_budget: 4096,
            ..options.clone()
        },
    )
    .expect("second backend");
    let gpu_bf16 = CudaBackend::create(
        info.ordinal,
        options.clone().with_attention(AttentionPrecision::Bf16),
    )
    .expect("bf16 backend");
    let fast = cudnn_conv::FastBackends::create(info.ordinal, &options);
    let mut s = Suite {
        cpu: CpuBackend::new_ref(),
        gpu: gpu.clone(),
        gpu_chunked: chunked,
        gpu_bf16,
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        filter,
        failures: Vec::new(),
        cases: 0,
    };
    flash_bench::run(&mut s, info.ordinal);
    plumbing(&mut s, &gpu);
    paged_blocks(&mut s, info.ordinal, &options);
    layout(&mut s);
    pointwise(&mut s);
    norms(&mut s);
    linear(&mut s);
    colour_fix(&mut s);
    conv(&mut s);
    cudnn_conv::run(&mut s, &fast, &gpu);
    channels_last::run(&mut s, &fast);
    block_copies::run(&mut s, &fast, info.ordinal, &options);
    vae_ops::run(&mut s, &fast, &gpu);
    async_copies::run(&mut s, &fast);
    attention(&mut s);
    wide_attention::run(&mut s, info.ordinal, &options);
    block_sparse(&mut s);
    head_scores(&mut s);
    sparse_masks(&mut s);
    chain(&mut s);
    bf16_attention(&mut s);
    flash_work_orders(&mut s);
    kv_segments::run(&mut s);
    bf16_real_shapes(&mut s);
    // The fast mode's backend with long-lived tensors in their own pool (FLASHVSR_CUDA_KEPT_POOL),
    // so that its cases also cover those allocations.
    let fast_options = CudaOptions {
        kept_pool: true,
        ..options.clone().with_fast_mode(true)
    };
    let fast: BackendRef =
        CudaBackend::create(info.ordinal, fast_options).expect("fast-mode backend");
    bf16_storage(&mut s, &fast);
    gemm_tune::run(&mut s, info.ordinal, &options);
    ffn_passes::run(&mut s, info.ordinal, &options);
    bf16_copies::run(&mut s, &fast);
    flash_instances::run(&mut s, &fast);
    dense_persistent::run(&mut s, &fast, info.ordinal);
    sage_int8::run(&mut s, info.compute_capability == (9, 0));
    qkv_split::run(&mut s, &fast);
    row_norms::run(&mut s, info.ordinal, &options);
    dilated_blur::run(&mut s, &fast);
    resample_levels::run(&mut s);
    random_normal::run(&mut s);
    if let Err(e) = gpu.synchronize() {
        s.fail("synchronize", e.to_string());
    }
    println!(
        "gpu_ops: {} cases, {} failed, {:.1}s",
        s.cases,
        s.failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !s.failures.is_empty() {
        for f in &s.failures {
            println!("  FAILED {f}");
        }
        std::process::exit(1);
    }
}

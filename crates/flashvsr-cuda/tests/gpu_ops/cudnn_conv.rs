//! conv3d in the fast mode: cuDNN bf16 convolutions against the CPU (relative L2 ≤ 1e-2), with a
//! check that each case took the path it should (the backend counts its cuDNN convs). Then timings
//! at the model's real shapes, cuDNN against the fast mode's im2col + TF32 GEMM.

use std::sync::Arc;

use flashvsr_cuda::{CudaBackend, CudaOptions};
use flashvsr_tensor::{BackendRef, PadMode, Tensor};

use super::{rel_l2, time_ms, Input, Op, Suite};

/// bf16 operands with fp32 accumulation.
const BF16_CONV: f64 = 1e-2;

pub struct FastBackends {
    /// Fast mode with cuDNN where it loads, the causal temporal convs on cuDNN's 3-D kernels
    /// (`FLASHVSR_CUDA_FOLD_CAUSAL=0`; `folded` has the default).
    pub cudnn: Arc<CudaBackend>,
    /// The same with a staging budget of a few frames: many cuDNN calls per conv; and the direct
    /// 3-output conv on tensor cores (`cudnn` has the FMA kernel).
    pub grouped: Arc<CudaBackend>,
    /// Fast mode with cuDNN turned off: im2col + TF32 GEMM.
    pub im2col: Arc<CudaBackend>,
    /// Fast mode with cuDNN as it was staged before: f32 row-major outputs, no channels-last
    /// activations, temporal kernels on cuDNN's 3-D convolutions.
    pub plain: Arc<CudaBackend>,
    /// Fast mode with every temporal kernel folded into 2-D convs (the default).
    pub folded: Arc<CudaBackend>,
}

impl FastBackends {
    pub fn create(ordinal: usize, options: &CudaOptions) -> FastBackends {
        // The direct kernel for 3 output channels (on by default): on here whatever the
        // environment says, so that the channels-last cases check it; the FMA kernel here, the
        // tensor-core one (the default) on `grouped`.
        let fast = CudaOptions {
            gemm_tf32: true,
            conv_fold_causal: false,
            conv_direct_three: true,
            conv_direct_three_mma: false,
            ..options.clone()
        };
        let make = |o: CudaOptions| CudaBackend::create(ordinal, o).expect("fast backend");
        FastBackends {
            cudnn: make(fast.clone()),
            grouped: make(CudaOptions {
                conv_stage_bytes: 64 << 10,
                conv_direct_three_mma: true,
                ..fast.clone()
            }),
            im2col: make(CudaOptions {
                conv_cudnn: false,
                ..fast.clone()
            }),
            plain: make(CudaOptions {
                conv_channels_last: false,
                conv_fold_time: false,
                ..fast.clone()
            }),
            folded: make(CudaOptions {
                conv_fold_causal: true,
                ..fast
            }),
        }
    }
}

struct Case {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 5],
    stride_t: usize,
    pad: usize,
    mode: PadMode,
    bias: bool,
    /// Whether the fast backend takes cuDNN (input channels a multiple of 8).
    cudnn: bool,
}

const CASES: [Case; 8] = [
    Case {
        name: "kt=1 3x3 zero pad",
        x: [64, 3, 24, 40],
        w: [32, 64, 1, 3, 3],
        stride_t: 1,
        pad: 1,
        mode: PadMode::Zero,
        bias: true,
        cudnn: true,
    },
    Case {
        name: "kt=1 3x3 replicate",
        x: [16, 4, 13, 9],
        w: [24, 16, 1, 3, 3],
        stride_t: 1,
        pad: 1,
        mode: PadMode::Replicate,
        bias: true,
        cudnn: true,
    },
    Case {
        name: "1x1 no bias",
        x: [32, 3, 10, 12],
        w: [48, 32, 1, 1, 1],
        stride_t: 1,
        pad: 0,
        mode: PadMode::Zero,
        bias: false,
        cudnn: true,
    },
    Case {
        name: "1x1 temporal stride 2",
        x: [16, 5, 10, 12],
        w: [24, 16, 1, 1, 1],
        stride_t: 2,
        pad: 0,
        mode: PadMode::Zero,
        bias: true,
        cudnn: true,
    },
    Case {
        name: "kt=4 stride 4 3x3 replicate",
        x: [16, 12, 12, 10],
        w: [32, 16, 4, 3, 3],
        stride_t: 4,
        pad: 1,
        mode: PadMode::Replicate,
        bias: true,
        cudnn: true,
    },
    Case {
        name: "kt=4 stride 2 3x3 zero pad",
        x: [8, 10, 7, 8],
        w: [16, 8, 4, 3, 3],
        stride_t: 2,
        pad: 1,
        mode: PadMode::Zero,
        bias: true,
        cudnn: true,
    },
    Case {
        // Output channels padded to 8 while staging (the decoder's last conv).
        name: "16->3 padded outputs",
        x: [16, 3, 9, 11],
        w: [3, 16, 1, 3, 3],
        stride_t: 1,
        pad: 1,
        mode: PadMode::Replicate,
        bias: true,
        cudnn: true,
    },
    Case {
        // Input channels not a multiple of 8 (the golden models' widths): im2col + TF32 GEMM.
        name: "unaligned input channels 6->3",
        x: [6, 3, 9, 11],
        w: [3, 6, 1, 3, 3],
        stride_t: 1,
        pad: 1,
        mode: PadMode::Replicate,
        bias: true,
        cudnn: false,
    },
];

impl Suite {
    /// `op` on `backend` against the CPU: relative L2 ≤ `tol`, no NaN (outputs are poisoned), and
    /// exactly `cudnn_calls` more convs of the fast path counted by the backend: on cuDNN, or on
    /// the direct kernel that replaces it for 3 output channels (ops/conv_direct.rs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_case(
        &mut self,
        name: &str,
        backend: &Arc<CudaBackend>,
        tol: f64,
        cudnn_calls: u64,
        inputs: &[Input],
        op: Op,
    ) {
        if self.skip(name) {
            return;
        }
        self.cases += 1;
        let want = Suite::run_on(&self.cpu, inputs, op);
        let fast_convs = || backend.cudnn_conv_count() + backend.direct_conv_count();
        let before = fast_convs();
        let gpu: BackendRef = backend.clone();
        let got = Suite::run_on(&gpu, inputs, op);
        let calls = fast_convs() - before;
        let verdict = match (got, want) {
            (Err(e), _) => Err(format!("CUDA error: {e}")),
            (_, Err(e)) => Err(format!("CPU error: {e}")),
            (Ok((gs, g)), Ok((ws, w))) => {
                let (err, _) = rel_l2(&g, &w);
                let nan = g.iter().filter(|v| v.is_nan()).count();
                if gs != ws {
                    Err(format!("shape {gs:?} vs CPU {ws:?}"))
                } else if nan > 0 {
                    Err(format!("{nan} NaN in the output (unwritten?)"))
                } else if err.is_nan() || err > tol {
                    Err(format!("relative L2 {err:.3e} > {tol:.0e}"))
                } else if calls != cudnn_calls {
                    Err(format!("{calls} cuDNN convs, expected {cudnn_calls}"))
                } else {
                    Ok(err)
                }
            }
        };
        match verdict {
            Ok(err) => {
                println!("ok    {name:<44} rel L2 {err:.2e} (tol {tol:.0e}), cuDNN convs {calls}")
            }
            Err(msg) => self.fail(name, msg),
        }
    }
}

/// Whether the fast backends should have cuDNN: fail when the library resolves but the backend
/// did not start it; without the library the cases still run and expect the im2col path.
fn cudnn_expected(s: &mut Suite, fast: &FastBackends) -> bool {
    let resolved = flashvsr_cuda::current_report()
        .path_of("libcudnn.so.9")
        .is_some();
    let version = flashvsr_cuda::cudnn_version();
    println!(
        "cudnn: library {}, version {version:?}, fast backend uses it: {}",
        if resolved { "resolved" } else { "not found" },
        fast.cudnn.uses_cudnn()
    );
    if resolved && !fast.cudnn.uses_cudnn() {
        s.fail(
            "cudnn start",
            "libcudnn.so.9 resolves but the fast backend did not start cuDNN".into(),
        );
    }
    if fast.im2col.uses_cudnn() {
        s.fail("cudnn off", "conv_cudnn: false still started cuDNN".into());
    }
    fast.cudnn.uses_cudnn()
}

pub fn run(s: &mut Suite, fast: &FastBackends, parity: &Arc<CudaBackend>) {
    if s.skip("cudnn") {
        return;
    }
    conv_weight_stand_in(s, fast);
    let on = cudnn_expected(s, fast) as u64;
    for c in &CASES {
        let scale = 1.0 / ((c.w[1] * c.w[2] * c.w[3] * c.w[4]) as f32).sqrt();
        let inputs = [
            s.normal_input(&c.x, 1.0),
            s.normal_input(&c.w, scale),
            s.normal_input(&[c.w[0]], 1.0),
        ];
        let op = |t: &[Tensor]| {
            let b = c.bias.then_some(&t[2]);
            t[0].conv3d(&t[1], b, c.stride_t, c.pad, c.mode)
        };
        let name = |what: &str| format!("cudnn conv3d {} {what}", c.name);
        let calls = on * c.cudnn as u64;
        s.conv_case(&name(""), &fast.cudnn, BF16_CONV, calls, &inputs, &op);
        s.conv_case(
            &name("(grouped)"),
            &fast.grouped,
            BF16_CONV,
            calls,
            &inputs,
            &op,
        );
        // Where cuDNN is not used: its switch off (TF32 GEMM), and the parity mode (exact fp32).
        s.conv_case(
            &name("(cudnn off)"),
            &fast.im2col,
            BF16_CONV,
            0,
            &inputs,
            &op,
        );
        s.conv_case(&name("(parity)"), parity, 1e-5, 0, &inputs, &op);
        s.conv_case(
            &name("(plain)"),
            &fast.plain,
            BF16_CONV,
            calls,
            &inputs,
            &op,
        );
        // ReLU fused into the output conversion (cuDNN) or applied after (im2col, parity).
        let op_relu = |t: &[Tensor]| {
            let b = c.bias.then_some(&t[2]);
            t[0].conv3d_relu(&t[1], b, c.stride_t, c.pad, c.mode)
        };
        s.conv_case(
            &name("+ relu"),
            &fast.cudnn,
            BF16_CONV,
            calls,
            &inputs,
            &op_relu,
        );
        s.conv_case(&name("+ relu (parity)"), parity, 1e-5, 0, &inputs, &op_relu);
    }
    // The converted weights are cached per weight tensor: the same weights twice, then a new
    // weight tensor of the same shape (a stale cache entry would give the first one's result).
    let c = &CASES[0];
    let scale = 1.0 / ((c.w[1] * 9) as f32).sqrt();
    let inputs = [
        s.normal_input(&c.x, 1.0),
        s.normal_input(&c.w, scale),
        s.normal_input(&c.w, scale),
    ];
    let op = |t: &[Tensor]| {
        let first = t[0].conv3d(&t[1], None, 1, 1, PadMode::Zero)?;
        let again = t[0].conv3d(&t[1], None, 1, 1, PadMode::Zero)?;
        let other = t[0].conv3d(&t[2], None, 1, 1, PadMode::Zero)?;
        Tensor::cat(&[&first, &again, &other], 0)
    };
    s.conv_case(
        "cudnn conv3d cached weights",
        &fast.cudnn,
        BF16_CONV,
        3 * on,
        &inputs,
        &op,
    );
    bench(s, fast);
}

/// Real shapes of the tiny and full pipelines at 1408×768 (the projector's at 1920×1152 too), on
/// zeros (the projector's on random values), without output poisoning: cuDNN as the model runs it (decoder convs on a
/// channels-last input, the projector's temporal convs folded into 2-D), cuDNN with the Wan VAE's
/// causal convs folded too (the `FLASHVSR_CUDA_FOLD_CAUSAL=1` A/B), cuDNN with the plain staging
/// (f32 in and out, 3-D temporal kernels), and im2col + TF32 GEMM.
fn bench(s: &mut Suite, fast: &FastBackends) {
    if s.skip("cudnn bench") || !fast.cudnn.uses_cudnn() {
        return;
    }
    let options = CudaOptions {
        poison_outputs: false,
        ..fast.cudnn.options().clone()
    };
    let fast = FastBackends::create(fast.cudnn.ordinal(), &options);
    let case = |name, x, w, stride_t, mode| Case {
        name,
        x,
        w,
        stride_t,
        pad: 1,
        mode,
        bias: false,
        cudnn: true,
    };
    let zero = PadMode::Zero;
    let shapes = [
        case(
            "decoder 3x3 128->128 @1408x768",
            [128, 1, 768, 1408],
            [128, 128, 1, 3, 3],
            1,
            zero,
        ),
        case(
            "decoder 3x3 128->3 @1408x768",
            [128, 1, 768, 1408],
            [3, 128, 1, 3, 3],
            1,
            zero,
        ),
        case(
            "decoder 3x3 256->256 x2 @704x384",
            [256, 2, 384, 704],
            [256, 256, 1, 3, 3],
            1,
            zero,
        ),
        case(
            "decoder 3x3 1024->512 x4 @176x96",
            [1024, 4, 96, 176],
            [512, 1024, 1, 3, 3],
            1,
            zero,
        ),
        case(
            "VAE causal 3x3x3 96->96 T6->4 @1408x768",
            [96, 6, 768, 1408],
            [96, 96, 3, 3, 3],
            1,
            zero,
        ),
        case(
            "VAE causal 3x3x3 192->192 T6->4 @704x384",
            [192, 6, 384, 704],
            [192, 192, 3, 3, 3],
            1,
            zero,
        ),
        case(
            "VAE causal 3x3x3 384->384 T4->2 @352x192",
            [384, 4, 192, 352],
            [384, 384, 3, 3, 3],
            1,
            zero,
        ),
        case(
            "VAE 3x3 192->96 x4 @1408x768",
            [192, 4, 768, 1408],
            [96, 192, 1, 3, 3],
            1,
            zero,
        ),
        case(
            "LQ conv1 4x3x3 768->2048 T6->2 @88x48",
            [768, 6, 48, 88],
            [2048, 768, 4, 3, 3],
            2,
            PadMode::Replicate,
        ),
        case(
            "LQ conv2 4x3x3 2048->3072 T4->1 @88x48",
            [2048, 4, 48, 88],
            [3072, 2048, 4, 3, 3],
            2,
            PadMode::Replicate,
        ),
        case(
            "LQ conv1 4x3x3 768->2048 T6->2 @120x72",
            [768, 6, 72, 120],
            [2048, 768, 4, 3, 3],
            2,
            PadMode::Replicate,
        ),
        case(
            "LQ conv2 4x3x3 2048->3072 T4->1 @120x72",
            [2048, 4, 72, 120],
            [3072, 2048, 4, 3, 3],
            2,
            PadMode::Replicate,
        ),
    ];
    for Case {
        name,
        x,
        w,
        stride_t,
        pad,
        mode,
        ..
    } in shapes
    {
        let t_out = (x[1] - w[2]) / stride_t + 1;
        let flop = 2.0 * (w[0] * t_out * x[2] * x[3]) as f64 * (w[1] * w[2] * w[3] * w[4]) as f64;
        let mut row = format!("bench cudnn {name}:");
        let backends = [
            ("cudnn", &fast.cudnn),
            ("fold causal", &fast.folded),
            ("plain", &fast.plain),
            ("im2col tf32", &fast.im2col),
        ];
        // The projector's convs on random values too: tensor cores draw less power on zeros, so
        // a clock-bound GEMM can run faster on them than on the model's values.
        let random = (mode == PadMode::Replicate).then(|| {
            let scale = 1.0 / ((w[1] * w[2] * w[3] * w[4]) as f32).sqrt();
            (s.normal_input(&x, 1.0), s.normal_input(&w, scale))
        });
        for (label, backend) in backends {
            let gpu: BackendRef = backend.clone();
            let made = match &random {
                Some((xr, wr)) => (
                    Tensor::from_slice(&gpu, &xr.0, &xr.1),
                    Tensor::from_slice(&gpu, &wr.0, &wr.1),
                ),
                None => (Tensor::zeros(&gpu, &x), Tensor::zeros(&gpu, &w)),
            };
            let (xt, wt) = match made {
                (Ok(a), Ok(b)) => (a, b),
                _ => {
                    s.fail(name, "allocation".into());
                    return;
                }
            };
            // The decoder's convs read the previous conv's output: channels-last where it is on.
            let xt = match (mode, Tensor::zeros(&gpu, &[x[0], x[0], 1, 1, 1])) {
                (PadMode::Zero, Ok(eye)) => xt.conv3d(&eye, None, 1, 0, mode).expect("conv"),
                _ => xt,
            };
            let ms = time_ms(5, || {
                drop(xt.conv3d(&wt, None, stride_t, pad, mode).expect("conv"));
                gpu.synchronize().expect("sync");
            });
            row += &format!("  {label} {ms:.3} ms ({:.0} TFLOP/s)", flop / ms / 1e9);
        }
        println!("{row}");
    }
}

/// A conv weight given up for its converted copy (the LQ projector's, shaped alike): the stand-in
/// convolves to the same bits once the source is dropped, and every other op refuses it.
fn conv_weight_stand_in(s: &mut Suite, fast: &FastBackends) {
    let name = "cudnn conv3d weight stand-in: same bits, other ops refused";
    let options = CudaOptions {
        conv_weight_stand_in: true,
        ..fast.folded.options().clone()
    };
    let with_stand_in = match CudaBackend::create(fast.folded.ordinal(), options) {
        Ok(b) => b,
        Err(e) => return s.fail(name, format!("backend: {e}")),
    };
    let backend: BackendRef = with_stand_in.clone();
    let (x, w) = (
        s.normal_input(&[32, 6, 12, 10], 1.0),
        s.normal_input(&[16, 32, 4, 3, 3], 0.05),
    );
    let run = || -> flashvsr_tensor::Result<Result<(), String>> {
        let x = Tensor::from_slice(&backend, &x.0, &x.1)?;
        let w = Tensor::from_slice(&backend, &w.0, &w.1)?.compact()?;
        let conv = |w: &Tensor| x.conv3d(w, None, 2, 1, PadMode::Replicate);
        let first = conv(&w)?.to_vec()?;
        let Some(stand_in) = w.conv_weight_stand_in()? else {
            return Ok(if with_stand_in.uses_cudnn() {
                Err("no stand-in although cuDNN converted the weight".into())
            } else {
                Ok(())
            });
        };
        drop(w);
        let again = conv(&stand_in)?.to_vec()?;
        if first
            .iter()
            .map(|v| v.to_bits())
            .ne(again.iter().map(|v| v.to_bits()))
        {
            return Ok(Err("the stand-in convolves to other values".into()));
        }
        if stand_in.to_vec().is_ok() || stand_in.relu().is_ok() {
            return Ok(Err("an op other than the conv read the stand-in".into()));
        }
        Ok(Ok(()))
    };
    match run() {
        Ok(Ok(())) => println!("ok    {name}"),
        Ok(Err(msg)) => s.fail(name, msg),
        Err(e) => s.fail(name, e.to_string()),
    }
}

//! Channels-last bf16 activations of the fast mode: chains of the TCDecoder's ops (convs, fused
//! ReLU, the MemBlock's cat / add / ReLU, frame and channel slices, nearest upsampling, the
//! temporal growth's reshape + permute) against the CPU, each also checked for the layout its
//! result should have (channels-last where the next conv reads it in place). Then the ops that have
//! no channels-last form, which must see the same values through the f32 fallback, and the
//! checkpoint round trip of a channels-last tensor.

use std::sync::Arc;

use flashvsr_cuda::CudaBackend;
use flashvsr_tensor::{BackendRef, HostData, PadMode, Result, Tensor};

use super::cudnn_conv::FastBackends;
use super::{Input, Op, Suite};

/// A few bf16 convolutions in a row (each ≤ 1e-2), plus bf16 activations between them.
const BF16_CHAIN: f64 = 3e-2;

const ZERO: PadMode = PadMode::Zero;

/// The inputs every case draws from, by index.
const X: usize = 0; // (16, 3, 24, 40): one frame a cuDNN call on the grouped backend
const W: usize = 1; // (16, 16, 1, 3, 3)
const B: usize = 2; // (16)
const W_MEM: usize = 3; // (16, 32, 1, 3, 3): the MemBlock's first conv over cat([x, prev])
const W_GROW: usize = 4; // (32, 16, 1, 1, 1): temporal growth ×2
const W_OUT: usize = 5; // (3, 16, 1, 3, 3): the decoder's last conv
const W_TIME: usize = 6; // (16, 16, 2, 3, 3): a temporal kernel, folded into 2-D
const W_HALF: usize = 7; // (8, 8, 1, 3, 3): after a channel slice
const GAMMA: usize = 8; // (16)
const W_TIME3: usize = 9; // (16, 16, 3, 3, 3): a temporal kernel cuDNN reads in place (3-D)
const W_OUT144: usize = 10; // (3, 144, 1, 3, 3): the last conv over more than 16 channel groups
const W_OUT128: usize = 11; // (3, 128, 1, 3, 3): the model's last conv (4 chunks of 32 channels)

fn inputs(s: &mut Suite) -> Vec<Input> {
    let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    vec![
        s.normal_input(&[16, 3, 24, 40], 1.0),
        s.normal_input(&[16, 16, 1, 3, 3], scale(144)),
        s.normal_input(&[16], 0.5),
        s.normal_input(&[16, 32, 1, 3, 3], scale(288)),
        s.normal_input(&[32, 16, 1, 1, 1], scale(16)),
        s.normal_input(&[3, 16, 1, 3, 3], scale(144)),
        s.normal_input(&[16, 16, 2, 3, 3], scale(288)),
        s.normal_input(&[8, 8, 1, 3, 3], scale(72)),
        s.normal_input(&[16], 1.0),
        s.normal_input(&[16, 16, 3, 3, 3], scale(432)),
        s.normal_input(&[3, 144, 1, 3, 3], scale(1296)),
        s.normal_input(&[3, 128, 1, 3, 3], scale(1152)),
    ]
}

/// `relu(conv(x) + b)`: on the fast backend a channels-last tensor.
fn activation(t: &[Tensor]) -> Result<Tensor> {
    t[X].conv3d_relu(&t[W], Some(&t[B]), 1, 1, ZERO)
}

/// The TCDecoder's MemBlock on `x` with the memory frame `last` (None: zeros).
fn mem_block(t: &[Tensor], x: &Tensor, last: Option<&Tensor>) -> Result<Tensor> {
    let (c, n, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let first = match last {
        Some(f) => f.clone(),
        None => Tensor::zeros(x.backend(), &[c, 1, h, w])?,
    };
    let prev = Tensor::cat(&[&first, &x.narrow(1, 0, n - 1)?], 1)?;
    let y = Tensor::cat(&[x, &prev], 0)?.conv3d_relu(&t[W_MEM], Some(&t[B]), 1, 1, ZERO)?;
    let y = y.conv3d_relu(&t[W], Some(&t[B]), 1, 1, ZERO)?;
    y.conv3d(&t[W], Some(&t[B]), 1, 1, ZERO)?.add(x)?.relu()
}

/// The same with the residual and the last ReLU in the conv's epilogue, as the model runs it.
fn mem_block_fused(t: &[Tensor], x: &Tensor, last: Option<&Tensor>) -> Result<Tensor> {
    let (c, n, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let first = match last {
        Some(f) => f.clone(),
        None => Tensor::zeros(x.backend(), &[c, 1, h, w])?,
    };
    let prev = Tensor::cat(&[&first, &x.narrow(1, 0, n - 1)?], 1)?;
    let y = Tensor::cat(&[x, &prev], 0)?.conv3d_relu(&t[W_MEM], Some(&t[B]), 1, 1, ZERO)?;
    let y = y.conv3d_relu(&t[W], Some(&t[B]), 1, 1, ZERO)?;
    y.conv3d_add_relu(&t[W], Some(&t[B]), 1, 1, ZERO, x)
}

/// 144 channels-last channels (18 groups of 8): the activation 9 times over.
/// 128 channels-last channels, 8 different maps of 16 (so that the 32-channel chunks differ):
/// the activation a, b = relu(conv(a)), and channels-last sums, differences and products of them.
fn activation128(t: &[Tensor]) -> Result<Tensor> {
    let a = activation(t)?;
    let b = a.conv3d_relu(&t[W], Some(&t[B]), 1, 1, ZERO)?;
    let pieces = [
        a.add(&b)?,
        a.clone(),
        b.mul(&a)?,
        b.clone(),
        b.sub(&a)?,
        a.mul(&a)?,
        b.mul(&b)?,
        a.sub(&b)?,
    ];
    let refs: Vec<&Tensor> = pieces.iter().collect();
    Tensor::cat(&refs, 0)
}

fn wide_activation(t: &[Tensor]) -> Result<Tensor> {
    let a = activation(t)?;
    Tensor::cat(&[&a, &a, &a, &a, &a, &a, &a, &a, &a], 0)
}

/// `(2C, T, H, W)` → `(C, 2T, H, W)`, as the TCDecoder's TGrow.
fn grow(y: &Tensor) -> Result<Tensor> {
    let (c, n, h, w) = (y.dim(0) / 2, y.dim(1), y.dim(2), y.dim(3));
    y.reshape(&[2, c, n, h, w])?
        .permute(&[1, 2, 0, 3, 4])?
        .reshape(&[c, 2 * n, h, w])
}

struct Case {
    name: &'static str,
    op: fn(&[Tensor]) -> Result<Tensor>,
    /// cuDNN convolutions the op runs.
    convs: u64,
    /// Whether the result stays channels-last.
    channels_last: bool,
}

const CASES: [Case; 20] = [
    Case {
        name: "conv + relu",
        op: activation,
        convs: 1,
        channels_last: true,
    },
    Case {
        name: "conv chain",
        op: |t| activation(t)?.conv3d(&t[W], None, 1, 1, ZERO),
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "memblock, zero memory",
        op: |t| mem_block(t, &activation(t)?, None),
        convs: 4,
        channels_last: true,
    },
    Case {
        name: "memblock, channels-last memory",
        op: |t| {
            let x = activation(t)?;
            let last = x.narrow(1, 2, 1)?.conv3d(&t[W], None, 1, 1, ZERO)?;
            mem_block(t, &x, Some(&last))
        },
        convs: 5,
        channels_last: true,
    },
    Case {
        name: "upsample, grow, last conv",
        op: |t| {
            let y = activation(t)?.upsample_nearest2x()?;
            let y = grow(&y.conv3d(&t[W_GROW], None, 1, 0, ZERO)?)?;
            y.conv3d_relu(&t[W], None, 1, 1, ZERO)?.conv3d(
                &t[W_OUT],
                Some(&t[B].narrow(0, 0, 3)?),
                1,
                1,
                ZERO,
            )
        },
        convs: 4,
        channels_last: false,
    },
    Case {
        name: "memblock fused, zero memory",
        op: |t| mem_block_fused(t, &activation(t)?, None),
        convs: 4,
        channels_last: true,
    },
    Case {
        name: "memblock fused, channels-last memory",
        op: |t| {
            let x = activation(t)?;
            let last = x.narrow(1, 2, 1)?.conv3d(&t[W], None, 1, 1, ZERO)?;
            mem_block_fused(t, &x, Some(&last))
        },
        convs: 5,
        channels_last: true,
    },
    Case {
        // An f32 residual: the epilogue cannot read it, the add and the ReLU run after the conv.
        name: "conv add relu, f32 residual",
        op: |t| activation(t)?.conv3d_add_relu(&t[W], Some(&t[B]), 1, 1, ZERO, &t[X]),
        convs: 2,
        channels_last: false,
    },
    Case {
        // The model's order: the growth at the small size, the upsampling in the next conv.
        name: "grow, upsample conv relu, last conv",
        op: |t| {
            let y = grow(&activation(t)?.conv3d(&t[W_GROW], None, 1, 0, ZERO)?)?;
            y.upsample_nearest2x_conv_relu(&t[W], None)?.conv3d(
                &t[W_OUT],
                Some(&t[B].narrow(0, 0, 3)?),
                1,
                1,
                ZERO,
            )
        },
        convs: 4,
        channels_last: false,
    },
    Case {
        name: "last conv with relu, no bias",
        op: |t| activation(t)?.conv3d_relu(&t[W_OUT], None, 1, 1, ZERO),
        convs: 2,
        channels_last: false,
    },
    Case {
        name: "last conv over 18 channel groups",
        op: |t| {
            let b = t[B].narrow(0, 0, 3)?;
            wide_activation(t)?.conv3d(&t[W_OUT144], Some(&b), 1, 1, ZERO)
        },
        convs: 2,
        channels_last: false,
    },
    Case {
        // Whole 32-channel chunks: the tensor-core kernel where it is on (the grouped backend).
        name: "last conv over 128 channels",
        op: |t| {
            let b = t[B].narrow(0, 0, 3)?;
            activation128(t)?.conv3d(&t[W_OUT128], Some(&b), 1, 1, ZERO)
        },
        convs: 3,
        channels_last: false,
    },
    Case {
        name: "grow",
        op: |t| grow(&activation(t)?.conv3d(&t[W_GROW], None, 1, 0, ZERO)?),
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "frame and channel slices",
        op: |t| {
            let x = activation(t)?;
            let frames = x.narrow(1, 1, 2)?.conv3d(&t[W], None, 1, 1, ZERO)?;
            let channels = x.narrow(0, 8, 8)?.conv3d(&t[W_HALF], None, 1, 1, ZERO)?;
            Tensor::cat(&[&frames.narrow(0, 0, 8)?, &channels.narrow(1, 0, 2)?], 1)
        },
        convs: 3,
        channels_last: true,
    },
    Case {
        name: "sub, mul",
        op: |t| {
            let a = activation(t)?;
            let b = t[X].conv3d(&t[W], None, 1, 1, ZERO)?;
            a.sub(&b)?.mul(&a)
        },
        convs: 2,
        channels_last: true,
    },
    Case {
        // Zero-padded temporal convs write channels-last too (the Wan VAE's causal convs).
        name: "folded temporal kernel",
        op: |t| activation(t)?.conv3d(&t[W_TIME], Some(&t[B]), 1, 1, ZERO),
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "3-D temporal kernel reads in place",
        op: |t| activation(t)?.conv3d(&t[W_TIME3], Some(&t[B]), 1, 1, ZERO),
        convs: 2,
        channels_last: true,
    },
    Case {
        // The Wan VAE's attention block: the norm's output feeds a 1×1 conv in place.
        name: "channel norm, conv",
        op: |t| {
            activation(t)?
                .channel_rms_norm(&t[GAMMA])?
                .conv3d(&t[W], None, 1, 1, ZERO)
        },
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "replicate padding and stride",
        op: |t| {
            let x = activation(t)?;
            let a = x.conv3d(&t[W], Some(&t[B]), 1, 1, PadMode::Replicate)?;
            let b = x.conv3d(&t[W], None, 2, 1, ZERO)?;
            Tensor::cat(&[&a, &b], 1)
        },
        convs: 3,
        // b is channels-last (a frame conv), so the cat stages a into its layout.
        channels_last: true,
    },
    Case {
        name: "ops without a channels-last form",
        op: |t| {
            let x = activation(t)?;
            let (c, n, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
            let parts = [
                x.affine(0.5, 0.25)?,
                x.silu()?,
                x.dilated_blur(2)?,
                x.add(&t[X])?,
                x.narrow(2, 1, h - 1)?
                    .upsample_nearest2x()?
                    .narrow(2, 0, h)?
                    .narrow(3, 0, w)?,
                x.permute(&[0, 1, 3, 2])?.reshape(&[c, n, h, w])?,
                x.reshape(&[c, n * h * w])?
                    .permute(&[1, 0])?
                    .reshape(&[c, n, h, w])?,
                Tensor::cat(&[&x.narrow(0, 0, 4)?, &x.narrow(0, 4, 12)?], 0)?,
            ];
            let refs: Vec<&Tensor> = parts.iter().collect();
            Tensor::cat(&refs, 1)
        },
        convs: 1,
        channels_last: false,
    },
];

impl Suite {
    /// Whether `op`'s result on `backend` is stored channels-last as expected, and a bf16
    /// checkpoint of it reads back to the same values.
    pub(super) fn layout_case(
        &mut self,
        name: &str,
        backend: &Arc<CudaBackend>,
        channels_last: bool,
        inputs: &[Input],
        op: Op,
    ) {
        if self.skip(name) {
            return;
        }
        self.cases += 1;
        let gpu: BackendRef = backend.clone();
        let verdict = (|| -> std::result::Result<(), String> {
            let xs = Suite::tensors(&gpu, inputs).map_err(|e| e.to_string())?;
            let y = op(&xs).map_err(|e| e.to_string())?;
            let stored = backend.is_channels_last(&y);
            if stored != channels_last {
                return Err(format!("channels-last {stored}, expected {channels_last}"));
            }
            let host = y.to_host_data().map_err(|e| e.to_string())?;
            if channels_last && !matches!(host, HostData::Bf16(_)) {
                return Err("a channels-last checkpoint is not bf16".into());
            }
            let back = Tensor::from_host_data(&gpu, &host, y.shape()).map_err(|e| e.to_string())?;
            let (a, b) = (y.to_vec(), back.to_vec());
            if a.map_err(|e| e.to_string())? != b.map_err(|e| e.to_string())? {
                return Err("values changed in the checkpoint round trip".into());
            }
            Ok(())
        })();
        match verdict {
            Ok(()) => println!("ok    {name:<44} channels-last {channels_last}"),
            Err(msg) => self.fail(name, msg),
        }
    }
}

pub fn run(s: &mut Suite, fast: &FastBackends) {
    if s.skip("channels-last") || !fast.cudnn.uses_cudnn() {
        return;
    }
    let inputs = inputs(s);
    for c in &CASES {
        let op = |t: &[Tensor]| (c.op)(t);
        let name = format!("channels-last {}", c.name);
        s.conv_case(&name, &fast.cudnn, BF16_CHAIN, c.convs, &inputs, &op);
        let grouped = format!("{name} (grouped)");
        s.conv_case(&grouped, &fast.grouped, BF16_CHAIN, c.convs, &inputs, &op);
        let layout = format!("{name} (layout)");
        s.layout_case(&layout, &fast.cudnn, c.channels_last, &inputs, &op);
    }
    // The decoder's last conv (3 outputs from channels-last) takes the direct kernel.
    for c in CASES.iter().filter(|c| c.name.contains("last conv")) {
        let name = format!("channels-last {} (direct kernel)", c.name);
        if s.skip(&name) {
            continue;
        }
        s.cases += 1;
        let gpu: BackendRef = fast.cudnn.clone();
        let before = fast.cudnn.direct_conv_count();
        let ran = Suite::tensors(&gpu, &inputs).and_then(|xs| (c.op)(&xs));
        let direct = fast.cudnn.direct_conv_count() - before;
        match ran {
            Ok(_) if direct == 1 => println!("ok    {name:<44} 1 direct conv"),
            Ok(_) => s.fail(&name, format!("{direct} direct convs, expected 1")),
            Err(e) => s.fail(&name, e.to_string()),
        }
    }
    c128_kernel_matches_the_generic_one(s, fast);
    // Switched off, the same chains give f32 row-major results.
    let off = &fast.plain;
    for c in &CASES[..3] {
        let op = |t: &[Tensor]| (c.op)(t);
        let name = format!("channels-last off: {}", c.name);
        s.conv_case(&name, off, BF16_CHAIN, c.convs, &inputs, &op);
        s.layout_case(&format!("{name} (layout)"), off, false, &inputs, &op);
    }
}

/// The 128-channel tensor-core kernel of the last conv (`conv3x3_cl_to_three_mma_c128`: a row's
/// loads first, 32 rows a block) sums in the generic kernel's order: the same bits, on a map of 3
/// frames, 70 rows (two whole 32-row blocks and a partial one) and 150 positions (a partial warp
/// tile), with the bias and the ReLU.
fn c128_kernel_matches_the_generic_one(s: &mut Suite, fast: &FastBackends) {
    let name = "channels-last last conv: 128-channel kernel = generic kernel, bit for bit";
    if s.skip(name) {
        return;
    }
    s.cases += 1;
    let mut inputs = inputs(s);
    inputs[X] = s.normal_input(&[16, 3, 70, 150], 1.0);
    let gpu: BackendRef = fast.grouped.clone();
    let run = |c128: Option<&str>| -> Result<(Vec<f32>, u64)> {
        match c128 {
            Some(v) => std::env::set_var("FLASHVSR_CUDA_DIRECT_CONV3_C128", v),
            None => std::env::remove_var("FLASHVSR_CUDA_DIRECT_CONV3_C128"),
        }
        let before = fast.grouped.direct_conv_count();
        let t = Suite::tensors(&gpu, &inputs)?;
        let b = t[B].narrow(0, 0, 3)?;
        let y = activation128(&t)?.conv3d_relu(&t[W_OUT128], Some(&b), 1, 1, ZERO)?;
        let values = y.to_vec()?;
        Ok((values, fast.grouped.direct_conv_count() - before))
    };
    let default = run(None);
    let generic = run(Some("0"));
    std::env::remove_var("FLASHVSR_CUDA_DIRECT_CONV3_C128");
    match (default, generic) {
        (Ok((a, 1)), Ok((b, 1))) => {
            let differ = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            let nan = a.iter().filter(|x| x.is_nan()).count();
            if differ == 0 && nan == 0 && a.len() == 3 * 3 * 70 * 150 {
                println!("ok    {name:<44} {} values", a.len());
            } else {
                let detail = format!("{differ} of {} values differ, {nan} NaN", a.len());
                s.fail(name, detail);
            }
        }
        (Ok((_, n)), Ok((_, m))) => s.fail(name, format!("{n} and {m} direct convs, expected 1")),
        (Err(e), _) | (_, Err(e)) => s.fail(name, e.to_string()),
    }
}

//! The Wan VAE decoder's fused ops against the CPU: the channel RMS norm + SiLU with the causal
//! conv's history in front (channels-last in the fast mode, f32 row-major in the parity mode),
//! the conv with its residual added by the epilogue, the causal 3-tap conv writing channels-last,
//! the same conv folded into 2-D (`FLASHVSR_CUDA_FOLD_CAUSAL=1`), a ResBlock streamed over two
//! calls (its histories carried from one call to the next), and the Resample's upsampling + conv
//! as one sub-pixel conv (and where it falls back to the two ops). Each fast-mode case is also checked
//! for the layout its result should have.

use std::sync::Arc;

use flashvsr_cuda::CudaBackend;
use flashvsr_tensor::{PadMode, Result, Tensor};

use super::cudnn_conv::FastBackends;
use super::{Input, Suite};

/// A few bf16 convolutions in a row (each ≤ 1e-2), plus bf16 activations between them.
const BF16_CHAIN: f64 = 3e-2;
/// The parity mode: f32 kernels and exact GEMMs.
const PARITY: f64 = 1e-5;

const ZERO: PadMode = PadMode::Zero;

const X: usize = 0; // (16, 4, 12, 20)
const W1: usize = 1; // (16, 16, 1, 1, 1): makes a channels-last activation on the fast backend
const GAMMA: usize = 2; // (16)
const W3: usize = 3; // (16, 16, 3, 3, 3): a causal conv
const B: usize = 4; // (16)
const W3B: usize = 5; // (16, 16, 3, 3, 3)
const HIST: usize = 6; // (16, 2, 12, 20): a history in f32, as a checkpoint restores it
const GAMMA_B: usize = 7; // (16)
const W_OUT: usize = 8; // (3, 16, 3, 3, 3): the head conv (padded output channels)
const W_UP: usize = 9; // (16, 16, 1, 3, 3): a Resample's conv after the 2× upsampling
const W_UP8: usize = 10; // (8, 16, 1, 3, 3)
const W_UP3: usize = 11; // (3, 16, 1, 3, 3): output channels the sub-pixel path does not take
const W22: usize = 12; // (16, 16, 1, 2, 2): makes an odd-sized channels-last activation

fn inputs(s: &mut Suite) -> Vec<Input> {
    let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    vec![
        s.normal_input(&[16, 4, 12, 20], 1.0),
        s.normal_input(&[16, 16, 1, 1, 1], scale(16)),
        s.normal_input(&[16], 1.0),
        s.normal_input(&[16, 16, 3, 3, 3], scale(432)),
        s.normal_input(&[16], 0.5),
        s.normal_input(&[16, 16, 3, 3, 3], scale(432)),
        s.normal_input(&[16, 2, 12, 20], 1.0),
        s.normal_input(&[16], 1.0),
        s.normal_input(&[3, 16, 3, 3, 3], scale(432)),
        s.normal_input(&[16, 16, 1, 3, 3], scale(144)),
        s.normal_input(&[8, 16, 1, 3, 3], scale(144)),
        s.normal_input(&[3, 16, 1, 3, 3], scale(144)),
        s.normal_input(&[16, 16, 1, 2, 2], scale(64)),
    ]
}

/// The activation every case starts from: on the fast backend a channels-last conv output.
fn activation(t: &[Tensor]) -> Result<Tensor> {
    t[X].conv3d(&t[W1], None, 1, 0, ZERO)
}

/// The VAE's causal conv of `silu(rms_norm(x))` with `history` in front (+ `residual`); the
/// conv's input and its last two frames (the next history).
fn causal(
    t: &[Tensor],
    x: &Tensor,
    (gamma, w): (usize, usize),
    history: &Tensor,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let input = x.channel_rms_norm_silu(&t[gamma], Some(history))?;
    let n = input.dim(1);
    let next = input.narrow(1, n - 2, 2)?;
    // The bias of the conv's output channels (the head has 3).
    let bias = t[B].narrow(0, 0, t[w].dim(0))?;
    let y = match residual {
        Some(r) => input.conv3d_add(&t[w], Some(&bias), 1, 1, ZERO, r)?,
        None => input.conv3d(&t[w], Some(&bias), 1, 1, ZERO)?,
    };
    Ok((y, next))
}

/// A ResBlock over `x` with the histories `(a, b)`; its output and the next histories.
fn res_block(t: &[Tensor], x: &Tensor, (a, b): (&Tensor, &Tensor)) -> Result<[Tensor; 3]> {
    let (h, next_a) = causal(t, x, (GAMMA, W3), a, None)?;
    let (y, next_b) = causal(t, &h, (GAMMA_B, W3B), b, Some(x))?;
    Ok([y, next_a, next_b])
}

fn zeros_history(x: &Tensor) -> Result<Tensor> {
    Tensor::zeros(x.backend(), &[x.dim(0), 2, x.dim(2), x.dim(3)])
}

struct Case {
    name: &'static str,
    op: fn(&[Tensor]) -> Result<Tensor>,
    /// cuDNN convolutions the op runs on the fast backend.
    convs: u64,
    /// Whether the fast backend's result is channels-last.
    channels_last: bool,
}

const CASES: [Case; 16] = [
    Case {
        name: "norm silu, f32 history",
        op: |t| activation(t)?.channel_rms_norm_silu(&t[GAMMA], Some(&t[HIST])),
        convs: 1,
        channels_last: true,
    },
    Case {
        name: "norm silu, channels-last history",
        op: |t| {
            let a = activation(t)?;
            a.channel_rms_norm_silu(&t[GAMMA], Some(&a.narrow(1, 1, 2)?))
        },
        convs: 1,
        channels_last: true,
    },
    Case {
        name: "norm silu, no history",
        op: |t| activation(t)?.channel_rms_norm_silu(&t[GAMMA], None),
        convs: 1,
        channels_last: true,
    },
    Case {
        name: "norm silu, f32 input",
        op: |t| t[X].channel_rms_norm_silu(&t[GAMMA], Some(&t[HIST])),
        convs: 0,
        channels_last: false,
    },
    Case {
        name: "channel norm stays channels-last",
        op: |t| activation(t)?.channel_rms_norm(&t[GAMMA]),
        convs: 1,
        channels_last: true,
    },
    Case {
        name: "causal conv + channels-last residual",
        op: |t| {
            let a = activation(t)?;
            Ok(causal(t, &a, (GAMMA, W3), &t[HIST], Some(&a))?.0)
        },
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "causal conv + f32 residual",
        op: |t| {
            let a = activation(t)?;
            Ok(causal(t, &a, (GAMMA, W3), &t[HIST], Some(&t[X]))?.0)
        },
        convs: 2,
        channels_last: false,
    },
    Case {
        name: "resblock streamed over two calls, head",
        op: |t| {
            let a = activation(t)?;
            let zeros = zeros_history(&a)?;
            let [y1, ha, hb] = res_block(t, &a.narrow(1, 0, 1)?, (&zeros, &zeros))?;
            let [y2, ha, hb] = res_block(t, &a.narrow(1, 1, 3)?, (&ha, &hb))?;
            let y = Tensor::cat(&[&y1, &y2], 1)?;
            // The head: padded output channels, unstaged to f32 with the bias.
            let (out, _) = causal(t, &y, (GAMMA, W_OUT), &ha.add(&hb)?, None)?;
            Ok(out)
        },
        convs: 6,
        channels_last: false,
    },
    Case {
        name: "upsample conv, sub-pixel",
        op: |t| activation(t)?.upsample_nearest2x_conv(&t[W_UP], Some(&t[B])),
        convs: 2,
        channels_last: true,
    },
    Case {
        // The TCDecoder's first conv of a stage: the ReLU in the shuffle.
        name: "upsample conv relu, sub-pixel",
        op: |t| activation(t)?.upsample_nearest2x_conv_relu(&t[W_UP], Some(&t[B])),
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "upsample conv relu, no bias, one frame",
        op: |t| {
            let a = activation(t)?.narrow(1, 2, 1)?;
            a.upsample_nearest2x_conv_relu(&t[W_UP], None)
        },
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "upsample conv, 8 outputs, odd frame",
        op: |t| {
            let odd = t[X].conv3d(&t[W22], None, 1, 0, ZERO)?;
            odd.upsample_nearest2x_conv(&t[W_UP8], Some(&t[B].narrow(0, 0, 8)?))
        },
        convs: 2,
        channels_last: true,
    },
    Case {
        name: "upsample conv, no bias, one frame",
        op: |t| {
            let a = activation(t)?.narrow(1, 3, 1)?;
            a.upsample_nearest2x_conv(&t[W_UP], None)
        },
        convs: 2,
        channels_last: true,
    },
    Case {
        // 3 outputs: upsampled, then the plain conv (f32 output).
        name: "upsample conv, 3 outputs",
        op: |t| activation(t)?.upsample_nearest2x_conv(&t[W_UP3], Some(&t[B].narrow(0, 0, 3)?)),
        convs: 2,
        channels_last: false,
    },
    Case {
        // An f32 input: upsampled, then the plain conv (channels-last output).
        name: "upsample conv, f32 input",
        op: |t| t[X].upsample_nearest2x_conv(&t[W_UP], Some(&t[B])),
        convs: 1,
        channels_last: true,
    },
    Case {
        name: "resblock in one call",
        op: |t| {
            let a = activation(t)?;
            let zeros = zeros_history(&a)?;
            let [y, _, _] = res_block(t, &a, (&zeros, &zeros))?;
            Ok(y)
        },
        convs: 3,
        channels_last: true,
    },
];

pub fn run(s: &mut Suite, fast: &FastBackends, parity: &Arc<CudaBackend>) {
    let inputs = inputs(s);
    let on = fast.cudnn.uses_cudnn() as u64;
    for c in &CASES {
        let op = |t: &[Tensor]| (c.op)(t);
        let name = format!("vae {}", c.name);
        s.conv_case(&name, parity, PARITY, 0, &inputs, &op);
        if on == 0 {
            continue;
        }
        let fast_name = format!("{name} (fast)");
        s.conv_case(&fast_name, &fast.cudnn, BF16_CHAIN, c.convs, &inputs, &op);
        let layout = format!("{name} (layout)");
        s.layout_case(&layout, &fast.cudnn, c.channels_last, &inputs, &op);
        let folded = format!("{name} (fold causal)");
        s.conv_case(&folded, &fast.folded, BF16_CHAIN, c.convs, &inputs, &op);
        let grouped = format!("{name} (grouped)");
        s.conv_case(&grouped, &fast.grouped, BF16_CHAIN, c.convs, &inputs, &op);
        let plain = format!("{name} (channels-last off)");
        s.conv_case(&plain, &fast.plain, BF16_CHAIN, c.convs, &inputs, &op);
    }
    // The folded conv from an f32 source: the staging kernel stacks the frames.
    if on > 0 {
        let op = |t: &[Tensor]| t[X].conv3d(&t[W3], Some(&t[B]), 1, 1, ZERO);
        let name = "vae causal conv from f32 (fold causal)";
        s.conv_case(name, &fast.folded, 1e-2, 1, &inputs, &op);
    }
}

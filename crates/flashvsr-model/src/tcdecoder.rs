//! TCDecoder (spec §6.1): the LR-conditioned tiny decoder. Sequence formulation: every layer sees
//! a frame sequence, MemBlocks look at the previous frame of their own sequence, TGrow layers turn a
//! frame into 1 or 2 frames. Decoding chunk by chunk with [`DecoderMemory`] equals one-shot decoding.

use flashvsr_tensor::{BackendRef, PadMode, Tensor};

use crate::dit::config::LATENT_CHANNELS;
use crate::params::Params;
use crate::state_io::{StateReader, StateWriter};
use crate::weights::WeightSource;
use crate::{ModelError, Result};

/// Frames per latent frame and pixels per latent pixel.
pub const TIME_UPSCALE: usize = 4;
pub const SPACE_UPSCALE: usize = 8;
const COND_CHANNELS: usize = 3 * TIME_UPSCALE * SPACE_UPSCALE * SPACE_UPSCALE;
/// Output frames dropped from the first decoded latent (it stands for frames −3 … 0).
pub const FIRST_CALL_TRIM: usize = TIME_UPSCALE - 1;

struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pad = self.weight.dim(3) / 2;
        Ok(x.conv3d(&self.weight, self.bias.as_ref(), 1, pad, PadMode::Zero)?)
    }

    /// `relu(forward(x))` in one pass where the backend fuses it.
    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let pad = self.weight.dim(3) / 2;
        Ok(x.conv3d_relu(&self.weight, self.bias.as_ref(), 1, pad, PadMode::Zero)?)
    }

    /// `relu(forward(x) + residual)`, the residual and the ReLU in the conv's epilogue where the
    /// backend fuses them.
    fn forward_add_relu(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let pad = self.weight.dim(3) / 2;
        let (w, b) = (&self.weight, self.bias.as_ref());
        Ok(x.conv3d_add_relu(w, b, 1, pad, PadMode::Zero, residual)?)
    }

    /// `forward(upsample_nearest2x(x))` (a 3×3 kernel), computed on the small frames where the
    /// backend can; with the ReLU after it when `relu`.
    fn upsample_forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        Ok(if relu {
            x.upsample_nearest2x_conv_relu(w, b)?
        } else {
            x.upsample_nearest2x_conv(w, b)?
        })
    }

    fn is_frame_3x3(&self) -> bool {
        self.weight.shape()[2..] == [1, 3, 3]
    }
}

struct MemBlock {
    convs: [Conv; 3],
}

enum Layer {
    Conv(Conv),
    /// A convolution followed by ReLU.
    ConvRelu(Conv),
    Relu,
    Mem(MemBlock, usize),
    Upsample,
    /// Nearest 2× upsampling then a 3×3 conv (with a ReLU after it when the flag is set), in
    /// one op.
    UpsampleConv(Conv, bool),
    /// Temporal growth: a 1×1 conv making `parts.len()` frames of each input frame, split by
    /// output frame (`parts[j]` makes sub-frame j), as frames are decoded one at a time.
    Grow {
        parts: Vec<Conv>,
    },
}

pub struct TcDecoder {
    layers: Vec<Layer>,
    memory_slots: usize,
    /// Channels of the four stages, from the lowest resolution up.
    pub widths: [usize; 4],
}

/// The last input frame of each MemBlock; empty before the first call.
#[derive(Clone, Default)]
pub struct DecoderMemory {
    frames: Vec<Option<Tensor>>,
    started: bool,
}

impl DecoderMemory {
    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn save(&self, w: &mut StateWriter, prefix: &str) -> Result<()> {
        w.value(&format!("{prefix}.started"), self.started);
        for (i, f) in self.frames.iter().enumerate() {
            w.optional(&format!("{prefix}.{i}"), f.as_ref())?;
        }
        Ok(())
    }

    /// Fills a fresh memory (from [`TcDecoder::new_memory`]) from a checkpoint.
    pub fn load(&mut self, r: &StateReader, prefix: &str) -> Result<()> {
        self.started = r.value(&format!("{prefix}.started"))?;
        for (i, f) in self.frames.iter_mut().enumerate() {
            *f = r.optional(&format!("{prefix}.{i}"))?;
        }
        Ok(())
    }
}

fn conv(p: &Params, name: &str, out: usize, inp: usize, k: usize, bias: bool) -> Result<Conv> {
    Ok(Conv {
        weight: p.tensor_as(
            &format!("{name}.weight"),
            &[out, inp, k, k],
            &[out, inp, 1, k, k],
        )?,
        bias: if bias {
            Some(p.tensor(&format!("{name}.bias"), &[out])?)
        } else {
            None
        },
    })
}

/// Missing deepening convs keep their constructor value in the reference (a non-strict load):
/// the identity (Dirac) kernel.
fn conv_or_dirac(p: &Params, name: &str, c: usize) -> Result<Conv> {
    if p.contains(&format!("{name}.weight")) {
        return conv(p, name, c, c, 3, false);
    }
    let mut w = vec![0.0f32; c * c * 9];
    for i in 0..c {
        w[(i * c + i) * 9 + 4] = 1.0;
    }
    Ok(Conv {
        weight: Tensor::from_slice(p.backend(), &w, &[c, c, 1, 3, 3])?,
        bias: None,
    })
}

impl TcDecoder {
    pub fn load(backend: &BackendRef, file: &dyn WeightSource) -> Result<TcDecoder> {
        let p = Params::new(file, backend, "a FlashVSR TCDecoder file (TCDecoder.ckpt)");
        let width = |i: usize| -> Result<usize> { Ok(p.shape(&format!("decoder.{i}.weight"))?[0]) };
        let first = p.shape("decoder.1.weight")?;
        if first.len() != 4 || first[1] != COND_CHANNELS + LATENT_CHANNELS {
            return Err(ModelError::Mismatch {
                path: file.path().to_path_buf(),
                reason: format!("decoder.1.weight has shape {first:?}, expected [C, 784, 3, 3]"),
            });
        }
        let (c0, c1, c2, c3) = (width(1)?, width(10)?, width(16)?, width(22)?);
        let mut slot = 0;
        let mut mem = |p: &Params, i: usize, c: usize| -> Result<Layer> {
            let q = p.pp(format!("decoder.{i}.conv"));
            let block = MemBlock {
                convs: [
                    conv(&q, "0", c, 2 * c, 3, true)?,
                    conv(&q, "2", c, c, 3, true)?,
                    conv(&q, "4", c, c, 3, true)?,
                ],
            };
            slot += 1;
            Ok(Layer::Mem(block, slot - 1))
        };
        let grow = |i: usize, c: usize, stride: usize| -> Result<Layer> {
            let conv = conv(&p, &format!("decoder.{i}.conv"), c * stride, c, 1, false)?;
            let parts = (0..stride)
                .map(|j| {
                    Ok(Conv {
                        weight: conv.weight.narrow(0, j * c, c)?,
                        bias: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Layer::Grow { parts })
        };
        let layers = vec![
            Layer::Conv(conv(
                &p,
                "decoder.1",
                c0,
                COND_CHANNELS + LATENT_CHANNELS,
                3,
                true,
            )?),
            Layer::Relu,
            Layer::Conv(conv_or_dirac(&p, "decoder.3", c0)?),
            Layer::Relu,
            mem(&p, 5, c0)?,
            mem(&p, 6, c0)?,
            mem(&p, 7, c0)?,
            Layer::Upsample,
            grow(9, c0, 1)?,
            Layer::Conv(conv(&p, "decoder.10", c1, c0, 3, false)?),
            mem(&p, 11, c1)?,
            mem(&p, 12, c1)?,
            mem(&p, 13, c1)?,
            Layer::Upsample,
            grow(15, c1, 2)?,
            Layer::Conv(conv(&p, "decoder.16", c2, c1, 3, false)?),
            mem(&p, 17, c2)?,
            mem(&p, 18, c2)?,
            mem(&p, 19, c2)?,
            Layer::Upsample,
            grow(21, c2, 2)?,
            Layer::Conv(conv(&p, "decoder.22", c3, c2, 3, false)?),
            Layer::Relu,
            Layer::Conv(conv_or_dirac(&p, "decoder.24", c3)?),
            Layer::Relu,
            Layer::Conv(conv(&p, "decoder.26", 3, c3, 3, true)?),
        ];
        Ok(TcDecoder {
            layers: upsample_into_convs(fuse_relus(layers)),
            memory_slots: slot,
            widths: [c0, c1, c2, c3],
        })
    }

    /// Elements of every convolution weight (a device backend may keep a converted copy).
    pub fn conv_weight_elements(&self) -> usize {
        let convs = |l: &Layer| -> usize {
            match l {
                Layer::Conv(c) | Layer::ConvRelu(c) | Layer::UpsampleConv(c, _) => {
                    c.weight.elem_count()
                }
                Layer::Grow { parts } => parts.iter().map(|p| p.weight.elem_count()).sum(),
                Layer::Mem(b, _) => b.convs.iter().map(|c| c.weight.elem_count()).sum(),
                Layer::Relu | Layer::Upsample => 0,
            }
        };
        self.layers.iter().map(convs).sum()
    }

    pub fn new_memory(&self) -> DecoderMemory {
        DecoderMemory {
            frames: vec![None; self.memory_slots],
            started: false,
        }
    }

    /// Decodes `latents (16, t, H/8, W/8)` with their conditioning LQ frames `cond (3, k, H, W)`
    /// (k ≤ 4t; the clip is front-padded with copies of its first frame to 4t). Returns frames in
    /// `[-1, 1]` nominal range, `(3, n, H, W)`, n = 4t, or 4t − 3 on the first call.
    ///
    /// One latent frame at a time, and within it one frame at a time through every layer (depth
    /// first through each temporal growth): the same values as one pass over the chunk (every
    /// layer is per frame or looks only at the previous frame of its own input), with device
    /// memory for one frame's maps at each resolution instead of the chunk's.
    pub fn decode(
        &self,
        latents: &Tensor,
        cond: &Tensor,
        memory: &mut DecoderMemory,
    ) -> Result<Tensor> {
        let pieces = self.decode_pieces(latents, cond, memory)?;
        let refs: Vec<&Tensor> = pieces.iter().collect();
        Ok(Tensor::cat(&refs, 1)?)
    }

    /// [`Self::decode`]'s frames as they come, one `(3, n, H, W)` piece per latent frame (n = 4,
    /// or 1 for the stream's first latent frame): a caller that finishes each piece on its own
    /// never holds a second copy of the chunk.
    pub fn decode_pieces(
        &self,
        latents: &Tensor,
        cond: &Tensor,
        memory: &mut DecoderMemory,
    ) -> Result<Vec<Tensor>> {
        let t = latents.dim(1);
        let k = cond.dim(1);
        if k > TIME_UPSCALE * t {
            return Err(ModelError::Settings(format!(
                "{k} conditioning frames for {t} latent frames (at most {})",
                TIME_UPSCALE * t
            )));
        }
        // Frame j of the front-padded clip is cond frame j − pad, or the first one; each latent
        // frame's four are cut out on their own (no padded copy of the chunk).
        let pad = TIME_UPSCALE * t - k;
        let mut pieces = Vec::with_capacity(t);
        for i in 0..t {
            let latent = latents.narrow(1, i, 1)?;
            let start = i * TIME_UPSCALE;
            let copies = pad.saturating_sub(start).min(TIME_UPSCALE);
            let own = (copies < TIME_UPSCALE)
                .then(|| cond.narrow(1, start + copies - pad, TIME_UPSCALE - copies))
                .transpose()?;
            let cond = match (copies, own) {
                (0, Some(own)) => own,
                (_, own) => {
                    let first = cond.narrow(1, 0, 1)?;
                    let mut parts = vec![&first; copies];
                    parts.extend(own.as_ref());
                    Tensor::cat(&parts, 1)?
                }
            };
            pieces.push(self.decode_latent_frame(&latent, &cond, memory)?);
        }
        Ok(pieces)
    }

    fn decode_latent_frame(
        &self,
        latent: &Tensor,
        cond: &Tensor,
        memory: &mut DecoderMemory,
    ) -> Result<Tensor> {
        let (hl, wl) = (latent.dim(2), latent.dim(3));
        let packed = cond
            .reshape(&[3, 1, TIME_UPSCALE, hl, SPACE_UPSCALE, wl, SPACE_UPSCALE])?
            .permute(&[0, 2, 4, 6, 1, 3, 5])?
            .reshape(&[COND_CHANNELS, 1, hl, wl])?;
        let x = Tensor::cat(&[&packed, latent], 0)?
            .affine(1.0 / 3.0, 0.0)?
            .tanh()?
            .affine(3.0, 0.0)?;
        let mut sink = FrameSink {
            frames: Vec::with_capacity(TIME_UPSCALE),
            made: 0,
            dropped: if memory.started { 0 } else { FIRST_CALL_TRIM },
        };
        self.run_frame(0, x, memory, &mut sink)?;
        memory.started = true;
        let kept: Vec<Tensor> = sink
            .frames
            .iter()
            .map(|f| f.affine(2.0, -1.0))
            .collect::<std::result::Result<_, _>>()?;
        let refs: Vec<&Tensor> = kept.iter().collect();
        Ok(Tensor::cat(&refs, 1)?)
    }

    /// Runs one frame `x` through `self.layers[from..]`, a temporal growth one sub-frame at a
    /// time, so that one frame's maps are alive at once at each resolution; MemBlocks see their
    /// frames in order. Frames the sink drops skip the layers after the last MemBlock, which
    /// keep no memory.
    fn run_frame(
        &self,
        from: usize,
        x: Tensor,
        memory: &mut DecoderMemory,
        sink: &mut FrameSink,
    ) -> Result<()> {
        if from >= self.tail_start() {
            let outputs = self.outputs_per_frame(from);
            if sink.made + outputs <= sink.dropped {
                sink.made += outputs;
                return Ok(());
            }
        }
        let Some(layer) = self.layers.get(from) else {
            sink.made += 1;
            if sink.made > sink.dropped {
                sink.frames.push(x);
            }
            return Ok(());
        };
        if let Layer::Grow { parts } = layer {
            for part in parts {
                let y = part.forward(&x)?;
                self.run_frame(from + 1, y, memory, sink)?;
            }
            return Ok(());
        }
        let y = self.apply(layer, &x, memory)?;
        drop(x);
        self.run_frame(from + 1, y, memory, sink)
    }

    /// The first layer after the last MemBlock: from there on every layer maps each frame on its
    /// own (to one frame, or to several for temporal growth).
    fn tail_start(&self) -> usize {
        self.layers
            .iter()
            .rposition(|l| matches!(l, Layer::Mem(..)))
            .map_or(0, |i| i + 1)
    }

    /// Output frames that one frame entering `self.layers[from]` becomes.
    fn outputs_per_frame(&self, from: usize) -> usize {
        self.layers[from..]
            .iter()
            .map(|l| match l {
                Layer::Grow { parts } => parts.len(),
                _ => 1,
            })
            .product()
    }

    /// One layer over a frame sequence ([`Self::run_frame`] splits a growth by sub-frame itself).
    fn apply(&self, layer: &Layer, x: &Tensor, memory: &mut DecoderMemory) -> Result<Tensor> {
        Ok(match layer {
            Layer::Conv(c) => c.forward(x)?,
            Layer::ConvRelu(c) => c.forward_relu(x)?,
            Layer::Relu => x.relu()?,
            Layer::Upsample => x.upsample_nearest2x()?,
            Layer::UpsampleConv(c, relu) => c.upsample_forward(x, *relu)?,
            Layer::Grow { parts } => {
                let mut frames = Vec::with_capacity(x.dim(1) * parts.len());
                for t in 0..x.dim(1) {
                    let frame = x.narrow(1, t, 1)?;
                    for part in parts {
                        frames.push(part.forward(&frame)?);
                    }
                }
                let refs: Vec<&Tensor> = frames.iter().collect();
                Tensor::cat(&refs, 1)?
            }
            Layer::Mem(block, slot) => mem_block(block, x, &mut memory.frames[*slot])?,
        })
    }
}

/// The decoded frames of one latent frame, less those dropped at the start of the stream.
struct FrameSink {
    frames: Vec<Tensor>,
    /// Frames made so far (dropped or kept).
    made: usize,
    /// Frames to drop before keeping any.
    dropped: usize,
}

/// Every convolution directly followed by a ReLU becomes one fused layer.
fn fuse_relus(layers: Vec<Layer>) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::with_capacity(layers.len());
    for layer in layers {
        match (layer, out.pop()) {
            (Layer::Relu, Some(Layer::Conv(c))) => out.push(Layer::ConvRelu(c)),
            (layer, previous) => {
                out.extend(previous);
                out.push(layer);
            }
        }
    }
    out
}

/// Every `Upsample, Grow, 3×3 conv` run becomes `Grow, UpsampleConv`: the growth's bias-free
/// 1×1 convs commute with nearest upsampling (the same values at a quarter of the positions),
/// and the upsampling then goes into the conv after it, which a backend can compute on the
/// small frames (a 2×2 sub-pixel conv in the fast mode) without making the upsampled ones.
fn upsample_into_convs(layers: Vec<Layer>) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::with_capacity(layers.len());
    for layer in layers {
        let n = out.len();
        let follows_upsampled_growth = n >= 2
            && matches!(out[n - 2], Layer::Upsample)
            && matches!(&out[n - 1], Layer::Grow { parts } if parts.iter().all(|c|
                c.bias.is_none() && c.weight.shape()[2..] == [1, 1, 1]));
        let fused = match layer {
            Layer::Conv(c) if follows_upsampled_growth && c.is_frame_3x3() => {
                Layer::UpsampleConv(c, false)
            }
            Layer::ConvRelu(c) if follows_upsampled_growth && c.is_frame_3x3() => {
                Layer::UpsampleConv(c, true)
            }
            layer => {
                out.push(layer);
                continue;
            }
        };
        let growth = out.pop();
        out.pop(); // the upsampling
        out.extend(growth);
        out.push(fused);
    }
    out
}

fn mem_block(block: &MemBlock, x: &Tensor, last: &mut Option<Tensor>) -> Result<Tensor> {
    let (c, t, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let first_prev = match last.take() {
        Some(f) => f,
        None => Tensor::zeros(x.backend(), &[c, 1, h, w])?,
    };
    let prev = if t > 1 {
        let joined = Tensor::cat(&[&first_prev, &x.narrow(1, 0, t - 1)?], 1)?;
        drop(first_prev);
        joined
    } else {
        first_prev
    };
    *last = Some(x.narrow(1, t - 1, 1)?);
    let [c0, c1, c2] = &block.convs;
    // Each map is dropped once read, not at the end of the block: at 1408×768 a map of the
    // 2-frame half-resolution blocks is 264 MiB (f32), and these blocks hold the decode peak.
    let joined = Tensor::cat(&[x, &prev], 0)?;
    drop(prev);
    let y0 = c0.forward_relu(&joined)?;
    drop(joined);
    let y1 = c1.forward_relu(&y0)?;
    drop(y0);
    c2.forward_add_relu(&y1, x)
}

#[cfg(test)]
mod tests {
    use flashvsr_tensor::cpu::CpuBackend;

    use super::*;

    fn conv(shape: &[usize], bias: bool) -> Conv {
        let cpu = CpuBackend::new_ref();
        let n = shape.iter().product();
        Conv {
            weight: Tensor::from_slice(&cpu, &vec![0.5; n], shape).unwrap(),
            bias: bias
                .then(|| Tensor::from_slice(&cpu, &vec![0.1; shape[0]], &[shape[0]]).unwrap()),
        }
    }

    fn growth(bias: bool) -> Layer {
        Layer::Grow {
            parts: vec![conv(&[4, 4, 1, 1, 1], bias), conv(&[4, 4, 1, 1, 1], bias)],
        }
    }

    fn kinds(layers: &[Layer]) -> Vec<String> {
        layers
            .iter()
            .map(|l| match l {
                Layer::Conv(_) => "conv".into(),
                Layer::ConvRelu(_) => "conv_relu".into(),
                Layer::Relu => "relu".into(),
                Layer::Mem(..) => "mem".into(),
                Layer::Upsample => "upsample".into(),
                Layer::UpsampleConv(_, relu) => format!("upsample_conv relu={relu}"),
                Layer::Grow { .. } => "grow".into(),
            })
            .collect()
    }

    #[test]
    fn upsampling_moves_past_the_growth_into_the_next_conv() {
        let layers = vec![
            Layer::Upsample,
            growth(false),
            Layer::Conv(conv(&[4, 4, 1, 3, 3], false)),
            Layer::Upsample,
            growth(false),
            Layer::Conv(conv(&[4, 4, 1, 3, 3], false)),
            Layer::Relu,
            Layer::Conv(conv(&[3, 4, 1, 3, 3], true)),
        ];
        let fused = upsample_into_convs(fuse_relus(layers));
        assert_eq!(
            kinds(&fused),
            [
                "grow",
                "upsample_conv relu=false",
                "grow",
                "upsample_conv relu=true",
                "conv"
            ]
        );
    }

    #[test]
    fn upsampling_stays_where_it_does_not_commute() {
        // A growth with a bias, a 1×1 conv after it, an upsampling without a growth.
        let layers = vec![
            Layer::Upsample,
            growth(true),
            Layer::Conv(conv(&[4, 4, 1, 3, 3], false)),
            Layer::Upsample,
            growth(false),
            Layer::Conv(conv(&[4, 4, 1, 1, 1], false)),
            Layer::Upsample,
            Layer::Conv(conv(&[4, 4, 1, 3, 3], false)),
        ];
        let fused = upsample_into_convs(layers);
        assert_eq!(
            kinds(&fused),
            ["upsample", "grow", "conv", "upsample", "grow", "conv", "upsample", "conv"]
        );
    }
}

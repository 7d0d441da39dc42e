//! Wan2.1 VAE decoder (spec §6.2), streaming: every causal conv keeps its last two input frames,
//! the temporal upsamplers pass the stream's first frame through. Decoding latent chunks one after
//! another equals decoding the whole sequence at once.

use flashvsr_tensor::{BackendRef, PadMode, Tensor};

use crate::dit::config::LATENT_CHANNELS;
use crate::params::Params;
use crate::state_io::{StateReader, StateWriter};
use crate::weights::WeightSource;
use crate::{ModelError, Result};

const LATENT_MEAN: [f32; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];
const LATENT_STD: [f32; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];
/// Key prefixes under which some copies of Wan2.1_VAE.pth wrap the state dict.
const WRAPPERS: [&str; 3] = ["model_state", "state_dict", "model"];

struct CausalConv {
    weight: Tensor,
    bias: Tensor,
    slot: usize,
}

struct ResBlock {
    gamma_a: Tensor,
    conv_a: CausalConv,
    gamma_b: Tensor,
    conv_b: CausalConv,
    shortcut: Option<(Tensor, Tensor)>,
}

struct AttnBlock {
    gamma: Tensor,
    qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
}

struct Upsample {
    time_conv: Option<(CausalConv, usize)>,
    conv: (Tensor, Tensor),
}

enum Stage {
    Res(ResBlock),
    Attn(AttnBlock),
    Up(Upsample),
}

pub struct WanVaeDecoder {
    scale: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    conv1: CausalConv,
    stages: Vec<Stage>,
    head_gamma: Tensor,
    head_conv: CausalConv,
    conv_slots: usize,
    time_slots: usize,
}

/// Causal-conv histories and, per temporal upsampler, whether the stream's first frame has passed.
#[derive(Clone, Default)]
pub struct VaeState {
    history: Vec<Option<Tensor>>,
    time_started: Vec<bool>,
}

impl VaeState {
    pub fn save(&self, w: &mut StateWriter, prefix: &str) -> Result<()> {
        for (i, h) in self.history.iter().enumerate() {
            w.optional(&format!("{prefix}.conv{i}"), h.as_ref())?;
        }
        for (i, s) in self.time_started.iter().enumerate() {
            w.value(&format!("{prefix}.time{i}"), s);
        }
        Ok(())
    }

    /// Fills a fresh state (from [`WanVaeDecoder::new_state`]) from a checkpoint.
    pub fn load(&mut self, r: &StateReader, prefix: &str) -> Result<()> {
        for (i, h) in self.history.iter_mut().enumerate() {
            *h = r.optional(&format!("{prefix}.conv{i}"))?;
        }
        for (i, s) in self.time_started.iter_mut().enumerate() {
            *s = r.value(&format!("{prefix}.time{i}"))?;
        }
        Ok(())
    }
}

struct Loader<'a> {
    p: Params<'a>,
    conv_slots: usize,
    time_slots: usize,
}

impl<'a> Loader<'a> {
    fn causal(&mut self, name: &str) -> Result<CausalConv> {
        let shape = self.p.shape(&format!("{name}.weight"))?;
        let conv = CausalConv {
            weight: self.p.tensor(&format!("{name}.weight"), &shape)?,
            bias: self.p.tensor(&format!("{name}.bias"), &[shape[0]])?,
            slot: self.conv_slots,
        };
        self.conv_slots += 1;
        Ok(conv)
    }

    fn gamma(&self, name: &str) -> Result<Tensor> {
        let shape = self.p.shape(name)?;
        let c = shape[0];
        self.p.tensor_as(name, &shape, &[c])
    }

    fn pointwise(&self, name: &str) -> Result<(Tensor, Tensor)> {
        let shape = self.p.shape(&format!("{name}.weight"))?;
        let (o, i) = (shape[0], shape[1]);
        let ones = vec![1; shape.len() - 2];
        let mut full = vec![o, i];
        full.extend(&ones);
        Ok((
            self.p
                .tensor_as(&format!("{name}.weight"), &full, &[o, i, 1, 1, 1])?,
            self.p.tensor(&format!("{name}.bias"), &[o])?,
        ))
    }

    fn res(&mut self, prefix: &str) -> Result<ResBlock> {
        Ok(ResBlock {
            gamma_a: self.gamma(&format!("{prefix}.residual.0.gamma"))?,
            conv_a: self.causal(&format!("{prefix}.residual.2"))?,
            gamma_b: self.gamma(&format!("{prefix}.residual.3.gamma"))?,
            conv_b: self.causal(&format!("{prefix}.residual.6"))?,
            shortcut: if self.p.contains(&format!("{prefix}.shortcut.weight")) {
                Some(self.pointwise(&format!("{prefix}.shortcut"))?)
            } else {
                None
            },
        })
    }

    fn attn(&self, prefix: &str) -> Result<AttnBlock> {
        let pw = |name: &str| -> Result<(Tensor, Tensor)> {
            let shape = self.p.shape(&format!("{prefix}.{name}.weight"))?;
            Ok((
                self.p.tensor_as(
                    &format!("{prefix}.{name}.weight"),
                    &shape,
                    &[shape[0], shape[1], 1, 1, 1],
                )?,
                self.p
                    .tensor(&format!("{prefix}.{name}.bias"), &[shape[0]])?,
            ))
        };
        Ok(AttnBlock {
            gamma: self.gamma(&format!("{prefix}.norm.gamma"))?,
            qkv: pw("to_qkv")?,
            proj: pw("proj")?,
        })
    }

    fn upsample(&mut self, prefix: &str) -> Result<Upsample> {
        let time_conv = if self.p.contains(&format!("{prefix}.time_conv.weight")) {
            let conv = self.causal(&format!("{prefix}.time_conv"))?;
            self.time_slots += 1;
            Some((conv, self.time_slots - 1))
        } else {
            None
        };
        let shape = self.p.shape(&format!("{prefix}.resample.1.weight"))?;
        Ok(Upsample {
            time_conv,
            conv: (
                self.p.tensor_as(
                    &format!("{prefix}.resample.1.weight"),
                    &shape,
                    &[shape[0], shape[1], 1, shape[2], shape[3]],
                )?,
                self.p
                    .tensor(&format!("{prefix}.resample.1.bias"), &[shape[0]])?,
            ),
        })
    }
}

impl WanVaeDecoder {
    pub fn load(backend: &BackendRef, file: &dyn WeightSource) -> Result<WanVaeDecoder> {
        let mut p = Params::new(file, backend, "a Wan2.1 VAE file (Wan2.1_VAE.pth)");
        if !p.contains("decoder.conv1.weight") {
            if let Some(w) = WRAPPERS
                .iter()
                .find(|w| p.pp(w).contains("decoder.conv1.weight"))
            {
                p = p.pp(w);
            }
        }
        let z = p.shape("conv2.weight")?;
        if z.first() != Some(&LATENT_CHANNELS) {
            return Err(ModelError::Mismatch {
                path: file.path().to_path_buf(),
                reason: format!("conv2.weight has shape {z:?}, expected [16, 16, 1, 1, 1]"),
            });
        }
        let mut l = Loader {
            p,
            conv_slots: 0,
            time_slots: 0,
        };
        let conv2 = l.pointwise("conv2")?;
        let conv1 = l.causal("decoder.conv1")?;
        let mut stages = vec![
            Stage::Res(l.res("decoder.middle.0")?),
            Stage::Attn(l.attn("decoder.middle.1")?),
            Stage::Res(l.res("decoder.middle.2")?),
        ];
        for i in 0.. {
            let prefix = format!("decoder.upsamples.{i}");
            if l.p.contains(&format!("{prefix}.resample.1.weight")) {
                stages.push(Stage::Up(l.upsample(&prefix)?));
            } else if l.p.contains(&format!("{prefix}.residual.0.gamma")) {
                stages.push(Stage::Res(l.res(&prefix)?));
            } else {
                break;
            }
        }
        let head_gamma = l.gamma("decoder.head.0.gamma")?;
        let head_conv = l.causal("decoder.head.2")?;
        Ok(WanVaeDecoder {
            scale: (
                Tensor::from_slice(backend, &LATENT_STD, &[16])?,
                Tensor::from_slice(backend, &LATENT_MEAN, &[16])?,
            ),
            conv2,
            conv1,
            stages,
            head_gamma,
            head_conv,
            conv_slots: l.conv_slots,
            time_slots: l.time_slots,
        })
    }

    pub fn new_state(&self) -> VaeState {
        VaeState {
            history: vec![None; self.conv_slots],
            time_started: vec![false; self.time_slots],
        }
    }

    /// Latents `(16, t, H/8, W/8)` → frames `(3, n, H, W)`, unclamped; n = 4t − 3 for the
    /// stream's first call, 4t after. Decoded in temporal pieces of [`piece_latents`] latents:
    /// the streaming form gives the same frames, and the activations stay bounded by the frame
    /// size, whatever the chunk's length.
    pub fn decode(&self, latents: &Tensor, state: &mut VaeState) -> Result<Tensor> {
        let per = piece_latents(latents.dim(2), latents.dim(3));
        self.decode_in_pieces(latents, state, per)
    }

    /// [`decode`](Self::decode) in temporal pieces of `per` latents (≥ 1).
    pub fn decode_in_pieces(
        &self,
        latents: &Tensor,
        state: &mut VaeState,
        per: usize,
    ) -> Result<Tensor> {
        let t = latents.dim(1);
        let per = per.max(1);
        if t <= per {
            return self.decode_piece(latents, state);
        }
        let mut frames = Vec::with_capacity(t.div_ceil(per));
        for start in (0..t).step_by(per) {
            let piece = latents.narrow(1, start, per.min(t - start))?;
            frames.push(self.decode_piece(&piece, state)?);
        }
        let refs: Vec<&Tensor> = frames.iter().collect();
        Ok(Tensor::cat(&refs, 1)?)
    }

    fn decode_piece(&self, latents: &Tensor, state: &mut VaeState) -> Result<Tensor> {
        let z = latents.channel_affine(&self.scale.0, &self.scale.1)?;
        let x = z.conv3d(&self.conv2.0, Some(&self.conv2.1), 1, 0, PadMode::Zero)?;
        let mut x = self.conv1.forward(&x, state)?;
        for stage in &self.stages {
            x = match stage {
                Stage::Res(r) => r.forward(&x, state)?,
                Stage::Attn(a) => a.forward(&x)?,
                Stage::Up(u) => u.forward(&x, state)?,
            };
        }
        self.head_conv
            .forward_normed(x, &self.head_gamma, state, None)
    }
}

/// Output pixels of one temporal piece of a decode call, at most (whole latents; at least one):
/// 4 frames of 1408×768, so that an untiled decode of that size (`--tiled-vae auto`) decodes one
/// latent at a time.
pub const PIECE_OUTPUT_PIXELS: usize = 4 * 1408 * 768;

/// Latents decoded per piece for a latent grid of `rows × cols`: each yields 4 frames of
/// `64·rows·cols` pixels.
pub fn piece_latents(rows: usize, cols: usize) -> usize {
    (PIECE_OUTPUT_PIXELS / (4 * 64 * rows * cols).max(1)).max(1)
}

impl CausalConv {
    /// The frames in front of this call's input: the last call's, or zeros (the causal padding).
    fn history(&self, x: &Tensor, state: &mut VaeState) -> Result<Tensor> {
        let kt = self.weight.dim(2);
        Ok(match state.history[self.slot].take() {
            Some(h) => h,
            None => Tensor::zeros(x.backend(), &[x.dim(0), kt - 1, x.dim(2), x.dim(3)])?,
        })
    }

    /// Convolves `input` (history, then this call's frames), plus `residual` where given, after
    /// keeping its last frames as the next call's history.
    fn run(
        &self,
        input: Tensor,
        state: &mut VaeState,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let kt = self.weight.dim(2);
        let n = input.dim(1);
        state.history[self.slot] = Some(input.narrow(1, n - (kt - 1), kt - 1)?);
        let (w, b, pad) = (&self.weight, Some(&self.bias), self.weight.dim(3) / 2);
        Ok(match residual {
            Some(r) => input.conv3d_add(w, b, 1, pad, PadMode::Zero, r)?,
            None => input.conv3d(w, b, 1, pad, PadMode::Zero)?,
        })
    }

    fn forward(&self, x: &Tensor, state: &mut VaeState) -> Result<Tensor> {
        let history = self.history(x, state)?;
        self.run(Tensor::cat(&[&history, x], 1)?, state, None)
    }

    /// The conv of `silu(rms_norm(x))` (+ `residual`): the norm and activation written straight
    /// behind the history where the backend fuses them. `x` is dropped as soon as it is read.
    fn forward_normed(
        &self,
        x: Tensor,
        gamma: &Tensor,
        state: &mut VaeState,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let history = self.history(&x, state)?;
        let input = x.channel_rms_norm_silu(gamma, Some(&history))?;
        drop((x, history));
        self.run(input, state, residual)
    }
}

impl ResBlock {
    fn forward(&self, x: &Tensor, state: &mut VaeState) -> Result<Tensor> {
        let h = self
            .conv_a
            .forward_normed(x.clone(), &self.gamma_a, state, None)?;
        let shortcut = match &self.shortcut {
            Some((w, b)) => x.conv3d(w, Some(b), 1, 0, PadMode::Zero)?,
            None => x.clone(),
        };
        self.conv_b
            .forward_normed(h, &self.gamma_b, state, Some(&shortcut))
    }
}

impl AttnBlock {
    /// Single-head attention over the positions of each frame.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (c, t, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let qkv = x
            .channel_rms_norm(&self.gamma)?
            .conv3d(&self.qkv.0, Some(&self.qkv.1), 1, 0, PadMode::Zero)?
            .reshape(&[3 * c, t, h * w])?
            .permute(&[1, 2, 0])?;
        let mut frames = Vec::with_capacity(t);
        for f in 0..t {
            let frame = qkv.narrow(0, f, 1)?.reshape(&[h * w, 3 * c])?;
            let q = frame.narrow(1, 0, c)?;
            let k = frame.narrow(1, c, c)?;
            let v = frame.narrow(1, 2 * c, c)?;
            frames.push(q.attention(&k, &v, 1)?.reshape(&[1, h * w, c])?);
        }
        let refs: Vec<&Tensor> = frames.iter().collect();
        let o = Tensor::cat(&refs, 0)?
            .permute(&[2, 0, 1])?
            .reshape(&[c, t, h, w])?;
        Ok(o.conv3d_add(&self.proj.0, Some(&self.proj.1), 1, 0, PadMode::Zero, x)?)
    }
}

impl Upsample {
    fn forward(&self, x: &Tensor, state: &mut VaeState) -> Result<Tensor> {
        let x = match &self.time_conv {
            Some((conv, slot)) => {
                let started = std::mem::replace(&mut state.time_started[*slot], true);
                let (first, rest) = if started {
                    (None, x.clone())
                } else {
                    (Some(x.narrow(1, 0, 1)?), x.narrow(1, 1, x.dim(1) - 1)?)
                };
                let mut parts = Vec::new();
                if let Some(f) = &first {
                    parts.push(f.clone());
                }
                if rest.dim(1) > 0 {
                    let y = conv.forward(&rest, state)?;
                    let (c, n, h, w) = (x.dim(0), rest.dim(1), x.dim(2), x.dim(3));
                    parts.push(
                        y.reshape(&[2, c, n, h, w])?
                            .permute(&[1, 2, 0, 3, 4])?
                            .reshape(&[c, 2 * n, h, w])?,
                    );
                }
                let refs: Vec<&Tensor> = parts.iter().collect();
                Tensor::cat(&refs, 1)?
            }
            None => x.clone(),
        };
        Ok(x.upsample_nearest2x_conv(&self.conv.0, Some(&self.conv.1))?)
    }
}

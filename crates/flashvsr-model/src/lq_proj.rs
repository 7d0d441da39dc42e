//! The LQ projector (spec §3): pixel-unshuffle 16, two causal Conv3d (kernel 4×3×3, temporal
//! stride 2, replicate spatial padding) with channel RMS norm and SiLU, then a linear layer.
//! One call per 4-frame group, one latent frame of tokens out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use flashvsr_tensor::{BackendRef, PadMode, Tensor};

use crate::params::Params;
use crate::state_io::{StateReader, StateWriter};
use crate::weights::WeightSource;
use crate::{ModelError, Result};

/// Pixels per token edge: the projector's pixel-unshuffle factor.
pub const UNSHUFFLE: usize = 16;
const IN_CHANNELS: usize = 3 * UNSHUFFLE * UNSHUFFLE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectorVersion {
    /// v1.0 `Buffer_LQ4x_Proj`: every group uses its own last two frames as history.
    V1_0,
    /// v1.1 `Causal_LQ4x_Proj`: a true causal stream.
    V1_1,
}

/// A convolution weight given up, after its first convolution, for the backend's stand-in where
/// the backend keeps a converted copy (cuDNN's bf16 filter in fast mode): the weight's own memory
/// (0.57 GiB for the two convs) is then freed instead of held beside the copy.
struct ConvWeight {
    weight: RwLock<Tensor>,
    swapped: AtomicBool,
}

impl ConvWeight {
    fn new(weight: Tensor) -> Self {
        ConvWeight {
            weight: RwLock::new(weight),
            swapped: AtomicBool::new(false),
        }
    }

    fn get(&self) -> Tensor {
        self.weight
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a convolution with the weight: swaps it for the backend's stand-in, once.
    fn give_up_source(&self) -> Result<()> {
        if self.swapped.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let mut weight = self.weight.write().unwrap_or_else(|e| e.into_inner());
        if let Some(stand_in) = weight.conv_weight_stand_in()? {
            *weight = stand_in;
        }
        Ok(())
    }
}

pub struct LqProjector {
    version: ProjectorVersion,
    conv1: (ConvWeight, Tensor),
    gamma1: Tensor,
    conv2: (ConvWeight, Tensor),
    gamma2: Tensor,
    linear: (Tensor, Tensor),
    pub out_dim: usize,
}

impl LqProjector {
    /// Elements of the convolution weights (a device backend may keep a converted copy).
    pub fn conv_weight_elements(&self) -> usize {
        self.conv1.0.get().elem_count() + self.conv2.0.get().elem_count()
    }
}

/// Projector state between calls: unshuffled frames (conv1 history) and conv1 activations
/// (conv2 history), two frames each. v1.0 keeps none.
#[derive(Clone, Default)]
pub struct ProjectorState {
    history: Option<(Tensor, Tensor)>,
}

impl ProjectorState {
    pub fn save(&self, w: &mut StateWriter, prefix: &str) -> Result<()> {
        if let Some((frames, z)) = &self.history {
            w.tensor(&format!("{prefix}.frames"), frames)?;
            w.tensor(&format!("{prefix}.z"), z)?;
        }
        Ok(())
    }

    pub fn load(r: &StateReader, prefix: &str) -> Result<ProjectorState> {
        let frames = r.optional(&format!("{prefix}.frames"))?;
        let z = r.optional(&format!("{prefix}.z"))?;
        Ok(ProjectorState {
            history: frames.zip(z),
        })
    }
}

impl LqProjector {
    pub fn load(
        backend: &BackendRef,
        file: &dyn WeightSource,
        version: ProjectorVersion,
    ) -> Result<LqProjector> {
        let p = Params::new(
            file,
            backend,
            "a FlashVSR LQ projector file (LQ_proj_in.ckpt)",
        );
        let w1 = p.shape("conv1.weight")?;
        let w2 = p.shape("conv2.weight")?;
        let lw = p.shape("linear_layers.0.weight")?;
        let bad = |reason: String| ModelError::Mismatch {
            path: file.path().to_path_buf(),
            reason,
        };
        if w1.len() != 5 || w1[1] != IN_CHANNELS || w1[2..] != [4, 3, 3] {
            return Err(bad(format!(
                "conv1.weight has shape {w1:?}, expected [C1, 768, 4, 3, 3]"
            )));
        }
        let (c1, c2) = (w1[0], w2.first().copied().unwrap_or(0));
        if w2 != [c2, c1, 4, 3, 3] || lw.len() != 2 || lw[1] != c2 {
            return Err(bad(format!(
                "conv2.weight {w2:?} / linear_layers.0.weight {lw:?} do not follow conv1 ({c1} channels)"
            )));
        }
        if p.contains("linear_layers.1.weight") {
            return Err(bad(
                "more than one output layer (linear_layers.1); FlashVSR uses one".into(),
            ));
        }
        let out_dim = lw[0];
        Ok(LqProjector {
            version,
            conv1: (
                ConvWeight::new(p.weight("conv1.weight", &w1)?),
                p.tensor("conv1.bias", &[c1])?,
            ),
            gamma1: p.tensor_as("norm1.gamma", &[c1, 1, 1, 1], &[c1])?,
            conv2: (
                ConvWeight::new(p.weight("conv2.weight", &w2)?),
                p.tensor("conv2.bias", &[c2])?,
            ),
            gamma2: p.tensor_as("norm2.gamma", &[c2, 1, 1, 1], &[c2])?,
            linear: (
                p.weight("linear_layers.0.weight", &lw)?,
                p.tensor("linear_layers.0.bias", &[out_dim])?,
            ),
            out_dim,
        })
    }

    /// The norm and the SiLU in one pass where the backend fuses them; the conv's source weight
    /// is given up once the backend holds its own copy.
    fn conv_norm(&self, x: &Tensor, conv: &(ConvWeight, Tensor), gamma: &Tensor) -> Result<Tensor> {
        let y = x.conv3d(&conv.0.get(), Some(&conv.1), 2, 1, PadMode::Replicate)?;
        conv.0.give_up_source()?;
        Ok(y.channel_rms_norm_silu(gamma, None)?)
    }

    /// Warm-up call on LQ frame 0, `(3, 1, H, W)`: sets the caches, produces nothing.
    pub fn warm_up(&self, frame0: &Tensor, state: &mut ProjectorState) -> Result<()> {
        state.history = None;
        if self.version == ProjectorVersion::V1_0 {
            return Ok(());
        }
        let u = unshuffle(frame0)?;
        let six = Tensor::cat(&[&u, &u, &u, &u, &u, &u], 1)?;
        let z = self.conv_norm(&six, &self.conv1, &self.gamma1)?;
        let tail = Tensor::cat(&[&u, &u], 1)?;
        state.history = Some((tail, z));
        Ok(())
    }

    /// One group of 4 LQ frames `(3, 4, H, W)` → tokens `(h·w, D)` of one latent frame.
    pub fn step(&self, frames: &Tensor, state: &mut ProjectorState) -> Result<Tensor> {
        let u = unshuffle(frames)?;
        let (conv1_in, conv2_history) = match self.version {
            ProjectorVersion::V1_0 => {
                let tail = u.narrow(1, 2, 2)?;
                (Tensor::cat(&[&tail, &u], 1)?, None)
            }
            ProjectorVersion::V1_1 => {
                let (frames_hist, z_hist) = state.history.take().ok_or_else(|| {
                    ModelError::Settings("LQ projector stepped before its warm-up call".into())
                })?;
                (Tensor::cat(&[&frames_hist, &u], 1)?, Some(z_hist))
            }
        };
        let z = self.conv_norm(&conv1_in, &self.conv1, &self.gamma1)?;
        let conv2_in = match &conv2_history {
            Some(h) => Tensor::cat(&[h, &z], 1)?,
            None => Tensor::cat(&[&z, &z], 1)?,
        };
        if self.version == ProjectorVersion::V1_1 {
            state.history = Some((u.narrow(1, 2, 2)?, z.clone()));
        }
        let y = self.conv_norm(&conv2_in, &self.conv2, &self.gamma2)?;
        let (c2, h, w) = (y.dim(0), y.dim(2), y.dim(3));
        let tokens = y.reshape(&[c2, h * w])?.permute(&[1, 0])?;
        Ok(tokens.linear(&self.linear.0, Some(&self.linear.1))?)
    }
}

/// `(3, k, H, W)` → `(768, k, H/16, W/16)`, channel `c·256 + dy·16 + dx`.
fn unshuffle(x: &Tensor) -> Result<Tensor> {
    let (k, h, w) = (x.dim(1), x.dim(2) / UNSHUFFLE, x.dim(3) / UNSHUFFLE);
    Ok(x.reshape(&[3, k, h, UNSHUFFLE, w, UNSHUFFLE])?
        .permute(&[0, 3, 5, 1, 2, 4])?
        .reshape(&[IN_CHANNELS, k, h, w])?)
}

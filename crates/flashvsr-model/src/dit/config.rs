use crate::params::Params;
use crate::{ModelError, Result};

/// Head width of every known FlashVSR/Wan checkpoint; the head count is `dim / HEAD_DIM`.
pub const HEAD_DIM: usize = 128;
pub const EPS: f32 = 1e-6;
pub const LATENT_CHANNELS: usize = 16;

/// DiT hyper-parameters, read from the tensor shapes (no hash lookup, no hard-coded widths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DitConfig {
    pub dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub ffn_dim: usize,
    pub text_dim: usize,
    pub freq_dim: usize,
}

impl DitConfig {
    pub fn from_params(p: &Params) -> Result<DitConfig> {
        let path = p.file().path().to_path_buf();
        let mismatch = |reason: String| ModelError::Mismatch {
            path: path.clone(),
            reason,
        };
        let pe = p.shape("patch_embedding.weight")?;
        if pe.len() != 5 || pe[1] != LATENT_CHANNELS || pe[2..] != [1, 2, 2] {
            return Err(mismatch(format!(
                "patch_embedding.weight has shape {pe:?}, expected [dim, 16, 1, 2, 2]"
            )));
        }
        let dim = pe[0];
        if dim % HEAD_DIM != 0 {
            return Err(mismatch(format!(
                "DiT width {dim} is not a multiple of the head width {HEAD_DIM}"
            )));
        }
        let layers = (0..)
            .take_while(|i| p.contains(&format!("blocks.{i}.modulation")))
            .count();
        if layers == 0 {
            return Err(mismatch("no transformer blocks (blocks.0.*) found".into()));
        }
        let ffn_dim = p.shape("blocks.0.ffn.0.weight")?[0];
        let text_dim = *p.shape("text_embedding.0.weight")?.last().unwrap_or(&0);
        let freq_dim = *p.shape("time_embedding.0.weight")?.last().unwrap_or(&0);
        Ok(DitConfig {
            dim,
            heads: dim / HEAD_DIM,
            layers,
            ffn_dim,
            text_dim,
            freq_dim,
        })
    }

    /// Every key of the file, to reject files with extra tensors (a projector or decoder given as DiT).
    pub fn expected_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = [
            "patch_embedding.weight",
            "patch_embedding.bias",
            "text_embedding.0.weight",
            "text_embedding.0.bias",
            "text_embedding.2.weight",
            "text_embedding.2.bias",
            "time_embedding.0.weight",
            "time_embedding.0.bias",
            "time_embedding.2.weight",
            "time_embedding.2.bias",
            "time_projection.1.weight",
            "time_projection.1.bias",
            "head.modulation",
            "head.head.weight",
            "head.head.bias",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in 0..self.layers {
            for suffix in BLOCK_KEYS {
                keys.push(format!("blocks.{i}.{suffix}"));
            }
        }
        keys
    }
}

const BLOCK_KEYS: [&str; 27] = [
    "modulation",
    "self_attn.q.weight",
    "self_attn.q.bias",
    "self_attn.k.weight",
    "self_attn.k.bias",
    "self_attn.v.weight",
    "self_attn.v.bias",
    "self_attn.o.weight",
    "self_attn.o.bias",
    "self_attn.norm_q.weight",
    "self_attn.norm_k.weight",
    "cross_attn.q.weight",
    "cross_attn.q.bias",
    "cross_attn.k.weight",
    "cross_attn.k.bias",
    "cross_attn.v.weight",
    "cross_attn.v.bias",
    "cross_attn.o.weight",
    "cross_attn.o.bias",
    "cross_attn.norm_q.weight",
    "cross_attn.norm_k.weight",
    "norm3.weight",
    "norm3.bias",
    "ffn.0.weight",
    "ffn.0.bias",
    "ffn.2.weight",
    "ffn.2.bias",
];

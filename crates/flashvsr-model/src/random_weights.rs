//! Random weights of any FlashVSR size, made in memory (no download): for `flashvsr bench` and
//! tests. Initialisation follows the golden generator, and the self-attention query/key biases
//! and norm gains are calibrated as in ../tools/refbench (`--mask-mode local`) so that block
//! scores fall with distance and the sparse masks are realistic (no empty query rows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flashvsr_tensor::{random, BackendRef, Tensor};

use crate::weights::{WeightError, WeightSource};

/// Widths of every model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSize {
    pub dim: usize,
    pub layers: usize,
    pub ffn: usize,
    pub text_dim: usize,
    pub prompt_tokens: usize,
    pub projector: (usize, usize),
    pub tcdecoder: [usize; 4],
    pub vae_base: usize,
}

impl ModelSize {
    /// The released FlashVSR (Wan2.1-1.3B) sizes.
    pub const RELEASE: ModelSize = ModelSize {
        dim: 1536,
        layers: 30,
        ffn: 8960,
        text_dim: 4096,
        prompt_tokens: 512,
        projector: (2048, 3072),
        tcdecoder: [512, 256, 128, 128],
        vae_base: 96,
    };

    /// The golden test models' sizes.
    pub const SMALL: ModelSize = ModelSize {
        dim: 256,
        layers: 2,
        ffn: 256,
        text_dim: 64,
        prompt_tokens: 512,
        projector: (4, 12),
        tcdecoder: [8, 6, 4, 4],
        vae_base: 4,
    };
}

#[derive(Clone, Copy, Debug)]
enum Init {
    /// N(0, std²) from stream `stream`.
    Normal {
        std: f32,
        stream: u64,
    },
    Constant(f32),
}

pub struct RandomWeights {
    path: PathBuf,
    seed: u64,
    tensors: BTreeMap<String, (Vec<usize>, Init)>,
}

fn stream_of(name: &str) -> u64 {
    xx(name.as_bytes())
}

/// FNV-1a: a stable per-name stream id.
fn xx(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl RandomWeights {
    fn new(what: &str, seed: u64) -> RandomWeights {
        RandomWeights {
            path: PathBuf::from(format!("<random {what}>")),
            seed,
            tensors: BTreeMap::new(),
        }
    }

    fn normal(&mut self, name: &str, shape: &[usize], std: f32) {
        let stream = stream_of(name);
        self.tensors.insert(
            name.to_string(),
            (shape.to_vec(), Init::Normal { std, stream }),
        );
    }

    fn shared_normal(&mut self, name: &str, shape: &[usize], std: f32, stream_name: &str) {
        let stream = stream_of(stream_name);
        self.tensors.insert(
            name.to_string(),
            (shape.to_vec(), Init::Normal { std, stream }),
        );
    }

    fn constant(&mut self, name: &str, shape: &[usize], v: f32) {
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), Init::Constant(v)));
    }

    /// Weight `N(0, 1/fan_in)` and bias `N(0, 0.05²)`.
    fn layer(&mut self, name: &str, shape: &[usize], bias: bool) {
        let fan_in: usize = shape[1..].iter().product();
        self.normal(
            &format!("{name}.weight"),
            shape,
            (1.0 / fan_in as f32).sqrt(),
        );
        if bias {
            self.normal(&format!("{name}.bias"), &[shape[0]], 0.05);
        }
    }

    pub fn dit(size: ModelSize, seed: u64) -> RandomWeights {
        let (d, f, t) = (size.dim, size.ffn, size.text_dim);
        let mut w = RandomWeights::new("DiT", seed);
        w.layer("patch_embedding", &[d, 16, 1, 2, 2], true);
        w.layer("text_embedding.0", &[d, t], true);
        w.layer("text_embedding.2", &[d, d], true);
        w.layer("time_embedding.0", &[d, 256], true);
        w.layer("time_embedding.2", &[d, d], true);
        w.layer("time_projection.1", &[6 * d, d], true);
        w.normal("head.modulation", &[1, 2, d], (1.0 / d as f32).sqrt());
        w.layer("head.head", &[64, d], true);
        for i in 0..size.layers {
            let b = format!("blocks.{i}");
            w.normal(
                &format!("{b}.modulation"),
                &[1, 6, d],
                (1.0 / d as f32).sqrt(),
            );
            for attn in ["self_attn", "cross_attn"] {
                for p in ["q", "k", "v", "o"] {
                    w.layer(&format!("{b}.{attn}.{p}"), &[d, d], true);
                }
            }
            // One shared query/key bias per layer and doubled norm gains: pooled scores then
            // prefer nearby, recent blocks, as a trained positional prior does.
            let shared = format!("{b}.self_attn.qk_bias");
            w.shared_normal(&format!("{b}.self_attn.q.bias"), &[d], 1.0, &shared);
            w.shared_normal(&format!("{b}.self_attn.k.bias"), &[d], 1.0, &shared);
            w.constant(&format!("{b}.self_attn.norm_q.weight"), &[d], 2.0);
            w.constant(&format!("{b}.self_attn.norm_k.weight"), &[d], 2.0);
            w.constant(&format!("{b}.cross_attn.norm_q.weight"), &[d], 1.0);
            w.constant(&format!("{b}.cross_attn.norm_k.weight"), &[d], 1.0);
            w.constant(&format!("{b}.norm3.weight"), &[d], 1.0);
            w.constant(&format!("{b}.norm3.bias"), &[d], 0.0);
            w.layer(&format!("{b}.ffn.0"), &[f, d], true);
            w.layer(&format!("{b}.ffn.2"), &[d, f], true);
        }
        w
    }

    pub fn prompt(size: ModelSize, seed: u64) -> RandomWeights {
        let mut w = RandomWeights::new("prompt", seed);
        w.normal("", &[1, size.prompt_tokens, size.text_dim], 1.0);
        w
    }

    pub fn projector(size: ModelSize, seed: u64) -> RandomWeights {
        let (c1, c2) = size.projector;
        let mut w = RandomWeights::new("LQ projector", seed);
        w.layer("conv1", &[c1, 768, 4, 3, 3], true);
        w.constant("norm1.gamma", &[c1, 1, 1, 1], 1.0);
        w.layer("conv2", &[c2, c1, 4, 3, 3], true);
        w.constant("norm2.gamma", &[c2, 1, 1, 1], 1.0);
        w.layer("linear_layers.0", &[size.dim, c2], true);
        w
    }

    pub fn tcdecoder(size: ModelSize, seed: u64) -> RandomWeights {
        let [c0, c1, c2, c3] = size.tcdecoder;
        let mut w = RandomWeights::new("TCDecoder", seed);
        w.layer("decoder.1", &[c0, 784, 3, 3], true);
        let mem = |w: &mut RandomWeights, i: usize, c: usize| {
            w.layer(&format!("decoder.{i}.conv.0"), &[c, 2 * c, 3, 3], true);
            w.layer(&format!("decoder.{i}.conv.2"), &[c, c, 3, 3], true);
            w.layer(&format!("decoder.{i}.conv.4"), &[c, c, 3, 3], true);
        };
        for i in [5, 6, 7] {
            mem(&mut w, i, c0);
        }
        w.layer("decoder.9.conv", &[c0, c0, 1, 1], false);
        w.layer("decoder.10", &[c1, c0, 3, 3], false);
        for i in [11, 12, 13] {
            mem(&mut w, i, c1);
        }
        w.layer("decoder.15.conv", &[2 * c1, c1, 1, 1], false);
        w.layer("decoder.16", &[c2, c1, 3, 3], false);
        for i in [17, 18, 19] {
            mem(&mut w, i, c2);
        }
        w.layer("decoder.21.conv", &[2 * c2, c2, 1, 1], false);
        w.layer("decoder.22", &[c3, c2, 3, 3], false);
        w.layer("decoder.26", &[3, c3, 3, 3], true);
        w
    }

    pub fn vae(size: ModelSize, seed: u64) -> RandomWeights {
        let b = size.vae_base;
        let (c4, c2) = (4 * b, 2 * b);
        let mut w = RandomWeights::new("Wan VAE", seed);
        w.layer("conv2", &[16, 16, 1, 1, 1], true);
        w.layer("decoder.conv1", &[c4, 16, 3, 3, 3], true);
        let res = |w: &mut RandomWeights, p: &str, cin: usize, cout: usize| {
            w.constant(&format!("{p}.residual.0.gamma"), &[cin, 1, 1, 1], 1.0);
            w.layer(&format!("{p}.residual.2"), &[cout, cin, 3, 3, 3], true);
            w.constant(&format!("{p}.residual.3.gamma"), &[cout, 1, 1, 1], 1.0);
            w.layer(&format!("{p}.residual.6"), &[cout, cout, 3, 3, 3], true);
            if cin != cout {
                w.layer(&format!("{p}.shortcut"), &[cout, cin, 1, 1, 1], true);
            }
        };
        res(&mut w, "decoder.middle.0", c4, c4);
        w.constant("decoder.middle.1.norm.gamma", &[c4, 1, 1], 1.0);
        w.layer("decoder.middle.1.to_qkv", &[3 * c4, c4, 1, 1], true);
        w.layer("decoder.middle.1.proj", &[c4, c4, 1, 1], true);
        res(&mut w, "decoder.middle.2", c4, c4);
        for i in 0..3 {
            res(&mut w, &format!("decoder.upsamples.{i}"), c4, c4);
        }
        w.layer("decoder.upsamples.3.resample.1", &[c2, c4, 3, 3], true);
        w.layer(
            "decoder.upsamples.3.time_conv",
            &[2 * c4, c4, 3, 1, 1],
            true,
        );
        res(&mut w, "decoder.upsamples.4", c2, c4);
        res(&mut w, "decoder.upsamples.5", c4, c4);
        res(&mut w, "decoder.upsamples.6", c4, c4);
        w.layer("decoder.upsamples.7.resample.1", &[c2, c4, 3, 3], true);
        w.layer(
            "decoder.upsamples.7.time_conv",
            &[2 * c4, c4, 3, 1, 1],
            true,
        );
        for i in 8..11 {
            res(&mut w, &format!("decoder.upsamples.{i}"), c2, c2);
        }
        w.layer("decoder.upsamples.11.resample.1", &[b, c2, 3, 3], true);
        for i in 12..15 {
            res(&mut w, &format!("decoder.upsamples.{i}"), b, b);
        }
        w.constant("decoder.head.0.gamma", &[b, 1, 1, 1], 1.0);
        w.layer("decoder.head.2", &[3, b, 3, 3, 3], true);
        w
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors
            .values()
            .map(|(s, _)| s.iter().product::<usize>())
            .sum()
    }
}

impl WeightSource for RandomWeights {
    fn path(&self) -> &Path {
        &self.path
    }

    fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|(s, _)| s.as_slice())
    }

    fn is_bare_tensor(&self) -> bool {
        self.tensors.len() == 1 && self.tensors.contains_key("")
    }

    fn tensor_on(&self, name: &str, backend: &BackendRef) -> Option<crate::Result<Tensor>> {
        let (shape, Init::Normal { std, stream }) = self.tensors.get(name)? else {
            return None;
        };
        let len = shape.iter().product();
        let made = backend.random_normal(random::stream_base(self.seed, *stream), *std, len)?;
        Some(
            made.and_then(|buffer| Tensor::from_buffer(backend, buffer, shape))
                .map_err(Into::into),
        )
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightError> {
        let (shape, init) = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightError::MissingKey {
                path: self.path.clone(),
                key: name.to_string(),
                what: "not in these random weights".into(),
            })?;
        let n: usize = shape.iter().product();
        Ok(match *init {
            Init::Constant(v) => vec![v; n],
            Init::Normal { std, stream } => {
                let mut v = vec![0.0f32; n];
                random::normal_fill(random::stream_base(self.seed, stream), std, &mut v);
                v
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{identify, FileKind};

    #[test]
    fn release_sizes_have_the_published_parameter_counts() {
        let s = ModelSize::RELEASE;
        assert_eq!(RandomWeights::dit(s, 0).parameter_count(), 1_418_996_800);
        assert_eq!(
            RandomWeights::projector(s, 0).parameter_count(),
            287_845_888
        );
        assert_eq!(RandomWeights::vae(s, 0).parameter_count(), 73_295_603);
        // The checkpoint holds the two deepening convs too; we let them default to identity.
        let deepening = 512 * 512 * 9 + 128 * 128 * 9;
        assert_eq!(
            RandomWeights::tcdecoder(s, 0).parameter_count() + deepening,
            45_338_371
        );
    }

    #[test]
    fn random_files_are_recognised_and_reproducible() {
        let s = ModelSize::SMALL;
        assert_eq!(identify(&RandomWeights::dit(s, 1)), FileKind::Dit);
        assert_eq!(
            identify(&RandomWeights::projector(s, 1)),
            FileKind::LqProjector
        );
        assert_eq!(
            identify(&RandomWeights::tcdecoder(s, 1)),
            FileKind::TcDecoder
        );
        assert_eq!(identify(&RandomWeights::vae(s, 1)), FileKind::WanVae);
        assert_eq!(identify(&RandomWeights::prompt(s, 1)), FileKind::Prompt);
        let a = RandomWeights::dit(s, 1)
            .read_f32("blocks.1.ffn.0.weight")
            .unwrap();
        assert_eq!(
            a,
            RandomWeights::dit(s, 1)
                .read_f32("blocks.1.ffn.0.weight")
                .unwrap()
        );
        assert_ne!(
            a,
            RandomWeights::dit(s, 2)
                .read_f32("blocks.1.ffn.0.weight")
                .unwrap()
        );
        let q = RandomWeights::dit(s, 1)
            .read_f32("blocks.0.self_attn.q.bias")
            .unwrap();
        assert_eq!(
            q,
            RandomWeights::dit(s, 1)
                .read_f32("blocks.0.self_attn.k.bias")
                .unwrap()
        );
    }
}

//! The Wan2.1 DiT run as FlashVSR's one-step streaming denoiser (spec §4, §5).

mod block;
pub mod config;
pub mod mask;
mod rope;
pub mod windows;

use flashvsr_tensor::{BackendRef, BlockMask, Tensor};

use block::DitBlock;
pub use block::{LayerCache, FFN_TOKENS_PER_PASS};
use config::{DitConfig, EPS, LATENT_CHANNELS};
use mask::SparseSettings;
pub use windows::TokenGrid;

use crate::params::Params;
use crate::weights::{WeightError, WeightSource};
use crate::Result;

const FREQ_TIMESTEP: f64 = 1000.0;

pub struct Dit {
    pub config: DitConfig,
    patch: (Tensor, Tensor),
    head: (Tensor, Tensor),
    head_shift: Tensor,
    head_scale: Tensor,
    blocks: Vec<DitBlock>,
    /// Timestep embedding `t` and modulation `t_mod` at τ = 1000, kept for inspection and tests.
    pub t_emb: Vec<f32>,
    pub t_mod: Vec<f32>,
}

/// What flows from one chunk to the next inside the DiT: each layer's key/value groups.
#[derive(Clone, Default)]
pub struct DitState {
    pub layers: Vec<LayerCache>,
}

pub struct ChunkOutput {
    /// Raw DiT output `v`, `(16, f, H/8, W/8)`; the denoised latent is `noise − v`.
    pub velocity: Tensor,
    /// Per layer, the block mask used, `(heads, query blocks, key blocks)` on the device.
    pub masks: Vec<Tensor>,
}

fn reject_unexpected(file: &dyn WeightSource, expected: &[String], what: &str) -> Result<()> {
    let expected: std::collections::HashSet<&str> = expected.iter().map(String::as_str).collect();
    if let Some(extra) = file.names().into_iter().find(|k| !expected.contains(k)) {
        return Err(WeightError::UnexpectedKey {
            path: file.path().to_path_buf(),
            key: extra.to_string(),
            what: what.to_string(),
        }
        .into());
    }
    Ok(())
}

impl Dit {
    /// Loads and validates the DiT file and the prompt tensor; folds every constant (timestep
    /// modulation, cross-attention K/V of the prompt) in at load.
    pub fn load(
        backend: &BackendRef,
        dit_file: &dyn WeightSource,
        prompt_file: &dyn WeightSource,
    ) -> Result<Dit> {
        let p = Params::new(dit_file, backend, "a FlashVSR DiT file");
        let cfg = DitConfig::from_params(&p)?;
        reject_unexpected(
            dit_file,
            &cfg.expected_keys(),
            "not part of a FlashVSR DiT file",
        )?;
        let d = cfg.dim;

        let (t_emb, t_mod) = time_conditioning(&p, &cfg)?;
        let context = prompt_context(&p, &cfg, prompt_file)?;
        let blocks = (0..cfg.layers)
            .map(|i| DitBlock::load(&p.pp(format!("blocks.{i}")), &cfg, &t_mod, &context))
            .collect::<Result<Vec<_>>>()?;

        let head_mod = p.values("head.modulation", &[1, 2, d])?;
        let patch_in = LATENT_CHANNELS * 4;
        let head_shift: Vec<f32> = (0..d).map(|c| head_mod[c] + t_emb[c]).collect();
        let head_scale: Vec<f32> = (0..d).map(|c| head_mod[d + c] + t_emb[c]).collect();
        Ok(Dit {
            patch: (
                p.tensor_as(
                    "patch_embedding.weight",
                    &[d, LATENT_CHANNELS, 1, 2, 2],
                    &[d, patch_in],
                )?,
                p.tensor("patch_embedding.bias", &[d])?,
            ),
            head: (
                p.tensor("head.head.weight", &[patch_in, d])?,
                p.tensor("head.head.bias", &[patch_in])?,
            ),
            head_shift: Tensor::from_slice(backend, &head_shift, &[d])?,
            head_scale: Tensor::from_slice(backend, &head_scale, &[d])?,
            blocks,
            config: cfg,
            t_emb,
            t_mod,
        })
    }

    pub fn new_state(&self) -> DitState {
        DitState {
            layers: vec![LayerCache::default(); self.blocks.len()],
        }
    }

    /// Transformer blocks.
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Runs one chunk. `noise`: `(16, f, H/8, W/8)` for latent frames `first_frame..first_frame+f`;
    /// `lq`: projector tokens `(f·h·w, D)` in raster order. `injected` replaces the computed masks.
    pub fn forward_chunk(
        &self,
        noise: &Tensor,
        lq: &Tensor,
        first_frame: usize,
        state: &mut DitState,
        settings: &SparseSettings,
        injected: Option<&[BlockMask]>,
    ) -> Result<ChunkOutput> {
        let (x, grid) = self.embed(noise, lq)?;
        let layers = 0..self.blocks.len();
        let (x, masks) = self.run_blocks(
            x,
            grid,
            first_frame,
            layers,
            &mut state.layers,
            settings,
            injected,
        )?;
        let velocity = self.head(&x, grid)?;
        Ok(ChunkOutput { velocity, masks })
    }

    /// The chunk's residual stream before the first block, in window order, and its token grid.
    pub fn embed(&self, noise: &Tensor, lq: &Tensor) -> Result<(Tensor, TokenGrid)> {
        let (f, hl, wl) = (noise.dim(1), noise.dim(2), noise.dim(3));
        let grid = TokenGrid {
            frames: f,
            h: hl / 2,
            w: wl / 2,
        };
        let patches = noise
            .reshape(&[LATENT_CHANNELS, f, grid.h, 2, grid.w, 2])?
            .permute(&[1, 2, 4, 0, 3, 5])?
            .reshape(&[grid.tokens(), LATENT_CHANNELS * 4])?;
        let x = patches
            .linear(&self.patch.0, Some(&self.patch.1))?
            .add(lq)?;
        Ok((windows::to_windows(&x, grid)?, grid))
    }

    /// Blocks `layers` over the residual stream `x` (window order); `caches` are those blocks'
    /// KV caches, `injected` (when given) every block's mask. Returns the stream and the masks.
    #[allow(clippy::too_many_arguments)]
    pub fn run_blocks(
        &self,
        mut x: Tensor,
        grid: TokenGrid,
        first_frame: usize,
        layers: std::ops::Range<usize>,
        caches: &mut [LayerCache],
        settings: &SparseSettings,
        injected: Option<&[BlockMask]>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if layers.is_empty() {
            return Ok((x, Vec::new()));
        }
        let rope = flashvsr_tensor::host_stalls::timed("rope tables", || {
            rope::tables(x.backend(), grid.window_order_positions(first_frame))
        })?;
        let (rows, cols, allowed) =
            flashvsr_tensor::host_stalls::timed("allowed pattern", || settings.allowed_pattern());
        // Queued: a plain upload would wait for the device to drain once per chunk.
        let allowed = Tensor::from_slice_queued(x.backend(), &allowed, &[rows, cols])?;
        let mut masks = Vec::with_capacity(layers.len());
        for (i, cache) in layers.zip(caches.iter_mut()) {
            let injected_mask = injected.map(|m| &m[i]);
            let (y, mask) = self.blocks[i].forward(
                &x,
                &rope,
                grid.groups(),
                cache,
                settings,
                &allowed,
                injected_mask,
            )?;
            x = y;
            masks.push(mask);
        }
        Ok((x, masks))
    }

    /// The velocity `(16, f, H/8, W/8)` from the stream after the last block.
    pub fn head(&self, x: &Tensor, grid: TokenGrid) -> Result<Tensor> {
        let f = grid.frames;
        let (hl, wl) = (grid.h * 2, grid.w * 2);
        let x = windows::from_windows(x, grid)?;
        let y = x
            .modulate(&self.head_shift, &self.head_scale, EPS)?
            .linear(&self.head.0, Some(&self.head.1))?;
        // Head channels are ordered (p, q, c): opposite to the patch embedding's (c, p, q).
        Ok(y.reshape(&[f, grid.h, grid.w, 2, 2, LATENT_CHANNELS])?
            .permute(&[5, 0, 1, 3, 2, 4])?
            .reshape(&[LATENT_CHANNELS, f, hl, wl])?)
    }
}

/// `t` and `t_mod` for the single timestep τ = 1000 (spec §4.1): the sinusoid in f64, then f32.
fn time_conditioning(p: &Params, cfg: &DitConfig) -> Result<(Vec<f32>, Vec<f32>)> {
    let half = cfg.freq_dim / 2;
    let mut e = vec![0.0f32; cfg.freq_dim];
    for k in 0..half {
        let angle = FREQ_TIMESTEP * 10000f64.powf(-(k as f64) / half as f64);
        e[k] = angle.cos() as f32;
        e[half + k] = angle.sin() as f32;
    }
    let d = cfg.dim;
    let e = Tensor::from_slice(p.backend(), &e, &[1, cfg.freq_dim])?;
    let t = e
        .linear(
            &p.tensor("time_embedding.0.weight", &[d, cfg.freq_dim])?,
            Some(&p.tensor("time_embedding.0.bias", &[d])?),
        )?
        .silu()?
        .linear(
            &p.tensor("time_embedding.2.weight", &[d, d])?,
            Some(&p.tensor("time_embedding.2.bias", &[d])?),
        )?;
    let t_mod = t.silu()?.linear(
        &p.tensor("time_projection.1.weight", &[6 * d, d])?,
        Some(&p.tensor("time_projection.1.bias", &[6 * d])?),
    )?;
    Ok((t.to_vec()?, t_mod.to_vec()?))
}

/// The prompt through the text embedding MLP: `(L, D)`.
fn prompt_context(p: &Params, cfg: &DitConfig, prompt_file: &dyn WeightSource) -> Result<Tensor> {
    let names = prompt_file.names();
    let bad = |reason: String| -> crate::ModelError {
        WeightError::WrongFile {
            path: prompt_file.path().to_path_buf(),
            reason,
        }
        .into()
    };
    if names.len() != 1 {
        return Err(bad(format!(
            "expected one prompt tensor [1, L, {}], found a file with {} tensors (is this posi_prompt.pth?)",
            cfg.text_dim,
            names.len()
        )));
    }
    let name = names[0];
    let shape = prompt_file.shape(name).unwrap_or(&[]).to_vec();
    let rows = match shape.as_slice() {
        [1, l, t] | [l, t] if *t == cfg.text_dim => *l,
        _ => {
            return Err(bad(format!(
                "prompt tensor has shape {shape:?}, the DiT expects [1, L, {}]",
                cfg.text_dim
            )))
        }
    };
    let values = prompt_file.read_f32(name)?;
    let prompt = Tensor::from_slice(p.backend(), &values, &[rows, cfg.text_dim])?;
    let d = cfg.dim;
    Ok(prompt
        .linear(
            &p.tensor("text_embedding.0.weight", &[d, cfg.text_dim])?,
            Some(&p.tensor("text_embedding.0.bias", &[d])?),
        )?
        .gelu_tanh()?
        .linear(
            &p.tensor("text_embedding.2.weight", &[d, d])?,
            Some(&p.tensor("text_embedding.2.bias", &[d])?),
        )?)
}

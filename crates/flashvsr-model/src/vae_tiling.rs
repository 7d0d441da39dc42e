//! Tiled Wan VAE decode (spec §6.3): overlapping latent tiles, each with its own causal state over
//! the whole stream, blended with linear ramps that never reach zero (no dark borders).

use flashvsr_tensor::Tensor;

use crate::state_io::{StateReader, StateWriter};
use crate::tcdecoder::SPACE_UPSCALE;
use crate::vae::{VaeState, WanVaeDecoder};
use crate::Result;

/// Tile size and stride in latent pixels, (rows, cols).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeTiling {
    pub tile: (usize, usize),
    pub stride: (usize, usize),
}

impl VaeTiling {
    /// The reference pipeline's defaults.
    pub const DEFAULT: VaeTiling = VaeTiling {
        tile: (60, 104),
        stride: (30, 52),
    };

    /// Whether a latent grid needs more than one tile.
    pub fn splits(&self, rows: usize, cols: usize) -> bool {
        rows > self.tile.0 || cols > self.tile.1
    }

    /// `--tiled-vae auto` (and the bench): untiled up to [`UNTILED_MAX_PIXELS`] output pixels,
    /// the default tiles above, where they split the frame. By frame size alone, so that an
    /// input decodes to the same frames on every card (tiled and untiled frames differ slightly:
    /// the tiles are blended).
    pub fn auto(rows: usize, cols: usize) -> Option<VaeTiling> {
        let pixels = rows * cols * SPACE_UPSCALE * SPACE_UPSCALE;
        (pixels > UNTILED_MAX_PIXELS && VaeTiling::DEFAULT.splits(rows, cols))
            .then_some(VaeTiling::DEFAULT)
    }
}

/// Output pixels (1408×768, 1280×768 and smaller) up to which `--tiled-vae auto` decodes untiled.
/// The untiled decode goes one latent (4 frames) at a time ([`crate::vae::piece_latents`]); at
/// 1408×768 in the CUDA fast mode (bf16 channels-last activations) it holds about 5 GB of causal
/// history (two input frames per conv, all levels) and about 3 GB of one piece's activations:
/// with the DiT's weights and KV cache that is about 17 GB, within a 24 GB card. Larger frames
/// tile: 9 tiles of 480×832 cover 1920×1088 with 2.2× its area in work, against the untiled
/// decode's memory growing with the frame. Tiling also spends 2.6× the work of an untiled decode
/// at 1408×768, the reason to stop there and not at one tile (480×832).
pub const UNTILED_MAX_PIXELS: usize = 1408 * 768;

struct Tile {
    rows: (usize, usize),
    cols: (usize, usize),
    mask_rows: Vec<f32>,
    mask_cols: Vec<f32>,
    state: VaeState,
}

pub struct TiledVaeState {
    tiles: Vec<Tile>,
    rows: usize,
    cols: usize,
}

fn starts(len: usize, tile: usize, stride: usize) -> Vec<usize> {
    (0..len)
        .step_by(stride.max(1))
        .filter(|&s| !(s >= stride && s - stride + tile >= len))
        .collect()
}

/// Pixel weights along one axis of a tile.
fn ramp(len: usize, leading: bool, trailing: bool, border: usize) -> Vec<f32> {
    let mut m = vec![1.0f32; len];
    let b = border.min(len);
    if leading {
        for (k, v) in m.iter_mut().take(b).enumerate() {
            *v = (k + 1) as f32 / border as f32;
        }
    }
    if trailing {
        for k in 0..b {
            m[len - 1 - k] = (k + 1) as f32 / border as f32;
        }
    }
    m
}

impl TiledVaeState {
    pub fn new(vae: &WanVaeDecoder, tiling: VaeTiling, rows: usize, cols: usize) -> TiledVaeState {
        let (sh, sw) = tiling.tile;
        let (dh, dw) = tiling.stride;
        let mut tiles = Vec::new();
        for &h0 in &starts(rows, sh, dh) {
            for &w0 in &starts(cols, sw, dw) {
                let (h1, w1) = ((h0 + sh).min(rows), (w0 + sw).min(cols));
                tiles.push(Tile {
                    rows: (h0, h1),
                    cols: (w0, w1),
                    mask_rows: ramp(
                        (h1 - h0) * SPACE_UPSCALE,
                        h0 != 0,
                        h0 + sh < rows,
                        (sh - dh) * SPACE_UPSCALE,
                    ),
                    mask_cols: ramp(
                        (w1 - w0) * SPACE_UPSCALE,
                        w0 != 0,
                        w0 + sw < cols,
                        (sw - dw) * SPACE_UPSCALE,
                    ),
                    state: vae.new_state(),
                });
            }
        }
        TiledVaeState { tiles, rows, cols }
    }

    pub fn save(&self, w: &mut StateWriter, prefix: &str) -> Result<()> {
        for (i, t) in self.tiles.iter().enumerate() {
            t.state.save(w, &format!("{prefix}.tile{i}"))?;
        }
        Ok(())
    }

    pub fn load(&mut self, r: &StateReader, prefix: &str) -> Result<()> {
        for (i, t) in self.tiles.iter_mut().enumerate() {
            t.state.load(r, &format!("{prefix}.tile{i}"))?;
        }
        Ok(())
    }

    pub fn tile_count(&self) -> usize {
        self.tiles.len()
    }

    /// Decodes one chunk of latents tile by tile; returns blended frames `(3, n, H, W)` on the host,
    /// clamped to [-1, 1] once, after blending.
    pub fn decode(&mut self, vae: &WanVaeDecoder, latents: &Tensor) -> Result<(Vec<f32>, usize)> {
        let (ph, pw) = (self.rows * SPACE_UPSCALE, self.cols * SPACE_UPSCALE);
        let mut acc: Vec<f32> = Vec::new();
        let mut weight = vec![0.0f32; ph * pw];
        let mut frames = 0;
        for (i, tile) in self.tiles.iter_mut().enumerate() {
            let part = latents
                .narrow(2, tile.rows.0, tile.rows.1 - tile.rows.0)?
                .narrow(3, tile.cols.0, tile.cols.1 - tile.cols.0)?;
            let out = vae.decode(&part, &mut tile.state)?;
            let (n, th, tw) = (out.dim(1), out.dim(2), out.dim(3));
            let values = out.to_vec()?;
            if i == 0 {
                frames = n;
                acc = vec![0.0; 3 * n * ph * pw];
            }
            let (y0, x0) = (tile.rows.0 * SPACE_UPSCALE, tile.cols.0 * SPACE_UPSCALE);
            for y in 0..th {
                for x in 0..tw {
                    let m = tile.mask_rows[y].min(tile.mask_cols[x]);
                    let dst = (y0 + y) * pw + x0 + x;
                    weight[dst] += m;
                    for plane in 0..3 * n {
                        acc[plane * ph * pw + dst] += values[(plane * th + y) * tw + x] * m;
                    }
                }
            }
        }
        for plane in acc.chunks_mut(ph * pw) {
            for (v, w) in plane.iter_mut().zip(&weight) {
                *v = (*v / w).clamp(-1.0, 1.0);
            }
        }
        Ok((acc, frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tiles_above_1408_by_768_only() {
        // 1408×768 (the bench) and 1280×720 (canvas 1280×768) decode untiled...
        assert_eq!(VaeTiling::auto(96, 176), None);
        assert_eq!(VaeTiling::auto(96, 160), None);
        // ...1920×1088 and 1536×896 tile, and a frame within one tile never does.
        assert_eq!(VaeTiling::auto(136, 240), Some(VaeTiling::DEFAULT));
        assert_eq!(VaeTiling::auto(112, 192), Some(VaeTiling::DEFAULT));
        assert_eq!(VaeTiling::auto(16, 16), None);
        assert_eq!(VaeTiling::auto(60, 104), None);
    }
}

//! How much device memory one stream needs, to pick tiles that fit a memory budget
//! (`--max-vram`). An estimate with a margin, checked against measurements (BENCHMARKS.md);
//! running out anyway is caught and retried with smaller tiles by the caller.

use crate::pipeline::{Decoder, Models};

/// Tokens per output pixel of one temporal group (2 latent frames of 16×16-pixel tokens).
const GROUP_TOKENS_PER_PX: f64 = 2.0 / 256.0;
/// Temporal groups in the first chunk (6 latent frames), the largest.
const FIRST_CHUNK_GROUPS: f64 = 3.0;
/// LQ canvases on the device at once: the frames an engine keeps (conditioning of the current and
/// next chunk) where they came prepared; where they came as source levels (1/s² of a canvas
/// each), the first chunk's decoder condition (21 canvases) made from them, with room to spare.
const KEPT_LQ_FRAMES: f64 = 30.0;
/// The estimate's margin over the tensors it counts (allocator slack, small temporaries).
const MARGIN: f64 = 1.25;
/// Tokens of one feed-forward pass (the DiT runs its FFN in passes of at most this many).
const FFN_PASS_TOKENS: f64 = crate::dit::FFN_TOKENS_PER_PASS as f64;

/// Device bytes one stream of `pixels` model-canvas pixels needs beyond the loaded weights, at
/// its largest (the first chunk). `element_bytes`: 2 where the KV cache and GEMM operands are
/// bf16 (CUDA fast mode), 4 for fp32. `kv_len`: cached temporal groups.
pub fn stream_bytes(models: &Models, pixels: usize, element_bytes: usize, kv_len: usize) -> u64 {
    let px = pixels as f64;
    let cfg = &models.dit.config;
    let (dim, ffn, layers) = (cfg.dim as f64, cfg.ffn_dim as f64, cfg.layers as f64);
    let e = element_bytes as f64;
    let group_tokens = GROUP_TOKENS_PER_PX * px;
    // K and V of every layer for the cached groups, plus one layer's concatenation of them with
    // the current chunk (the attention's operands).
    let kv_cache = layers * kv_len as f64 * group_tokens * dim * 2.0 * e;
    let kv_operands = (kv_len as f64 + FIRST_CHUNK_GROUPS) * group_tokens * dim * 2.0 * e;
    // One block's activations for the first chunk: residual stream, norms, q/k/v, attention
    // output (f32), one FFN pass's hidden layer (f32 plus its GEMM copy).
    let tokens = FIRST_CHUNK_GROUPS * group_tokens;
    let activations = tokens * 10.0 * dim * 4.0 + tokens.min(FFN_PASS_TOKENS) * ffn * (4.0 + e);
    let decoder = match &models.decoder {
        // Half-resolution MemBlocks over 2 frames (input, its pairing with the previous frame,
        // two outputs), then one output frame at a time: the upsampled frame, one grown
        // sub-frame, a convolution's output and its activation, the bf16 staging of a
        // convolution.
        Decoder::Tiny(tc) => {
            let (c2, c3) = (tc.widths[2] as f64, tc.widths[3] as f64);
            let half = 2.0 * (px / 4.0) * 4.0 * (5.0 * c2);
            let tail = px * 4.0 * (2.0 * c2 + 3.0 * c3);
            half + tail
        }
        Decoder::Full { tiling, .. } => vae_bytes(px, tiling.is_some(), e),
    };
    let lq = KEPT_LQ_FRAMES * 3.0 * px * 4.0;
    ((kv_cache + kv_operands + activations + decoder + lq) * MARGIN) as u64
}

/// Elements of causal history the Wan VAE keeps per output pixel (two input frames per causal
/// conv): 7 convs of 96 channels at full resolution, 6 of 192 at half, 6 of 192–384 and a
/// time_conv at a quarter, the rest at an eighth.
const VAE_HISTORY_PER_PX: f64 = 2364.0;
/// Elements per output pixel of the largest activations of one piece of the decode: three
/// 96-channel maps of its 4 frames per latent and the 2 history frames in front.
const VAE_PIECE_PER_PX: f64 = 3.0 * 96.0 * 6.0;
/// Tiles of the default VAE tiling cover at most 4× the frame (a half-tile stride on both axes).
const VAE_TILE_COVERAGE: f64 = 4.0;
/// Output pixels of one default VAE tile (60×104 latents).
const VAE_TILE_PX: f64 = 480.0 * 832.0;

/// The Wan VAE's device bytes for a frame of `px` output pixels at `e` bytes an activation
/// element (bf16 channels-last in the CUDA fast mode): every tile's causal history, plus one
/// tile's (or the frame's) activations for a piece of one latent.
fn vae_bytes(px: f64, tiled: bool, e: f64) -> f64 {
    let (history_px, piece_px) = if tiled {
        (px * VAE_TILE_COVERAGE, px.min(VAE_TILE_PX))
    } else {
        (px, px)
    };
    (history_px * VAE_HISTORY_PER_PX + piece_px * VAE_PIECE_PER_PX) * e
}

/// Device bytes that come on top of the loaded weights once the first chunk ran, whatever the
/// canvas: the bf16 copies of the convolution weights a fast backend makes for its convolution
/// library (`element_bytes` 2; none otherwise).
pub fn converted_weight_bytes(models: &Models, element_bytes: usize) -> u64 {
    if element_bytes != 2 {
        return 0;
    }
    let decoder = match &models.decoder {
        Decoder::Tiny(tc) => tc.conv_weight_elements(),
        Decoder::Full { .. } => 0,
    };
    ((models.projector.conv_weight_elements() + decoder) * 2) as u64
}

/// The largest square tile (a multiple of 128 model pixels, at least 128) whose stream fits in
/// `available` bytes; `None` when the whole canvas fits untiled.
pub fn tile_for_budget(
    available: u64,
    height: usize,
    width: usize,
    per_stream: impl Fn(usize) -> u64,
) -> Option<usize> {
    if per_stream(height * width) <= available {
        return None;
    }
    let largest = height.max(width).div_ceil(128) * 128;
    let tile = (1..=largest / 128)
        .rev()
        .map(|k| k * 128)
        .find(|&t| per_stream(t.min(height) * t.min(width)) <= available)
        .unwrap_or(128);
    Some(tile)
}

#[cfg(test)]
mod tests {
    use super::{tile_for_budget, vae_bytes};

    #[test]
    fn untiled_vae_at_1408_by_768_fits_beside_the_dit_on_24_gb() {
        let gb = vae_bytes(1408.0 * 768.0, false, 2.0) / 1e9;
        assert!((7.0..9.0).contains(&gb), "{gb} GB");
        // Tiling keeps every tile's history: more than the untiled decode at this size.
        assert!(vae_bytes(1408.0 * 768.0, true, 2.0) / 1e9 > gb);
    }

    #[test]
    fn tiles_shrink_until_the_stream_fits() {
        let per_stream = |px: usize| px as u64 * 10;
        assert_eq!(tile_for_budget(10 * 512 * 512, 512, 512, per_stream), None);
        assert_eq!(
            tile_for_budget(10 * 256 * 256, 512, 1024, per_stream),
            Some(256)
        );
        assert_eq!(
            tile_for_budget(10 * 300 * 300, 512, 1024, per_stream),
            Some(256)
        );
        // A tile taller than the canvas only counts the canvas rows.
        assert_eq!(
            tile_for_budget(10 * 384 * 256, 256, 2048, per_stream),
            Some(384)
        );
        // Nothing fits: the smallest tile, and the caller's retries take it from there.
        assert_eq!(tile_for_budget(10, 512, 512, per_stream), Some(128));
    }
}

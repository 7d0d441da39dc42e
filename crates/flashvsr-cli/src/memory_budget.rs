//! `--max-vram`: tiles sized so that one tile's stream fits the device memory left after the
//! weights, and smaller tiles after an out-of-memory error.

use flashvsr_model::memory;
use flashvsr_model::pipeline::Models;
use flashvsr_model::tiled::TileLayout;
use flashvsr_tensor::{BackendRef, Device};

use crate::args::{Precision, UpscaleArgs};

/// Kept free beyond the estimate (library workspaces, the allocator's slack).
const HEADROOM: u64 = 384 << 20;
/// Tiles are multiples of this many model pixels.
const TILE_STEP: usize = 128;

/// The tiling of a `height` × `width` canvas: `--tile-size` when given, else, under
/// `--max-vram`, the largest tile whose stream fits; `None` runs untiled.
pub fn tile_layout(
    args: &UpscaleArgs,
    models: &Models,
    backend: &BackendRef,
    height: usize,
    width: usize,
) -> Option<TileLayout> {
    let scale = args.scale as usize;
    if args.tile_size > 0 {
        return Some(TileLayout::from_input(
            args.tile_size,
            args.tile_overlap,
            scale,
        ));
    }
    let budget = args.max_vram?;
    // The CUDA fast mode keeps the KV cache and GEMM operands in bf16.
    let fast = matches!(backend.device(), Device::Cuda(_)) && args.precision == Precision::Auto;
    let element_bytes = if fast { 2 } else { 4 };
    // Load-time temporaries (weights made or folded on the device) sit in the allocator's cache,
    // not in tensors: give them back before measuring what the weights take.
    if let Err(e) = backend.release_cached_memory() {
        eprintln!("flashvsr: could not release cached device memory ({e})");
    }
    let in_use = backend.memory_in_use().unwrap_or(0)
        + memory::converted_weight_bytes(models, element_bytes);
    let available = budget.saturating_sub(in_use + HEADROOM);
    let kv_len = args.kv_ratio as usize;
    let tile = memory::tile_for_budget(available, height, width, |px| {
        memory::stream_bytes(models, px, element_bytes, kv_len)
    })?;
    let overlap = args.tile_overlap * scale;
    Some(TileLayout {
        tile: tile.max(smallest_tile(overlap)),
        overlap,
    })
}

/// Tiles must be wider than twice their overlap to have an inside.
fn smallest_tile(overlap: usize) -> usize {
    (2 * overlap + 1).div_ceil(TILE_STEP).max(1) * TILE_STEP
}

/// The `--tile-size` (input pixels) to retry with after running out of memory with tiles of
/// `tile` model pixels (the canvas' longer side when untiled); `None` when none is smaller.
pub fn smaller_tile(tile: usize, overlap: usize, scale: usize) -> Option<usize> {
    let shrunk = (tile * 3 / 4) / TILE_STEP * TILE_STEP;
    let next = shrunk.min(tile.saturating_sub(TILE_STEP));
    (next >= smallest_tile(overlap) && next > 0).then(|| next.div_ceil(scale))
}

#[cfg(test)]
mod tests {
    use super::{smaller_tile, smallest_tile};

    #[test]
    fn retries_shrink_by_a_quarter_to_the_smallest_tile() {
        assert_eq!(smallest_tile(96), 256);
        assert_eq!(smallest_tile(0), 128);
        // 1920-wide untiled canvas → 1408 model px = 352 input px at ×4.
        assert_eq!(smaller_tile(1920, 96, 4), Some(352));
        assert_eq!(smaller_tile(512, 96, 4), Some(96));
        assert_eq!(smaller_tile(384, 96, 4), Some(64));
        assert_eq!(smaller_tile(256, 96, 4), None);
        assert_eq!(smaller_tile(256, 0, 4), Some(32));
        assert_eq!(smaller_tile(128, 0, 4), None);
    }
}

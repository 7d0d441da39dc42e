//! Tiled DiT: the canvas is cut into overlapping tiles of equal size (multiples of 128 output
//! pixels), each run as its own stream (own KV cache and decoder state), and blended in f32 with
//! linear ramps on interior edges only. Weights never reach zero, so there is no dark border, and
//! the colour fix runs once on the blended frame (when the caller finishes it), so tiles cannot
//! disagree in colour.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flashvsr_tensor::BackendRef;

use crate::color_fix::ColorFix;
use crate::geometry::SIZE_MULTIPLE;
use crate::lq_frame::{LqHost, LqInput, SourceLevels};
use crate::pipeline::{Engine, EngineSettings, EngineStats, Models, OutputFrame};
use crate::state_io::{StateReader, StateWriter};
use crate::stream::FrameStream;
use crate::{ModelError, Result};

/// Tile size and overlap in output (model canvas) pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileLayout {
    pub tile: usize,
    pub overlap: usize,
}

impl TileLayout {
    /// From input pixels: the tile is rounded up to a multiple of 128 output pixels.
    pub fn from_input(tile_px: usize, overlap_px: usize, scale: usize) -> TileLayout {
        TileLayout {
            tile: (tile_px * scale).div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE,
            overlap: overlap_px * scale,
        }
    }
}

/// Tile starts along one axis of length `len` (the last tile ends at the canvas edge).
pub fn tile_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if tile >= len {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + tile < len)
        .collect();
    starts.push(len - tile);
    starts.dedup();
    starts
}

/// Weights along one axis of a tile: 1 inside, ramps `(k+1)/(r+1)` on interior edges.
fn ramp(len: usize, leading: bool, trailing: bool, r: usize) -> Vec<f32> {
    let mut w = vec![1.0f32; len];
    let r = r.min(len / 2);
    for k in 0..r {
        let v = (k + 1) as f32 / (r + 1) as f32;
        if leading {
            w[k] = w[k].min(v);
        }
        if trailing {
            w[len - 1 - k] = w[len - 1 - k].min(v);
        }
    }
    w
}

struct Tile<'m> {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    wx: Vec<f32>,
    wy: Vec<f32>,
    engine: Engine<'m>,
}

pub struct TiledEngine<'m> {
    tiles: Vec<Tile<'m>>,
    width: usize,
    height: usize,
    color_fix: ColorFix,
    weight_sum: Vec<f32>,
    /// Blend accumulators of frames some tile has delivered, and how many tiles delivered each.
    pending: BTreeMap<usize, (Vec<f32>, usize)>,
    /// Full LQ frames kept for the colour fix until their output is emitted.
    lq: BTreeMap<usize, Arc<LqHost>>,
}

impl<'m> TiledEngine<'m> {
    /// `settings(i)` gives tile i's engine settings for the whole canvas (its colour fix is
    /// replaced by none: `color_fix` runs on the blended frame; its noise is cropped to the tile,
    /// so every tile sees the untiled run's noise).
    pub fn new(
        models: &'m Models,
        mut settings: impl FnMut(usize) -> Result<EngineSettings>,
        backend: &BackendRef,
        height: usize,
        width: usize,
        layout: TileLayout,
        color_fix: ColorFix,
    ) -> Result<TiledEngine<'m>> {
        let (tw, th) = (layout.tile.min(width), layout.tile.min(height));
        let mut tiles = Vec::new();
        for &y0 in &tile_starts(height, th, layout.overlap) {
            for &x0 in &tile_starts(width, tw, layout.overlap) {
                let mut s = settings(tiles.len())?;
                s.color_fix = ColorFix::None;
                let latent = |v: usize| v / crate::tcdecoder::SPACE_UPSCALE;
                s.noise = s
                    .noise
                    .crop((latent(height), latent(width)), (latent(y0), latent(x0)));
                tiles.push(Tile {
                    x0,
                    y0,
                    w: tw,
                    h: th,
                    wx: ramp(tw, x0 > 0, x0 + tw < width, layout.overlap),
                    wy: ramp(th, y0 > 0, y0 + th < height, layout.overlap),
                    engine: Engine::new(models, s, backend, th, tw)?,
                });
            }
        }
        let mut weight_sum = vec![0.0f32; width * height];
        for t in &tiles {
            for y in 0..t.h {
                for x in 0..t.w {
                    weight_sum[(t.y0 + y) * width + t.x0 + x] += t.wx[x] * t.wy[y];
                }
            }
        }
        Ok(TiledEngine {
            tiles,
            width,
            height,
            color_fix,
            weight_sum,
            pending: BTreeMap::new(),
            lq: BTreeMap::new(),
        })
    }

    /// Tiles keep their stream state in host memory while the others run (see
    /// [`Engine::set_parking`]): device memory for one tile's stream instead of all of them.
    pub fn set_parking(&mut self, on: bool) -> Result<()> {
        for t in &mut self.tiles {
            t.engine.set_parking(on)?;
        }
        Ok(())
    }

    pub fn tile_count(&self) -> usize {
        self.tiles.len()
    }

    /// `(x0, y0, w, h)` of every tile on the canvas.
    pub fn tile_rects(&self) -> Vec<(usize, usize, usize, usize)> {
        self.tiles.iter().map(|t| (t.x0, t.y0, t.w, t.h)).collect()
    }

    /// Tile `t`'s part of a frame: its levels with the tile's window, or its canvas cropped.
    fn part(&self, frame: &LqHost, t: &Tile) -> LqInput {
        match frame.levels() {
            Some(l) => LqInput::Levels(SourceLevels {
                levels: l.levels.clone(),
                geometry: l.geometry.part((t.x0, t.y0), (t.w, t.h)),
            }),
            None => LqInput::Canvas(self.crop(frame.canvas(), t)),
        }
    }

    fn crop(&self, frame: &[f32], t: &Tile) -> Vec<f32> {
        let plane = self.width * self.height;
        let mut out = Vec::with_capacity(3 * t.w * t.h);
        for c in 0..3 {
            for y in 0..t.h {
                let row = c * plane + (t.y0 + y) * self.width + t.x0;
                out.extend_from_slice(&frame[row..row + t.w]);
            }
        }
        out
    }

    /// Adds tile outputs to the accumulators; emits frames every tile has delivered.
    fn blend(&mut self, delivered: Vec<(usize, Vec<OutputFrame>)>) -> Result<Vec<OutputFrame>> {
        let plane = self.width * self.height;
        for (ti, frames) in delivered {
            let t = &self.tiles[ti];
            for f in frames {
                let entry = self
                    .pending
                    .entry(f.index)
                    .or_insert_with(|| (vec![0.0; 3 * plane], 0));
                // Tile engines run without a colour fix: their decoded pixels are final.
                for c in 0..3 {
                    let plane_in = f.decoded_plane(c)?;
                    for y in 0..t.h {
                        let src = &plane_in[y * t.w..][..t.w];
                        let dst = &mut entry.0[c * plane + (t.y0 + y) * self.width + t.x0..][..t.w];
                        for x in 0..t.w {
                            dst[x] += src[x] * t.wx[x] * t.wy[y];
                        }
                    }
                }
                entry.1 += 1;
            }
        }
        let mut out = Vec::new();
        while let Some((&index, (_, count))) = self.pending.first_key_value() {
            if *count < self.tiles.len() {
                break;
            }
            let (mut pixels, _) = self.pending.remove(&index).unwrap_or_default();
            for plane_px in pixels.chunks_mut(plane) {
                for (v, w) in plane_px.iter_mut().zip(&self.weight_sum) {
                    *v /= w;
                }
            }
            // Without its LQ frame (never: frames are kept until emitted) the frame goes out
            // unfixed rather than failing the stream.
            let fix = match self.lq.remove(&index) {
                Some(reference) => (self.color_fix, reference),
                None => (ColorFix::None, Arc::new(LqHost::from_canvas(Vec::new()))),
            };
            out.push(OutputFrame::own(
                index,
                pixels,
                (self.height, self.width),
                fix,
            ));
        }
        Ok(out)
    }
}

impl FrameStream for TiledEngine<'_> {
    fn push_lq(&mut self, frame: LqInput) -> Result<Vec<OutputFrame>> {
        let frame = LqHost::new(frame, (self.height, self.width))?;
        let index = self.frames_received();
        let mut delivered = Vec::with_capacity(self.tiles.len());
        for ti in 0..self.tiles.len() {
            let part = self.part(&frame, &self.tiles[ti]);
            delivered.push((ti, self.tiles[ti].engine.push_lq(part)?));
        }
        self.lq.insert(index, Arc::new(frame));
        self.blend(delivered)
    }

    fn finish(&mut self, real_frames: usize) -> Result<Vec<OutputFrame>> {
        let mut delivered = Vec::with_capacity(self.tiles.len());
        for ti in 0..self.tiles.len() {
            delivered.push((ti, self.tiles[ti].engine.finish(real_frames)?));
        }
        let out = self.blend(delivered)?;
        self.lq.clear();
        Ok(out)
    }

    fn frames_received(&self) -> usize {
        self.tiles.first().map_or(0, |t| t.engine.frames_received())
    }

    fn checkpoint(&self) -> Result<StateWriter> {
        let mut w = StateWriter::default();
        w.value("tiles", self.tiles.len());
        for (i, t) in self.tiles.iter().enumerate() {
            t.engine.write_state(&mut w, &format!("tile{i}."))?;
        }
        // Frames read whose blended output is still to come keep their LQ reference.
        for (i, f) in &self.lq {
            w.host(
                &format!("full_lq.{i}"),
                &[3, self.height, self.width],
                f.canvas(),
            );
        }
        for (i, (acc, count)) in &self.pending {
            w.host(&format!("pending.{i}"), &[3, self.height, self.width], acc);
            w.value(&format!("pending_count.{i}"), count);
        }
        Ok(w)
    }

    fn restore_checkpoint(&mut self, path: &Path) -> Result<()> {
        let backend = match self.tiles.first() {
            Some(t) => t.engine.backend().clone(),
            None => return Ok(()),
        };
        let r = StateReader::open(path, &backend)?;
        let tiles: usize = r.value("tiles")?;
        if tiles != self.tiles.len() {
            return Err(ModelError::Settings(format!(
                "{}: checkpoint of {tiles} tiles, this run has {}",
                path.display(),
                self.tiles.len()
            )));
        }
        for (i, t) in self.tiles.iter_mut().enumerate() {
            t.engine.read_state(&r, &format!("tile{i}."))?;
        }
        self.lq.clear();
        self.pending.clear();
        let lq_names: Vec<String> = r
            .names_with_prefix("full_lq.")
            .map(str::to_string)
            .collect();
        for name in lq_names {
            let index: usize = name["full_lq.".len()..]
                .parse()
                .map_err(|_| ModelError::Settings(format!("bad entry {name}")))?;
            let frame = LqHost::new(LqInput::Canvas(r.host(&name)?.1), (self.height, self.width))?;
            self.lq.insert(index, Arc::new(frame));
        }
        let pending: Vec<String> = r
            .names_with_prefix("pending.")
            .map(str::to_string)
            .collect();
        for name in pending {
            let index: usize = name["pending.".len()..]
                .parse()
                .map_err(|_| ModelError::Settings(format!("bad entry {name}")))?;
            let count: usize = r.value(&format!("pending_count.{index}"))?;
            self.pending.insert(index, (r.host(&name)?.1, count));
        }
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        let mut total = EngineStats::default();
        for t in &self.tiles {
            total.accumulate(&t.engine.stats);
        }
        // The tiles run the same chunks side by side.
        total.chunks = self
            .tiles
            .iter()
            .map(|t| t.engine.stats.chunks)
            .max()
            .unwrap_or(0);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_canvas_with_the_requested_overlap() {
        assert_eq!(tile_starts(256, 512, 96), vec![0]);
        assert_eq!(tile_starts(640, 256, 96), vec![0, 160, 320, 384]);
        for (len, tile, overlap) in [(1408, 512, 96), (768, 384, 64), (1152, 640, 96)] {
            let s = tile_starts(len, tile, overlap);
            assert_eq!(s[0], 0);
            assert_eq!(s.last().unwrap() + tile, len);
            for w in s.windows(2) {
                assert!(w[1] > w[0] && w[0] + tile >= w[1] + overlap, "{s:?}");
            }
        }
    }

    #[test]
    fn ramps_are_positive_and_only_on_interior_edges() {
        let w = ramp(10, true, false, 3);
        assert_eq!(w, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert!(ramp(8, false, false, 3).iter().all(|&v| v == 1.0));
        assert!(ramp(8, true, true, 3).iter().all(|&v| v > 0.0));
    }
}

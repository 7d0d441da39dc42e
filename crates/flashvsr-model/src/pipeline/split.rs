//! One stream over several devices of a host (pipeline parallelism). The DiT's blocks are cut
//! into contiguous ranges, one per device; the first device also runs the LQ projector, the last
//! the head and the decoder. While device s runs its blocks for chunk c, device s + 1 runs its
//! blocks for chunk c − 1, and so on: chunks are independent once a block's KV cache has seen the
//! chunk before, and every block still sees the chunks in order.
//!
//! Every op runs as it would on one device, and the residual stream and KV caches move between
//! devices as stored values, so the output is the one-device stream's, bit for bit, wherever the
//! cuts are. The cuts move while the stream runs: after each step the slowest device gives a block
//! to its faster neighbour (its KV cache moves with it), so the split follows the real costs of
//! the decoder, the projector and the blocks on these devices at this size.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashvsr_tensor::{BackendRef, QueuePoint, Tensor};

use super::{
    chunk_frames, decode_chunk, lq_frames, lq_range, lq_tokens, Decoder, DecoderState, Engine,
    EngineStats, Models, OutputFrame,
};
use crate::dit::config::LATENT_CHANNELS;
use crate::dit::{LayerCache, TokenGrid};
use crate::geometry::{chunk_latents, chunk_output_frames};
use crate::lq_frame::{canvas_on, device_canvas, LqFrame, LqHost, LqInput};
use crate::state_io::{StateReader, StateWriter};
use crate::tcdecoder::SPACE_UPSCALE;
use crate::{ModelError, Result};

/// The models of one device of a split stream, loaded on that device.
pub struct StageDevice<'m> {
    pub models: &'m Models,
    pub backend: BackendRef,
}

/// A chunk on its way through the stages.
pub(super) struct Handoff {
    chunk: usize,
    /// The first block still to run on the chunk.
    next_block: usize,
    /// The residual stream `(tokens, D)` in window order, on the device of the stage that made
    /// it (the next stage copies it over, device to device where it can).
    x: Tensor,
    /// Where the stage that made `x` had queued it, when it did not wait for its device: the
    /// next stage waits for this point before it copies `x` (and the LQ frames) over.
    ready: Option<Box<dyn QueuePoint>>,
    /// The chunk's noise `(16, n, rows, cols)`: the last stage makes the latents from it.
    noise: Arc<Vec<f32>>,
    /// The LQ frames of the chunk's outputs: the tiny decoder's condition and the colour fix's
    /// references; with the first device's copies where it has them.
    lq: Vec<LqFrame>,
}

impl Handoff {
    fn latents(&self) -> (usize, usize) {
        chunk_latents(self.chunk)
    }
}

/// How long a stage worked in one step, and how much of it was its blocks.
#[derive(Clone, Copy, Debug)]
struct StageTime {
    total: Duration,
    blocks: Duration,
    block_count: usize,
}

/// What one stage did in one step.
struct StageOutcome {
    next: Option<Handoff>,
    frames: Vec<OutputFrame>,
    time: StageTime,
    stats: EngineStats,
}

/// Where the blocks are cut, and what moves the cuts.
pub(super) struct LayerSplit {
    /// Stage s runs blocks `bounds[s]..bounds[s + 1]`.
    bounds: Vec<usize>,
    /// Smoothed seconds per step of each stage, and per block.
    step: Vec<Option<f64>>,
    per_block: Option<f64>,
    /// Steps to wait before the next move (the first chunks are larger; a move needs new times).
    settle: usize,
    /// The last move, and the time difference (in blocks) a move needs: it doubles each time a
    /// move would undo the last one, so noisy times cannot make a block shuttle back and forth.
    last: Option<SplitMove>,
    threshold: f64,
    /// The cuts stay where they are: the stages share one device, whose time their work divides
    /// whatever the cuts.
    pinned: bool,
}

/// A cut moved by one block: `Later` gives the last block before cut `b` to stage `b`, `Earlier`
/// gives stage `b`'s first block to stage `b − 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMove {
    Later(usize),
    Earlier(usize),
}

/// Rough costs in blocks, for the first cut only (the cuts then follow measured times): the LQ
/// projector, and the head with each decoder, at 1408×768 on an H100.
const PROJECTOR_BLOCKS: f64 = 6.0;
const TINY_DECODER_BLOCKS: f64 = 24.0;
const VAE_DECODER_BLOCKS: f64 = 300.0;
/// A cut moves when the two stages beside it differ by more than this many blocks' time (moving
/// one block changes the difference by two).
const MOVE_THRESHOLD_BLOCKS: f64 = 1.25;
const SMOOTHING: f64 = 0.5;

impl LayerSplit {
    pub(super) fn initial(models: &Models, stages: usize) -> LayerSplit {
        let layers = models.dit.layers();
        let back = match models.decoder {
            Decoder::Tiny(_) => TINY_DECODER_BLOCKS,
            Decoder::Full { .. } => VAE_DECODER_BLOCKS,
        };
        let per_stage = (PROJECTOR_BLOCKS + layers as f64 + back) / stages as f64;
        let mut bounds = vec![0];
        for s in 1..stages {
            let cut = (s as f64 * per_stage - PROJECTOR_BLOCKS).round();
            let prev = bounds[s - 1];
            bounds.push((cut.max(0.0) as usize).clamp(prev, layers));
        }
        bounds.push(layers);
        LayerSplit {
            step: vec![None; stages],
            per_block: None,
            settle: 3,
            bounds,
            last: None,
            threshold: MOVE_THRESHOLD_BLOCKS,
            pinned: false,
        }
    }

    /// Every block on the first stage; the second runs the head and the decoder.
    pub(super) fn decoder_apart(models: &Models) -> LayerSplit {
        let layers = models.dit.layers();
        LayerSplit {
            pinned: true,
            bounds: vec![0, layers, layers],
            ..LayerSplit::initial(models, 2)
        }
    }

    fn stages(&self) -> usize {
        self.bounds.len() - 1
    }

    fn layers(&self) -> usize {
        self.bounds[self.stages()]
    }

    /// The stage that runs `block` (and whose device holds its KV cache); the last one for a
    /// chunk past every block.
    pub(super) fn stage_of(&self, block: usize) -> usize {
        (0..self.stages())
            .find(|&s| block < self.bounds[s + 1])
            .unwrap_or(self.stages() - 1)
    }

    fn range(&self, s: usize) -> Range<usize> {
        self.bounds[s]..self.bounds[s + 1]
    }

    /// Takes one step's times (a stage without work: None) and says which cut to move, if any.
    fn record(&mut self, times: &[Option<StageTime>]) -> Option<SplitMove> {
        if self.pinned || times.iter().any(Option::is_none) {
            return None;
        }
        let times: Vec<StageTime> = times.iter().flatten().copied().collect();
        let smooth = |old: Option<f64>, new: f64| match old {
            Some(o) => SMOOTHING * o + (1.0 - SMOOTHING) * new,
            None => new,
        };
        for (s, t) in times.iter().enumerate() {
            self.step[s] = Some(smooth(self.step[s], t.total.as_secs_f64()));
        }
        let (block_time, blocks) = times.iter().fold((0.0, 0), |(d, n), t| {
            (d + t.blocks.as_secs_f64(), n + t.block_count)
        });
        if blocks > 0 {
            self.per_block = Some(smooth(self.per_block, block_time / blocks as f64));
        }
        if self.settle > 0 {
            self.settle -= 1;
            return None;
        }
        let per_block = self.per_block?;
        let step: Vec<f64> = self.step.iter().map(|t| t.unwrap_or(0.0)).collect();
        let (b, diff) = (1..self.stages())
            .map(|b| (b, step[b - 1] - step[b]))
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))?;
        let proposal = if diff > 0.0 && !self.range(b - 1).is_empty() {
            SplitMove::Later(b)
        } else if diff < 0.0 && !self.range(b).is_empty() {
            SplitMove::Earlier(b)
        } else {
            return None;
        };
        let undoes_last = matches!(
            (self.last, proposal),
            (Some(SplitMove::Later(x)), SplitMove::Earlier(y))
                | (Some(SplitMove::Earlier(x)), SplitMove::Later(y)) if x == y
        );
        let threshold = if undoes_last {
            2.0 * self.threshold
        } else {
            self.threshold
        };
        if diff.abs() <= threshold * per_block {
            return None;
        }
        self.threshold = threshold;
        Some(proposal)
    }

    fn apply(&mut self, m: SplitMove) {
        let b = match m {
            SplitMove::Later(b) => {
                self.bounds[b] -= 1;
                b
            }
            SplitMove::Earlier(b) => {
                self.bounds[b] += 1;
                b
            }
        };
        self.step[b - 1] = None;
        self.step[b] = None;
        self.settle = 2;
        self.last = Some(m);
    }
}

/// Each stage's KV caches, as disjoint mutable slices.
fn caches_by_stage<'a>(
    mut caches: &'a mut [LayerCache],
    bounds: &[usize],
) -> Vec<&'a mut [LayerCache]> {
    let mut out = Vec::with_capacity(bounds.len() - 1);
    for w in bounds.windows(2) {
        let (these, rest) = caches.split_at_mut(w[1] - w[0]);
        out.push(these);
        caches = rest;
    }
    out
}

/// What every stage reads: the settings and the canvas.
struct Shared<'a> {
    settings: &'a super::EngineSettings,
    canvas: (usize, usize),
    layers: usize,
    /// Chunks go to the next stage at points in the queue, not after a wait for the device.
    queue_points: bool,
}

impl Shared<'_> {
    fn grid(&self, lat_n: usize) -> TokenGrid {
        let (rows, cols) = (self.canvas.0 / SPACE_UPSCALE, self.canvas.1 / SPACE_UPSCALE);
        TokenGrid {
            frames: lat_n,
            h: rows / 2,
            w: cols / 2,
        }
    }

    /// Runs `h`'s blocks on `stage` up to `end` (the stage's last block + 1) and, on the last
    /// stage, the head and the decoder. `caches` are the stage's blocks' caches from `first`.
    fn run(
        &self,
        stage: &StageDevice,
        h: Handoff,
        end: usize,
        caches: &mut [LayerCache],
        decoder: Option<&mut DecoderState>,
    ) -> Result<StageOutcome> {
        let started = Instant::now();
        let (lat0, lat_n) = h.latents();
        let grid = self.grid(lat_n);
        let dit = &stage.models.dit;
        if let Some(point) = &h.ready {
            point.wait()?;
        }
        let x = h.x.to_backend(&stage.backend)?;
        let injected = match &self.settings.injected_masks {
            Some(all) => Some(all.get(h.chunk).map(Vec::as_slice).ok_or_else(|| {
                ModelError::Settings(format!("no injected masks for chunk {}", h.chunk))
            })?),
            None => None,
        };
        let first = h.next_block;
        let (x, masks) = dit.run_blocks(
            x,
            grid,
            lat0,
            first..end,
            caches,
            &self.settings.sparse,
            injected,
        )?;
        let mut stats = EngineStats::default();
        if self.settings.profile {
            stats.add_masks(&masks)?;
        }
        let block_count = end - first;
        let Some(decoder) = decoder.filter(|_| end == self.layers) else {
            // Stages of one device: the next stage waits for this one's queue to reach the
            // chunk, while this thread goes on to queue the next chunk behind it.
            let ready = match self.queue_points {
                true => stage.backend.queue_point()?,
                false => None,
            };
            if ready.is_none() {
                stage.backend.synchronize()?;
            }
            let total = started.elapsed();
            return Ok(StageOutcome {
                next: Some(Handoff {
                    next_block: end,
                    x,
                    ready,
                    ..h
                }),
                frames: Vec::new(),
                time: StageTime {
                    total,
                    blocks: total,
                    block_count,
                },
                stats,
            });
        };
        stage.backend.synchronize()?;
        let blocks = started.elapsed();
        let velocity = dit.head(&x, grid)?;
        let (rows, cols) = (grid.h * 2, grid.w * 2);
        let noise = Tensor::from_slice_queued(
            &stage.backend,
            &h.noise,
            &[LATENT_CHANNELS, lat_n, rows, cols],
        )?;
        let latents = noise.sub(&velocity)?;
        let (out0, out_n) = chunk_output_frames(h.chunk);
        let lq: Vec<&LqFrame> = h.lq.iter().collect();
        let cond = match stage.models.decoder {
            Decoder::Tiny(_) => Some(canvas_on(&stage.backend, &lq, self.canvas)?),
            Decoder::Full { .. } => None,
        };
        let decoded = decode_chunk(stage.models, decoder, &latents, cond.as_ref())?;
        if decoded.frames() != out_n {
            return Err(ModelError::Settings(format!(
                "decoder produced {} frames, expected {out_n}",
                decoded.frames()
            )));
        }
        // The tiny decoder's condition is the chunk's LQ frames on this device already.
        let device_references = || match cond {
            Some(cond) => Ok(Some(cond)),
            None => device_canvas(&stage.backend, &lq, self.canvas),
        };
        let frames = chunk_frames(
            out0,
            decoded,
            lq.iter().map(|f| f.host.clone()).collect(),
            device_references,
            self.canvas,
            self.settings.color_fix,
        )?;
        stats.chunks = 1;
        Ok(StageOutcome {
            next: None,
            frames,
            time: StageTime {
                total: started.elapsed(),
                blocks,
                block_count,
            },
            stats,
        })
    }
}

impl Engine<'_> {
    /// One step of a split stream: each stage runs the oldest chunk waiting for it, on its own
    /// thread; the first stage starts chunk `next_chunk` when `start` and it has nothing older.
    /// Returns the frames of the chunk that left the last stage.
    pub(super) fn tick(&mut self, start: bool) -> Result<Vec<OutputFrame>> {
        let n = self.stages.len();
        let mut work: Vec<Option<Handoff>> = (0..n).map(|_| None).collect();
        let mut waiting = VecDeque::new();
        for h in self.pending.drain(..) {
            let s = self.split.stage_of(h.next_block);
            if work[s].is_none() {
                work[s] = Some(h);
            } else {
                waiting.push_back(h);
            }
        }
        let new_chunk = (start && work[0].is_none()).then_some(self.next_chunk);
        if let Some(chunk) = new_chunk {
            work[0] = Some(self.front(chunk)?);
        }
        let shared = Shared {
            settings: &self.settings,
            canvas: (self.height, self.width),
            layers: self.split.layers(),
            queue_points: self.split.pinned,
        };
        let bounds = self.split.bounds.clone();
        let mut caches = caches_by_stage(&mut self.state.dit.layers, &bounds);
        let mut decoder = Some(&mut self.state.decoder);
        let stages = &self.stages;
        let outcomes: Vec<Option<Result<StageOutcome>>> = std::thread::scope(|scope| {
            let mut jobs: Vec<_> = work
                .into_iter()
                .zip(caches.iter_mut())
                .enumerate()
                .map(|(s, (job, caches))| {
                    let decoder = if s == n - 1 { decoder.take() } else { None };
                    let h = job?;
                    let caches = &mut caches[h.next_block - bounds[s]..];
                    let (shared, stage, end) = (&shared, &stages[s], bounds[s + 1]);
                    Some(move || shared.run(stage, h, end, caches, decoder))
                })
                .collect();
            let first = jobs.remove(0);
            let others: Vec<_> = jobs
                .into_iter()
                .map(|job| job.map(|run| scope.spawn(run)))
                .collect();
            // The first stage's work stays on this thread (its device is bound here already);
            // the others run beside it.
            let mut outcomes = vec![first.map(|run| run())];
            outcomes.extend(others.into_iter().map(|handle| {
                handle.map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ModelError::Settings("a device stage panicked".into()))
                    })
                })
            }));
            outcomes
        });
        let mut frames = Vec::new();
        let mut times = Vec::with_capacity(n);
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                None => times.push(None),
                Some(Err(e)) => {
                    failure.get_or_insert(e);
                    times.push(None);
                }
                Some(Ok(o)) => {
                    times.push(Some(o.time));
                    frames.extend(o.frames);
                    self.stats.accumulate(&o.stats);
                    if let Some(next) = o.next {
                        waiting.push_back(next);
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        waiting.make_contiguous().sort_by_key(|h| h.chunk);
        self.pending = waiting;
        if new_chunk.is_some() {
            self.next_chunk += 1;
            let keep_from = chunk_output_frames(self.next_chunk).0;
            self.frames.retain(|&i, _| i >= keep_from);
        }
        if let Some(m) = self.split.record(&times) {
            self.move_split(m)?;
            if std::env::var_os("FLASHVSR_TRACE_SPLIT").is_some() {
                eprintln!(
                    "flashvsr: split: {m:?} after chunk {} (stage seconds {:?}), cuts now {:?}",
                    self.next_chunk,
                    times
                        .iter()
                        .flatten()
                        .map(|t| t.total.as_secs_f64())
                        .collect::<Vec<_>>(),
                    self.split.bounds
                );
            }
        }
        Ok(frames)
    }

    /// The first stage's part of chunk `chunk` before its blocks: LQ tokens, noise, embedding.
    fn front(&mut self, chunk: usize) -> Result<Handoff> {
        let (rows, cols) = (self.height / SPACE_UPSCALE, self.width / SPACE_UPSCALE);
        let (lat0, lat_n) = chunk_latents(chunk);
        let canvas = (self.height, self.width);
        let backend = &self.backend;
        let frames = &self.frames;
        let lq = |first: usize, count: usize| lq_frames(backend, frames, first, count, canvas);
        let tokens = lq_tokens(&self.models.projector, &mut self.state.projector, lq, chunk)?;
        let noise = self.settings.noise.frames(lat0, lat_n, rows, cols)?;
        let noise_t = Tensor::from_slice_queued(
            &self.backend,
            &noise,
            &[LATENT_CHANNELS, lat_n, rows, cols],
        )?;
        let (x, _) = self.models.dit.embed(&noise_t, &tokens)?;
        let (out0, out_n) = chunk_output_frames(chunk);
        let lq = lq_range(&self.frames, out0, out_n)?;
        Ok(Handoff {
            chunk,
            next_block: 0,
            x,
            ready: None,
            noise: Arc::new(noise),
            lq: lq.into_iter().cloned().collect(),
        })
    }

    /// Moves one cut: the block changing hands takes its KV cache to its new device.
    pub fn move_split(&mut self, m: SplitMove) -> Result<()> {
        let (block, to) = match m {
            SplitMove::Later(b) if b > 0 && b < self.stages.len() => {
                (self.split.bounds[b].checked_sub(1), b)
            }
            SplitMove::Earlier(b) if b > 0 && b < self.stages.len() => {
                (Some(self.split.bounds[b]), b - 1)
            }
            _ => (None, 0),
        };
        let valid = block.is_some_and(|l| {
            l < self.split.layers() && self.split.stage_of(l) != to && {
                let owner = self.split.stage_of(l);
                owner.abs_diff(to) == 1
            }
        });
        let Some(l) = block.filter(|_| valid) else {
            return Err(ModelError::Settings(format!(
                "no block to move for {m:?} with cuts {:?}",
                self.split.bounds
            )));
        };
        let backend = self.stages[to].backend.clone();
        let cache = &mut self.state.dit.layers[l];
        for (k, v) in &mut cache.groups {
            *k = Tensor::from_host_data(&backend, &k.to_host_data()?, k.shape())?;
            *v = Tensor::from_host_data(&backend, &v.to_host_data()?, v.shape())?;
        }
        self.split.apply(m);
        Ok(())
    }

    /// The current cuts: stage s runs blocks `cuts[s]..cuts[s + 1]`.
    pub fn split_cuts(&self) -> &[usize] {
        &self.split.bounds
    }
}

/// Writes the chunks between stages (their stream is in host memory between steps).
pub(super) fn write_pending(
    pending: &VecDeque<Handoff>,
    w: &mut StateWriter,
    p: &str,
    canvas: (usize, usize),
) -> Result<()> {
    w.value(&format!("{p}pending"), pending.len());
    let (rows, cols) = (canvas.0 / SPACE_UPSCALE, canvas.1 / SPACE_UPSCALE);
    for (i, h) in pending.iter().enumerate() {
        let q = format!("{p}pending.{i}.");
        w.value(&format!("{q}chunk"), h.chunk);
        w.value(&format!("{q}next_block"), h.next_block);
        w.tensor(&format!("{q}x"), &h.x)?;
        let (_, lat_n) = h.latents();
        w.host(
            &format!("{q}noise"),
            &[LATENT_CHANNELS, lat_n, rows, cols],
            &h.noise,
        );
        for (j, f) in h.lq.iter().enumerate() {
            w.host(
                &format!("{q}lq.{j}"),
                &[3, canvas.0, canvas.1],
                f.host.canvas(),
            );
        }
    }
    Ok(())
}

/// Reads what [`write_pending`] wrote (none in checkpoints of one-device streams).
pub(super) fn read_pending(
    r: &StateReader,
    p: &str,
    canvas: (usize, usize),
) -> Result<VecDeque<Handoff>> {
    let count: usize = r.value(&format!("{p}pending")).unwrap_or(0);
    (0..count)
        .map(|i| {
            let q = format!("{p}pending.{i}.");
            let chunk: usize = r.value(&format!("{q}chunk"))?;
            let (_, out_n) = chunk_output_frames(chunk);
            let lq = (0..out_n)
                .map(|j| {
                    let frame = LqInput::Canvas(r.host(&format!("{q}lq.{j}"))?.1);
                    LqFrame::new(LqHost::new(frame, canvas)?, None, canvas)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Handoff {
                chunk,
                next_block: r.value(&format!("{q}next_block"))?,
                x: r.tensor(&format!("{q}x"))?,
                ready: None,
                noise: Arc::new(r.host(&format!("{q}noise"))?.1),
                lq,
            })
        })
        .collect()
}

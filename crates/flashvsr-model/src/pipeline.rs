//! The streaming engine: prepared LQ frames in, finished frames out, one DiT chunk at a time.
//! Memory is bounded by one chunk's frames; video length never matters (ARCHITECTURE.md).

use std::collections::{BTreeMap, VecDeque};

use flashvsr_tensor::{BackendRef, BlockMask, Tensor};

use crate::color_fix::ColorFix;
use crate::dit::config::LATENT_CHANNELS;
use crate::dit::mask::SparseSettings;
use crate::dit::{Dit, DitState};
use crate::geometry::{self, chunk_latents, chunk_output_frames, frames_needed};
use crate::lq_frame::{canvas_on, device_canvas, LqFrame, LqHost, LqInput};
use crate::lq_proj::{LqProjector, ProjectorState};
use crate::noise::NoiseSource;
pub use crate::output_frame::{FinishedFrame, OutputFrame};
use crate::state_io::{StateReader, StateWriter};
use crate::tcdecoder::{DecoderMemory, TcDecoder, SPACE_UPSCALE};
use crate::vae::{VaeState, WanVaeDecoder};
use crate::vae_tiling::{TiledVaeState, VaeTiling};
use crate::{ModelError, Result};

mod chunk_frames;
mod split;
use chunk_frames::{chunk_frames, DecodedFrames};
use split::{Handoff, LayerSplit};
pub use split::{SplitMove, StageDevice};

pub enum Decoder {
    Tiny(TcDecoder),
    Full {
        vae: Box<WanVaeDecoder>,
        tiling: Option<VaeTiling>,
    },
}

pub struct Models {
    pub dit: Dit,
    pub projector: LqProjector,
    pub decoder: Decoder,
}

pub struct EngineSettings {
    pub sparse: SparseSettings,
    pub color_fix: ColorFix,
    pub noise: NoiseSource,
    /// Per chunk, per layer: masks to use instead of computing them (parity testing).
    pub injected_masks: Option<Vec<Vec<BlockMask>>>,
    /// Synchronise the device between stages and record their times (benchmarks).
    pub profile: bool,
}

/// Where the time went and what the sparse masks selected.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub chunks: usize,
    pub projector: std::time::Duration,
    pub dit: std::time::Duration,
    pub decode: std::time::Duration,
    /// Selected (head, query block, key block) triples over all layers and chunks, and all of them.
    pub selected_blocks: u64,
    pub total_blocks: u64,
    /// (head, query block) rows with no key block selected, and all rows.
    pub empty_rows: u64,
    pub rows: u64,
    /// Peak bytes of the backend's tensors during the LQ projector, the DiT and the decoder
    /// (the largest over the chunks; profiling only).
    pub peak_tensor_bytes: [u64; 3],
}

impl EngineStats {
    /// Adds another stream's times and mask counts (tiles of one canvas, videos of a batch); chunk
    /// counts add too, peaks take the larger.
    pub fn accumulate(&mut self, other: &EngineStats) {
        self.chunks += other.chunks;
        self.projector += other.projector;
        self.dit += other.dit;
        self.decode += other.decode;
        self.selected_blocks += other.selected_blocks;
        self.total_blocks += other.total_blocks;
        self.empty_rows += other.empty_rows;
        self.rows += other.rows;
        for (p, o) in self
            .peak_tensor_bytes
            .iter_mut()
            .zip(other.peak_tensor_bytes)
        {
            *p = (*p).max(o);
        }
    }

    /// Adds the masks `(heads, query blocks, key blocks)` of one chunk. Each mask is reduced to
    /// its row means on the device, so only one value per (head, query block) comes back.
    fn add_masks(&mut self, masks: &[Tensor]) -> Result<()> {
        let means = masks
            .iter()
            .map(|m| {
                let rows = m.dim(0) * m.dim(1);
                Ok(m.reshape(&[rows, m.dim(2), 1])?.group_mean()?)
            })
            .collect::<Result<Vec<_>>>()?;
        if means.is_empty() {
            return Ok(());
        }
        let refs: Vec<&Tensor> = means.iter().collect();
        let values = Tensor::cat(&refs, 0)?.to_vec()?;
        let mut rest = values.as_slice();
        for m in masks {
            let (rows, key_blocks) = (m.dim(0) * m.dim(1), m.dim(2));
            let (these, after) = rest.split_at(rows);
            rest = after;
            self.rows += rows as u64;
            self.total_blocks += (rows * key_blocks) as u64;
            for &mean in these {
                // A mean of 0/1 values times the count is the (integer) count; key_blocks == 0
                // gives NaN means and empty rows.
                let count = (mean * key_blocks as f32).round();
                if count > 0.0 {
                    self.selected_blocks += count as u64;
                } else {
                    self.empty_rows += 1;
                }
            }
        }
        Ok(())
    }
}

enum DecoderState {
    Tiny(DecoderMemory),
    Vae(VaeState),
    TiledVae(TiledVaeState),
}

/// A decoder state before the first chunk.
fn decoder_state(models: &Models, height: usize, width: usize) -> DecoderState {
    let (rows, cols) = (height / SPACE_UPSCALE, width / SPACE_UPSCALE);
    match &models.decoder {
        Decoder::Tiny(tc) => DecoderState::Tiny(tc.new_memory()),
        Decoder::Full {
            vae,
            tiling: Some(t),
        } => DecoderState::TiledVae(TiledVaeState::new(vae, *t, rows, cols)),
        Decoder::Full { vae, tiling: None } => DecoderState::Vae(vae.new_state()),
    }
}

/// What carries from one chunk to the next: the stream checkpoint.
struct StreamState {
    projector: ProjectorState,
    dit: DitState,
    decoder: DecoderState,
}

pub struct Engine<'m> {
    /// The first stage's models and device (the only ones unless the stream is split).
    models: &'m Models,
    settings: EngineSettings,
    backend: BackendRef,
    /// Every device of the stream, first to last; one unless the DiT's blocks are split over
    /// several devices ([`Engine::split_across`]).
    stages: Vec<StageDevice<'m>>,
    split: LayerSplit,
    /// Chunks between stages, oldest first.
    pending: VecDeque<Handoff>,
    height: usize,
    width: usize,
    frames: BTreeMap<usize, LqFrame>,
    received: usize,
    next_chunk: usize,
    state: StreamState,
    /// With parking on, the stream state lives in host memory between chunks.
    parking: bool,
    parked: Option<StateWriter>,
    pub stats: EngineStats,
}

impl<'m> Engine<'m> {
    /// `height`, `width`: the model canvas (multiples of 128).
    pub fn new(
        models: &'m Models,
        settings: EngineSettings,
        backend: &BackendRef,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        let stages = vec![StageDevice {
            models,
            backend: backend.clone(),
        }];
        Engine::with_stages(stages, settings, height, width)
    }

    /// A stream whose DiT blocks are split over `stages` (devices of one host, first to last):
    /// the first also runs the LQ projector, the last the head and the decoder, and chunk c runs
    /// on one device while chunk c − 1 runs on the next. Each device's models must be the same
    /// weights; the output is the one-device stream's, bit for bit.
    pub fn split_across(
        stages: Vec<StageDevice<'m>>,
        settings: EngineSettings,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        if stages.is_empty() {
            return Err(ModelError::Settings("a split stream needs a device".into()));
        }
        let layers = stages[0].models.dit.layers();
        if stages.iter().any(|s| s.models.dit.layers() != layers) {
            return Err(ModelError::Settings(
                "the devices of a split stream hold different DiT models".into(),
            ));
        }
        Engine::with_stages(stages, settings, height, width)
    }

    /// A one-device stream whose DiT head and decoder run on `decoder_backend`, a second stream
    /// of the same device that reads the models' weights where they are (the CUDA backend's
    /// `sibling`): chunk c is decoded while chunk c + 1 runs through the DiT, so the decoder's
    /// kernels fill what the DiT's leave idle. A split stream with every block on the first
    /// stage; its frames are the one-stream engine's, bit for bit, one chunk later.
    pub fn with_decoder_stream(
        models: &'m Models,
        settings: EngineSettings,
        backend: &BackendRef,
        decoder_backend: &BackendRef,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        let stage = |backend: &BackendRef| StageDevice {
            models,
            backend: backend.clone(),
        };
        let stages = vec![stage(backend), stage(decoder_backend)];
        let mut engine = Engine::with_stages(stages, settings, height, width)?;
        engine.split = LayerSplit::decoder_apart(models);
        Ok(engine)
    }

    fn with_stages(
        stages: Vec<StageDevice<'m>>,
        settings: EngineSettings,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        if height == 0
            || width == 0
            || !height.is_multiple_of(geometry::SIZE_MULTIPLE)
            || !width.is_multiple_of(geometry::SIZE_MULTIPLE)
        {
            return Err(ModelError::Settings(format!(
                "model canvas {width}×{height} is not a multiple of 128"
            )));
        }
        let (models, backend) = (stages[0].models, stages[0].backend.clone());
        let last = stages[stages.len() - 1].models;
        let split = LayerSplit::initial(models, stages.len());
        Ok(Engine {
            state: StreamState {
                projector: ProjectorState::default(),
                dit: models.dit.new_state(),
                decoder: decoder_state(last, height, width),
            },
            models,
            settings,
            backend,
            stages,
            split,
            pending: VecDeque::new(),
            height,
            width,
            frames: BTreeMap::new(),
            received: 0,
            next_chunk: 0,
            parking: false,
            parked: None,
            stats: EngineStats::default(),
        })
    }

    /// Adds the next prepared LQ frame `(3, H, W)` in [-1, 1]; returns frames finished by it.
    pub fn push(&mut self, frame: Vec<f32>) -> Result<Vec<OutputFrame>> {
        self.push_lq(LqInput::Canvas(frame))
    }

    /// Adds the next LQ frame, prepared or as source levels; returns frames finished by it.
    pub fn push_lq(&mut self, frame: LqInput) -> Result<Vec<OutputFrame>> {
        let host = LqHost::new(frame, (self.height, self.width))?;
        let frame = LqFrame::new(host, self.lq_device(), (self.height, self.width))?;
        self.push_frame(frame)
    }

    fn push_frame(&mut self, frame: LqFrame) -> Result<Vec<OutputFrame>> {
        self.frames.insert(self.received, frame);
        self.received += 1;
        let mut out = Vec::new();
        while self.received >= frames_needed(self.next_chunk) {
            out.extend(self.run_chunk()?);
        }
        Ok(out)
    }

    /// Ends the stream after `real_frames` input frames: pads with copies of the last frame to F,
    /// runs the remaining chunks and returns the finished frames with index < `real_frames`.
    pub fn finish(&mut self, real_frames: usize) -> Result<Vec<OutputFrame>> {
        if real_frames == 0 || self.received < real_frames {
            return Err(ModelError::Settings("the engine received no frames".into()));
        }
        let padded = geometry::padded_frame_count(real_frames);
        let last = self.frames.get(&(real_frames - 1)).cloned();
        let mut out = Vec::new();
        while self.received < padded {
            let frame = last
                .clone()
                .ok_or_else(|| ModelError::Settings("last frame already released".into()))?;
            out.extend(self.push_frame(frame)?);
        }
        while !self.pending.is_empty() {
            out.extend(self.tick(false)?);
        }
        out.retain(|f| f.index < real_frames);
        Ok(out)
    }

    pub fn backend(&self) -> &BackendRef {
        &self.backend
    }

    /// Input frames consumed so far (a resumed stream continues reading from here).
    pub fn frames_received(&self) -> usize {
        self.received
    }

    /// Chunks completed so far.
    pub fn chunks_done(&self) -> usize {
        self.next_chunk
    }

    /// Writes the whole stream state (KV cache, projector and decoder memory, retained LQ frames,
    /// counters) so that a restored engine continues bit for bit.
    pub fn save_checkpoint(&self, path: &std::path::Path) -> Result<()> {
        self.checkpoint()?.write(path)
    }

    /// The checkpoint of [`Engine::save_checkpoint`], in host memory.
    pub fn checkpoint(&self) -> Result<StateWriter> {
        let mut w = StateWriter::default();
        self.write_state(&mut w, "")?;
        Ok(w)
    }

    /// Restores a state written by [`Engine::save_checkpoint`] into a fresh engine of the same
    /// models, settings and canvas.
    pub fn restore_checkpoint(&mut self, path: &std::path::Path) -> Result<()> {
        let r = StateReader::open(path, &self.backend)?;
        self.read_state(&r, "")
            .map_err(|e| ModelError::Settings(format!("{}: {e}", path.display())))
    }

    /// The stream state under name prefix `p` (several engines can share one checkpoint file).
    pub fn write_state(&self, w: &mut StateWriter, p: &str) -> Result<()> {
        w.value(&format!("{p}received"), self.received);
        w.value(&format!("{p}next_chunk"), self.next_chunk);
        w.value(
            &format!("{p}canvas"),
            format!("{}x{}", self.width, self.height),
        );
        // As prepared canvases (frames of levels resampled here), so checkpoints read the same
        // whichever way frames came in.
        for (i, f) in &self.frames {
            w.host(
                &format!("{p}lq.{i}"),
                &[3, self.height, self.width],
                f.host.canvas(),
            );
        }
        split::write_pending(&self.pending, w, p, (self.height, self.width))?;
        match &self.parked {
            Some(parked) => {
                w.extend_prefixed(parked, p);
                Ok(())
            }
            None => self.write_stream_tensors(w, p),
        }
    }

    /// The device-side stream state: projector cache, KV cache, decoder memory.
    fn write_stream_tensors(&self, w: &mut StateWriter, p: &str) -> Result<()> {
        self.state.projector.save(w, &format!("{p}proj"))?;
        for (l, layer) in self.state.dit.layers.iter().enumerate() {
            w.value(&format!("{p}dit.{l}.groups"), layer.groups.len());
            for (g, (k, v)) in layer.groups.iter().enumerate() {
                w.tensor(&format!("{p}dit.{l}.{g}.k"), k)?;
                w.tensor(&format!("{p}dit.{l}.{g}.v"), v)?;
            }
        }
        match &self.state.decoder {
            DecoderState::Tiny(m) => m.save(w, &format!("{p}tc")),
            DecoderState::Vae(v) => v.save(w, &format!("{p}vae")),
            DecoderState::TiledVae(t) => t.save(w, &format!("{p}tiled")),
        }
    }

    /// Keeps the stream state (KV cache, projector and decoder memory) in host memory between
    /// chunks: device memory then holds one chunk's work, for tiles that take turns on a small
    /// card. Costs a host round trip of the state per chunk.
    pub fn set_parking(&mut self, on: bool) -> Result<()> {
        if on && self.stages.len() > 1 {
            return Err(ModelError::Settings(
                "a stream split over several devices keeps its state on them".into(),
            ));
        }
        self.parking = on;
        if on {
            self.park()
        } else {
            self.unpark()
        }
    }

    fn park(&mut self) -> Result<()> {
        if self.parked.is_some() {
            return Ok(());
        }
        let mut w = StateWriter::default();
        self.write_stream_tensors(&mut w, "")?;
        for f in self.frames.values_mut() {
            f.device = None;
        }
        self.state = StreamState {
            projector: ProjectorState::default(),
            dit: self.models.dit.new_state(),
            decoder: decoder_state(self.models, self.height, self.width),
        };
        self.parked = Some(w);
        Ok(())
    }

    fn unpark(&mut self) -> Result<()> {
        if let Some(w) = self.parked.take() {
            let r = StateReader::in_memory(w, &self.backend, "parked stream state");
            self.read_stream_tensors(&r, "")?;
        }
        Ok(())
    }

    pub fn read_state(&mut self, r: &StateReader, p: &str) -> Result<()> {
        let canvas: String = r.value(&format!("{p}canvas"))?;
        if canvas != format!("{}x{}", self.width, self.height) {
            return Err(ModelError::Settings(format!(
                "checkpoint of a {canvas} canvas, this run is {}x{}",
                self.width, self.height
            )));
        }
        self.received = r.value(&format!("{p}received"))?;
        self.next_chunk = r.value(&format!("{p}next_chunk"))?;
        self.frames.clear();
        let prefix = format!("{p}lq.");
        let names: Vec<String> = r.names_with_prefix(&prefix).map(str::to_string).collect();
        for name in names {
            let index: usize = name[prefix.len()..]
                .parse()
                .map_err(|_| ModelError::Settings(format!("bad checkpoint entry {name}")))?;
            let (_, host) = r.host(&name)?;
            let host = LqHost::new(LqInput::Canvas(host), (self.height, self.width))?;
            let frame = LqFrame::new(host, self.lq_device(), (self.height, self.width))?;
            self.frames.insert(index, frame);
        }
        self.parked = None;
        self.pending = split::read_pending(r, p, (self.height, self.width))?;
        // The restored chunks' streams are copied to other devices as they are: complete first.
        self.backend.synchronize()?;
        self.read_stream_tensors(r, p)?;
        if self.parking {
            self.park()?;
        }
        Ok(())
    }

    fn read_stream_tensors(&mut self, r: &StateReader, p: &str) -> Result<()> {
        self.state.projector = ProjectorState::load(r, &format!("{p}proj"))?;
        let readers: Vec<StateReader> = self
            .stages
            .iter()
            .map(|s| r.on_backend(&s.backend))
            .collect();
        for (l, layer) in self.state.dit.layers.iter_mut().enumerate() {
            let r = &readers[self.split.stage_of(l)];
            let groups: usize = r.value(&format!("{p}dit.{l}.groups"))?;
            layer.groups = (0..groups)
                .map(|g| {
                    // Stored as the engine keeps them (compact storage, exactly representable).
                    Ok((
                        r.tensor(&format!("{p}dit.{l}.{g}.k"))?.compact()?,
                        r.tensor(&format!("{p}dit.{l}.{g}.v"))?.compact()?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
        }
        let r = &readers[readers.len() - 1];
        match &mut self.state.decoder {
            DecoderState::Tiny(m) => m.load(r, &format!("{p}tc")),
            DecoderState::Vae(v) => v.load(r, &format!("{p}vae")),
            DecoderState::TiledVae(t) => t.load(r, &format!("{p}tiled")),
        }
    }

    /// Where LQ frames keep a device copy between chunks: none while parking.
    fn lq_device(&self) -> Option<&BackendRef> {
        (!self.parking).then_some(&self.backend)
    }

    fn frame_range(&self, first: usize, count: usize) -> Result<Tensor> {
        lq_frames(
            &self.backend,
            &self.frames,
            first,
            count,
            (self.height, self.width),
        )
    }

    fn lq_tokens(&mut self, chunk: usize) -> Result<Tensor> {
        let canvas = (self.height, self.width);
        let lq = |first: usize, count: usize| {
            lq_frames(&self.backend, &self.frames, first, count, canvas)
        };
        lq_tokens(&self.models.projector, &mut self.state.projector, lq, chunk)
    }

    fn run_chunk(&mut self) -> Result<Vec<OutputFrame>> {
        if self.stages.len() > 1 || !self.pending.is_empty() {
            return self.tick(true);
        }
        self.unpark()?;
        let out = self.compute_chunk()?;
        if self.parking {
            self.park()?;
        }
        Ok(out)
    }

    fn compute_chunk(&mut self) -> Result<Vec<OutputFrame>> {
        let chunk = self.next_chunk;
        let (rows, cols) = (self.height / SPACE_UPSCALE, self.width / SPACE_UPSCALE);
        let (lat0, lat_n) = chunk_latents(chunk);
        let t0 = self.mark(None)?;
        let lq = self.lq_tokens(chunk)?;
        let t1 = self.mark(Some(0))?;
        let noise = flashvsr_tensor::host_stalls::timed("noise", || {
            self.settings.noise.frames(lat0, lat_n, rows, cols)
        })?;
        let noise = Tensor::from_slice_queued(
            &self.backend,
            &noise,
            &[LATENT_CHANNELS, lat_n, rows, cols],
        )?;
        let injected = match &self.settings.injected_masks {
            Some(all) => Some(all.get(chunk).ok_or_else(|| {
                ModelError::Settings(format!("no injected masks for chunk {chunk}"))
            })?),
            None => None,
        };
        let dit = self.models.dit.forward_chunk(
            &noise,
            &lq,
            lat0,
            &mut self.state.dit,
            &self.settings.sparse,
            injected.map(Vec::as_slice),
        )?;
        let latents = noise.sub(&dit.velocity)?;
        let t2 = self.mark(Some(1))?;

        let (out0, out_n) = chunk_output_frames(chunk);
        let (decoded, cond) = self.decode(&latents, out0, out_n)?;
        if decoded.frames() != out_n {
            return Err(ModelError::Settings(format!(
                "decoder produced {} frames, expected {out_n}",
                decoded.frames()
            )));
        }
        let frames = lq_range(&self.frames, out0, out_n)?;
        // The tiny decoder's condition is the chunk's LQ frames on the device already.
        let canvas = (self.height, self.width);
        let device_references = || match cond {
            Some(lq) => Ok(Some(lq)),
            None => device_canvas(&self.backend, &frames, canvas),
        };
        let out = chunk_frames(
            out0,
            decoded,
            frames.iter().map(|f| f.host.clone()).collect(),
            device_references,
            (self.height, self.width),
            self.settings.color_fix,
        )?;
        // After the colour fix: a fix on the device is decoder-stage work.
        let t3 = self.mark(Some(2))?;
        if self.settings.profile {
            self.stats.projector += t1 - t0;
            self.stats.dit += t2 - t1;
            self.stats.decode += t3 - t2;
            self.stats.add_masks(&dit.masks)?;
        }
        self.stats.chunks += 1;
        self.next_chunk += 1;
        // The next chunk reads conditioning frames from 8c + 21 on.
        let keep_from = chunk_output_frames(self.next_chunk).0;
        self.frames.retain(|&i, _| i >= keep_from);
        Ok(out)
    }

    /// A time stamp after the device finished queued work (only when profiling), recording the
    /// tensor-memory peak of the stage that just ended, if any.
    fn mark(&mut self, stage_ended: Option<usize>) -> Result<std::time::Instant> {
        if self.settings.profile {
            self.backend.synchronize()?;
            if let Some(meter) = self.backend.tensor_memory() {
                if let Some(stage) = stage_ended {
                    let peak = &mut self.stats.peak_tensor_bytes[stage];
                    *peak = (*peak).max(meter.peak());
                }
                meter.reset_peak();
            }
        }
        Ok(std::time::Instant::now())
    }

    /// The chunk's decoded frames `(3, n, H, W)`, and the tiny decoder's condition: the LQ frames
    /// `out0..out0 + out_n` on the device.
    fn decode(
        &mut self,
        latents: &Tensor,
        out0: usize,
        out_n: usize,
    ) -> Result<(DecodedFrames, Option<Tensor>)> {
        let cond = match self.models.decoder {
            Decoder::Tiny(_) => Some(self.frame_range(out0, out_n)?),
            Decoder::Full { .. } => None,
        };
        let decoded = decode_chunk(self.models, &mut self.state.decoder, latents, cond.as_ref())?;
        Ok((decoded, cond))
    }
}

/// LQ frames `first..first + count`; an error where one was released or never came.
fn lq_range(
    frames: &BTreeMap<usize, LqFrame>,
    first: usize,
    count: usize,
) -> Result<Vec<&LqFrame>> {
    (first..first + count)
        .map(|i| {
            frames
                .get(&i)
                .ok_or_else(|| ModelError::Settings(format!("LQ frame {i} is not available")))
        })
        .collect()
}

/// LQ frames `first..first + count` on the canvas as `(3, count, H, W)` on `backend`.
fn lq_frames(
    backend: &BackendRef,
    frames: &BTreeMap<usize, LqFrame>,
    first: usize,
    count: usize,
    canvas: (usize, usize),
) -> Result<Tensor> {
    canvas_on(backend, &lq_range(frames, first, count)?, canvas)
}

/// The projector tokens of chunk `chunk` (the first chunk warms the projector up on frame 0);
/// `lq(first, count)` gives LQ frames on the projector's device.
fn lq_tokens(
    projector: &LqProjector,
    state: &mut ProjectorState,
    lq: impl Fn(usize, usize) -> Result<Tensor>,
    chunk: usize,
) -> Result<Tensor> {
    let groups: Vec<usize> = if chunk == 0 {
        projector.warm_up(&lq(0, 1)?, state)?;
        (1..=6).map(|q| 4 * q - 3).collect()
    } else {
        vec![8 * chunk + 17, 8 * chunk + 21]
    };
    let mut tokens = Vec::with_capacity(groups.len());
    for first in groups {
        tokens.push(projector.step(&lq(first, 4)?, state)?);
    }
    let refs: Vec<&Tensor> = tokens.iter().collect();
    Ok(Tensor::cat(&refs, 0)?)
}

/// A chunk's decoded frames `(3, n, H, W)`; `cond`: the tiny decoder's LQ frames. Frames on the
/// device are only queued: the engine goes on with the next chunk meanwhile.
fn decode_chunk(
    models: &Models,
    state: &mut DecoderState,
    latents: &Tensor,
    cond: Option<&Tensor>,
) -> Result<DecodedFrames> {
    match (&models.decoder, state, cond) {
        (Decoder::Tiny(tc), DecoderState::Tiny(memory), Some(cond)) => Ok(DecodedFrames::Device(
            tc.decode_pieces(latents, cond, memory)?,
        )),
        (Decoder::Full { vae, .. }, DecoderState::Vae(state), _) => {
            let y = vae.decode(latents, state)?.clamp(-1.0, 1.0)?;
            Ok(DecodedFrames::Device(vec![y]))
        }
        (Decoder::Full { vae, .. }, DecoderState::TiledVae(state), _) => {
            let (pixels, frames) = state.decode(vae, latents)?;
            Ok(DecodedFrames::Host { pixels, frames })
        }
        _ => Err(ModelError::Settings(
            "decoder state does not match the decoder".into(),
        )),
    }
}

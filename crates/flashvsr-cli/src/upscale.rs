//! `flashvsr upscale`: source → prepare → streaming engine → colour-fixed frames → sink. A video
//! longer than one segment runs through the job store (`OUTPUT.flashvsr/`): segments are committed
//! with stream checkpoints, so a rerun of the same command resumes where the last one stopped.

use std::collections::VecDeque;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use flashvsr_media::prepare::{PrepareGeometry, Resampler};
use flashvsr_media::{
    create_sink, open_source, FrameSink, FrameSource, OutputFormat, SinkOptions, SourceKind,
    Timestamp, VideoOptions,
};
use flashvsr_model::color_fix::ColorFix;
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::geometry::SizePlan;
use flashvsr_model::lq_frame::LqInput;
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{Decoder, Engine, EngineSettings, Models, OutputFrame, StageDevice};
use flashvsr_model::random_weights::ModelSize;
use flashvsr_model::stream::FrameStream;
use flashvsr_model::tcdecoder::SPACE_UPSCALE;
use flashvsr_model::tiled::{tile_starts, TiledEngine};
use flashvsr_model::vae_tiling::VaeTiling;
use flashvsr_tensor::{BackendRef, Device};
use serde_json::json;

use crate::args::{
    Attention, BenchModelSize, ColorFixArg, Mode, OutputFormatArg, ResizeArg, TiledVae, UpscaleArgs,
};
use crate::batch;
use crate::decoder_stream::{decoder_backend, Exclusions};
use crate::device;
use crate::failure::{Failure, Outcome};
use crate::frames_out::{planes_to_frame, Depth};
use crate::interrupt;
use crate::job_run;
use crate::model_files;
use crate::pipelined::{FrameJob, ReadAhead, WriteBehind};
use crate::prepare_ahead::{Preparation, PreparedInput};
use crate::progress::{Progress, Reporter, Summary};
use crate::stage_clock::{job_timed, timed, StageClock};

/// Everything a run needs besides the engine: how frames are prepared and finished.
pub struct Stage {
    pub geometry: PrepareGeometry,
    pub resampler: Resampler,
    pub plan: SizePlan,
    pub depth: Depth,
    pub format: OutputFormat,
    pub sink_options: SinkOptions,
    /// Carry each input frame's timestamp to its output frame (VFR stays VFR); off with --fps.
    pub keep_timestamps: bool,
    /// Host-side time spent per stage (shared with the host pool's jobs).
    pub clock: Arc<StageClock>,
    /// Prepare and finish frames on the host workers, overlapping the engine: where the engine
    /// runs on a GPU, it leaves the CPU idle. A CPU engine already keeps every core busy, and
    /// work beside it only slows its parallel ops, so there frames are prepared on the engine's
    /// thread and finished before they are queued, as parallel loops of their own.
    pub overlap_host_work: bool,
}

/// Timestamps of input frames whose outputs are not written yet, oldest first.
#[derive(Default)]
pub struct PendingTimestamps(VecDeque<Option<Timestamp>>);

impl PendingTimestamps {
    pub fn push(&mut self, at: Option<Timestamp>) {
        self.0.push_back(at);
    }

    pub fn next(&mut self) -> Option<Timestamp> {
        self.0.pop_front().flatten()
    }
}

impl Stage {
    /// The input side: `source`'s frames prepared ahead on the host pool, at most `limit`.
    pub fn input<'s>(
        &self,
        source: &'s mut dyn FrameSource,
        limit: Option<usize>,
    ) -> PreparedInput<'s> {
        let how = Preparation {
            geometry: self.geometry,
            resampler: self.resampler,
            levels: crate::lq_levels::levels_allowed(),
            keep_timestamps: self.keep_timestamps,
            overlap: self.overlap_host_work,
            clock: self.clock.clone(),
        };
        PreparedInput::new(source, how, limit)
    }

    /// Pushes one LQ frame; returns the engine frames it completed.
    pub fn push(&self, engine: &mut dyn FrameStream, lq: LqInput) -> Outcome<Vec<OutputFrame>> {
        Ok(timed(&self.clock.model, || engine.push_lq(lq))?)
    }

    pub fn finish(
        &self,
        engine: &mut dyn FrameStream,
        received: usize,
    ) -> Outcome<Vec<OutputFrame>> {
        Ok(timed(&self.clock.model, || engine.finish(received))?)
    }

    /// Queues an engine frame on `sink`: its colour fix and conversion run on the host pool,
    /// the writer writes it in order. The time spent here (waiting for room) counts as write.
    pub fn write(
        &self,
        sink: &mut WriteBehind,
        frame: OutputFrame,
        at: Option<Timestamp>,
    ) -> Outcome<()> {
        let job = self.finishing(frame, self.depth);
        if self.overlap_host_work {
            Ok(timed(&self.clock.write, || {
                timed(&self.clock.handoff, || sink.write_job(job, at))
            })?)
        } else {
            let frame = job().map_err(Failure::failed)?;
            Ok(timed(&self.clock.write, || sink.write_owned(frame, at))?)
        }
    }

    /// The host work that turns an engine frame into an output frame of `depth`.
    pub fn finishing(&self, frame: OutputFrame, depth: Depth) -> FrameJob {
        let (model, output, clock) = (self.plan.model, self.plan.output, self.clock.clone());
        Box::new(move || {
            let finished =
                job_timed(&clock.color_fix, || frame.finish_planes()).map_err(|e| e.to_string())?;
            let planes = finished.planes().map_err(|e| e.to_string())?;
            Ok(job_timed(&clock.write, || {
                crate::host_pool::rows(|| planes_to_frame(planes, model, output, depth))
            }))
        })
    }
}

/// What stays loaded from one video of a batch to the next.
pub struct Context<'r> {
    pub reporter: &'r Reporter,
    backend: Option<BackendRef>,
    models: Option<Models>,
    /// Summed over the videos done.
    pub totals: Summary,
    /// Counts of a batch, for the end event.
    pub batch: Option<serde_json::Value>,
    /// The tile size (model pixels) of the last attempt, or the canvas' longer side untiled.
    last_tile: Option<usize>,
    /// The devices after the first of a stream split by layers, with their models.
    more_stages: Vec<(BackendRef, Models)>,
}

impl<'r> Context<'r> {
    pub fn new(reporter: &'r Reporter) -> Context<'r> {
        Context {
            reporter,
            backend: None,
            models: None,
            totals: Summary::default(),
            batch: None,
            last_tile: None,
            more_stages: Vec::new(),
        }
    }

    /// The loaded models (after [`Context::load_models`]).
    pub fn models_mut(&mut self) -> Option<&mut Models> {
        self.models.as_mut()
    }

    /// The device (chosen once).
    pub fn backend(&mut self, args: &UpscaleArgs) -> Outcome<BackendRef> {
        if self.backend.is_none() {
            let quiet = !self.reporter.human();
            self.backend = Some(device::select(
                &args.device,
                args.precision,
                quiet,
                args.max_vram,
            )?);
        }
        Ok(self.backend.clone().expect("set above"))
    }

    /// Fetches missing model files and loads the models (once).
    pub fn load_models(&mut self, args: &UpscaleArgs) -> Outcome<()> {
        if self.models.is_none() {
            let backend = self.backend(args)?;
            let quiet = !self.reporter.human();
            if args.random_weights.is_none() {
                model_files::ensure_files(&args.files, args.mode == Mode::Full, quiet)?;
            }
            self.models = Some(models_on(&backend, args)?);
        }
        Ok(())
    }
}

/// `flashvsr upscale`: one input, or a folder of videos; reports the outcome and gives the exit
/// status (0 done, 1 failed, 2 bad usage or input, 3 interrupted).
pub fn main(args: &UpscaleArgs) -> ExitCode {
    let reporter = match Reporter::new(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flashvsr: error: {e}");
            return e.exit_code();
        }
    };
    for note in crate::args::seed_alias_notes(&std::env::args_os().collect::<Vec<_>>()) {
        reporter.info(&note);
    }
    interrupt::install(reporter.notice());
    let mut ctx = Context::new(&reporter);
    let outcome = match batch::videos_in(&args.input) {
        Some(videos) => batch::run(args, &mut ctx, videos),
        None => run_one(args, &mut ctx).map(|_| ()),
    };
    let (status, code) = match &outcome {
        Ok(()) => ("done", 0),
        Err(Failure::Interrupted) => ("interrupted", 3),
        Err(e) => ("failed", e.code()),
    };
    if let Err(e) = &outcome {
        reporter.error(e, None);
    }
    let mut end = ctx.totals.json();
    end["event"] = json!("end");
    end["status"] = json!(status);
    end["code"] = json!(code);
    end["input"] = json!(args.input.display().to_string());
    end["output"] = json!(args.output.display().to_string());
    if let Some(b) = ctx.batch.take() {
        end["videos"] = b;
    }
    reporter.event(end);
    ExitCode::from(code)
}

impl Context<'_> {
    /// The models on the first device, and on each device after it of a stream split by layers
    /// (`more_devices`): loaded once, side by side.
    fn load_split_models(&mut self, args: &UpscaleArgs, more_devices: &[String]) -> Outcome<()> {
        if self.more_stages.len() == more_devices.len() {
            return self.load_models(args);
        }
        let quiet = !self.reporter.human();
        let (first, loaded) = std::thread::scope(|scope| {
            let loads: Vec<_> = more_devices
                .iter()
                .map(|name| {
                    scope.spawn(move || {
                        let backend = device::select(name, args.precision, quiet, None)?;
                        let models = models_on(&backend, args)?;
                        Ok((backend, models))
                    })
                })
                .collect();
            let first = self.load_models(args);
            let loaded: Vec<Outcome<(BackendRef, Models)>> = loads
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Failure::failed("loading the models panicked")))
                })
                .collect();
            (first, loaded)
        });
        first?;
        self.more_stages = loaded.into_iter().collect::<Outcome<Vec<_>>>()?;
        Ok(())
    }
}

/// The models for `args` on `backend`: from the model files, or random (`--random-weights`).
fn models_on(backend: &BackendRef, args: &UpscaleArgs) -> Outcome<Models> {
    let models = models_made_on(backend, args)?;
    release_load_temporaries(backend);
    Ok(models)
}

/// The temporaries of loading (f32 weights before their bf16 rounding, folded copies) are free
/// but still held by the device allocator: handing them back keeps them out of the peak.
pub(crate) fn release_load_temporaries(backend: &BackendRef) {
    if let Err(e) = backend.release_cached_memory() {
        eprintln!("flashvsr: could not release cached device memory ({e})");
    }
}

fn models_made_on(backend: &BackendRef, args: &UpscaleArgs) -> Outcome<Models> {
    if let Some(size) = args.random_weights {
        let size = match size {
            BenchModelSize::Release => ModelSize::RELEASE,
            BenchModelSize::Small => ModelSize::SMALL,
        };
        let version = model_files::projector_version(args.files.model_ver);
        let full = args.mode == Mode::Full;
        return model_files::random_models(backend, size, version, full);
    }
    load_models(backend, args)
}

/// Upscales one input to one output; returns its summary (also added to the context's totals).
/// Under `--max-vram`, running out of device memory starts the video again with smaller tiles.
pub fn run_one(args: &UpscaleArgs, ctx: &mut Context) -> Outcome<Summary> {
    let mut retry: Option<UpscaleArgs> = None;
    loop {
        let attempt = retry.as_ref().unwrap_or(args);
        match run_attempt(attempt, ctx) {
            Err(Failure::OutOfMemory(msg)) if args.max_vram.is_some() => {
                let overlap = args.tile_overlap * args.scale as usize;
                let Some(smaller) = ctx.last_tile.and_then(|t| {
                    crate::memory_budget::smaller_tile(t, overlap, args.scale as usize)
                }) else {
                    return Err(Failure::OutOfMemory(format!(
                        "{msg}; no smaller tile is left to try: raise --max-vram or lower \
                         --tile-overlap"
                    )));
                };
                ctx.reporter.info(&format!(
                    "out of device memory with tiles of {} model pixels; starting again with \
                     --tile-size {smaller}",
                    ctx.last_tile.unwrap_or(0)
                ));
                let mut next = attempt.clone();
                next.tile_size = smaller;
                next.restart = true;
                retry = Some(next);
            }
            outcome => return outcome,
        }
    }
}

fn run_attempt(args: &UpscaleArgs, ctx: &mut Context) -> Outcome<Summary> {
    interrupt::check()?;
    let to_stdout = args.output.as_os_str() == "-";
    if !to_stdout && !args.overwrite && std::fs::symlink_metadata(&args.output).is_ok() {
        return Err(Failure::bad(format!(
            "{}: output already exists (pass --overwrite to replace it)",
            args.output.display()
        )));
    }
    if !to_stdout {
        if let Some(summary) = crate::parallel::run_if_parallel(args, ctx)? {
            return Ok(summary);
        }
    }
    let split_devices = crate::parallel::layer_split_devices(args)?;
    // One stream on the first device of --devices (when --device was left at auto).
    let single;
    let args = match crate::parallel::single_device(args) {
        Some(device) => {
            single = {
                let mut a = args.clone();
                a.device = device;
                a
            };
            &single
        }
        None => args,
    };
    let backend = ctx.backend(args)?;
    // Decoding starts right away, on its own thread, while the models load.
    let opened = open_source(&args.input)?;
    let names = mirrored_names(args, opened.as_ref())?;
    let mut source: Box<dyn FrameSource> = Box::new(ReadAhead::new(opened));
    let load_start = Instant::now();
    match &split_devices {
        Some(devices) => ctx.load_split_models(args, &devices[1..])?,
        None => ctx.load_models(args)?,
    }
    let reporter = ctx.reporter;
    let info = source.info().clone();
    let plan = SizePlan::new(
        (info.width, info.height),
        args.scale as usize,
        args.crop_to_128,
    )?;
    let (width, height) = plan.model;

    let models = ctx.models.as_mut().expect("loaded above");
    set_vae_tiling(models, args, height, width);
    for (_, m) in &mut ctx.more_stages {
        set_vae_tiling(m, args, height, width);
    }
    let models = ctx.models.as_ref().expect("loaded above");
    // Profiling synchronises the device between stages: only for a summary, and on a GPU only
    // when asked.
    let profile = reporter.wants_summary() && (args.profile || backend.device() == Device::Cpu);
    ctx.last_tile = Some(
        crate::memory_budget::tile_layout(args, models, &backend, height, width)
            .map_or(height.max(width), |l| l.tile.min(height.max(width))),
    );
    let mut engine = match &split_devices {
        Some(devices) => {
            let mut stages = vec![StageDevice {
                models,
                backend: backend.clone(),
            }];
            stages.extend(ctx.more_stages.iter().map(|(b, m)| StageDevice {
                models: m,
                backend: b.clone(),
            }));
            // Only to refuse `--decoder-stream on`: a split stream keeps one stream a device.
            let excluded = Exclusions {
                split: true,
                ..Exclusions::of(args, profile)
            };
            decoder_backend(args.decoder_stream, &backend, (height, width), excluded)?;
            let mut settings = engine_settings(args, height, width, profile)?;
            settings.noise = noise_source(args, height, width)?;
            let engine = Engine::split_across(stages, settings, height, width)?;
            reporter.info(&format!(
                "one stream split over {}: DiT blocks cut at {:?} (the first device also runs \
                 the projector, the last the decoder; the cuts follow the measured times)",
                devices.join(", "),
                engine.split_cuts()
            ));
            Box::new(engine) as Box<dyn FrameStream>
        }
        None => make_engine(
            args, models, &backend, reporter, height, width, profile, None,
        )?,
    };
    let load = load_start.elapsed();

    let mut stage = make_stage(args, &info, plan);
    stage.sink_options.names = names;
    stage.overlap_host_work = crate::host_pool::overlap_for(backend.device());
    let limit = match (info.frame_count, args.max_frames) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    };
    reporter.event(json!({
        "event": "start",
        "input": args.input.display().to_string(),
        "output": args.output.display().to_string(),
        "total": limit,
        "width": plan.output.0,
        "height": plan.output.1,
    }));
    let mut progress = Progress::new(reporter, limit);
    let one_segment = limit.is_some_and(|n| n as u64 <= args.segment_frames);
    let written = if to_stdout || one_segment {
        stream_directly(
            args,
            &stage,
            engine.as_mut(),
            source.as_mut(),
            &mut progress,
        )
    } else {
        job_run::run(
            args,
            &stage,
            engine.as_mut(),
            source.as_mut(),
            &mut progress,
            &models_fingerprint(args),
        )
    };
    progress.end();
    let written = written?;
    let summary = Summary {
        frames: written,
        computed: progress.computed(),
        elapsed: progress.elapsed(),
        load,
        read: stage.clock.read.get(),
        prepare: stage.clock.prepare.get(),
        model: stage.clock.model.get(),
        write: stage.clock.write.get(),
        color_fix: stage.clock.color_fix.get(),
        engine: profile.then(|| engine.stats()),
    };
    reporter.info(&format!(
        "wrote {written} frames of {}×{} to {} {}",
        plan.output.0,
        plan.output.1,
        args.output.display(),
        summary.speed_text()
    ));
    reporter.info(&summary.stages_line());
    ctx.totals.add(&summary);
    Ok(summary)
}

/// The engine of one stream over a `height` × `width` model canvas (tiled with --tile-size).
#[allow(clippy::too_many_arguments)]
pub fn make_engine<'m>(
    args: &UpscaleArgs,
    models: &'m Models,
    backend: &BackendRef,
    reporter: &Reporter,
    height: usize,
    width: usize,
    profile: bool,
    noise_window: Option<(usize, usize)>,
) -> Outcome<Box<dyn FrameStream + 'm>> {
    let noise_source = |args: &UpscaleArgs, height: usize, width: usize| {
        Outcome::Ok(shifted_noise(
            noise_source(args, height, width)?,
            noise_window,
        ))
    };
    Ok(
        if let Some(layout) =
            crate::memory_budget::tile_layout(args, models, backend, height, width)
        {
            // Only to refuse `--decoder-stream on`: tiles keep one stream.
            let excluded = Exclusions {
                tiled: true,
                ..Exclusions::of(args, profile)
            };
            decoder_backend(args.decoder_stream, backend, (height, width), excluded)?;
            let (th, tw) = (layout.tile.min(height), layout.tile.min(width));
            let count = tile_starts(height, th, layout.overlap).len()
                * tile_starts(width, tw, layout.overlap).len();
            let mut settings = (0..count)
                .map(|_| {
                    let mut s = engine_settings(args, th, tw, profile)?;
                    s.noise = noise_source(args, height, width)?;
                    Ok(s)
                })
                .collect::<Outcome<Vec<_>>>()?
                .into_iter();
            let mut tiled = TiledEngine::new(
                models,
                |i| {
                    settings.next().ok_or_else(|| {
                        flashvsr_model::ModelError::Settings(format!("no settings for tile {i}"))
                    })
                },
                backend,
                height,
                width,
                layout,
                color_fix(args),
            )?;
            // Under a memory budget only the running tile's stream state stays on the device.
            let parked = args.max_vram.is_some() && tiled.tile_count() > 1;
            if parked {
                tiled.set_parking(true)?;
            }
            reporter.info(&format!(
                "tiled DiT: {} tiles of {tw}×{th} model pixels{}",
                tiled.tile_count(),
                if parked {
                    ", stream state parked in host memory between turns"
                } else {
                    ""
                }
            ));
            Box::new(tiled)
        } else {
            let mut settings = engine_settings(args, height, width, profile)?;
            settings.noise = noise_source(args, height, width)?;
            let excluded = Exclusions::of(args, profile);
            let decoder = decoder_backend(args.decoder_stream, backend, (height, width), excluded)?;
            match decoder {
                Some(decoder) => {
                    reporter.info("the decoder runs on a second stream of the GPU");
                    Box::new(Engine::with_decoder_stream(
                        models, settings, backend, &decoder, height, width,
                    )?)
                }
                None => Box::new(Engine::new(models, settings, backend, height, width)?),
            }
        },
    )
}

/// How frames of `info` are prepared and written for `args` (output format and depth).
/// `--keep-names`: output frames named after the input frames' file stems.
fn mirrored_names(args: &UpscaleArgs, source: &dyn FrameSource) -> Outcome<Option<Vec<String>>> {
    if !args.keep_names {
        return Ok(None);
    }
    let info = source.info();
    let count = info.frame_count.unwrap_or(0);
    let names: Option<Vec<String>> = (0..count).map(|i| source.frame_name(i)).collect();
    match names {
        Some(n) if !n.is_empty() => Ok(Some(n)),
        _ => Err(Failure::bad(format!(
            "{}: --keep-names needs an image-sequence input (file names to mirror)",
            args.input.display()
        ))),
    }
}

pub fn make_stage(args: &UpscaleArgs, info: &flashvsr_media::SourceInfo, plan: SizePlan) -> Stage {
    let format = match args.output_format {
        Some(OutputFormatArg::Png) => OutputFormat::Png,
        Some(OutputFormatArg::Png16) => OutputFormat::Png16,
        Some(OutputFormatArg::Y4m) => OutputFormat::Y4m,
        Some(OutputFormatArg::Tiff16) => OutputFormat::Tiff16,
        Some(OutputFormatArg::Exr) => OutputFormat::Exr,
        Some(OutputFormatArg::Dpx10) => OutputFormat::Dpx10,
        None => OutputFormat::from_path(&args.output),
    };
    let depth = match format {
        OutputFormat::Png => Depth::Eight,
        OutputFormat::Png16 | OutputFormat::Tiff16 | OutputFormat::Exr | OutputFormat::Dpx10 => {
            Depth::Sixteen
        }
        OutputFormat::Y4m | OutputFormat::Video if info.bit_depth > 8 => Depth::Sixteen,
        OutputFormat::Video if info.colour.as_ref().is_some_and(|c| c.is_hdr()) => Depth::Sixteen,
        OutputFormat::Y4m | OutputFormat::Video => Depth::Eight,
    };
    Stage {
        geometry: PrepareGeometry {
            scaled: plan.scaled,
            model: plan.model,
            crop_offset: plan.crop_offset,
        },
        resampler: match args.resize {
            ResizeArg::Pil => Resampler::Pil,
            ResizeArg::Torch => Resampler::Torch,
        },
        plan,
        depth,
        format,
        sink_options: SinkOptions {
            overwrite: args.overwrite,
            fps: args.fps.or(info.fps),
            pixel_aspect: info.pixel_aspect,
            dpx: info.dpx_color.unwrap_or_default(),
            video: VideoOptions {
                input: (info.kind == SourceKind::Video).then(|| args.input.clone()),
                no_audio: args.no_audio,
                no_subtitles: args.no_subtitles,
                codec: args.codec.clone(),
                crf: args.crf,
                preset: args.preset.clone(),
                pix_fmt: args.pix_fmt.clone(),
                encoder_options: args.encoder_options.clone(),
                colour: info.colour.clone(),
            },
            ..SinkOptions::default()
        },
        keep_timestamps: args.fps.is_none(),
        clock: Arc::new(StageClock::default()),
        overlap_host_work: true,
    }
}

fn stream_directly(
    args: &UpscaleArgs,
    stage: &Stage,
    engine: &mut dyn FrameStream,
    source: &mut dyn FrameSource,
    progress: &mut Progress,
) -> Outcome<usize> {
    let mut sink = WriteBehind::new(create_sink(
        &args.output,
        stage.format,
        &stage.sink_options,
    )?);
    let mut input = stage.input(source, args.max_frames);
    let mut pts = PendingTimestamps::default();
    let mut write =
        |frames: Vec<OutputFrame>, sink: &mut WriteBehind, pts: &mut PendingTimestamps| {
            for f in frames {
                stage.write(sink, f, pts.next())?;
                progress.frame_done();
            }
            Outcome::Ok(())
        };
    let mut received = 0;
    while let Some(frame) = input.next()? {
        received += 1;
        pts.push(frame.at);
        write(stage.push(engine, frame.lq)?, &mut sink, &mut pts)?;
    }
    if received == 0 {
        return Err(Failure::bad(format!(
            "{}: no frames to upscale",
            args.input.display()
        )));
    }
    write(stage.finish(engine, received)?, &mut sink, &mut pts)?;
    timed(&stage.clock.write, || Box::new(sink).finish())?;
    Ok(received)
}

fn color_fix(args: &UpscaleArgs) -> ColorFix {
    match args.color_fix {
        ColorFixArg::Adain => ColorFix::AdaIn,
        ColorFixArg::Wavelet => ColorFix::Wavelet,
        ColorFixArg::None => ColorFix::None,
    }
}

/// The noise of the whole canvas (`height` × `width` model pixels).
fn noise_source(args: &UpscaleArgs, height: usize, width: usize) -> Outcome<NoiseSource> {
    Ok(match &args.noise {
        Some(path) => read_noise(path, height, width)?,
        None => NoiseSource::Seeded(args.seed),
    })
}

/// The noise of a stream that starts `first` latent frames into the video (a cold parallel
/// segment): its latent `l` gets the video's latent `first + l`, for `count` latents, so both
/// sides of a join see the same noise (SCALEOUT.md §2).
fn shifted_noise(base: NoiseSource, window: Option<(usize, usize)>) -> NoiseSource {
    match window.filter(|w| w.0 > 0) {
        Some((first, _)) => base.offset(first),
        None => base,
    }
}

/// Settings of an engine over a `height` × `width` canvas (a tile's, when tiled); the noise is
/// set by the caller.
fn engine_settings(
    args: &UpscaleArgs,
    height: usize,
    width: usize,
    profile: bool,
) -> Outcome<EngineSettings> {
    let mode = match args.attention {
        Attention::Block => AttentionMode::Block,
        Attention::Sage => AttentionMode::Sage,
    };
    Ok(EngineSettings {
        sparse: SparseSettings::new(
            mode,
            args.sparse_ratio,
            args.kv_ratio,
            args.local_range,
            height,
            width,
        )?,
        color_fix: color_fix(args),
        noise: NoiseSource::Seeded(args.seed),
        injected_masks: None,
        profile,
    })
}

/// Loads the models; the VAE tiling of full mode is set per video by [`set_vae_tiling`].
fn load_models(backend: &BackendRef, args: &UpscaleArgs) -> Outcome<Models> {
    let dit = model_files::load_dit(backend, &args.files)?;
    let projector = model_files::load_projector(backend, &args.files, dit.config.dim)?;
    let decoder = match args.mode {
        Mode::Tiny | Mode::TinyLong => {
            Decoder::Tiny(model_files::load_tcdecoder(backend, &args.files)?)
        }
        Mode::Full => Decoder::Full {
            vae: Box::new(model_files::load_vae(backend, &args.files)?),
            tiling: None,
        },
    };
    Ok(Models {
        dit,
        projector,
        decoder,
    })
}

/// Full mode: tiles the VAE decode for this canvas per `--tiled-vae`.
pub(crate) fn set_vae_tiling(models: &mut Models, args: &UpscaleArgs, height: usize, width: usize) {
    if let Decoder::Full { tiling, .. } = &mut models.decoder {
        let (rows, cols) = (height / SPACE_UPSCALE, width / SPACE_UPSCALE);
        *tiling = match args.tiled_vae {
            TiledVae::On => Some(VaeTiling::DEFAULT),
            TiledVae::Off => None,
            TiledVae::Auto => VaeTiling::auto(rows, cols),
        };
    }
}

/// Identities of the model files in use, for the job plan.
pub(crate) fn models_fingerprint(args: &UpscaleArgs) -> Vec<(String, String)> {
    use flashvsr_model::identify::FileKind;
    let kinds = [
        FileKind::Dit,
        FileKind::LqProjector,
        FileKind::TcDecoder,
        FileKind::WanVae,
        FileKind::Prompt,
    ];
    if let Some(size) = args.random_weights {
        return vec![("random weights".into(), format!("{size:?}"))];
    }
    kinds
        .iter()
        .filter_map(|k| model_files::resolved_path(&args.files, *k).ok())
        .filter(|p| p.exists())
        .map(|p| {
            let fp = flashvsr_job::fingerprint_path(&p).unwrap_or_default();
            (p.display().to_string(), fp)
        })
        .collect()
}

/// `--noise FILE`: a safetensors file with an f32 tensor `noise` of shape (1, 16, T, H/8, W/8).
fn read_noise(path: &Path, height: usize, width: usize) -> Outcome<NoiseSource> {
    let bad = |why: String| Failure::bad(format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let view = st
        .tensor("noise")
        .map_err(|_| bad("no tensor named `noise`".into()))?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(bad(format!("`noise` is {:?}, expected F32", view.dtype())));
    }
    let shape = view.shape().to_vec();
    let (rows, cols) = (height / SPACE_UPSCALE, width / SPACE_UPSCALE);
    match shape.as_slice() {
        [1, 16, t, r, c] if *r == rows && *c == cols => Ok(NoiseSource::Injected {
            values: view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            frames: *t,
            rows,
            cols,
        }),
        _ => Err(bad(format!(
            "`noise` has shape {shape:?}, this video needs [1, 16, T, {rows}, {cols}]"
        ))),
    }
}

//! `flashvsr upscale`: source → prepare → streaming engine → colour-fixed frames → sink. A video
//! longer than one segment runs through the job store (`OUTPUT.flashvsr/`): segments are committed
//! with stream checkpoints, so a rerun of the same command resumes where the last one stopped.

use std::collections::VecDeque;
use std::path::Path;

use flashvsr_media::prepare::{prepare_frame, PrepareGeometry, Resampler};
use flashvsr_media::{
    create_sink, open_source, Frame, FrameSink, FrameSource, OutputFormat, SinkOptions, SourceKind,
    Timestamp, VideoOptions,
};
use flashvsr_model::color_fix::ColorFix;
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::geometry::SizePlan;
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{Decoder, Engine, EngineSettings, Models};
use flashvsr_model::tcdecoder::SPACE_UPSCALE;
use flashvsr_model::vae_tiling::VaeTiling;
use flashvsr_tensor::BackendRef;

use crate::args::{
    Attention, ColorFixArg, Mode, OutputFormatArg, ResizeArg, TiledVae, UpscaleArgs,
};
use crate::device;
use crate::failure::{Failure, Outcome};
use crate::frames_out::{to_frame, Depth};
use crate::job_run;
use crate::model_files;
use crate::progress::Progress;

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
}

/// Timestamps of input frames whose outputs are not written yet, oldest first.
#[derive(Default)]
pub struct PendingTimestamps(VecDeque<Option<Timestamp>>);

impl PendingTimestamps {
    pub fn push(&mut self, stage: &Stage, source: &dyn FrameSource) {
        self.0.push_back(if stage.keep_timestamps {
            source.timestamp()
        } else {
            None
        });
    }

    pub fn next(&mut self) -> Option<Timestamp> {
        self.0.pop_front().flatten()
    }
}

impl Stage {
    /// Pushes one input frame; returns the finished output frames.
    pub fn push(&self, engine: &mut Engine, frame: &Frame) -> Outcome<Vec<Frame>> {
        let lq = prepare_frame(frame, &self.geometry, self.resampler);
        Ok(self.finish_frames(engine.push(lq)?))
    }

    pub fn finish(&self, engine: &mut Engine, received: usize) -> Outcome<Vec<Frame>> {
        Ok(self.finish_frames(engine.finish(received)?))
    }

    fn finish_frames(&self, frames: Vec<flashvsr_model::pipeline::OutputFrame>) -> Vec<Frame> {
        frames
            .iter()
            .map(|f| to_frame(&f.pixels, self.plan.model, self.plan.output, self.depth))
            .collect()
    }
}

pub fn run(args: &UpscaleArgs) -> Outcome<()> {
    let backend = device::select(&args.device, args.precision, args.quiet)?;
    let mut source = open_source(&args.input)?;
    model_files::ensure_files(&args.files, args.mode == Mode::Full, args.quiet)?;
    let info = source.info().clone();
    let plan = SizePlan::new(
        (info.width, info.height),
        args.scale as usize,
        args.crop_to_128,
    )?;
    let (width, height) = plan.model;

    let models = load_models(&backend, args, height, width)?;
    let mut engine = Engine::new(
        &models,
        engine_settings(args, height, width)?,
        &backend,
        height,
        width,
    )?;

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
    let stage = Stage {
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
    };
    let limit = match (info.frame_count, args.max_frames) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    };
    let mut progress = Progress::new(args.quiet, limit);
    let to_stdout = args.output.as_os_str() == "-";
    let one_segment = limit.is_some_and(|n| n as u64 <= args.segment_frames);
    let written = if to_stdout || one_segment {
        stream_directly(args, &stage, &mut engine, source.as_mut(), &mut progress)?
    } else {
        job_run::run(
            args,
            &stage,
            &mut engine,
            source.as_mut(),
            &mut progress,
            &models_fingerprint(args),
        )?
    };
    if !args.quiet {
        eprintln!(
            "flashvsr: wrote {written} frames of {}×{} to {}",
            plan.output.0,
            plan.output.1,
            args.output.display()
        );
    }
    Ok(())
}

/// Reads input frames until the end or `--max-frames`, starting after `already` frames.
pub fn next_input(
    args: &UpscaleArgs,
    source: &mut dyn FrameSource,
    received: usize,
) -> Outcome<Option<Frame>> {
    if args.max_frames.is_some_and(|m| received >= m) {
        return Ok(None);
    }
    Ok(source.next_frame()?)
}

fn stream_directly(
    args: &UpscaleArgs,
    stage: &Stage,
    engine: &mut Engine,
    source: &mut dyn FrameSource,
    progress: &mut Progress,
) -> Outcome<usize> {
    let mut sink = create_sink(&args.output, stage.format, &stage.sink_options)?;
    let mut pts = PendingTimestamps::default();
    let mut write =
        |frames: Vec<Frame>, sink: &mut Box<dyn FrameSink>, pts: &mut PendingTimestamps| {
            for f in &frames {
                sink.write_frame_at(f, pts.next())?;
                progress.frame_done();
            }
            Outcome::Ok(())
        };
    let mut received = 0;
    while let Some(frame) = next_input(args, source, received)? {
        received += 1;
        pts.push(stage, source);
        write(stage.push(engine, &frame)?, &mut sink, &mut pts)?;
    }
    if received == 0 {
        return Err(Failure::bad(format!(
            "{}: no frames to upscale",
            args.input.display()
        )));
    }
    write(stage.finish(engine, received)?, &mut sink, &mut pts)?;
    sink.finish()?;
    Ok(received)
}

fn engine_settings(args: &UpscaleArgs, height: usize, width: usize) -> Outcome<EngineSettings> {
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
        color_fix: match args.color_fix {
            ColorFixArg::Adain => ColorFix::AdaIn,
            ColorFixArg::Wavelet => ColorFix::Wavelet,
            ColorFixArg::None => ColorFix::None,
        },
        noise: match &args.noise {
            Some(path) => read_noise(path, height, width)?,
            None => NoiseSource::Seeded(args.seed),
        },
        injected_masks: None,
        profile: false,
    })
}

fn load_models(
    backend: &BackendRef,
    args: &UpscaleArgs,
    height: usize,
    width: usize,
) -> Outcome<Models> {
    let dit = model_files::load_dit(backend, &args.files)?;
    let projector = model_files::load_projector(backend, &args.files, dit.config.dim)?;
    let decoder = match args.mode {
        Mode::Tiny | Mode::TinyLong => {
            Decoder::Tiny(model_files::load_tcdecoder(backend, &args.files)?)
        }
        Mode::Full => {
            let (rows, cols) = (height / SPACE_UPSCALE, width / SPACE_UPSCALE);
            let tiling = match args.tiled_vae {
                TiledVae::On => Some(VaeTiling::DEFAULT),
                TiledVae::Off => None,
                TiledVae::Auto => VaeTiling::DEFAULT
                    .splits(rows, cols)
                    .then_some(VaeTiling::DEFAULT),
            };
            Decoder::Full {
                vae: Box::new(model_files::load_vae(backend, &args.files)?),
                tiling,
            }
        }
    };
    Ok(Models {
        dit,
        projector,
        decoder,
    })
}

/// Identities of the model files in use, for the job plan.
fn models_fingerprint(args: &UpscaleArgs) -> Vec<(String, String)> {
    use flashvsr_model::identify::FileKind;
    let kinds = [
        FileKind::Dit,
        FileKind::LqProjector,
        FileKind::TcDecoder,
        FileKind::WanVae,
        FileKind::Prompt,
    ];
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

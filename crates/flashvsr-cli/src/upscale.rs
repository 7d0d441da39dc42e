//! `flashvsr upscale`: source → prepare → streaming engine → colour-fixed frames → sink.

use std::path::Path;
use std::time::Instant;

use flashvsr_media::prepare::{prepare_frame, PrepareGeometry, Resampler};
use flashvsr_media::{create_sink, open_source, FrameSink, OutputFormat, SinkOptions};
use flashvsr_model::color_fix::ColorFix;
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::geometry::SizePlan;
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{Decoder, Engine, EngineSettings, Models, OutputFrame};
use flashvsr_model::tcdecoder::SPACE_UPSCALE;
use flashvsr_model::vae_tiling::VaeTiling;
use flashvsr_tensor::BackendRef;

use crate::args::{
    Attention, ColorFixArg, Mode, OutputFormatArg, ResizeArg, TiledVae, UpscaleArgs,
};
use crate::device;
use crate::failure::{Failure, Outcome};
use crate::frames_out::{to_frame, Depth};
use crate::model_files;

pub fn run(args: &UpscaleArgs) -> Outcome<()> {
    let backend = device::select(&args.device, args.precision, args.quiet)?;
    let mut source = open_source(&args.input)?;
    let info = source.info().clone();
    let plan = SizePlan::new(
        (info.width, info.height),
        args.scale as usize,
        args.crop_to_128,
    )?;
    let (width, height) = plan.model;

    let models = load_models(&backend, args, height, width)?;
    let mode = match args.attention {
        Attention::Block => AttentionMode::Block,
        Attention::Sage => AttentionMode::Sage,
    };
    let sparse = SparseSettings::new(
        mode,
        args.sparse_ratio,
        args.kv_ratio,
        args.local_range,
        height,
        width,
    )?;
    let noise = match &args.noise {
        Some(path) => read_noise(path, height, width)?,
        None => NoiseSource::Seeded(args.seed),
    };
    let settings = EngineSettings {
        sparse,
        color_fix: match args.color_fix {
            ColorFixArg::Adain => ColorFix::AdaIn,
            ColorFixArg::Wavelet => ColorFix::Wavelet,
            ColorFixArg::None => ColorFix::None,
        },
        noise,
        injected_masks: None,
    };
    let mut engine = Engine::new(&models, settings, &backend, height, width)?;

    let format = match args.output_format {
        Some(OutputFormatArg::Png) => OutputFormat::Png,
        Some(OutputFormatArg::Png16) => OutputFormat::Png16,
        Some(OutputFormatArg::Y4m) => OutputFormat::Y4m,
        None => OutputFormat::from_path(&args.output),
    };
    let depth = match format {
        OutputFormat::Png => Depth::Eight,
        OutputFormat::Png16 => Depth::Sixteen,
        OutputFormat::Y4m if info.bit_depth > 8 => Depth::Sixteen,
        OutputFormat::Y4m => Depth::Eight,
    };
    let options = SinkOptions {
        overwrite: args.overwrite,
        fps: info.fps,
        pixel_aspect: info.pixel_aspect,
    };
    let mut sink = create_sink(&args.output, format, &options)?;
    let geometry = PrepareGeometry {
        scaled: plan.scaled,
        model: plan.model,
        crop_offset: plan.crop_offset,
    };
    let resampler = match args.resize {
        ResizeArg::Pil => Resampler::Pil,
        ResizeArg::Torch => Resampler::Torch,
    };
    let mut progress = Progress::new(args.quiet, info.frame_count, args.max_frames);
    let mut write = |frames: Vec<OutputFrame>, sink: &mut Box<dyn FrameSink>| -> Outcome<()> {
        for f in frames {
            sink.write_frame(&to_frame(&f.pixels, plan.model, plan.output, depth))?;
            progress.frame_done();
        }
        Ok(())
    };

    let mut received = 0usize;
    while args.max_frames.is_none_or(|m| received < m) {
        let Some(frame) = source.next_frame()? else {
            break;
        };
        let lq = prepare_frame(&frame, &geometry, resampler);
        received += 1;
        write(engine.push(lq)?, &mut sink)?;
    }
    if received == 0 {
        return Err(Failure::bad(format!(
            "{}: no frames to upscale",
            args.input.display()
        )));
    }
    write(engine.finish(received)?, &mut sink)?;
    sink.finish()?;
    if !args.quiet {
        eprintln!(
            "flashvsr: wrote {received} frames of {}×{} to {}",
            plan.output.0,
            plan.output.1,
            args.output.display()
        );
    }
    Ok(())
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

/// One line per finished chunk on stderr: frames done, fps, elapsed.
struct Progress {
    quiet: bool,
    total: Option<usize>,
    done: usize,
    start: Instant,
    last_report: usize,
}

impl Progress {
    fn new(quiet: bool, count: Option<usize>, max: Option<usize>) -> Progress {
        let total = match (count, max) {
            (Some(c), Some(m)) => Some(c.min(m)),
            (c, m) => c.or(m),
        };
        Progress {
            quiet,
            total,
            done: 0,
            start: Instant::now(),
            last_report: 0,
        }
    }

    fn frame_done(&mut self) {
        self.done += 1;
        if self.quiet || self.done - self.last_report < 8 && Some(self.done) != self.total {
            return;
        }
        self.last_report = self.done;
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let speed = if rate >= 1.0 {
            format!("{rate:.2} fps")
        } else {
            format!("{:.1} s/frame", 1.0 / rate)
        };
        let total = self.total.map_or(String::from("?"), |t| t.to_string());
        eprintln!(
            "flashvsr: {}/{total} frames, {speed}, {secs:.1} s elapsed",
            self.done
        );
    }
}

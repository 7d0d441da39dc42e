//! `flashvsr bench`: the whole pipeline on a synthetic clip, with per-stage times, achieved
//! TFLOP/s, mask density and peak memory (PERFORMANCE.md §3). It runs as `upscale` does: frames
//! prepared ahead on the host workers, the engine on this thread, colour fix and conversion behind
//! it (on the CPU device, without overlap: see `Stage::overlap_host_work`); the output frames are
//! then dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use flashvsr_media::prepare::{PrepareGeometry, Resampler};
use flashvsr_media::{
    Frame, FrameSink, FrameSource, MediaError, OutputFormat, SinkOptions, SourceInfo,
};
use flashvsr_model::color_fix::ColorFix;
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::geometry::SizePlan;
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{Decoder, Engine, EngineSettings, EngineStats, Models};
use flashvsr_model::random_weights::ModelSize;
use flashvsr_model::vae_tiling::VaeTiling;
use flashvsr_tensor::BackendRef;
use serde_json::json;

use crate::args::{Attention, BenchArgs, BenchModelSize, Mode};
use crate::device;
use crate::failure::{Failure, Outcome};
use crate::frames_out::Depth;
use crate::model_files;
use crate::pipelined::WriteBehind;
use crate::stage_clock::StageClock;
use crate::upscale::Stage;

const SEED: u64 = 0;

fn parse_resolution(s: &str) -> Outcome<(usize, usize)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| Failure::bad(format!("--resolution {s}: expected WxH, e.g. 1408x768")))?;
    match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(Failure::bad(format!(
            "--resolution {s}: expected WxH, e.g. 1408x768"
        ))),
    }
}

fn load_models(
    backend: &BackendRef,
    args: &BenchArgs,
    rows: usize,
    cols: usize,
) -> Outcome<Models> {
    let full = args.mode == Mode::Full;
    // As `--tiled-vae auto` decides.
    let tiling = VaeTiling::auto(rows, cols);
    if !args.random_weights {
        let dit = model_files::load_dit(backend, &args.files)?;
        let projector = model_files::load_projector(backend, &args.files, dit.config.dim)?;
        let decoder = if full {
            Decoder::Full {
                vae: Box::new(model_files::load_vae(backend, &args.files)?),
                tiling,
            }
        } else {
            Decoder::Tiny(model_files::load_tcdecoder(backend, &args.files)?)
        };
        return Ok(Models {
            dit,
            projector,
            decoder,
        });
    }
    let size = match args.model_size {
        BenchModelSize::Release => ModelSize::RELEASE,
        BenchModelSize::Small => ModelSize::SMALL,
    };
    let version = model_files::projector_version(args.files.model_ver);
    let mut models = model_files::random_models(backend, size, version, full)?;
    if let Decoder::Full { tiling: t, .. } = &mut models.decoder {
        *t = tiling;
    }
    Ok(models)
}

/// A moving gradient with some texture, so frames differ.
fn synthetic_frame(w: usize, h: usize, t: usize) -> Frame {
    let data = (0..w * h * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (x, y) = (p % w, p / w);
            ((x * 3 + y * 2 + t * 5 + c * 70) as u32 ^ ((x * y) as u32 & 15)) as u8
        })
        .collect();
    Frame::from_u8(w, h, data)
}

/// The synthetic clip, decoded up front so that reading costs nothing.
struct Clip {
    info: SourceInfo,
    frames: VecDeque<Frame>,
}

impl Clip {
    fn new(frames: Vec<Frame>) -> Clip {
        let (width, height) = frames.first().map_or((0, 0), |f| (f.width, f.height));
        Clip {
            info: SourceInfo::synthetic("<synthetic>", width, height, frames.len()),
            frames: frames.into(),
        }
    }
}

impl FrameSource for Clip {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, MediaError> {
        Ok(self.frames.pop_front())
    }
}

/// Drops the finished frames.
struct Discard;

impl FrameSink for Discard {
    fn write_frame(&mut self, _frame: &Frame) -> Result<(), MediaError> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<(), MediaError> {
        Ok(())
    }
}

/// FLOPs of the DiT's linear layers for `tokens` tokens (a multiply-add is 2 FLOPs).
fn dit_linear_flops(models: &Models, tokens: f64) -> f64 {
    let c = &models.dit.config;
    let (d, f) = (c.dim as f64, c.ffn_dim as f64);
    tokens * c.layers as f64 * 2.0 * (6.0 * d * d + 2.0 * d * f)
}

fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills a plain-data struct for this process.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

pub fn run(args: &BenchArgs) -> Outcome<()> {
    let (out_w, out_h) = parse_resolution(&args.resolution)?;
    if out_w % args.scale != 0 || out_h % args.scale != 0 || args.frames == 0 {
        return Err(Failure::bad(format!(
            "--resolution {out_w}x{out_h} must be divisible by --scale {} and --frames positive",
            args.scale
        )));
    }
    let backend = device::select(&args.device, args.precision, args.json, None)?;
    let plan = SizePlan::new((out_w / args.scale, out_h / args.scale), args.scale, false)?;
    let (width, height) = plan.model;
    let load_start = Instant::now();
    let models = load_models(&backend, args, height / 8, width / 8)?;
    crate::upscale::release_load_temporaries(&backend);
    // The profiled run below keeps one stream (its stage times need it); the timed runs use
    // the second where `upscale` would.
    let excluded = crate::decoder_stream::Exclusions {
        tiled: false,
        split: false,
        profile: false,
        memory_cap: false,
    };
    let decoder = crate::decoder_stream::decoder_backend(
        args.decoder_stream,
        &backend,
        (height, width),
        excluded,
    )?;
    let load_s = load_start.elapsed().as_secs_f64();
    let mode = match args.attention {
        Attention::Block => AttentionMode::Block,
        Attention::Sage => AttentionMode::Sage,
    };
    let sparse = SparseSettings::new(mode, args.sparse_ratio, 3.0, 11, height, width)?;
    let stage = Stage {
        geometry: PrepareGeometry {
            scaled: plan.scaled,
            model: plan.model,
            crop_offset: (0, 0),
        },
        resampler: Resampler::Pil,
        plan,
        depth: Depth::Eight,
        format: OutputFormat::Png,
        sink_options: SinkOptions::default(),
        keep_timestamps: false,
        clock: Arc::new(StageClock::default()),
        overlap_host_work: crate::host_pool::overlap_for(backend.device()),
    };
    let clip: Vec<Frame> = (0..args.frames)
        .map(|t| synthetic_frame(out_w / args.scale, out_h / args.scale, t))
        .collect();
    let bench = OneRun {
        models: &models,
        backend: &backend,
        stage: &stage,
        clip: &clip,
        sparse,
        height,
        width,
        decoder: decoder.as_ref(),
    };
    // PERFORMANCE.md §3: warm-up runs of the same shapes (module loads, algorithm searches, pool
    // growth) are not reported; the timed runs have no synchronisation inside; stage times and
    // masks come from one more run that synchronises at every stage boundary.
    for _ in 0..args.warmup {
        bench.run(false)?;
    }
    backend.op_profile_reset();
    let engine_thread = |c: &StageClock| [c.read.get(), c.model.get(), c.handoff.get()];
    let before_timed = engine_thread(&stage.clock);
    let queue_wait_before = flashvsr_tensor::host_stalls::queue_wait();
    let mut timed = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        timed.push(bench.run(false)?);
    }
    let after_timed = engine_thread(&stage.clock);
    let queue_wait = flashvsr_tensor::host_stalls::queue_wait() - queue_wait_before;
    // FLASHVSR_CUDA_OP_PROFILE=1: where the device time of the timed runs went, op by op (the
    // profiled run below synchronises at stage boundaries).
    let op_table = backend.op_profile_report();
    // Per timed run: where the engine's thread spent the wall time.
    let mut engine_thread_s: Vec<f64> = (0..3)
        .map(|i| (after_timed[i] - before_timed[i]).as_secs_f64() / timed.len() as f64)
        .collect();
    // Inside the engine's time: enqueue calls that waited for the driver's launch queue.
    engine_thread_s.push(queue_wait.as_secs_f64() / timed.len() as f64);
    let host_before = (stage.clock.prepare.get(), stage.clock.color_fix.get());
    let profiled = bench.run(true)?;
    let walls: Vec<f64> = timed.iter().map(|r| r.wall).collect();
    let peak_device = timed
        .iter()
        .chain([&profiled])
        .map(|r| r.peak_device)
        .max()
        .unwrap_or(0);
    report(
        args,
        &models,
        &profiled.stats,
        Report {
            width,
            height,
            walls,
            phases: mean_phases(&timed),
            profiled_wall: profiled.wall,
            engine_thread_s,
            prepare_s: (stage.clock.prepare.get() - host_before.0).as_secs_f64(),
            color_fix_s: (stage.clock.color_fix.get() - host_before.1).as_secs_f64(),
            load_s,
            peak_device,
            device: backend.device().to_string(),
            decoder_stream: decoder.is_some(),
        },
    )?;
    if let Some(table) = op_table {
        eprintln!("{table}");
    }
    Ok(())
}

fn mean_phases(runs: &[RunResult]) -> PassPhases {
    let n = runs.len().max(1) as f64;
    let sum = |f: fn(&PassPhases) -> f64| runs.iter().map(|r| f(&r.phases)).sum::<f64>() / n;
    PassPhases {
        first_chunk: sum(|p| p.first_chunk),
        enqueued: sum(|p| p.enqueued),
        device_done: sum(|p| p.device_done),
    }
}

/// What one pass over the clip needs; each pass starts a fresh stream on the loaded models.
struct OneRun<'a> {
    models: &'a Models,
    backend: &'a BackendRef,
    stage: &'a Stage,
    clip: &'a [Frame],
    sparse: SparseSettings,
    height: usize,
    width: usize,
    /// The second stream of `--decoder-stream`, if any.
    decoder: Option<&'a BackendRef>,
}

struct RunResult {
    wall: f64,
    phases: PassPhases,
    stats: EngineStats,
    peak_device: u64,
}

impl OneRun<'_> {
    fn run(&self, profile: bool) -> Outcome<RunResult> {
        let settings = EngineSettings {
            sparse: self.sparse.clone(),
            color_fix: ColorFix::AdaIn,
            noise: NoiseSource::Seeded(SEED),
            injected_masks: None,
            profile,
        };
        let backend = self.backend;
        let (models, (height, width)) = (self.models, (self.height, self.width));
        let mut engine = match self.decoder.filter(|_| !profile) {
            Some(decoder) => {
                Engine::with_decoder_stream(models, settings, backend, decoder, height, width)?
            }
            None => Engine::new(models, settings, backend, height, width)?,
        };
        let mut clip = Clip::new(self.clip.to_vec());
        let frames = self.clip.len();
        let stage = self.stage;
        let mut peak_device = backend.memory_in_use().unwrap_or(0);
        let start = Instant::now();
        let mut input = stage.input(&mut clip, None);
        let mut sink = WriteBehind::new(Box::new(Discard));
        let mut produced = 0;
        let mut first_chunk = None;
        while let Some(frame) = input.next()? {
            for out in stage.push(&mut engine, frame.lq)? {
                first_chunk.get_or_insert_with(|| start.elapsed().as_secs_f64());
                stage.write(&mut sink, out, None)?;
                produced += 1;
            }
            peak_device = peak_device.max(backend.memory_in_use().unwrap_or(0));
        }
        for out in stage.finish(&mut engine, frames)? {
            stage.write(&mut sink, out, None)?;
            produced += 1;
        }
        let enqueued = start.elapsed().as_secs_f64();
        // The writer waits for the device anyway: this wait only marks when the device is done.
        backend.synchronize()?;
        if let Some(decoder) = self.decoder {
            decoder.synchronize()?;
        }
        let device_done = start.elapsed().as_secs_f64();
        Box::new(sink).finish()?;
        let wall = start.elapsed().as_secs_f64();
        peak_device = peak_device.max(backend.memory_in_use().unwrap_or(0));
        if produced != frames {
            return Err(Failure::failed(format!(
                "produced {produced} frames for {frames} inputs"
            )));
        }
        Ok(RunResult {
            wall,
            phases: PassPhases {
                first_chunk: first_chunk.unwrap_or(enqueued),
                enqueued,
                device_done,
            },
            stats: std::mem::take(&mut engine.stats),
            peak_device,
        })
    }
}

/// Seconds from a pass's start until: its first chunk was enqueued (the engine's first push that
/// returned frames), all its work was enqueued, the device finished it. The rest of the wall time
/// is the host's finishing of the last frames.
#[derive(Clone, Copy, Default)]
struct PassPhases {
    first_chunk: f64,
    enqueued: f64,
    device_done: f64,
}

struct Report {
    width: usize,
    /// Mean over the timed runs.
    phases: PassPhases,
    height: usize,
    /// Wall seconds of the timed runs, and of the run that gave the stage times.
    walls: Vec<f64>,
    profiled_wall: f64,
    /// Seconds per timed run the engine's thread waited for input, ran the engine, handed frames
    /// to the writer; and, inside the engine's, waited for room in the device's launch queue
    /// (`host_stalls::queue_wait`): the engine's time less that is the host's own work.
    engine_thread_s: Vec<f64>,
    /// CPU time of the host workers, summed.
    prepare_s: f64,
    color_fix_s: f64,
    load_s: f64,
    peak_device: u64,
    device: String,
    decoder_stream: bool,
}

fn report(args: &BenchArgs, models: &Models, s: &EngineStats, r: Report) -> Outcome<()> {
    let tokens_per_latent = (r.width / 16 * r.height / 16) as f64;
    // 6 latents in chunk 0 and 2 per later chunk.
    let latents = 6.0 + 2.0 * (s.chunks.saturating_sub(1)) as f64;
    let key_block = match args.attention {
        Attention::Block => 128.0,
        Attention::Sage => 64.0,
    };
    let linear = dit_linear_flops(models, tokens_per_latent * latents);
    let attention = s.selected_blocks as f64 * 4.0 * 128.0 * key_block * 128.0;
    let dit_s = s.dit.as_secs_f64();
    let density = s.selected_blocks as f64 / (s.total_blocks.max(1)) as f64;
    let valid = s.empty_rows == 0;
    let mut walls = r.walls.clone();
    walls.sort_by(f64::total_cmp);
    let median_wall = walls[walls.len() / 2];
    let fps = args.frames as f64 / median_wall;
    let fps_min = args.frames as f64 / walls[walls.len() - 1];
    let fps_max = args.frames as f64 / walls[0];
    let result = json!({
        "device": r.device,
        "resolution": format!("{}x{}", args.resolution.split_once(['x', 'X']).map_or("?", |p| p.0), args.resolution.split_once(['x', 'X']).map_or("?", |p| p.1)),
        "model_canvas": format!("{}x{}", r.width, r.height),
        "frames": args.frames,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "attention": format!("{:?}", args.attention).to_lowercase(),
        "weights": if args.random_weights { format!("random-{:?}", args.model_size).to_lowercase() } else { "files".into() },
        "fps": fps,
        "fps_min": fps_min,
        "fps_max": fps_max,
        "runs": r.walls.len(),
        "warmup_runs": args.warmup,
        "wall_s": median_wall,
        "run_walls_s": r.walls,
        "profiled_run_wall_s": r.profiled_wall,
        "pass_phases_ms": {
            "first_chunk_enqueued": r.phases.first_chunk * 1e3,
            "all_enqueued": r.phases.enqueued * 1e3,
            "device_done": r.phases.device_done * 1e3,
        },
        "engine_thread_ms": {
            "waiting_for_input": r.engine_thread_s[0] * 1e3,
            "engine": r.engine_thread_s[1] * 1e3,
            "handing_to_writer": r.engine_thread_s[2] * 1e3,
            "engine_waiting_for_launch_queue": r.engine_thread_s[3] * 1e3,
        },
        "decoder_stream": r.decoder_stream,
        "model_load_s": r.load_s,
        "chunks": s.chunks,
        "stages_ms": {
            "prepare": r.prepare_s * 1e3,
            "lq_projector": s.projector.as_secs_f64() * 1e3,
            "dit": dit_s * 1e3,
            "decode": s.decode.as_secs_f64() * 1e3,
            "color_fix": r.color_fix_s * 1e3,
        },
        "dit_tflops": (linear + attention) / dit_s.max(1e-9) / 1e12,
        "dit_linear_flops": linear,
        "dit_attention_flops": attention,
        "mask_density": density,
        "empty_query_rows": s.empty_rows,
        "masks_valid": valid,
        "peak_device_memory_bytes": r.peak_device,
        "peak_tensor_bytes": {
            "lq_projector": s.peak_tensor_bytes[0],
            "dit": s.peak_tensor_bytes[1],
            "decode": s.peak_tensor_bytes[2],
        },
        "peak_host_rss_bytes": peak_rss_bytes(),
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    }
    if !valid {
        return Err(Failure::failed(format!(
            "invalid run: {} of {} query rows selected no key block (degenerate masks)",
            s.empty_rows, s.rows
        )));
    }
    Ok(())
}

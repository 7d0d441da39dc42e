//! Parallel jobs (SCALEOUT.md §2–§4): `upscale --devices cpu:N | all | 0,2 | 0-3` plans a
//! parallel job in the job store, starts one worker process per device (`upscale --worker-job
//! DIR`), restarts a crashed worker up to 3 times, and assembles the segments with cross-faded
//! joins. Each segment starts a cold stream W frames before its range (the warm-up, discarded),
//! emits X pre-roll frames before its own range, and is committed create-only; a worker takes
//! the lowest segment with no done marker and no live lease (a dynamic queue).
//!
//! Segment data: the emitted frames at the output depth (PNG or PNG16 folder, so frames away from
//! the joins are exactly what the stream computed), plus a PNG16 folder `<data>.blend` with the
//! frames of the joins (the pre-roll and, except in the last segment, the last X own frames),
//! which are cross-faded in float before the final quantisation. A y4m output has no segment
//! folders: the workers write their own frames straight into it (parallel_output.rs). The output
//! is assembled while the workers run, each segment as soon as it can be.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use flashvsr_job::{plan_balanced, plan_segments, HeldLease, JobStore, SegmentRange};
use flashvsr_media::{create_sink, open_source, AllocatedY4m, FrameSink, OutputFormat, Timestamp};
use flashvsr_model::geometry::SizePlan;
use serde_json::{json, Value};

use crate::args::{ParallelMode, UpscaleArgs};
use crate::failure::{Failure, Outcome};
use crate::frames_out::{to_frame, Depth};
use crate::interrupt;
use crate::job_run;
use crate::parallel_output::{allocated_output, blend_path, JoinedOutput};
use crate::pipelined::WriteBehind;
use crate::progress::{Progress, Reporter, Summary};
use crate::upscale::{make_engine, make_stage, models_fingerprint, set_vae_tiling, Context, Stage};

/// Warm-up frames before each parallel segment (docs/SEGMENTS.md: read off the measured join
/// difference curve).
pub const DEFAULT_WARMUP_FRAMES: usize = 56;
/// Frames cross-faded at each join.
pub const DEFAULT_CROSSFADE_FRAMES: usize = 8;
const LEASE_TTL_MS: u64 = 60_000;
const RENEW_EVERY: Duration = Duration::from_secs(10);
const MAX_RESTARTS: usize = 3;

/// The parent process of a worker started by `upscale --devices`.
static PARENT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Stops a worker at a signal, or once its parent is gone (it was killed).
fn check_stop() -> Outcome<()> {
    interrupt::check()?;
    match PARENT.get() {
        Some(&p) if std::os::unix::process::parent_id() != p => Err(Failure::Interrupted),
        _ => Ok(()),
    }
}

/// The devices of `--devices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Devices {
    /// N CPU worker processes.
    Cpu(usize),
    /// One worker per GPU (CUDA ordinals).
    Gpus(Vec<usize>),
}

impl Devices {
    pub fn count(&self) -> usize {
        match self {
            Devices::Cpu(n) => *n,
            Devices::Gpus(g) => g.len(),
        }
    }
}

/// Parses `all`, `0,2`, `0-3`, `1,4-5` or `cpu:N`.
pub fn parse_devices(text: &str) -> Result<Devices, String> {
    let text = text.trim();
    if let Some(n) = text.strip_prefix("cpu:") {
        return match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Devices::Cpu(n)),
            _ => Err(format!("--devices {text}: cpu:N needs N ≥ 1")),
        };
    }
    if text.eq_ignore_ascii_case("cpu") {
        return Ok(Devices::Cpu(1));
    }
    if text.eq_ignore_ascii_case("all") {
        let count = std::fs::read_dir("/proc/driver/nvidia/gpus")
            .map(|d| d.count())
            .unwrap_or(0);
        if count == 0 {
            return Err("--devices all: no NVIDIA GPU found".into());
        }
        return Ok(Devices::Gpus((0..count).collect()));
    }
    let bad = || format!("--devices {text}: expected all, cpu:N, or GPU numbers like 0,2 or 0-3");
    let mut gpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().map_err(|_| bad())?,
                    b.trim().parse::<usize>().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                gpus.extend(a..=b);
            }
            None => gpus.push(part.parse::<usize>().map_err(|_| bad())?),
        }
    }
    let mut seen = gpus.clone();
    seen.sort_unstable();
    seen.dedup();
    if gpus.is_empty() || seen.len() != gpus.len() {
        return Err(bad());
    }
    Ok(Devices::Gpus(gpus))
}

/// The devices (as `--device` names, first to last) of a stream split by layers under
/// `--devices` and `--parallel`; None when the job is not split that way.
pub fn layer_split_devices(args: &UpscaleArgs) -> Outcome<Option<Vec<String>>> {
    let Some(text) = &args.devices else {
        return Ok(None);
    };
    let devices = parse_devices(text).map_err(Failure::bad)?;
    let names: Vec<String> = match &devices {
        Devices::Cpu(n) => vec!["cpu".to_string(); *n],
        Devices::Gpus(g) => g.iter().map(|i| format!("cuda:{i}")).collect(),
    };
    let layers = match args.parallel {
        ParallelMode::Layers => true,
        ParallelMode::Segments => false,
        // Measured on 2 H200s (BENCHMARKS.md), one split stream is still bound by the host work
        // of one process, and worker processes on segments are faster: layers only when asked.
        ParallelMode::Auto => false,
    };
    if !layers || names.len() < 2 {
        return Ok(None);
    }
    if args.tile_size != 0 || args.max_vram.is_some() {
        return Err(Failure::bad(
            "--parallel layers runs the whole canvas on every device: it cannot be combined with \
             --tile-size or --max-vram (use --parallel segments)",
        ));
    }
    if !args.device.trim().eq_ignore_ascii_case("auto") {
        return Err(Failure::bad(
            "--device and --devices together: --devices names the devices of a split stream",
        ));
    }
    Ok(Some(names))
}

/// The device of a one-stream run under `--devices` (a single device, or a job that is not split):
/// its first device, unless `--device` names one.
pub fn single_device(args: &UpscaleArgs) -> Option<String> {
    if !args.device.trim().eq_ignore_ascii_case("auto") {
        return None;
    }
    match parse_devices(args.devices.as_deref()?).ok()? {
        Devices::Cpu(_) => Some("cpu".into()),
        Devices::Gpus(g) => Some(format!("cuda:{}", g.first()?)),
    }
}

/// Runs `args` as a parallel job when `--devices` names more than one device and the frame count
/// is known; `None`: run the one-stream path instead.
pub fn run_if_parallel(args: &UpscaleArgs, ctx: &mut Context) -> Outcome<Option<Summary>> {
    let Some(text) = &args.devices else {
        return Ok(None);
    };
    let devices = parse_devices(text).map_err(Failure::bad)?;
    if devices.count() < 2 || layer_split_devices(args)?.is_some() {
        return Ok(None);
    }
    let reporter = ctx.reporter;
    let source = open_source(&args.input)?;
    let info = source.info().clone();
    drop(source);
    let total = match (info.frame_count, args.max_frames) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    };
    let Some(total) = total.filter(|&t| t > 0) else {
        reporter.info("the frame count is not known in advance: running one stream on one device");
        return Ok(None);
    };
    let warmup = args.warmup_frames;
    let crossfade = args.crossfade_frames;
    if !warmup.is_multiple_of(8) {
        return Err(Failure::bad(format!(
            "--warmup-frames {warmup}: must be a multiple of 8"
        )));
    }
    if crossfade > warmup {
        return Err(Failure::bad(format!(
            "--crossfade-frames {crossfade} exceeds --warmup-frames {warmup}"
        )));
    }
    let workers = devices.count();
    let segment = args.segment_frames as usize;
    if args.segment_frames_given && (!segment.is_multiple_of(8) || segment < crossfade.max(8)) {
        return Err(Failure::bad(format!(
            "--segment-frames {segment}: a parallel job needs a multiple of 8, at least 8 and at least --crossfade-frames"
        )));
    }
    let plan = SizePlan::new(
        (info.width, info.height),
        args.scale as usize,
        args.crop_to_128,
    )?;
    let stage = make_stage(args, &info, plan);
    let root = JobStore::path_for_output(&args.output);
    // --segment-frames N: segments of N frames. By default the segments balance the workers
    // (the first has no warm-up to compute, so it owns W frames more), unless a job store from an
    // earlier run already fixed them: then any --devices resumes it.
    let segments = if args.segment_frames_given {
        plan_segments(total, segment, warmup, crossfade)
    } else {
        let stored = (!args.restart).then(|| stored_segments(&root)).flatten();
        stored.unwrap_or_else(|| plan_balanced(total, workers, warmup, crossfade, segment))
    };
    if segments.len() < 2 {
        // One segment is plain streaming: no warm-up, no joins, no intermediate files.
        return Ok(None);
    }
    let mut record = job_run::plan(args, &stage, &models_fingerprint(args))?;
    let segment_format = if job_run::writes_directly(&stage) {
        "own frames into the output"
    } else {
        "png"
    };
    record["segmenting"] = json!({
        "mode": "parallel", "segment_frames": segments[0].own_to, "warmup_frames": warmup,
        "crossfade_frames": crossfade, "segment_format": segment_format, "blend_format": "png16",
    });
    record["segments"] = serde_json::to_value(&segments).unwrap_or_default();
    record["frames"] = json!(total);
    record["output"]["path"] = json!(args.output.display().to_string());

    if args.restart && root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| Failure::failed(format!("{}: {e}", root.display())))?;
    }
    let store = JobStore::open_or_create(&root, &record)?;
    reporter.event(json!({
        "event": "start",
        "input": args.input.display().to_string(),
        "output": args.output.display().to_string(),
        "total": total,
        "width": plan.output.0,
        "height": plan.output.1,
        "workers": workers,
        "segments": segments.len(),
    }));
    reporter.info(&format!(
        "parallel job: {} segment(s) of about {} frames, warm-up {warmup}, cross-fade {crossfade}, {workers} workers",
        segments.len(),
        segments[0].own_to
    ));
    let committed = store.done_any()?.len();
    let mut progress = Progress::new(reporter, Some(total));
    // The output is opened (a y4m output made at its full length) before any worker starts, and
    // takes the segments as they are committed.
    let result = JoinedOutput::start(&args.output, &stage, &store, &segments, total).and_then(
        |mut output| {
            drive(
                args,
                reporter,
                &store,
                &devices,
                &segments,
                &mut output,
                &mut progress,
            )?;
            output.finish(&store)
        },
    );
    progress.end();
    let discard = match &result {
        Err(Failure::BadInput(_)) => true,
        Err(Failure::Failed(_)) => store.done_any().map_or(committed == 0, |d| d.is_empty()),
        _ => false,
    };
    if discard {
        let _ = store.remove();
        return result.map(|_| None);
    }
    let written = result?;
    if !args.keep_job {
        store.remove()?;
    }
    reporter.info(&format!(
        "wrote {written} frames of {}×{} to {}",
        plan.output.0,
        plan.output.1,
        args.output.display()
    ));
    let summary = Summary {
        frames: written,
        computed: progress.computed(),
        elapsed: progress.elapsed(),
        ..Summary::default()
    };
    ctx.totals.add(&summary);
    Ok(Some(summary))
}

/// The parent's own arguments for a worker: everything but the device, progress and output
/// options, which the worker gets from the parent.
fn worker_args() -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in std::env::args_os().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        let s = a.to_string_lossy();
        let with_value = ["--devices", "--device", "--progress", "--progress-file"];
        if with_value.contains(&s.as_ref()) {
            skip_value = true;
            continue;
        }
        if with_value.iter().any(|f| s.starts_with(&format!("{f}="))) || s == "-q" || s == "--quiet"
        {
            continue;
        }
        out.push(a);
    }
    out
}

struct Worker {
    index: usize,
    label: String,
    child: Option<Child>,
    id: String,
    restarts: usize,
    /// Exited with status 0: every segment is done or leased.
    finished: bool,
}

fn spawn(root: &Path, devices: &Devices, index: usize) -> Outcome<Child> {
    let exe = std::env::current_exe().map_err(|e| Failure::failed(format!("current exe: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(worker_args())
        .arg("--worker-job")
        .arg(root)
        .args(["-q", "--progress", "none"])
        .env("FLASHVSR_WORKER", index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match devices {
        Devices::Cpu(n) => {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            let threads = (cores / n).max(1).to_string();
            cmd.args(["--device", "cpu"])
                .env("RAYON_NUM_THREADS", &threads)
                .env("MATMUL_NUM_THREADS", &threads);
        }
        Devices::Gpus(g) => {
            // Each worker's parallel host loops get their share of the cores: oversubscribed,
            // they would delay the engine threads that keep the GPUs fed.
            let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
            let threads = (cores / g.len()).max(2).to_string();
            cmd.args(["--device", "cuda:0"])
                .env("CUDA_VISIBLE_DEVICES", g[index].to_string())
                .env("RAYON_NUM_THREADS", &threads);
        }
    }
    cmd.spawn()
        .map_err(|e| Failure::failed(format!("starting worker {index}: {e}")))
}

/// What a worker reports in `workers/w<i>.json`.
fn read_status(root: &Path, index: usize) -> Option<(usize, usize, usize)> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(root.join(format!("workers/w{index}.json"))).ok()?)
            .ok()?;
    Some((
        v["segment"].as_u64()? as usize,
        v["done"].as_u64()? as usize,
        v["of"].as_u64()? as usize,
    ))
}

/// Starts the workers, restarts crashed ones, shows progress and hands committed segments to the
/// output; returns when every segment is done.
fn drive(
    args: &UpscaleArgs,
    reporter: &Reporter,
    store: &JobStore,
    devices: &Devices,
    segments: &[SegmentRange],
    output: &mut JoinedOutput,
    progress: &mut Progress,
) -> Outcome<()> {
    let root = store.root().to_path_buf();
    let _ = std::fs::create_dir_all(root.join("workers"));
    let all_done = |store: &JobStore| segments.iter().all(|s| store.is_done(s.k));
    output.update(store)?;
    if all_done(store) {
        return Ok(());
    }
    let mut workers = Vec::new();
    for index in 0..devices.count() {
        let child = spawn(&root, devices, index)?;
        let label = match devices {
            Devices::Cpu(_) => format!("cpu worker {index}"),
            Devices::Gpus(g) => format!("gpu {}", g[index]),
        };
        workers.push(Worker {
            index,
            label,
            id: format!("{}/w{index}", child.id()),
            child: Some(child),
            restarts: 0,
            finished: false,
        });
    }
    let stop_all = |workers: &mut Vec<Worker>| {
        for w in workers.iter_mut() {
            if let Some(c) = &mut w.child {
                // SAFETY: signalling our own child process by its id.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        for w in workers.iter_mut() {
            if let Some(mut c) = w.child.take() {
                let _ = c.wait();
            }
        }
    };
    let mut shown = 0usize;
    let mut last_lines = Instant::now();
    let result = loop {
        if interrupt::requested() {
            stop_all(&mut workers);
            break Err(Failure::Interrupted);
        }
        let mut fatal = None;
        for w in workers.iter_mut() {
            let Some(child) = &mut w.child else { continue };
            let status = match child.try_wait() {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    fatal = Some(Failure::failed(format!("worker {}: {e}", w.index)));
                    break;
                }
            };
            w.child = None;
            if status.success() {
                w.finished = true;
                continue;
            }
            if status.code() == Some(2) {
                fatal = Some(Failure::bad(format!(
                    "{}: the worker refused the job (see its error above)",
                    w.label
                )));
                break;
            }
            // A crash: free its segment at once, then restart it (bounded).
            let freed = store.release_worker(&w.id, segments.len())?;
            if w.restarts >= MAX_RESTARTS {
                reporter.info(&format!(
                    "{} failed ({status}) after {MAX_RESTARTS} restarts; giving up on it",
                    w.label
                ));
                continue;
            }
            w.restarts += 1;
            reporter.info(&format!(
                "{} stopped ({status}); segment(s) {freed:?} requeued; restart {}/{MAX_RESTARTS}",
                w.label, w.restarts
            ));
            let child = spawn(&root, devices, w.index)?;
            w.id = format!("{}/w{}", child.id(), w.index);
            w.child = Some(child);
        }
        if let Some(f) = fatal.or_else(|| output.update(store).err()) {
            stop_all(&mut workers);
            break Err(f);
        }
        // Progress: committed own frames plus the own frames of segments being computed.
        let mut done: usize = segments
            .iter()
            .filter(|s| store.is_done(s.k))
            .map(|s| s.own_to - s.own_from)
            .sum();
        let mut lines = Vec::new();
        let mut events = Vec::new();
        for w in &workers {
            let state = if w.child.is_some() { "idle" } else { "stopped" };
            match read_status(&root, w.index) {
                Some((k, d, of)) if !store.is_done(k) && w.child.is_some() => {
                    done += d;
                    lines.push(format!("  {}: segment {k}: {d}/{of}", w.label));
                    events.push(
                        json!({"event": "worker", "worker": w.index, "device": w.label,
                                       "segment": k, "frame": d, "total": of}),
                    );
                }
                _ => {
                    lines.push(format!("  {}: {state}", w.label));
                    events.push(
                        json!({"event": "worker", "worker": w.index, "device": w.label,
                                       "state": state}),
                    );
                }
            }
        }
        while shown < done.min(progress_total(segments)) {
            progress.frame_done();
            shown += 1;
        }
        if reporter.human() && !args.quiet && last_lines.elapsed() >= Duration::from_secs(5) {
            last_lines = Instant::now();
            for l in lines {
                reporter.info(&l);
            }
        }
        if !reporter.human() && last_lines.elapsed() >= Duration::from_secs(2) {
            last_lines = Instant::now();
            for e in events {
                reporter.event(e);
            }
        }
        if workers.iter().all(|w| w.child.is_none()) {
            break if all_done(store) {
                Ok(())
            } else {
                Err(Failure::failed(
                    "the workers stopped before every segment was done; rerun the same command to resume",
                ))
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    result
}

fn progress_total(segments: &[SegmentRange]) -> usize {
    segments.last().map_or(0, |s| s.own_to)
}

// ---------------------------------------------------------------------------------------------
// Worker side.

/// `upscale --worker-job DIR`: computes segments of the parallel job in DIR until every one is done.
pub fn worker_main(args: &UpscaleArgs) -> ExitCode {
    match work(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, Failure::Interrupted) {
                eprintln!("flashvsr: worker error: {e}");
            }
            e.exit_code()
        }
    }
}

fn work(args: &UpscaleArgs) -> Outcome<()> {
    let reporter = Reporter::new(args)?;
    interrupt::install(reporter.notice());
    // A worker started by a parent stops (releasing its lease) when the parent dies.
    let parent = std::os::unix::process::parent_id();
    if std::env::var_os("FLASHVSR_WORKER").is_some() {
        let _ = PARENT.set(parent);
    }
    let root = args.worker_job.clone().expect("worker mode");
    let store = JobStore::open_existing(&root)?;
    let plan_path = root.join("plan.json");
    let plan: Value = std::fs::read(&plan_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Failure::bad(format!("{}: not a job plan", plan_path.display())))?;
    if plan["segmenting"]["mode"] != "parallel" {
        return Err(Failure::bad(format!(
            "{}: not a parallel job",
            root.display()
        )));
    }
    let segments: Vec<SegmentRange> = serde_json::from_value(plan["segments"].clone())
        .map_err(|e| Failure::bad(format!("{}: {e}", plan_path.display())))?;
    let total = plan["frames"].as_u64().unwrap_or(0) as usize;
    let mut args = args.clone();
    if let Some(p) = plan["input"]["path"].as_str() {
        args.input = PathBuf::from(p);
    }
    if let Some(p) = plan["output"]["path"].as_str() {
        args.output = PathBuf::from(p);
    }
    let index: usize = std::env::var("FLASHVSR_WORKER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let worker_id = format!("{}/w{index}", std::process::id());
    let status_path = root.join("workers").join(format!("w{index}.json"));
    let _ = std::fs::create_dir_all(root.join("workers"));

    let mut ctx = Context::new(&reporter);
    let backend = ctx.backend(&args)?;
    ctx.load_models(&args)?;
    let info = open_source(&args.input)?.info().clone();
    let plan_size = SizePlan::new(
        (info.width, info.height),
        args.scale as usize,
        args.crop_to_128,
    )?;
    let (width, height) = plan_size.model;
    let models = ctx.models_mut().expect("loaded above");
    set_vae_tiling(models, &args, height, width);
    let models = &*models;
    let stage = make_stage(&args, &info, plan_size);
    let direct = job_run::writes_directly(&stage)
        .then(|| allocated_output(&store, &stage, total))
        .transpose()?;
    let crash_at: Option<usize> = std::env::var("FLASHVSR_TEST_CRASH_SEGMENT")
        .ok()
        .and_then(|v| v.parse().ok());

    loop {
        check_stop()?;
        if segments.iter().all(|s| store.is_done(s.k)) {
            return Ok(());
        }
        let mut took = false;
        for (n, seg) in segments.iter().enumerate() {
            if store.is_done(seg.k) {
                continue;
            }
            let Some(mut lease) = store.try_acquire(seg.k, &worker_id, LEASE_TTL_MS)? else {
                continue;
            };
            took = true;
            let tail = segments.get(n + 1).map_or(0, |s| s.pre_roll());
            // The segment's stream starts at read_from (a multiple of 8): its latents are the
            // video's from read_from / 4 on (with a margin for the frames read past own_to).
            let noise_window = Some((seg.read_from / 4, (seg.own_to - seg.read_from) / 4 + 24));
            let job = SegmentJob {
                args: &args,
                stage: &stage,
                store: &store,
                seg: *seg,
                tail,
                total,
                direct: direct.as_ref(),
                status_path: &status_path,
                crash: crash_at == Some(seg.k),
            };
            let result = job.compute(
                &mut || {
                    make_engine(
                        &args,
                        models,
                        &backend,
                        &reporter,
                        height,
                        width,
                        false,
                        noise_window,
                    )
                },
                &mut lease,
            );
            let _ = store.release(lease);
            result?;
            break;
        }
        if !took {
            // Everything left is leased by live workers: wait for commits or expired leases.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

struct SegmentJob<'a> {
    args: &'a UpscaleArgs,
    stage: &'a Stage,
    store: &'a JobStore,
    seg: SegmentRange,
    /// Own frames at the end cross-faded with the next segment (0 for the last).
    tail: usize,
    total: usize,
    /// The y4m output the own frames go straight into, instead of the segment's folder.
    direct: Option<&'a AllocatedY4m>,
    status_path: &'a Path,
    /// Test hook: abort the process once in this segment (FLASHVSR_TEST_CRASH_SEGMENT).
    crash: bool,
}

impl SegmentJob<'_> {
    /// Computes and commits the segment; abandons it (Ok) when the lease was taken over.
    fn compute<'m>(
        &self,
        engine: &mut dyn FnMut() -> Outcome<Box<dyn flashvsr_model::stream::FrameStream + 'm>>,
        lease: &mut HeldLease,
    ) -> Outcome<()> {
        let slot = self.store.slot(self.seg.k);
        let blend = blend_path(&slot.data);
        let pts_path = job_run::timestamps_path(&slot.data);
        let cleanup = || {
            let _ = std::fs::remove_dir_all(&slot.data);
            let _ = std::fs::remove_dir_all(&blend);
            let _ = std::fs::remove_file(&pts_path);
        };
        match self.compute_into(&slot.data, &blend, &pts_path, engine, lease) {
            Ok(Some(started)) => {
                let secs = started.elapsed().as_secs_f64();
                let won = self.store.commit(
                    &slot,
                    self.seg.emit_from,
                    self.seg.emitted(),
                    false,
                    secs,
                )?;
                if !won {
                    cleanup();
                }
                Ok(())
            }
            Ok(None) => {
                cleanup();
                Ok(())
            }
            Err(e) => {
                cleanup();
                Err(e)
            }
        }
    }

    fn write_status(&self, done: usize) {
        let v =
            json!({"segment": self.seg.k, "done": done, "of": self.seg.own_to - self.seg.own_from});
        let tmp = self.status_path.with_extension("tmp");
        if std::fs::write(&tmp, v.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, self.status_path);
        }
    }

    /// Returns the start time, or None when the lease was lost.
    fn compute_into<'m>(
        &self,
        data: &Path,
        blend: &Path,
        pts_path: &Path,
        engine: &mut dyn FnMut() -> Outcome<Box<dyn flashvsr_model::stream::FrameStream + 'm>>,
        lease: &mut HeldLease,
    ) -> Outcome<Option<Instant>> {
        let started = Instant::now();
        let seg = self.seg;
        let stage = self.stage;
        self.store.log(&format!("start {}", seg.k))?;
        self.write_status(0);
        let format = job_run::segment_format(stage.depth);
        let opts = flashvsr_media::SinkOptions::default();
        // As in one stream: LQ frames prepared ahead, colour fix and encoding on the host pool
        // behind a writer thread, so the worker's device is not left waiting for the host.
        let mut sink = WriteBehind::new(match self.direct {
            Some(output) => output.writer(seg.own_from)?,
            None => create_sink(data, format, &opts)?,
        });
        let joins = seg.pre_roll() + self.tail;
        // Join frames are encoded (16-bit PNG) behind the engine too: a segment has 2X of them.
        let mut blend_sink: Option<WriteBehind> = if joins > 0 {
            Some(WriteBehind::new(create_sink(
                blend,
                OutputFormat::Png16,
                &opts,
            )?))
        } else {
            None
        };
        let mut engine = engine()?;
        let mut source = open_source(&self.args.input)?;
        let mut input = stage.input(source.as_mut(), Some(self.total));
        let short_input = |at: usize| {
            Failure::bad(format!(
                "{}: the input ended at frame {at}, the plan has {}",
                self.args.input.display(),
                self.total
            ))
        };
        for i in 0..seg.read_from {
            if input.skip()?.is_none() {
                return Err(short_input(i));
            }
        }
        let mut timestamps: Vec<Option<Timestamp>> = Vec::with_capacity(seg.emitted());
        let mut next_out = seg.emit_from;
        let mut global = seg.read_from;
        let mut renewed = Instant::now();
        let mut last_status = Instant::now();
        while next_out < seg.own_to {
            check_stop()?;
            let outputs = if global < self.total {
                let frame = input.next()?.ok_or_else(|| short_input(global))?;
                if (seg.emit_from..seg.own_to).contains(&global) {
                    timestamps.push(frame.at);
                }
                global += 1;
                stage.push(engine.as_mut(), frame.lq)?
            } else {
                let outs = stage.finish(engine.as_mut(), global - seg.read_from)?;
                if outs.is_empty() {
                    return Err(Failure::failed(format!(
                        "segment {}: the stream ended before frame {next_out}",
                        seg.k
                    )));
                }
                outs
            };
            for out in outputs {
                let g = seg.read_from + out.index;
                if g < seg.emit_from || g >= seg.own_to {
                    continue;
                }
                if g != next_out {
                    return Err(Failure::failed(format!(
                        "segment {}: frame {g} came out where {next_out} was expected",
                        seg.k
                    )));
                }
                let in_join = g < seg.own_from || g >= seg.own_to - self.tail;
                match (in_join, blend_sink.as_mut()) {
                    // The few join frames also go to the blend file in 16 bits: finished here.
                    // An output written directly gets them only cross-faded, from the parent:
                    // a worker that lost its lease may still be writing its own frames.
                    // An output written directly needs only the 16-bit frame: finished on the
                    // host pool like any other.
                    (true, Some(b)) if self.direct.is_some() && stage.overlap_host_work => {
                        b.write_job(stage.finishing(out, Depth::Sixteen), None)?;
                    }
                    (true, Some(b)) => {
                        let pixels = out.finish()?;
                        let (model, output) = (stage.plan.model, stage.plan.output);
                        if self.direct.is_none() {
                            sink.write_owned(to_frame(&pixels, model, output, stage.depth), None)?;
                        }
                        b.write_owned(to_frame(&pixels, model, output, Depth::Sixteen), None)?;
                    }
                    _ => stage.write(&mut sink, out, None)?,
                }
                next_out += 1;
            }
            if self.crash && next_out > seg.own_from {
                let flag = self.store.root().join(format!("test-crashed-{}", seg.k));
                if std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(flag)
                    .is_ok()
                {
                    std::process::abort();
                }
            }
            if renewed.elapsed() >= RENEW_EVERY {
                renewed = Instant::now();
                if !self.store.renew(lease)? {
                    return Ok(None);
                }
            }
            if last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                self.write_status(next_out.saturating_sub(seg.own_from));
            }
        }
        // Durable before the done marker is committed: the frames a rerun trusts in an output
        // written directly are the committed segments'.
        Box::new(sink).finish()?;
        if let Some(b) = blend_sink {
            Box::new(b).finish()?;
        }
        let pts: Vec<Option<[i64; 3]>> = timestamps
            .iter()
            .map(|t| t.map(|t| [t.pts, t.time_base.0 as i64, t.time_base.1 as i64]))
            .collect();
        std::fs::write(pts_path, serde_json::to_vec(&pts).unwrap_or_default())
            .map_err(|e| Failure::failed(format!("{}: {e}", pts_path.display())))?;
        self.write_status(seg.own_to - seg.own_from);
        Ok(Some(started))
    }
}

/// The segment table of an existing parallel job store, if there is one.
fn stored_segments(root: &Path) -> Option<Vec<SegmentRange>> {
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("plan.json")).ok()?).ok()?;
    if plan["segmenting"]["mode"] != "parallel" {
        return None;
    }
    serde_json::from_value(plan["segments"].clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse() {
        assert_eq!(parse_devices("cpu:3"), Ok(Devices::Cpu(3)));
        assert_eq!(parse_devices("0,2"), Ok(Devices::Gpus(vec![0, 2])));
        assert_eq!(parse_devices("0-3"), Ok(Devices::Gpus(vec![0, 1, 2, 3])));
        assert_eq!(parse_devices("1,4-5"), Ok(Devices::Gpus(vec![1, 4, 5])));
        assert!(parse_devices("cpu:0").is_err());
        assert!(parse_devices("3-1").is_err());
        assert!(parse_devices("0,0").is_err());
        assert!(parse_devices("gpu").is_err());
    }
}

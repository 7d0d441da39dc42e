//! One-stream jobs (SCALEOUT.md §2): the video runs as one stream; at each segment boundary the
//! segment's frames and a stream checkpoint are committed to the job store. A rerun of the same
//! command restores the newest checkpoint and continues, so its output is byte-identical to an
//! uninterrupted run's. The final output is assembled from the committed segments as they come.

use std::time::Instant;

use flashvsr_job::{fingerprint_path, JobError, JobStore, SegmentSlot};
use flashvsr_media::{
    create_indexed_y4m, create_sink, cut_indexed_y4m, publish_file, FrameSink, FrameSource,
    OutputFormat, SinkOptions, Timestamp,
};
use flashvsr_model::pipeline::OutputFrame;
use flashvsr_model::state_io::StateWriter;
use flashvsr_model::stream::FrameStream;
use serde_json::json;

use crate::args::UpscaleArgs;
use crate::assembler::Assembler;
use crate::behind::Behind;
use crate::failure::{Failure, Outcome};
use crate::frames_out::Depth;
use crate::pipelined::WriteBehind;
use crate::progress::Progress;
use crate::stage_clock::timed;
use crate::upscale::{PendingTimestamps, Stage};

impl From<JobError> for Failure {
    fn from(e: JobError) -> Self {
        match e {
            JobError::PlanMismatch { .. } | JobError::Invalid { .. } => Failure::bad(e),
            JobError::Io { .. } => Failure::failed(e),
        }
    }
}

/// The job's identity: everything that changes the output bytes.
pub(crate) fn plan(
    args: &UpscaleArgs,
    stage: &Stage,
    models: &[(String, String)],
) -> Outcome<serde_json::Value> {
    let input = fingerprint_path(&args.input)
        .map_err(|e| Failure::bad(format!("{}: {e}", args.input.display())))?;
    let noise = match &args.noise {
        Some(p) => {
            Some(fingerprint_path(p).map_err(|e| Failure::bad(format!("{}: {e}", p.display())))?)
        }
        None => None,
    };
    Ok(json!({
        "flashvsr_version": env!("CARGO_PKG_VERSION"),
        "input": { "path": args.input.display().to_string(), "fingerprint": input },
        "models": models,
        "options": {
            "mode": format!("{:?}", args.mode), "model_ver": format!("{:?}", args.files.model_ver),
            "scale": args.scale, "attention": format!("{:?}", args.attention),
            "sparse_ratio": args.sparse_ratio, "kv_ratio": args.kv_ratio, "local_range": args.local_range,
            "seed": args.seed, "color_fix": format!("{:?}", args.color_fix), "resize": format!("{:?}", args.resize),
            "crop_to_128": args.crop_to_128, "tiled_vae": format!("{:?}", args.tiled_vae), "noise": noise,
            "tile_size": args.tile_size, "tile_overlap": args.tile_overlap, "max_vram": args.max_vram,
            "device": args.device, "precision": format!("{:?}", args.precision), "max_frames": args.max_frames,
        },
        "output": { "format": format!("{:?}", stage.format), "depth": format!("{:?}", stage.depth),
                    "size": [stage.plan.output.0, stage.plan.output.1] },
        "segmenting": { "mode": "stream", "segment_frames": args.segment_frames,
                        "written": if writes_directly(stage) { "into the output" } else { "png segments" } },
    }))
}

/// A segment being computed: its frames go to a PNG folder in the store (finished and encoded
/// behind the engine).
struct OpenSegment {
    slot: SegmentSlot,
    sink: WriteBehind,
    emit_from: usize,
    frames: usize,
    started: Instant,
    /// Presentation times of the frames, saved beside the data for the final mux.
    timestamps: Vec<Option<Timestamp>>,
}

/// `<segment data>.pts.json`: `[pts, time_base_num, time_base_den]` or null per frame.
pub(crate) fn timestamps_path(data: &std::path::Path) -> std::path::PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".pts.json");
    data.with_file_name(name)
}

/// The presentation times stored beside a segment's data (none where there are none).
pub(crate) fn stored_timestamps(data: &std::path::Path) -> Vec<Option<Timestamp>> {
    let stored: Vec<Option<[i64; 3]>> = std::fs::read(timestamps_path(data))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    stored
        .into_iter()
        .map(|t| {
            t.map(|[pts, num, den]| Timestamp {
                pts,
                time_base: (num as i32, den as i32),
            })
        })
        .collect()
}

/// y4m outputs (fixed-size frames) are written by each segment straight into the output file,
/// which waits in the store for the end: no PNG segments to write, read back and copy (they were
/// half of a long job's disk traffic). Other outputs are assembled from PNG segments.
pub(crate) fn writes_directly(stage: &Stage) -> bool {
    stage.format == OutputFormat::Y4m
}

/// The image format of a job's segments: PNG of the output's depth.
pub(crate) fn segment_format(depth: Depth) -> OutputFormat {
    match depth {
        Depth::Eight => OutputFormat::Png,
        Depth::Sixteen => OutputFormat::Png16,
    }
}

/// The output file of a job that writes directly, until it is published.
pub(crate) fn direct_output_path(store: &JobStore) -> std::path::PathBuf {
    store.root().join("output.y4m")
}

fn open_segment(
    store: &JobStore,
    segment: usize,
    emit_from: usize,
    stage: &Stage,
) -> Outcome<OpenSegment> {
    let slot = store.slot(segment);
    let inner = if writes_directly(stage) {
        create_indexed_y4m(&direct_output_path(store), emit_from, &stage.sink_options)?
    } else {
        create_sink(
            &slot.data,
            segment_format(stage.depth),
            &SinkOptions::default(),
        )?
    };
    let sink = WriteBehind::new(inner);
    store.log(&format!("start {segment}"))?;
    Ok(OpenSegment {
        slot,
        sink,
        emit_from,
        frames: 0,
        started: Instant::now(),
        timestamps: Vec::new(),
    })
}

/// Hands a full segment to the committer: the stream's checkpoint is copied to host memory here,
/// written to disk behind the stream.
fn commit(
    committer: &mut Committer,
    seg: OpenSegment,
    engine: Option<&dyn FrameStream>,
) -> Outcome<()> {
    let state = engine.map(|e| e.checkpoint()).transpose()?;
    committer.commit(seg, state)
}

/// Commits a segment: its frames flushed, its times and checkpoint written, its done marker
/// (after both are durable), then queued for the output.
fn commit_now(
    store: &JobStore,
    seg: OpenSegment,
    state: Option<StateWriter>,
    output: &mut JobOutput,
) -> Outcome<()> {
    Box::new(seg.sink).finish()?;
    let pts: Vec<Option<[i64; 3]>> = seg
        .timestamps
        .iter()
        .map(|t| t.map(|t| [t.pts, t.time_base.0 as i64, t.time_base.1 as i64]))
        .collect();
    let pts_path = timestamps_path(&seg.slot.data);
    std::fs::write(&pts_path, serde_json::to_vec(&pts).unwrap_or_default())
        .map_err(|e| Failure::failed(format!("{}: {e}", pts_path.display())))?;
    let with_state = state.is_some();
    if let Some(state) = state {
        state.write(&seg.slot.state)?;
    }
    let secs = seg.started.elapsed().as_secs_f64();
    store.commit(&seg.slot, seg.emit_from, seg.frames, with_state, secs)?;
    let marker = store
        .done()?
        .into_iter()
        .find(|m| m.segment == seg.slot.segment)
        .ok_or_else(|| {
            Failure::failed(format!("segment {} was not committed", seg.slot.segment))
        })?;
    output.add(store, &marker)
}

/// Where committed segments go: copied into the output as they come, or (written directly)
/// counted until the output file is published.
enum JobOutput {
    Assembled(Assembler),
    Direct {
        file: std::path::PathBuf,
        target: std::path::PathBuf,
        overwrite: bool,
        frames: usize,
    },
}

impl JobOutput {
    fn add(&mut self, store: &JobStore, marker: &flashvsr_job::DoneMarker) -> Outcome<()> {
        match self {
            JobOutput::Assembled(a) => a.add(store, marker),
            JobOutput::Direct { frames, file, .. } => {
                if marker.emit_from != *frames {
                    return Err(Failure::failed(format!(
                        "{}: segment {} starts at frame {}, the output holds {frames}; rerun with \
                         --restart",
                        file.display(),
                        marker.segment,
                        marker.emit_from
                    )));
                }
                *frames += marker.frames;
                Ok(())
            }
        }
    }

    /// The output under its final name; its frame count.
    fn finish(self) -> Outcome<usize> {
        match self {
            JobOutput::Assembled(a) => a.finish(),
            JobOutput::Direct {
                file,
                target,
                overwrite,
                frames,
            } => {
                // Only now, with every segment finished: a segment cutting the file at its own
                // end could cut frames the next one had already written.
                cut_indexed_y4m(&file, frames)?;
                publish_file(&file, &target, overwrite)?;
                Ok(frames)
            }
        }
    }
}

enum CommitMessage {
    Segment(Box<(OpenSegment, Option<StateWriter>)>),
    /// The last segment was sent: finish the output.
    Finish,
}

/// Segments committed on a thread of their own, in order, while the stream goes on: a checkpoint
/// of a large canvas is gigabytes, and writing it made the stream wait. The engine only waits for
/// the copy to host memory, and for the previous commit when it is still being written (at most
/// one checkpoint waits in host memory). Dropped early, the commits already queued complete (a
/// rerun resumes from them) and nothing is published.
struct Committer(Behind<CommitMessage>);

impl Committer {
    fn new(store: JobStore, mut output: JobOutput) -> Committer {
        Committer(Behind::spawn("committing segments", 1, move |rx| {
            for message in rx {
                match message {
                    CommitMessage::Segment(commit) => {
                        let (seg, state) = *commit;
                        commit_now(&store, seg, state, &mut output)?
                    }
                    CommitMessage::Finish => return output.finish(),
                }
            }
            Err(Failure::Interrupted)
        }))
    }

    fn commit(&mut self, seg: OpenSegment, state: Option<StateWriter>) -> Outcome<()> {
        self.0.send(CommitMessage::Segment(Box::new((seg, state))))
    }

    /// Waits for every commit and the output; returns the frames written.
    fn finish(mut self) -> Outcome<usize> {
        self.0.send(CommitMessage::Finish)?;
        self.0.join()
    }
}

pub fn run(
    args: &UpscaleArgs,
    stage: &Stage,
    engine: &mut dyn FrameStream,
    source: &mut dyn FrameSource,
    progress: &mut Progress,
    models: &[(String, String)],
) -> Outcome<usize> {
    let root = JobStore::path_for_output(&args.output);
    if args.output.exists() && !args.overwrite {
        return Err(Failure::bad(format!(
            "{}: output already exists (pass --overwrite to replace it)",
            args.output.display()
        )));
    }
    if args.restart && root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| Failure::failed(format!("{}: {e}", root.display())))?;
    }
    let store = JobStore::open_or_create(&root, &plan(args, stage, models)?)?;
    // A damaged store is reported, never discarded.
    let committed = store.done()?.len();
    let result = run_in_store(args, stage, engine, source, progress, &store);
    // A failed job keeps its store only where a rerun of the same command can resume from it;
    // otherwise the store would be left behind as partial output.
    let discard = match &result {
        // Bad input or options (a stream damaged mid-file, an unusable pixel format): a rerun
        // fails the same way.
        Err(Failure::BadInput(_)) => true,
        // A full disk, a device error: resumable once a segment is committed.
        Err(Failure::Failed(_)) => store.done().map_or(committed == 0, |d| d.is_empty()),
        // Done, or interrupted (always resumable).
        _ => false,
    };
    if discard {
        let _ = store.remove();
        return result;
    }
    if let Err(Failure::Failed(m)) = result {
        return Err(Failure::failed(format!(
            "{m} (the computed segments are kept in {}: rerun the same command to resume)",
            store.root().display()
        )));
    }
    let written = result?;
    if !args.keep_job {
        store.remove()?;
    }
    Ok(written)
}

fn run_in_store(
    args: &UpscaleArgs,
    stage: &Stage,
    engine: &mut dyn FrameStream,
    source: &mut dyn FrameSource,
    progress: &mut Progress,
    store: &JobStore,
) -> Outcome<usize> {
    let done = store.done()?;
    let finished = done.last().is_some_and(|m| m.state.is_none());
    // Committed segments are copied into the output while the stream goes on, or were written
    // into it directly.
    let mut output = if writes_directly(stage) {
        JobOutput::Direct {
            file: direct_output_path(store),
            target: args.output.clone(),
            overwrite: args.overwrite,
            frames: 0,
        }
    } else {
        JobOutput::Assembled(Assembler::new(
            create_sink(&args.output, stage.format, &stage.sink_options)?,
            stage.format == segment_format(stage.depth),
        ))
    };
    for marker in &done {
        output.add(store, marker)?;
    }
    let mut committer = Committer::new(store.clone(), output);
    let mut emitted: usize = done.iter().map(|m| m.frames).sum();
    progress.skip(emitted);
    if !finished {
        if let Some(state) = done.last().and_then(|m| m.state.as_deref()) {
            engine.restore_checkpoint(&store.path(state))?;
            progress.reporter().info(&format!(
                "resuming {} after {} committed segment(s), {emitted} frames done",
                store.root().display(),
                done.len()
            ));
        }
        compute(
            args,
            stage,
            engine,
            source,
            store,
            done.len(),
            &mut emitted,
            progress,
            &mut committer,
        )?;
    }
    // What is left of the commits and the assembly counts as the write stage.
    timed(&stage.clock.write, || committer.finish())
}

#[allow(clippy::too_many_arguments)]
fn compute(
    args: &UpscaleArgs,
    stage: &Stage,
    engine: &mut dyn FrameStream,
    source: &mut dyn FrameSource,
    store: &JobStore,
    first_segment: usize,
    emitted: &mut usize,
    progress: &mut Progress,
    committer: &mut Committer,
) -> Outcome<()> {
    let mut pts = PendingTimestamps::default();
    let mut input = stage.input(source, args.max_frames);
    let mut received = 0;
    while received < engine.frames_received() {
        let Some(at) = input.skip()? else {
            return Err(Failure::bad(format!(
                "{}: the input is shorter than the job store says was already read",
                args.input.display()
            )));
        };
        // Frames read before the checkpoint whose outputs are still to come keep their times.
        if received >= *emitted {
            pts.push(at);
        }
        received += 1;
    }
    let segment_frames = args.segment_frames as usize;
    let mut segment = first_segment;
    let mut open = open_segment(store, segment, *emitted, stage)?;
    let mut write = |frames: Vec<OutputFrame>,
                     open: &mut OpenSegment,
                     emitted: &mut usize,
                     pts: &mut PendingTimestamps| {
        for f in frames {
            stage.write(&mut open.sink, f, None)?;
            open.timestamps.push(pts.next());
            open.frames += 1;
            *emitted += 1;
            progress.frame_done();
        }
        Outcome::Ok(())
    };
    while let Some(frame) = input.next()? {
        received += 1;
        pts.push(frame.at);
        write(stage.push(engine, frame.lq)?, &mut open, emitted, &mut pts)?;
        if open.frames >= segment_frames {
            commit(committer, open, Some(&*engine))?;
            segment += 1;
            open = open_segment(store, segment, *emitted, stage)?;
        }
    }
    if received == 0 {
        return Err(Failure::bad(format!(
            "{}: no frames to upscale",
            args.input.display()
        )));
    }
    write(
        stage.finish(engine, received)?,
        &mut open,
        emitted,
        &mut pts,
    )?;
    commit(committer, open, None)
}

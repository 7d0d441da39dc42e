//! The output of a parallel job, made from its committed segments while the workers still run:
//! assembling it only after the last worker was the job's serial tail (about 20 s of a 54 s job on
//! 2 GPUs). A y4m output already holds the frames the workers wrote into it, and only its joins
//! are cross-faded in, each as soon as both its segments are done. Any other output takes each
//! segment, in order, as soon as it and every segment before it are done, so at most the last
//! segment is left when the workers end. Both run on a thread of their own, fed by the workers'
//! supervisor, and publish the output only at [`JoinedOutput::finish`].

use std::path::{Path, PathBuf};

use flashvsr_job::{DoneMarker, JobStore, SegmentRange};
use flashvsr_media::{
    create_sink, open_source, publish_file, AllocatedY4m, Frame, FrameSink, FrameSource,
};

use crate::assembler::segment_files;
use crate::behind::Behind;
use crate::failure::{Failure, Outcome};
use crate::frames_out::Depth;
use crate::interrupt;
use crate::job_run;
use crate::pipelined::{ReadAhead, WriteBehind};
use crate::upscale::Stage;

/// `<segment data>.blend`: the segment's join frames in 16 bits (its pre-roll, then its tail).
pub(crate) fn blend_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".blend");
    data.with_file_name(name)
}

/// The y4m output of a job whose workers write their own frames straight into it.
pub(crate) fn allocated_output(
    store: &JobStore,
    stage: &Stage,
    total: usize,
) -> Outcome<AllocatedY4m> {
    let (width, height) = stage.plan.output;
    let bits = match stage.depth {
        Depth::Eight => 8,
        Depth::Sixteen => 16,
    };
    Ok(AllocatedY4m::open_or_create(
        &job_run::direct_output_path(store),
        (width, height, bits),
        total,
        &stage.sink_options,
    )?)
}

enum Event {
    /// Segment n (its index in the segment table) is committed.
    Committed(usize),
    /// Every segment is committed: complete and publish the output.
    Finish,
}

pub(crate) struct JoinedOutput {
    assembly: Behind<Event>,
    segments: Vec<SegmentRange>,
    reported: Vec<bool>,
}

impl JoinedOutput {
    /// Opens the output (a y4m output is made at its full length in the job store, for the
    /// workers to fill) before any worker starts.
    pub fn start(
        output: &Path,
        stage: &Stage,
        store: &JobStore,
        segments: &[SegmentRange],
        total: usize,
    ) -> Outcome<JoinedOutput> {
        let job = JobSegments {
            store: store.clone(),
            segments: segments.to_vec(),
            depth: stage.depth,
        };
        let mut joiner: Box<dyn Joiner> = if job_run::writes_directly(stage) {
            Box::new(FilledFile {
                file: allocated_output(store, stage, total)?,
                target: output.to_path_buf(),
                overwrite: stage.sink_options.overwrite,
                committed: vec![false; segments.len()],
                joined: vec![false; segments.len()],
                total,
                job,
            })
        } else {
            Box::new(InOrder {
                sink: WriteBehind::new(create_sink(output, stage.format, &stage.sink_options)?),
                // A PNG output of the segments' depth takes their frame files as they are.
                adopt: stage.format == job_run::segment_format(stage.depth),
                committed: vec![false; segments.len()],
                next: 0,
                written: 0,
                tail_before: Vec::new(),
                total,
                job,
            })
        };
        // Every event fits the queue: the supervisor never waits for the assembly.
        let assembly = Behind::spawn("the output assembly", segments.len() + 1, move |events| {
            for event in events {
                match event {
                    Event::Committed(n) => joiner.committed(n)?,
                    Event::Finish => return joiner.finish(),
                }
            }
            // The job stopped before its end: nothing is published.
            Err(Failure::Interrupted)
        });
        Ok(JoinedOutput {
            assembly,
            segments: segments.to_vec(),
            reported: vec![false; segments.len()],
        })
    }

    /// Hands the segments committed since the last call to the assembly.
    pub fn update(&mut self, store: &JobStore) -> Outcome<()> {
        for (n, seg) in self.segments.iter().enumerate() {
            if !self.reported[n] && store.is_done(seg.k) {
                self.reported[n] = true;
                self.assembly.send(Event::Committed(n))?;
            }
        }
        Ok(())
    }

    /// Waits for the assembly and publishes the output; returns its frame count.
    pub fn finish(mut self, store: &JobStore) -> Outcome<usize> {
        self.update(store)?;
        self.assembly.send(Event::Finish)?;
        self.assembly.join()
    }
}

/// What the assembly thread does with committed segments.
trait Joiner: Send {
    fn committed(&mut self, n: usize) -> Outcome<()>;
    /// Every segment was reported: completes the output and publishes it; its frame count.
    fn finish(self: Box<Self>) -> Outcome<usize>;
}

/// The committed segments of the job, as the assembly reads them.
struct JobSegments {
    store: JobStore,
    segments: Vec<SegmentRange>,
    depth: Depth,
}

impl JobSegments {
    /// The done marker of segment n, checked against the plan.
    fn marker(&self, n: usize) -> Outcome<DoneMarker> {
        let seg = &self.segments[n];
        let marker = self
            .store
            .done_any()?
            .into_iter()
            .find(|m| m.segment == seg.k)
            .ok_or_else(|| Failure::failed(format!("segment {} is not done", seg.k)))?;
        if marker.emit_from != seg.emit_from || marker.frames != seg.emitted() {
            return Err(Failure::failed(format!(
                "{}: segment {} does not match the plan; rerun with --restart",
                self.store.path(&marker.data).display(),
                seg.k
            )));
        }
        Ok(marker)
    }

    /// Own frames at the end of segment n that are cross-faded with the next one (0 for the last).
    fn tail(&self, n: usize) -> usize {
        self.segments.get(n + 1).map_or(0, |s| s.pre_roll())
    }

    /// Segment n's join frames (16-bit): its pre-roll and its tail.
    fn blend_frames(&self, n: usize, marker: &DoneMarker) -> Outcome<(Vec<Frame>, Vec<Frame>)> {
        let (pre, tail) = (self.segments[n].pre_roll(), self.tail(n));
        if pre + tail == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let path = blend_path(&self.store.path(&marker.data));
        let mut blend = open_source(&path)?;
        let mut frames = Vec::with_capacity(pre + tail);
        while let Some(f) = blend.next_frame()? {
            frames.push(f);
        }
        if frames.len() != pre + tail {
            return Err(Failure::failed(format!(
                "{}: segment {} has {} join frames, expected {}; rerun with --restart",
                path.display(),
                self.segments[n].k,
                frames.len(),
                pre + tail
            )));
        }
        let tail_frames = frames.split_off(pre);
        Ok((frames, tail_frames))
    }

    /// The frames of a join: the previous segment's tail cross-faded into this one's pre-roll,
    /// in float from both 16-bit frames, then quantised to the output depth.
    fn join(&self, n: usize, tail_before: &[Frame], pre_roll: &[Frame]) -> Outcome<Vec<Frame>> {
        if tail_before.len() != pre_roll.len() {
            return Err(Failure::failed(format!(
                "segment {}: {} pre-roll frames to cross-fade with {} of the previous segment",
                self.segments[n].k,
                pre_roll.len(),
                tail_before.len()
            )));
        }
        let steps = (pre_roll.len() + 1) as f32;
        Ok(tail_before
            .iter()
            .zip(pre_roll)
            .enumerate()
            .map(|(i, (a, b))| crossfade(a, b, (i + 1) as f32 / steps, self.depth))
            .collect())
    }
}

/// An output encoded in order (a video, or an image folder): segment k is added once segments
/// 0..=k are committed.
struct InOrder {
    job: JobSegments,
    sink: WriteBehind,
    /// The sink takes the segments' frame files as they are (no decoding).
    adopt: bool,
    committed: Vec<bool>,
    /// The next segment to add.
    next: usize,
    written: usize,
    /// The last segment added's tail frames (16-bit), for the next one's join.
    tail_before: Vec<Frame>,
    total: usize,
}

impl Joiner for InOrder {
    fn committed(&mut self, n: usize) -> Outcome<()> {
        self.committed[n] = true;
        while self.committed.get(self.next) == Some(&true) {
            self.add(self.next)?;
            self.next += 1;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Outcome<usize> {
        if let Some(seg) = self.job.segments.get(self.next) {
            return Err(Failure::failed(format!("segment {} is not done", seg.k)));
        }
        if self.written != self.total {
            return Err(Failure::failed(format!(
                "assembled {} frames, the plan has {}",
                self.written, self.total
            )));
        }
        Box::new(self.sink).finish()?;
        Ok(self.written)
    }
}

impl InOrder {
    /// Writes segment n's frames: its join with the previous segment, then its own frames up to
    /// its tail (which comes with the next segment's join).
    fn add(&mut self, n: usize) -> Outcome<()> {
        let seg = self.job.segments[n];
        let marker = self.job.marker(n)?;
        let path = self.job.store.path(&marker.data);
        let pts = job_run::stored_timestamps(&path);
        let (pre_roll, tail) = self.job.blend_frames(n, &marker)?;
        let mut joined = self.job.join(n, &self.tail_before, &pre_roll)?.into_iter();
        let own_end = seg.own_to - tail.len();
        let mut data = if self.adopt {
            SegmentFrames::Files(segment_files(&path)?.into_iter())
        } else {
            SegmentFrames::Decoded(Box::new(ReadAhead::new(open_source(&path)?)))
        };
        let mut count = 0;
        while let Some(frame) = data.next()? {
            interrupt::check()?;
            let g = seg.emit_from + count;
            let at = pts.get(count).copied().flatten();
            count += 1;
            if g >= own_end {
                continue; // written with the next segment's pre-roll
            }
            // Joins come from the blend frames of both sides, never from the data.
            match (g < seg.own_from, frame) {
                (true, _) => {
                    let mixed = joined.next().ok_or_else(|| {
                        Failure::failed(format!("segment {}: a join frame is missing", seg.k))
                    })?;
                    self.sink.write_owned(mixed, at)?;
                }
                (false, SegmentFrame::Decoded(frame)) => self.sink.write_owned(frame, at)?,
                (false, SegmentFrame::File(file)) => self.sink.write_file(file)?,
            }
            self.written += 1;
        }
        if count != marker.frames {
            return Err(Failure::failed(format!(
                "{}: segment {} holds {count} frames, its marker says {}; rerun with --restart",
                path.display(),
                seg.k,
                marker.frames
            )));
        }
        self.tail_before = tail;
        Ok(self.job.store.log(&format!("assembled {}", seg.k))?)
    }
}

/// A segment's frames as the assembly takes them: decoded, or as their files for an output that
/// takes them as they are.
enum SegmentFrames {
    Decoded(Box<ReadAhead>),
    Files(std::vec::IntoIter<PathBuf>),
}

enum SegmentFrame {
    Decoded(Frame),
    File(PathBuf),
}

impl SegmentFrames {
    fn next(&mut self) -> Outcome<Option<SegmentFrame>> {
        Ok(match self {
            SegmentFrames::Decoded(source) => source.next_frame()?.map(SegmentFrame::Decoded),
            SegmentFrames::Files(files) => files.next().map(SegmentFrame::File),
        })
    }
}

/// A y4m output in the job store that the workers filled with their own frames: only the joins
/// are written here, each once both its segments are committed.
struct FilledFile {
    job: JobSegments,
    file: AllocatedY4m,
    target: PathBuf,
    overwrite: bool,
    committed: Vec<bool>,
    /// Join n (before segment n) is in the file.
    joined: Vec<bool>,
    total: usize,
}

impl Joiner for FilledFile {
    fn committed(&mut self, n: usize) -> Outcome<()> {
        self.job.marker(n)?;
        self.committed[n] = true;
        for join in [n, n + 1] {
            let ready = join > 0
                && self.committed.get(join) == Some(&true)
                && self.committed[join - 1]
                && !self.joined[join];
            if ready {
                self.write_join(join)?;
                self.joined[join] = true;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Outcome<usize> {
        if let Some(n) = self.committed.iter().position(|&c| !c) {
            return Err(Failure::failed(format!(
                "segment {} is not done",
                self.job.segments[n].k
            )));
        }
        // Unwritten frames read as zeros: never publish them (a store whose output file was lost).
        self.file
            .check_filled()
            .map_err(|e| Failure::failed(format!("{e}; rerun with --restart")))?;
        publish_file(self.file.path(), &self.target, self.overwrite)?;
        Ok(self.total)
    }
}

impl FilledFile {
    fn write_join(&mut self, n: usize) -> Outcome<()> {
        let (_, tail_before) = self.job.blend_frames(n - 1, &self.job.marker(n - 1)?)?;
        let (pre_roll, _) = self.job.blend_frames(n, &self.job.marker(n)?)?;
        let frames = self.job.join(n, &tail_before, &pre_roll)?;
        let seg = self.job.segments[n];
        if !frames.is_empty() {
            let mut sink = self.file.writer(seg.emit_from)?;
            for frame in &frames {
                interrupt::check()?;
                sink.write_frame(frame)?;
            }
            sink.finish()?;
        }
        Ok(self.job.store.log(&format!("joined {}", seg.k))?)
    }
}

/// `(1 − w)·a + w·b` of two 16-bit frames, in float, quantised like the stream's output.
fn crossfade(a: &Frame, b: &Frame, w: f32, depth: Depth) -> Frame {
    let (width, height) = (b.width, b.height);
    let (a, b) = (a.to_u16_samples(), b.to_u16_samples());
    let mixed = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (1.0 - w) * x as f32 + w * y as f32);
    match depth {
        // The 8-bit conversion of frames_out, trunc((y + 1) · 127.5), with v = (y + 1) / 2 · 65535.
        Depth::Eight => Frame::from_u8(
            width,
            height,
            mixed
                .map(|v| (v * 255.0 / 65535.0).clamp(0.0, 255.0) as u8)
                .collect(),
        ),
        Depth::Sixteen => Frame::from_u16(
            width,
            height,
            mixed
                .map(|v| v.round().clamp(0.0, 65535.0) as u16)
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crossfade_moves_from_the_old_segment_to_the_new() {
        let a = Frame::from_u16(1, 1, vec![0, 0, 0]);
        let b = Frame::from_u16(1, 1, vec![65535, 65535, 65535]);
        let f = crossfade(&a, &b, 0.5, Depth::Sixteen);
        assert_eq!(f.to_u16_samples(), vec![32768; 3]);
        let f = crossfade(&a, &b, 1.0, Depth::Eight);
        assert_eq!(f.to_u8_samples(), vec![255; 3]);
    }
}

//! The final output of a one-stream job, assembled from its committed segments while the stream
//! goes on: each segment is copied into the output as soon as it is committed, on a thread of its
//! own, so only the last segment is left to copy when the stream ends (the copy of a whole long
//! video at the end was the job's serial tail). The output stays under its temporary name until
//! [`Assembler::finish`]; dropped before that, nothing is published.

use std::path::PathBuf;

use flashvsr_job::{DoneMarker, JobStore};
use flashvsr_media::{open_source, FrameSink, FrameSource};

use crate::behind::Behind;
use crate::failure::{Failure, Outcome};
use crate::interrupt;
use crate::job_run::stored_timestamps;
use crate::pipelined::{ReadAhead, WriteBehind};

/// A committed segment to copy: its data, where it starts in the output and how many frames.
struct Segment {
    index: usize,
    data: PathBuf,
    emit_from: usize,
    frames: usize,
}

enum Message {
    Segment(Segment),
    /// Every segment was sent: publish the output.
    Finish,
}

/// Committed segments queued beyond the one being copied (each is only a few paths).
const QUEUE: usize = 1024;

pub struct Assembler(Behind<Message>);

impl Assembler {
    /// `adopt_files`: the segments' frame files are what `sink` writes (PNG segments, PNG output
    /// of the same depth): they are linked into the output instead of decoded and encoded again.
    pub fn new(sink: Box<dyn FrameSink>, adopt_files: bool) -> Assembler {
        Assembler(Behind::spawn("the output assembly", QUEUE, move |rx| {
            let mut sink = WriteBehind::new(sink);
            let mut written = 0;
            for message in rx {
                match message {
                    Message::Segment(s) if adopt_files => written += adopt(&s, written, &mut sink)?,
                    Message::Segment(s) => written += copy(&s, written, &mut sink)?,
                    Message::Finish => {
                        Box::new(sink).finish()?;
                        return Ok(written);
                    }
                }
            }
            // The job stopped before its end: the sink is dropped unpublished.
            Err(Failure::Interrupted)
        }))
    }

    /// Queues a committed segment (segments must come in order).
    pub fn add(&mut self, store: &JobStore, marker: &DoneMarker) -> Outcome<()> {
        self.0.send(Message::Segment(Segment {
            index: marker.segment,
            data: store.path(&marker.data),
            emit_from: marker.emit_from,
            frames: marker.frames,
        }))
    }

    /// Waits for the last segments to be copied and publishes the output; returns its frames.
    pub fn finish(mut self) -> Outcome<usize> {
        self.0.send(Message::Finish)?;
        self.0.join()
    }
}

/// Hands one segment's frame files to `sink` in order, checked against its marker; returns its
/// frame count.
fn adopt(s: &Segment, written: usize, sink: &mut WriteBehind) -> Outcome<usize> {
    let files = segment_files(&s.data)?;
    check_segment(s, files.len(), written)?;
    for file in files {
        interrupt::check()?;
        sink.write_file(file)?;
    }
    Ok(s.frames)
}

/// The frame files of a segment's PNG folder, in frame order.
pub(crate) fn segment_files(dir: &std::path::Path) -> Outcome<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .and_then(|d| d.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
    files.retain(|f| f.extension().is_some_and(|e| e == "png"));
    // The segment sink numbers its frames with zero-padded indices: name order is frame order.
    files.sort();
    Ok(files)
}

fn check_segment(s: &Segment, count: usize, written: usize) -> Outcome<()> {
    if count != s.frames || s.emit_from != written {
        return Err(Failure::failed(format!(
            "{}: segment {} holds {count} frames from {written}, its marker says {} from {}; rerun \
             with --restart",
            s.data.display(),
            s.index,
            s.frames,
            s.emit_from
        )));
    }
    Ok(())
}

/// Copies one segment into `sink`, checking it against its marker; returns its frame count.
fn copy(s: &Segment, written: usize, sink: &mut WriteBehind) -> Outcome<usize> {
    let mut frames = ReadAhead::new(open_source(&s.data)?);
    let pts = stored_timestamps(&s.data);
    let mut count = 0;
    while let Some(frame) = frames.next_frame()? {
        interrupt::check()?;
        let at = pts.get(count).copied().flatten();
        sink.write_owned(frame, at)?;
        count += 1;
    }
    check_segment(s, count, written)?;
    Ok(count)
}

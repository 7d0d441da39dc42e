//! Decode, upscale and encode run concurrently: the source is read on a thread of its own and the
//! sink is written on another, each joined to the engine by a bounded queue, so a slow decoder or
//! encoder overlaps with the model and host memory stays bounded (QUEUE frames in, WRITE_QUEUE out). Frames
//! that still need host work (the engine's, before their colour fix) are finished on the host
//! pool, up to FINISH_AHEAD at once, and written in order.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use flashvsr_media::{Frame, FrameSink, FrameSource, MediaError, SourceInfo, Timestamp};

use crate::host_pool::{InOrder, Workers};

/// Frames waiting in each queue.
pub const QUEUE: usize = 8;

/// Frames waiting for the writer. The engine hands over a chunk's frames at once, before they are
/// copied from the device, and a full queue stops it from queueing the next chunk: with the
/// first chunk's 21 frames against 16 places, the GPU sat idle while the host finished frames.
/// Room for the first chunk and the next keeps the device fed; frames of a chunk share its one
/// host copy, so the room costs little memory.
const WRITE_QUEUE: usize = 24;

/// Frames being finished on the host pool at once, behind the write queue.
pub const FINISH_AHEAD: usize = 8;

/// Host work that produces a frame to write, or why it could not.
pub type FrameJob = Box<dyn FnOnce() -> Result<Frame, String> + Send>;

type Read = Result<Option<(Frame, Option<Timestamp>)>, MediaError>;

/// A source whose frames are decoded ahead on a reader thread.
pub struct ReadAhead {
    info: SourceInfo,
    frames: Receiver<Read>,
    current: Option<Timestamp>,
    done: bool,
    reader: Option<JoinHandle<()>>,
}

impl ReadAhead {
    pub fn new(mut source: Box<dyn FrameSource>) -> ReadAhead {
        let info = source.info().clone();
        let (tx, rx) = sync_channel::<Read>(QUEUE);
        let reader = std::thread::spawn(move || loop {
            let item = source
                .next_frame()
                .map(|f| f.map(|f| (f, source.timestamp())));
            let last = !matches!(item, Ok(Some(_)));
            // A closed queue means the consumer stopped (finished, failed or interrupted).
            if tx.send(item).is_err() || last {
                return;
            }
        });
        ReadAhead {
            info,
            frames: rx,
            current: None,
            done: false,
            reader: Some(reader),
        }
    }
}

impl FrameSource for ReadAhead {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, MediaError> {
        if self.done {
            return Ok(None);
        }
        match self.frames.recv() {
            Ok(Ok(Some((frame, at)))) => {
                self.current = at;
                Ok(Some(frame))
            }
            Ok(other) => {
                self.done = true;
                other.map(|_| None)
            }
            Err(_) => {
                self.done = true;
                Ok(None)
            }
        }
    }

    fn timestamp(&self) -> Option<Timestamp> {
        self.current
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Unblock a reader waiting on a full queue, then wait for it to let go of the source.
        let (_, empty) = sync_channel(0);
        drop(std::mem::replace(&mut self.frames, empty));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

enum Write {
    Frame(Frame, Option<Timestamp>),
    /// A frame already encoded as the sink writes them (see [`FrameSink::adopt_file`]).
    File(PathBuf),
    /// A frame to produce on the host pool first.
    Job(FrameJob, Option<Timestamp>),
    Finish,
}

/// A sink written on a writer thread. Errors come back at the next write or at `finish`;
/// dropped without `finish`, the inner sink is dropped too (its temporary output removed).
pub struct WriteBehind {
    queue: Option<SyncSender<Write>>,
    writer: Option<JoinHandle<Result<(), MediaError>>>,
}

impl WriteBehind {
    pub fn new(mut sink: Box<dyn FrameSink>) -> WriteBehind {
        let (tx, rx) = sync_channel::<Write>(WRITE_QUEUE);
        let writer = std::thread::spawn(move || {
            if write_in_order(rx, sink.as_mut())? {
                sink.finish()
            } else {
                Ok(())
            }
        });
        WriteBehind {
            queue: Some(tx),
            writer: Some(writer),
        }
    }

    /// Queues `job`'s frame: it runs on the host pool, and its frame is written in order.
    pub fn write_job(&mut self, job: FrameJob, at: Option<Timestamp>) -> Result<(), MediaError> {
        self.send(Write::Job(job, at))
    }

    /// Queues an already encoded frame file for the sink to take as it is.
    pub fn write_file(&mut self, file: PathBuf) -> Result<(), MediaError> {
        self.send(Write::File(file))
    }

    /// Queues a frame (without the copy `write_frame_at` makes).
    pub fn write_owned(&mut self, frame: Frame, at: Option<Timestamp>) -> Result<(), MediaError> {
        self.send(Write::Frame(frame, at))
    }

    fn send(&mut self, item: Write) -> Result<(), MediaError> {
        let sent = match &self.queue {
            Some(q) => q.send(item).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped early: report why.
            self.stopped()?;
            Err(MediaError::BadOutput {
                path: "<writer>".into(),
                detail: "the writer stopped".into(),
            })
        }
    }

    /// The writer's result once it has stopped (an error it hit, or Ok).
    fn stopped(&mut self) -> Result<(), MediaError> {
        self.queue = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(MediaError::BadOutput {
                path: "<writer>".into(),
                detail: "the writer thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl FrameSink for WriteBehind {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
        self.write_frame_at(frame, None)
    }

    fn write_frame_at(&mut self, frame: &Frame, at: Option<Timestamp>) -> Result<(), MediaError> {
        self.send(Write::Frame(frame.clone(), at))
    }

    fn finish(mut self: Box<Self>) -> Result<(), MediaError> {
        if let Some(q) = &self.queue {
            let _ = q.send(Write::Finish);
        }
        self.stopped()
    }
}

/// What the writer takes next, in order.
enum Ready {
    Frame(Frame),
    File(PathBuf),
}

/// The writer thread: frames are written in the order they were queued, jobs finished on the host
/// pool while earlier frames are written. True once `Finish` came; false when the producer went
/// away without it (the sink is then dropped, its partial output removed).
fn write_in_order(rx: Receiver<Write>, sink: &mut dyn FrameSink) -> Result<bool, MediaError> {
    let mut ahead: InOrder<Result<Ready, String>> = InOrder::on(Workers::Finish, true);
    let mut times: VecDeque<Option<Timestamp>> = VecDeque::new();
    let mut finishing = false;
    loop {
        // Take more work while there is room; otherwise (or with nothing queued) write the
        // oldest frame.
        let item = if finishing || ahead.len() >= FINISH_AHEAD {
            None
        } else if ahead.is_empty() {
            match rx.recv() {
                Ok(item) => Some(item),
                Err(_) => return Ok(false),
            }
        } else {
            match rx.try_recv() {
                Ok(item) => Some(item),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Ok(false),
            }
        };
        match item {
            Some(Write::Frame(frame, at)) => {
                ahead.ready(Ok(Ready::Frame(frame)));
                times.push_back(at);
            }
            Some(Write::File(file)) => {
                ahead.ready(Ok(Ready::File(file)));
                times.push_back(None);
            }
            Some(Write::Job(job, at)) => {
                ahead.submit(move || job().map(Ready::Frame));
                times.push_back(at);
            }
            Some(Write::Finish) => finishing = true,
            // A job's error and its panic alike.
            None => match ahead.next().map(|r| r.and_then(|ready| ready)) {
                Some(Ok(Ready::Frame(frame))) => {
                    sink.write_frame_at(&frame, times.pop_front().flatten())?
                }
                Some(Ok(Ready::File(file))) => {
                    times.pop_front();
                    if !sink.adopt_file(&file)? {
                        return Err(MediaError::BadOutput {
                            path: file,
                            detail: "this output cannot take encoded frame files".into(),
                        });
                    }
                }
                Some(Err(why)) => {
                    return Err(MediaError::BadOutput {
                        path: "<writer>".into(),
                        detail: format!("finishing a frame failed: {why}"),
                    })
                }
                None => return Ok(true),
            },
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// First sample and timestamp of each frame written.
    type Written = Arc<Mutex<Vec<(u8, Option<i64>)>>>;

    /// Records the frames written; fails at frame `fail_at`.
    struct Recording {
        written: Written,
        finished: Arc<Mutex<bool>>,
        fail_at: Option<usize>,
    }

    impl FrameSink for Recording {
        fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
            self.write_frame_at(frame, None)
        }
        fn write_frame_at(
            &mut self,
            frame: &Frame,
            at: Option<Timestamp>,
        ) -> Result<(), MediaError> {
            let mut w = self.written.lock().unwrap();
            if self.fail_at == Some(w.len()) {
                return Err(MediaError::BadOutput {
                    path: "out".into(),
                    detail: "disk full".into(),
                });
            }
            w.push((frame.to_u8_samples()[0], at.map(|t| t.pts)));
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), MediaError> {
            *self.finished.lock().unwrap() = true;
            Ok(())
        }
    }

    fn recording(fail_at: Option<usize>) -> (Recording, Written, Arc<Mutex<bool>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let finished = Arc::new(Mutex::new(false));
        let sink = Recording {
            written: written.clone(),
            finished: finished.clone(),
            fail_at,
        };
        (sink, written, finished)
    }

    fn at(pts: i64) -> Option<Timestamp> {
        Some(Timestamp {
            pts,
            time_base: (1, 25),
        })
    }

    #[test]
    fn jobs_and_ready_frames_are_written_in_queue_order() {
        let (sink, written, finished) = recording(None);
        let mut w = WriteBehind::new(Box::new(sink));
        for i in 0..30u8 {
            if i % 5 == 0 {
                w.write_frame_at(&Frame::from_u8(1, 1, vec![i, 0, 0]), at(i as i64))
                    .unwrap();
            } else {
                // Slower jobs first: they finish out of order.
                let job = move || {
                    std::thread::sleep(Duration::from_millis(u64::from(30 - i)));
                    Ok(Frame::from_u8(1, 1, vec![i, 0, 0]))
                };
                w.write_job(Box::new(job), at(i as i64)).unwrap();
            }
        }
        assert!(!*finished.lock().unwrap());
        Box::new(w).finish().unwrap();
        let expect: Vec<(u8, Option<i64>)> = (0..30).map(|i| (i, Some(i as i64))).collect();
        assert_eq!(*written.lock().unwrap(), expect);
        assert!(*finished.lock().unwrap());
    }

    #[test]
    fn a_sink_error_comes_back_and_a_dropped_writer_does_not_finish() {
        let (sink, written, finished) = recording(Some(3));
        let mut w = WriteBehind::new(Box::new(sink));
        let mut failed = false;
        for i in 0..40u8 {
            let job = move || Ok(Frame::from_u8(1, 1, vec![i, 0, 0]));
            if w.write_job(Box::new(job), None).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed || Box::new(w).finish().is_err());
        assert_eq!(written.lock().unwrap().len(), 3);
        assert!(!*finished.lock().unwrap());

        let (sink, _, finished) = recording(None);
        let mut w = WriteBehind::new(Box::new(sink));
        w.write_job(Box::new(|| Ok(Frame::from_u8(1, 1, vec![1, 2, 3]))), None)
            .unwrap();
        drop(w);
        assert!(!*finished.lock().unwrap());
    }
}

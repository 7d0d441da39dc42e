//! Decode, upscale and encode run concurrently: the source is read on a thread of its own and the
//! sink is written on another, each joined to the engine by a bounded queue, so a slow decoder or
//! encoder overlaps with the model and host memory stays bounded (QUEUE frames each way).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use flashvsr_media::{Frame, FrameSink, FrameSource, MediaError, SourceInfo, Timestamp};

/// Frames waiting in each queue.
pub const QUEUE: usize = 8;

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
        let (tx, rx) = sync_channel::<Write>(QUEUE);
        let writer = std::thread::spawn(move || {
            for item in rx {
                match item {
                    Write::Frame(frame, at) => sink.write_frame_at(&frame, at)?,
                    Write::Finish => return sink.finish(),
                }
            }
            Ok(())
        });
        WriteBehind {
            queue: Some(tx),
            writer: Some(writer),
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
        let sent = match &self.queue {
            Some(q) => q.send(Write::Frame(frame.clone(), at)).is_ok(),
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

    fn finish(mut self: Box<Self>) -> Result<(), MediaError> {
        if let Some(q) = &self.queue {
            let _ = q.send(Write::Finish);
        }
        self.stopped()
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.stopped();
    }
}

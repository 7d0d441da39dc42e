//! A y4m output written into a file that outlives the process, frame i at its own offset
//! (header + i · (tag + planes)): a resumable job appends each segment where the last committed
//! one ended, whatever a killed run left after it, and never copies its frames again. `finish`
//! makes the segment durable; [`crate::publish_file`] gives the file its final name at the end.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::writer::{frame_bytes, rate_and_aspect, stream_header, FRAME_TAG};
use crate::frame::{Frame, FrameSink};
use crate::MediaError;

pub(crate) struct Y4mAtIndex {
    file: File,
    path: PathBuf,
    fps: (u32, u32),
    aspect: (u32, u32),
    /// The index of the next frame written.
    next: usize,
    /// The stream header, once the first frame fixed (or checked) it.
    header: Option<String>,
    /// Where the frames written end.
    end: u64,
}

impl Y4mAtIndex {
    pub(crate) fn open(
        path: &Path,
        first_frame: usize,
        fps: Option<(u32, u32)>,
        aspect: Option<(u32, u32)>,
    ) -> Result<Self, MediaError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(first_frame == 0)
            .truncate(false)
            .open(path)
            .map_err(|e| MediaError::write(path, e))?;
        let (fps, aspect) = rate_and_aspect(fps, aspect);
        Ok(Y4mAtIndex {
            file,
            path: path.to_path_buf(),
            fps,
            aspect,
            next: first_frame,
            header: None,
            end: 0,
        })
    }

    /// The header frames like `frame` need: written at the start of a new file, or checked
    /// against the one a file continued after frame 0 already has.
    fn check_header(&mut self, frame: &Frame) -> Result<usize, MediaError> {
        let header = stream_header(frame, self.fps, self.aspect);
        match &self.header {
            Some(h) if *h == header => return Ok(h.len()),
            Some(_) => {
                return Err(MediaError::bad_output(
                    &self.path,
                    "a frame of another size or depth than the stream's",
                ))
            }
            None => {}
        }
        if self.next == 0 {
            self.file
                .write_all_at(header.as_bytes(), 0)
                .map_err(|e| MediaError::write(&self.path, e))?;
        } else {
            let mut found = vec![0u8; header.len()];
            let read = self.file.read_exact_at(&mut found, 0);
            if read.is_err() || found != header.as_bytes() {
                return Err(MediaError::bad_output(
                    &self.path,
                    "the partial output does not start with this stream's header",
                ));
            }
        }
        let len = header.len();
        self.header = Some(header);
        Ok(len)
    }
}

impl FrameSink for Y4mAtIndex {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
        if !frame.is_consistent() || frame.width == 0 || frame.height == 0 {
            return Err(MediaError::bad_output(
                &self.path,
                "frame data does not match its size and bit depth",
            ));
        }
        let header = self.check_header(frame)?;
        let planes = frame_bytes(frame);
        let stride = (FRAME_TAG.len() + planes.len()) as u64;
        let at = header as u64 + self.next as u64 * stride;
        let werr = |e| MediaError::write(&self.path, e);
        self.file.write_all_at(FRAME_TAG, at).map_err(werr)?;
        self.file
            .write_all_at(&planes, at + FRAME_TAG.len() as u64)
            .map_err(werr)?;
        self.next += 1;
        self.end = at + stride;
        Ok(())
    }

    /// Cuts whatever a killed run wrote past these frames and makes them durable.
    fn finish(self: Box<Self>) -> Result<(), MediaError> {
        if self.header.is_some() {
            let werr = |e| MediaError::write(&self.path, e);
            self.file.set_len(self.end).map_err(werr)?;
            self.file.sync_data().map_err(werr)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create_sink, OutputFormat, SinkOptions};

    fn frame(seed: u8) -> Frame {
        Frame::from_u8(
            5,
            3,
            (0..45).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect(),
        )
    }

    #[test]
    fn segments_written_at_their_frames_give_the_plain_stream_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial.y4m");
        let fps = Some((24, 1));
        let mut first = Box::new(Y4mAtIndex::open(&partial, 0, fps, None).unwrap());
        for k in 0..3 {
            first.write_frame(&frame(k)).unwrap();
        }
        first.finish().unwrap();
        // A run killed after writing frames 3 and 4 of a segment it never committed.
        let mut killed = Y4mAtIndex::open(&partial, 3, fps, None).unwrap();
        killed.write_frame(&frame(90)).unwrap();
        killed.write_frame(&frame(91)).unwrap();
        drop(killed);
        // The rerun writes that segment again, one frame shorter (the input ended).
        let mut again = Box::new(Y4mAtIndex::open(&partial, 3, fps, None).unwrap());
        again.write_frame(&frame(3)).unwrap();
        again.finish().unwrap();

        let plain = dir.path().join("plain.y4m");
        let options = SinkOptions {
            fps,
            ..SinkOptions::default()
        };
        let mut sink = create_sink(&plain, OutputFormat::Y4m, &options).unwrap();
        for k in 0..4 {
            sink.write_frame(&frame(k)).unwrap();
        }
        sink.finish().unwrap();
        assert_eq!(
            std::fs::read(&partial).unwrap(),
            std::fs::read(&plain).unwrap()
        );

        // A continuation refuses a file whose header is another stream's.
        let mut other = Y4mAtIndex::open(&partial, 4, Some((25, 1)), None).unwrap();
        assert!(other.write_frame(&frame(4)).is_err());
    }
}

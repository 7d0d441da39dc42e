//! A y4m output written into a file that outlives the process, frame i at its own offset
//! (header + i · (tag + planes)): a resumable job appends each segment where the last committed
//! one ended, whatever a killed run left after it, and never copies its frames again. `finish`
//! makes the segment durable; at the end, [`cut_indexed_y4m`] cuts the file after the job's last
//! frame (whatever a killed run wrote past it goes) and [`crate::publish_file`] gives it its final
//! name. A segment's writer never cuts: the next segment's writer may already have written past
//! it (segments are finished behind the stream), and a cut there lost those frames.
//!
//! [`AllocatedY4m`] is the same file for writers that run at once (the worker processes of a
//! parallel job): it is made at its full length up front, so every frame has its place before any
//! is written, and no writer ever changes the length under another.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::writer::{
    frame_bytes, frame_shape, frame_stride, rate_and_aspect, stream_header, FRAME_TAG,
};
use crate::frame::{Frame, FrameSink};
use crate::output::sibling;
use crate::{MediaError, SinkOptions};

/// How the file's length follows the frames written.
#[derive(Clone, Copy)]
enum Extent {
    /// It grows with the frames of its writers, one segment after another; [`cut_indexed_y4m`]
    /// gives it its final length.
    Grows,
    /// Allocated for the whole stream (this many bytes) and shared by several writers: frames
    /// must fall inside it, and nothing changes its length.
    Fixed(u64),
}

pub(crate) struct Y4mAtIndex {
    file: File,
    path: PathBuf,
    fps: (u32, u32),
    aspect: (u32, u32),
    extent: Extent,
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
        Self::open_as(path, first_frame, fps, aspect, Extent::Grows)
    }

    fn open_as(
        path: &Path,
        first_frame: usize,
        fps: Option<(u32, u32)>,
        aspect: Option<(u32, u32)>,
        extent: Extent,
    ) -> Result<Self, MediaError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(first_frame == 0 && matches!(extent, Extent::Grows))
            .truncate(false)
            .open(path)
            .map_err(|e| MediaError::write(path, e))?;
        let (fps, aspect) = rate_and_aspect(fps, aspect);
        Ok(Y4mAtIndex {
            file,
            path: path.to_path_buf(),
            fps,
            aspect,
            extent,
            next: first_frame,
            header: None,
            end: 0,
        })
    }

    /// The header frames like `frame` need: written at the start of a new file, or checked
    /// against the one the file already has (continued after frame 0, or allocated).
    fn check_header(&mut self, frame: &Frame) -> Result<usize, MediaError> {
        let header = stream_header(frame_shape(frame), self.fps, self.aspect);
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
        if self.next == 0 && matches!(self.extent, Extent::Grows) {
            self.file
                .write_all_at(header.as_bytes(), 0)
                .map_err(|e| MediaError::write(&self.path, e))?;
        } else if !starts_with(&self.file, &header) {
            return Err(MediaError::bad_output(
                &self.path,
                "the partial output does not start with this stream's header",
            ));
        }
        let len = header.len();
        self.header = Some(header);
        Ok(len)
    }
}

/// Whether `file` begins with `header`.
fn starts_with(file: &File, header: &str) -> bool {
    let mut found = vec![0u8; header.len()];
    file.read_exact_at(&mut found, 0).is_ok() && found == header.as_bytes()
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
        if let Extent::Fixed(len) = self.extent {
            if at + stride > len {
                return Err(MediaError::bad_output(
                    &self.path,
                    format!(
                        "frame {} lies past the end of the frames this output was made for",
                        self.next
                    ),
                ));
            }
        }
        let werr = |e| MediaError::write(&self.path, e);
        // The tag goes last: a frame whose tag is there was written whole (see `check_filled`).
        self.file
            .write_all_at(&planes, at + FRAME_TAG.len() as u64)
            .map_err(werr)?;
        self.file.write_all_at(FRAME_TAG, at).map_err(werr)?;
        self.next += 1;
        self.end = at + stride;
        Ok(())
    }

    /// Makes the frames durable.
    fn finish(self: Box<Self>) -> Result<(), MediaError> {
        if self.header.is_some() {
            self.file
                .sync_data()
                .map_err(|e| MediaError::write(&self.path, e))?;
        }
        Ok(())
    }
}

/// Cuts a y4m file written by [`crate::create_indexed_y4m`] writers after its first `frames`
/// frames, once every writer has finished: whatever a killed run wrote past them goes.
pub fn cut_indexed_y4m(path: &Path, frames: usize) -> Result<(), MediaError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| MediaError::write(path, e))?;
    let (header_len, shape) = written_header(&file, path)?;
    let len = header_len as u64 + frames as u64 * frame_stride(shape);
    let werr = |e| MediaError::write(path, e);
    file.set_len(len).map_err(werr)?;
    file.sync_data().map_err(werr)
}

/// The length of the stream header `stream_header` wrote at the start of `file`, and the frame
/// shape it gives.
fn written_header(file: &File, path: &Path) -> Result<(usize, (usize, usize, u8)), MediaError> {
    let mut start = [0u8; 256];
    let read = file
        .read_at(&mut start, 0)
        .map_err(|e| MediaError::read(path, e))?;
    let bad = || MediaError::bad_output(path, "not a y4m stream this program wrote");
    let end = start[..read]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(bad)?;
    let line = std::str::from_utf8(&start[..end]).map_err(|_| bad())?;
    let mut words = line.split(' ');
    if words.next() != Some("YUV4MPEG2") {
        return Err(bad());
    }
    let (mut width, mut height, mut depth) = (None, None, None);
    for word in words {
        match word.split_at_checked(1) {
            Some(("W", v)) => width = v.parse::<usize>().ok(),
            Some(("H", v)) => height = v.parse::<usize>().ok(),
            Some(("C", "444")) => depth = Some(8),
            Some(("C", "444p16")) => depth = Some(16),
            _ => {}
        }
    }
    match (width, height, depth) {
        (Some(w), Some(h), Some(d)) => Ok((end + 1, (w, h, d))),
        _ => Err(bad()),
    }
}

/// A y4m file made for a known number of frames of one size and depth, at its full length (the
/// frames not yet written read as zeros), which several processes fill at the frames' offsets in
/// any order. The same file is made once whoever asks first; a writer never truncates it.
pub struct AllocatedY4m {
    path: PathBuf,
    header: String,
    stride: u64,
    frames: usize,
    fps: Option<(u32, u32)>,
    aspect: Option<(u32, u32)>,
}

impl AllocatedY4m {
    /// The file at `path` for `frames` frames of `width`×`height` at `bit_depth` (8 or 16), made
    /// if absent (complete under a temporary name, then linked: never half made, and concurrent
    /// callers make one file), else checked to be that file.
    pub fn open_or_create(
        path: &Path,
        (width, height, bit_depth): (usize, usize, u8),
        frames: usize,
        options: &SinkOptions,
    ) -> Result<AllocatedY4m, MediaError> {
        let (fps, aspect) = rate_and_aspect(options.fps, options.pixel_aspect);
        let shape = (width, height, bit_depth);
        let file = AllocatedY4m {
            path: path.to_path_buf(),
            header: stream_header(shape, fps, aspect),
            stride: frame_stride(shape),
            frames,
            fps: options.fps,
            aspect: options.pixel_aspect,
        };
        match File::open(path) {
            Ok(existing) => file.check(&existing)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => file.create()?,
            Err(e) => return Err(MediaError::read(path, e)),
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.header.len() as u64 + self.frames as u64 * self.stride
    }

    fn create(&self) -> Result<(), MediaError> {
        let temp = sibling(&self.path, "allocating")?;
        let made = self.write_empty(&temp);
        let linked = made.and_then(|()| {
            std::fs::hard_link(&temp, &self.path).or_else(|e| match e.kind() {
                // Another process made it first: that one is the file.
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(MediaError::write(&self.path, e)),
            })
        });
        let _ = std::fs::remove_file(&temp);
        linked?;
        let existing = File::open(&self.path).map_err(|e| MediaError::read(&self.path, e))?;
        self.check(&existing)
    }

    /// The header and room for every frame, durable, at `temp`.
    fn write_empty(&self, temp: &Path) -> Result<(), MediaError> {
        let werr = |e| MediaError::write(temp, e);
        let file = File::create(temp).map_err(werr)?;
        file.write_all_at(self.header.as_bytes(), 0).map_err(werr)?;
        file.set_len(self.len()).map_err(werr)?;
        file.sync_all().map_err(werr)
    }

    fn check(&self, file: &File) -> Result<(), MediaError> {
        let len = file
            .metadata()
            .map_err(|e| MediaError::read(&self.path, e))?
            .len();
        if len != self.len() || !starts_with(file, &self.header) {
            return Err(MediaError::bad_output(
                &self.path,
                format!(
                    "not the output file of this job: expected {} frames after the header {:?}",
                    self.frames,
                    self.header.trim_end()
                ),
            ));
        }
        Ok(())
    }

    /// A sink writing frames `first_frame`, `first_frame + 1`, … into the file; its `finish`
    /// makes them durable.
    pub fn writer(&self, first_frame: usize) -> Result<Box<dyn FrameSink>, MediaError> {
        Ok(Box::new(Y4mAtIndex::open_as(
            &self.path,
            first_frame,
            self.fps,
            self.aspect,
            Extent::Fixed(self.len()),
        )?))
    }

    /// Checks that every frame was written: a frame whose place still lacks its tag never was
    /// (the tag is written after the planes).
    pub fn check_filled(&self) -> Result<(), MediaError> {
        let file = File::open(&self.path).map_err(|e| MediaError::read(&self.path, e))?;
        let mut tag = [0u8; FRAME_TAG.len()];
        for i in 0..self.frames {
            let at = self.header.len() as u64 + i as u64 * self.stride;
            file.read_exact_at(&mut tag, at)
                .map_err(|e| MediaError::read(&self.path, e))?;
            if tag != FRAME_TAG {
                return Err(MediaError::bad_output(
                    &self.path,
                    format!("frame {i} of {} was never written", self.frames),
                ));
            }
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

    /// The bytes of frames `frame(0)`, …, `frame(n − 1)` written as one plain y4m stream.
    fn plain_stream(dir: &tempfile::TempDir, fps: Option<(u32, u32)>, n: u8) -> Vec<u8> {
        let plain = dir.path().join("plain.y4m");
        let options = SinkOptions {
            fps,
            overwrite: true,
            ..SinkOptions::default()
        };
        let mut sink = create_sink(&plain, OutputFormat::Y4m, &options).unwrap();
        for k in 0..n {
            sink.write_frame(&frame(k)).unwrap();
        }
        sink.finish().unwrap();
        std::fs::read(&plain).unwrap()
    }

    /// A segment's writer from frame `first` that has written `frame(k)` for each of `seeds`.
    fn segment(
        path: &Path,
        fps: Option<(u32, u32)>,
        first: usize,
        seeds: &[u8],
    ) -> Box<Y4mAtIndex> {
        let mut sink = Box::new(Y4mAtIndex::open(path, first, fps, None).unwrap());
        for &k in seeds {
            sink.write_frame(&frame(k)).unwrap();
        }
        sink
    }

    #[test]
    fn segments_written_at_their_frames_give_the_plain_stream_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial.y4m");
        let fps = Some((24, 1));
        segment(&partial, fps, 0, &[0, 1, 2]).finish().unwrap();
        // A run killed after writing frames 3 and 4 of a segment it never committed.
        drop(segment(&partial, fps, 3, &[90, 91]));
        // The rerun writes that segment again, one frame shorter (the input ended); the job then
        // cuts the file after its 4 frames.
        segment(&partial, fps, 3, &[3]).finish().unwrap();
        cut_indexed_y4m(&partial, 4).unwrap();
        assert_eq!(std::fs::read(&partial).unwrap(), plain_stream(&dir, fps, 4));

        // A continuation refuses a file whose header is another stream's.
        let mut other = Y4mAtIndex::open(&partial, 4, Some((25, 1)), None).unwrap();
        assert!(other.write_frame(&frame(4)).is_err());
    }

    /// Segments are finished behind the stream: the next segment's writer may write its frames
    /// before the previous one finishes, and that finish must not cut them (it did: the first
    /// frames of a later segment read as zeros in a 1080p job on a GPU).
    #[test]
    fn a_segment_finished_after_the_next_one_wrote_keeps_its_frames() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial.y4m");
        let fps = Some((24, 1));
        let first = segment(&partial, fps, 0, &[0, 1, 2]);
        let next = segment(&partial, fps, 3, &[3, 4]);
        first.finish().unwrap();
        next.finish().unwrap();
        cut_indexed_y4m(&partial, 5).unwrap();
        assert_eq!(std::fs::read(&partial).unwrap(), plain_stream(&dir, fps, 5));
        // 16-bit frames: the cut reads the depth from the header.
        let deep = dir.path().join("deep.y4m");
        let mut sink = Box::new(Y4mAtIndex::open(&deep, 0, fps, None).unwrap());
        let frame16 = Frame::from_u16(2, 2, (0..12).map(|i| i * 4000).collect());
        for _ in 0..3 {
            sink.write_frame(&frame16).unwrap();
        }
        sink.finish().unwrap();
        let header = std::fs::read(&deep)
            .unwrap()
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
            + 1;
        cut_indexed_y4m(&deep, 2).unwrap();
        let stride = (FRAME_TAG.len() + 3 * 2 * 2 * 2) as u64;
        assert_eq!(
            std::fs::metadata(&deep).unwrap().len(),
            header as u64 + 2 * stride
        );
        assert!(cut_indexed_y4m(&dir.path().join("absent.y4m"), 1).is_err());
    }

    #[test]
    fn writers_filling_an_allocated_file_out_of_order_give_the_plain_stream() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.y4m");
        let options = SinkOptions {
            fps: Some((24, 1)),
            ..SinkOptions::default()
        };
        let shape = (5, 3, 8);
        let file = AllocatedY4m::open_or_create(&shared, shape, 6, &options).unwrap();
        let fill = |from: usize, seeds: &[u8]| {
            let mut sink = file.writer(from).unwrap();
            for &k in seeds {
                sink.write_frame(&frame(k)).unwrap();
            }
            sink.finish().unwrap();
        };
        fill(4, &[4, 5]);
        fill(0, &[0, 1]);
        assert!(file.check_filled().is_err(), "frames 2 and 3 are missing");
        // Opening it again (another writer) keeps what was written.
        let again = AllocatedY4m::open_or_create(&shared, shape, 6, &options).unwrap();
        let mut sink = again.writer(2).unwrap();
        sink.write_frame(&frame(2)).unwrap();
        sink.write_frame(&frame(3)).unwrap();
        sink.finish().unwrap();
        file.check_filled().unwrap();
        assert_eq!(
            std::fs::read(&shared).unwrap(),
            plain_stream(&dir, options.fps, 6)
        );

        // Nothing may land past the frames the file was made for.
        let mut sink = file.writer(5).unwrap();
        sink.write_frame(&frame(5)).unwrap();
        assert!(sink.write_frame(&frame(6)).is_err());
        // Another shape or frame count is not this file.
        assert!(AllocatedY4m::open_or_create(&shared, (5, 3, 16), 6, &options).is_err());
        assert!(AllocatedY4m::open_or_create(&shared, shape, 7, &options).is_err());
        // Frames of another size are refused by its writers.
        let mut sink = file.writer(0).unwrap();
        assert!(sink
            .write_frame(&Frame::from_u8(3, 3, vec![0; 27]))
            .is_err());
    }
}

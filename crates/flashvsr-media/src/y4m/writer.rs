//! y4m sink: 4:4:4, 8-bit (`C444`) for 8-bit frames, 16-bit (`C444p16`) for 16-bit frames,
//! limited range, BT.709 from 720 rows up and BT.601 below (the rule the reader assumes).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::frame::{Frame, FrameSink, YuvRange};
use crate::output::PendingOutput;
use crate::yuv::{default_matrix, frame_to_yuv444_bytes};
use crate::MediaError;

/// What precedes each frame's planes.
pub(crate) const FRAME_TAG: &[u8] = b"FRAME\n";

/// The stream header for frames of `width`×`height` at `bit_depth` (8 or 16): 4:4:4 at that
/// depth, limited range.
pub(crate) fn stream_header(
    (width, height, bit_depth): (usize, usize, u8),
    fps: (u32, u32),
    aspect: (u32, u32),
) -> String {
    let cs = if bit_depth == 16 { "C444p16" } else { "C444" };
    format!(
        "YUV4MPEG2 W{width} H{height} F{}:{} Ip A{}:{} {cs} XCOLORRANGE=LIMITED\n",
        fps.0, fps.1, aspect.0, aspect.1
    )
}

/// Width, height and bit depth: what a stream's header fixes for all its frames.
pub(crate) fn frame_shape(frame: &Frame) -> (usize, usize, u8) {
    (frame.width, frame.height, frame.bit_depth)
}

/// A frame's planes as they are written after its tag.
pub(crate) fn frame_bytes(frame: &Frame) -> Vec<u8> {
    frame_to_yuv444_bytes(frame, YuvRange::Limited, default_matrix(frame.height))
}

/// Bytes from one frame's tag to the next's in a stream of `shape` frames.
pub(crate) fn frame_stride((width, height, bit_depth): (usize, usize, u8)) -> u64 {
    let sample = if bit_depth == 16 { 2 } else { 1 };
    (FRAME_TAG.len() + 3 * width * height * sample) as u64
}

/// Frame rate and pixel aspect as written: the given ones, else 30/1 and 1:1.
pub(crate) fn rate_and_aspect(
    fps: Option<(u32, u32)>,
    aspect: Option<(u32, u32)>,
) -> ((u32, u32), (u32, u32)) {
    (
        fps.filter(|f| f.0 > 0 && f.1 > 0).unwrap_or((30, 1)),
        aspect.filter(|a| a.0 > 0 && a.1 > 0).unwrap_or((1, 1)),
    )
}

pub(crate) struct Y4mSink {
    // Declared before `pending` so the file is closed before the temporary name is removed.
    writer: BufWriter<Box<dyn Write + Send>>,
    /// The file behind `writer`, kept to sync it before publishing; `None` for stdout.
    file: Option<File>,
    pending: Option<PendingOutput>,
    label: PathBuf,
    fps: (u32, u32),
    aspect: (u32, u32),
    /// Width, height and bit depth fixed by the first frame.
    stream: Option<(usize, usize, u8)>,
}

impl Y4mSink {
    pub(crate) fn to_file(
        path: &Path,
        overwrite: bool,
        fps: Option<(u32, u32)>,
        aspect: Option<(u32, u32)>,
    ) -> Result<Self, MediaError> {
        let pending = PendingOutput::create(path, false, overwrite)?;
        let file = File::create(pending.temp_path()).map_err(|e| MediaError::write(path, e))?;
        let sync = file.try_clone().map_err(|e| MediaError::write(path, e))?;
        Ok(Self::new(
            Box::new(file),
            Some(sync),
            Some(pending),
            path,
            fps,
            aspect,
        ))
    }

    pub(crate) fn to_stdout(fps: Option<(u32, u32)>, aspect: Option<(u32, u32)>) -> Self {
        Self::new(
            Box::new(std::io::stdout()),
            None,
            None,
            Path::new("<stdout>"),
            fps,
            aspect,
        )
    }

    fn new(
        out: Box<dyn Write + Send>,
        file: Option<File>,
        pending: Option<PendingOutput>,
        label: &Path,
        fps: Option<(u32, u32)>,
        aspect: Option<(u32, u32)>,
    ) -> Self {
        let (fps, aspect) = rate_and_aspect(fps, aspect);
        Y4mSink {
            writer: BufWriter::with_capacity(1 << 20, out),
            file,
            pending,
            label: label.to_path_buf(),
            fps,
            aspect,
            stream: None,
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        self.writer
            .write_all(bytes)
            .map_err(|e| MediaError::write(&self.label, e))
    }
}

impl FrameSink for Y4mSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
        if !frame.is_consistent() || frame.width == 0 || frame.height == 0 {
            return Err(MediaError::bad_output(
                &self.label,
                "frame data does not match its size and bit depth",
            ));
        }
        let this = frame_shape(frame);
        match self.stream {
            None => {
                let header = stream_header(this, self.fps, self.aspect);
                self.write_all(header.as_bytes())?;
                self.stream = Some(this);
            }
            Some(s) if s != this => {
                return Err(MediaError::bad_output(
                    &self.label,
                    format!(
                        "frame is {}x{} {}-bit but the stream is {}x{} {}-bit",
                        this.0, this.1, this.2, s.0, s.1, s.2
                    ),
                ))
            }
            Some(_) => {}
        }
        self.write_all(FRAME_TAG)?;
        self.write_all(&frame_bytes(frame))?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), MediaError> {
        if self.stream.is_none() {
            return Err(MediaError::bad_output(&self.label, "no frames to write"));
        }
        self.writer
            .flush()
            .map_err(|e| MediaError::write(&self.label, e))?;
        if let Some(file) = &self.file {
            file.sync_all()
                .map_err(|e| MediaError::write(&self.label, e))?;
        }
        match self.pending.take() {
            Some(pending) => pending.publish(),
            None => Ok(()),
        }
    }
}

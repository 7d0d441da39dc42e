//! The frame type and the two traits every container implements.

use std::path::PathBuf;

use crate::MediaError;

/// Samples of a frame, interleaved RGB (R, G, B, R, G, B, …), row-major, no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameData {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// One RGB frame. `bit_depth` is 8 for [`FrameData::U8`] and 16 for [`FrameData::U16`]; sources of
/// 9–15 bits are scaled to the full 16-bit range, so 65535 is always white.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub bit_depth: u8,
    pub data: FrameData,
}

impl Frame {
    /// Panics if `data.len() != width * height * 3` (a programming error, never user input).
    pub fn from_u8(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(
            data.len(),
            width * height * 3,
            "RGB8 frame {width}x{height}"
        );
        Frame {
            width,
            height,
            bit_depth: 8,
            data: FrameData::U8(data),
        }
    }

    /// Panics if `data.len() != width * height * 3` (a programming error, never user input).
    pub fn from_u16(width: usize, height: usize, data: Vec<u16>) -> Self {
        assert_eq!(
            data.len(),
            width * height * 3,
            "RGB16 frame {width}x{height}"
        );
        Frame {
            width,
            height,
            bit_depth: 16,
            data: FrameData::U16(data),
        }
    }

    /// Whether the fields agree with each other (the fields are public, so a caller can break them).
    pub fn is_consistent(&self) -> bool {
        let n = self.width * self.height * 3;
        match &self.data {
            FrameData::U8(d) => self.bit_depth == 8 && d.len() == n,
            FrameData::U16(d) => self.bit_depth == 16 && d.len() == n,
        }
    }

    /// Largest code value: 255 or 65535.
    pub fn max_value(&self) -> f32 {
        match self.data {
            FrameData::U8(_) => 255.0,
            FrameData::U16(_) => 65535.0,
        }
    }

    /// Samples as f32 in [0, 1] (`v / 255` or `v / 65535`), interleaved RGB.
    pub fn to_unit_f32(&self) -> Vec<f32> {
        match &self.data {
            FrameData::U8(d) => d.iter().map(|&v| v as f32 / 255.0).collect(),
            FrameData::U16(d) => d.iter().map(|&v| v as f32 / 65535.0).collect(),
        }
    }

    /// 8-bit samples; 16-bit ones are rounded to the nearest 8-bit code (`round(v / 257)`).
    pub fn to_u8_samples(&self) -> Vec<u8> {
        match &self.data {
            FrameData::U8(d) => d.clone(),
            FrameData::U16(d) => d.iter().map(|&v| u16_to_u8(v)).collect(),
        }
    }

    /// 16-bit samples; 8-bit ones are widened exactly (`v * 257`).
    pub fn to_u16_samples(&self) -> Vec<u16> {
        match &self.data {
            FrameData::U8(d) => d.iter().map(|&v| v as u16 * 257).collect(),
            FrameData::U16(d) => d.clone(),
        }
    }
}

/// Largest frame accepted from a file header (pixels), so a corrupt or hostile header cannot
/// make us attempt an absurd allocation: 2^28 is 16384 × 16384.
pub(crate) const MAX_PIXELS: usize = 1 << 28;

pub(crate) fn u16_to_u8(v: u16) -> u8 {
    ((v as u32 * 255 + 32767) / 65535) as u8
}

/// What kind of input a source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory of PNG files in natural order.
    PngSequence,
    /// One PNG file (one frame).
    PngImage,
    /// A YUV4MPEG2 stream (file or stdin).
    Y4m,
    /// A directory of JPEG, TIFF, EXR or DPX files in natural order (PNG folders stay
    /// [`SourceKind::PngSequence`]).
    ImageSequence(crate::ImageFormat),
    /// One JPEG, TIFF, EXR or DPX file (one frame; a PNG file stays [`SourceKind::PngImage`]).
    Image(crate::ImageFormat),
    /// A video file read through libav (feature `ffmpeg`).
    Video,
}

/// Matrix used to turn a YUV source into RGB (or RGB into YUV for output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YuvMatrix {
    Bt601,
    Bt709,
}

/// Code-value range of a YUV source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YuvRange {
    /// Y in 16..235, chroma in 16..240 (scaled by 2^(bits−8) above 8 bits).
    Limited,
    /// Y and chroma use every code.
    Full,
}

/// How a YUV source was converted to RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YuvInfo {
    pub matrix: YuvMatrix,
    pub range: YuvRange,
    /// The y4m colourspace tag, e.g. "420jpeg", "444p10", "mono".
    pub colorspace: &'static str,
}

/// Facts about a source known before its first frame is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// The input path; `-` for stdin.
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    /// Known for image sequences and y4m files with plain `FRAME` headers; `None` for stdin.
    pub frame_count: Option<usize>,
    /// Frame rate as numerator/denominator (y4m `F` tag); `None` for images.
    pub fps: Option<(u32, u32)>,
    /// Bit depth of the frames this source yields: 8 or 16.
    pub bit_depth: u8,
    /// Bits per sample in the source itself (8, 10, 12, 16, …); 10-bit y4m yields 16-bit frames.
    pub source_bits: u8,
    /// Pixel aspect ratio (y4m `A` tag) when given and not 0:0.
    pub pixel_aspect: Option<(u32, u32)>,
    /// True when the y4m `I` tag says the source is interlaced (frames are still read whole).
    pub interlaced: bool,
    /// Set for YUV sources.
    pub yuv: Option<YuvInfo>,
    /// Video files: colour tags and HDR10 metadata of the stream (always `Some` for
    /// [`SourceKind::Video`], with `None` inside for what the stream leaves unspecified).
    pub colour: Option<crate::VideoColour>,
    /// DPX sources: the transfer and colorimetric codes of the first frame's header, to carry
    /// into a DPX output ([`crate::SinkOptions::dpx`]) so a DPX sequence keeps its colour tags.
    pub dpx_color: Option<crate::DpxColor>,
}

impl SourceInfo {
    /// An 8-bit source of `frames` frames of `width` × `height` made in memory (benchmarks,
    /// tests), labelled `path`.
    pub fn synthetic(path: &str, width: usize, height: usize, frames: usize) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Y4m,
            path: PathBuf::from(path),
            width,
            height,
            frame_count: Some(frames),
            fps: None,
            bit_depth: 8,
            source_bits: 8,
            pixel_aspect: None,
            interlaced: false,
            yuv: None,
            colour: None,
            dpx_color: None,
        }
    }
}

/// A stream of frames of one size and bit depth.
pub trait FrameSource: Send {
    fn info(&self) -> &SourceInfo;
    /// The next frame, or `None` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame>, MediaError>;
    /// The name frame `index` (0-based) has in the source, where frames are files: the file
    /// stem (`shot_0042` for `shot_0042.dpx`), for output names that mirror the input
    /// ([`crate::SinkOptions::names`]). `None` for streams and indices past the end.
    fn frame_name(&self, _index: usize) -> Option<String> {
        None
    }
    /// Presentation time of the frame the last `next_frame` returned, for sources that have
    /// one (video files); pass it to [`FrameSink::write_frame_at`] to keep the source's timing.
    fn timestamp(&self) -> Option<crate::Timestamp> {
        None
    }
}

/// A writer of frames. Nothing is visible under the output name until [`FrameSink::finish`]
/// returns; dropping a sink without calling it removes everything it wrote (the standard output
/// excepted, which cannot be taken back).
pub trait FrameSink: Send {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError>;
    /// Writes a frame with its presentation time (from [`FrameSource::timestamp`]); sinks
    /// without timestamps (images, y4m) ignore it. `None`: the next frame at the nominal rate.
    fn write_frame_at(
        &mut self,
        frame: &Frame,
        time: Option<crate::Timestamp>,
    ) -> Result<(), MediaError> {
        let _ = time;
        self.write_frame(frame)
    }
    /// Takes `file`, a frame already encoded as this sink would encode it (a job's segment in
    /// the same image format), as the next frame without decoding it: linked where the
    /// filesystem allows, else copied. False where this sink cannot take files.
    fn adopt_file(&mut self, file: &std::path::Path) -> Result<bool, MediaError> {
        let _ = file;
        Ok(false)
    }
    /// Completes the output and publishes it under its final name.
    fn finish(self: Box<Self>) -> Result<(), MediaError>;
}

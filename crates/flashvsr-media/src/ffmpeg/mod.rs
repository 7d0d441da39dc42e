//! Video files: in-process demux, decode and encode through libav (FFmpeg's libraries), behind the
//! cargo feature `ffmpeg` (on by default).
//!
//! - [`FfmpegSource`] decodes the best video stream to RGB (16-bit frames above 8 bits) with the
//!   stream's own matrix, range and chroma siting, reports every frame's presentation time
//!   ([`crate::FrameSource::timestamp`]) and the colour description with HDR10 metadata
//!   ([`VideoColour`] in [`crate::SourceInfo::colour`]).
//! - [`FfmpegSink`] encodes RGB frames (H.264/HEVC by default, PRODUCT.md §5), keeps the given
//!   timestamps (VFR stays VFR), writes colour tags and HDR10 metadata, and copies the input's
//!   audio and subtitle streams packet for packet into the same container. Output appears under
//!   its name only when `finish` succeeds.
//!
//! Building needs pkg-config, clang/libclang (bindgen) and the libav `-dev` packages; on Debian 12
//! (FFmpeg 5.1): `apt-get install pkg-config clang libclang-dev libavcodec-dev libavformat-dev
//! libavutil-dev libswscale-dev`. The tests also run the `ffmpeg`/`ffprobe` programs
//! (`apt-get install ffmpeg`). Written against the FFmpeg 5.1–6.x API (stream side data through
//! `av_stream_{get,add}_side_data`, which FFmpeg 7 replaces by `codecpar->coded_side_data`).

mod meta;
mod options;

pub use meta::{
    ChromaLocation, ColourPrimaries, ContentLight, DisplayLuminance, DisplayPrimaries,
    MasteringDisplay, MatrixCoefficients, Timestamp, TransferCharacteristic, VideoColour,
};
pub use options::VideoOptions;

#[cfg(feature = "ffmpeg")]
mod convert;
#[cfg(feature = "ffmpeg")]
mod input;
#[cfg(feature = "ffmpeg")]
mod sink;
#[cfg(feature = "ffmpeg")]
mod source;
#[cfg(feature = "ffmpeg")]
mod sys;

#[cfg(feature = "ffmpeg")]
pub use sink::FfmpegSink;
#[cfg(feature = "ffmpeg")]
pub use source::FfmpegSource;

use std::path::Path;

use crate::frame::{FrameSink, FrameSource};
use crate::{MediaError, SinkOptions};

/// Output extensions written as video (the container follows the extension).
pub const VIDEO_OUTPUT_EXTENSIONS: &[&str] = &["mp4", "mkv", "mov", "webm", "avi"];

/// Whether `path` names a video output by its extension.
pub(crate) fn is_video_output(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        VIDEO_OUTPUT_EXTENSIONS
            .iter()
            .any(|v| v.eq_ignore_ascii_case(e))
    })
}

/// Opens `path` as a video if libav recognises its content; `Ok(None)` if it does not (or this
/// build has no libav), so the caller can report what else it tried.
pub(crate) fn open_video(path: &Path) -> Result<Option<Box<dyn FrameSource>>, MediaError> {
    #[cfg(feature = "ffmpeg")]
    {
        Ok(FfmpegSource::probe(path)?.map(|s| Box::new(s) as Box<dyn FrameSource>))
    }
    #[cfg(not(feature = "ffmpeg"))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The video sink for `path` (see [`FfmpegSink::create`]).
pub(crate) fn create_video_sink(
    path: &Path,
    options: &SinkOptions,
) -> Result<Box<dyn FrameSink>, MediaError> {
    #[cfg(feature = "ffmpeg")]
    {
        Ok(Box::new(FfmpegSink::create(path, options)?))
    }
    #[cfg(not(feature = "ffmpeg"))]
    {
        let _ = options;
        Err(MediaError::bad_output(
            path,
            "this build cannot write video (built without the `ffmpeg` feature); write y4m or \
             images and encode them with ffmpeg",
        ))
    }
}

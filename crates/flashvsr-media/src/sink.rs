//! Picking the writer for an output path.

use std::path::Path;

use crate::dpx::DpxColor;
use crate::frame::FrameSink;
use crate::image_sink::ImageSink;
use crate::output::PendingOutput;
use crate::y4m::{Y4mAtIndex, Y4mSink};
use crate::MediaError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// A directory of 8-bit RGB PNGs, `000000.png` upwards (16-bit frames are rounded).
    Png,
    /// A directory of 16-bit RGB PNGs (8-bit frames are widened by 257).
    Png16,
    /// One y4m file, or stdout for `-`: C444 for 8-bit frames, C444p16 for 16-bit ones.
    Y4m,
    /// A directory of 16-bit RGB TIFFs (uncompressed), `000000.tif` upwards (8-bit frames are
    /// widened by 257).
    Tiff16,
    /// A directory of half-float RGB OpenEXR files (ZIP), `000000.exr` upwards; values are the
    /// code values over 65535 (16-bit frames) or 255 (8-bit frames), i.e. display-referred [0, 1].
    Exr,
    /// A directory of 10-bit RGB DPX files (packing method A, big-endian), `000000.dpx` upwards;
    /// codes are `round(v · 1023 / 65535)` (or `/ 255`), full range; transfer and colorimetric
    /// header codes from [`SinkOptions::dpx`].
    Dpx10,
    /// A video file (`.mp4 .mkv .mov .webm .avi`; the extension picks the container), encoded
    /// through libav: see [`crate::VideoOptions`]. Builds without the `ffmpeg` feature refuse it.
    Video,
}

impl OutputFormat {
    /// The file extension of the frames or file this format writes: png, tif, exr, dpx, y4m
    /// (`None` is kept for formats without a fixed one).
    pub fn extension(self) -> Option<&'static str> {
        Some(match self {
            OutputFormat::Png | OutputFormat::Png16 => "png",
            OutputFormat::Tiff16 => "tif",
            OutputFormat::Exr => "exr",
            OutputFormat::Dpx10 => "dpx",
            OutputFormat::Y4m => "y4m",
            OutputFormat::Video => return None,
        })
    }

    /// The format a path implies: `-` and `*.y4m` are y4m, anything else a PNG directory.
    pub fn from_path(path: &Path) -> OutputFormat {
        let y4m = path.as_os_str() == "-"
            || path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("y4m"));
        if y4m {
            OutputFormat::Y4m
        } else if crate::ffmpeg::is_video_output(path) {
            OutputFormat::Video
        } else {
            OutputFormat::Png
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkOptions {
    /// Replace an existing output (at `finish`, not before). Without it an existing output is an
    /// error at creation. A directory is only replaced if it holds nothing but image files.
    pub overwrite: bool,
    /// y4m frame rate; default 30:1.
    pub fps: Option<(u32, u32)>,
    /// y4m pixel aspect ratio; default 1:1.
    pub pixel_aspect: Option<(u32, u32)>,
    /// Image sequences only: output file names mirroring the input, frame `i` written as
    /// `names[i].<ext>` (file stems, as [`crate::FrameSource::frame_name`] gives them). `None`
    /// numbers the frames `000000.<ext>` upwards. Names must be unique (ignoring case), plain
    /// and visible (no `/`, no leading `.`), else `create_sink` fails; a frame beyond the list is
    /// an error.
    pub names: Option<Vec<String>>,
    /// DPX only: transfer characteristic and colorimetric codes for the header (default BT.709).
    pub dpx: DpxColor,
    /// Video outputs: encoder, stream copying and colour ([`OutputFormat::Video`]).
    pub video: crate::VideoOptions,
}

/// A y4m output that outlives the process, written from frame `first_frame` on at each frame's own
/// offset in `path` (created for frame 0, else continued after checking its header): a resumable
/// job writes each segment straight into its output. `finish` makes the frames durable and cuts
/// anything a killed run left after them; [`publish_file`] gives the file its final name.
pub fn create_indexed_y4m(
    path: &Path,
    first_frame: usize,
    options: &SinkOptions,
) -> Result<Box<dyn FrameSink>, MediaError> {
    Ok(Box::new(Y4mAtIndex::open(
        path,
        first_frame,
        options.fps,
        options.pixel_aspect,
    )?))
}

/// Renames a finished output at `done` (same filesystem) to `final_path`; an existing output is
/// replaced only with `overwrite`, and never left half replaced.
pub fn publish_file(done: &Path, final_path: &Path, overwrite: bool) -> Result<(), MediaError> {
    PendingOutput::adopt(done, final_path, overwrite).publish()
}

/// Creates a sink. Output goes to a hidden sibling (`.<name>.partial-<pid>-<n>`) and is renamed
/// to `path` by `finish`; a sink dropped without `finish` deletes it. `-` with y4m writes to
/// stdout directly (nothing to rename there).
pub fn create_sink(
    path: &Path,
    format: OutputFormat,
    options: &SinkOptions,
) -> Result<Box<dyn FrameSink>, MediaError> {
    let stdout = path.as_os_str() == "-";
    match format {
        OutputFormat::Y4m if stdout => Ok(Box::new(Y4mSink::to_stdout(
            options.fps,
            options.pixel_aspect,
        ))),
        OutputFormat::Y4m => Ok(Box::new(Y4mSink::to_file(
            path,
            options.overwrite,
            options.fps,
            options.pixel_aspect,
        )?)),
        OutputFormat::Video if stdout => Err(MediaError::bad_output(
            Path::new("<stdout>"),
            "video cannot be written to stdout; use y4m",
        )),
        OutputFormat::Video => crate::ffmpeg::create_video_sink(path, options),
        OutputFormat::Png
        | OutputFormat::Png16
        | OutputFormat::Tiff16
        | OutputFormat::Exr
        | OutputFormat::Dpx10
            if stdout =>
        {
            Err(MediaError::bad_output(
                Path::new("<stdout>"),
                "image frames (PNG, TIFF, EXR, DPX) cannot be written to stdout; use y4m",
            ))
        }
        OutputFormat::Png
        | OutputFormat::Png16
        | OutputFormat::Tiff16
        | OutputFormat::Exr
        | OutputFormat::Dpx10 => Ok(Box::new(ImageSink::create(path, format, options)?)),
    }
}

//! Picking the writer for an output path.

use std::path::Path;

use crate::frame::FrameSink;
use crate::png_sink::PngSink;
use crate::y4m::Y4mSink;
use crate::MediaError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// A directory of 8-bit RGB PNGs, `000000.png` upwards (16-bit frames are rounded).
    Png,
    /// A directory of 16-bit RGB PNGs (8-bit frames are widened by 257).
    Png16,
    /// One y4m file, or stdout for `-`: C444 for 8-bit frames, C444p16 for 16-bit ones.
    Y4m,
}

impl OutputFormat {
    /// The format a path implies: `-` and `*.y4m` are y4m, anything else a PNG directory.
    pub fn from_path(path: &Path) -> OutputFormat {
        let y4m = path.as_os_str() == "-"
            || path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("y4m"));
        if y4m {
            OutputFormat::Y4m
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
        OutputFormat::Png | OutputFormat::Png16 if stdout => Err(MediaError::bad_output(
            Path::new("<stdout>"),
            "PNG frames cannot be written to stdout; use y4m",
        )),
        OutputFormat::Png => Ok(Box::new(PngSink::create(path, false, options.overwrite)?)),
        OutputFormat::Png16 => Ok(Box::new(PngSink::create(path, true, options.overwrite)?)),
    }
}

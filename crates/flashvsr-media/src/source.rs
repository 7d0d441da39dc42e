//! Picking the reader for an input path.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::frame::FrameSource;
use crate::image_format::{ImageFormat, READ_EXTENSIONS};
use crate::image_source::ImageSource;
use crate::y4m::{Y4mSource, MAGIC};
use crate::MediaError;

const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "mov", "webm", "avi", "m4v", "ts", "mts", "m2ts", "mxf", "flv", "wmv", "mpg",
    "mpeg",
];

/// Opens an input:
/// - `-`: a y4m stream on stdin;
/// - a directory: every PNG, JPEG, TIFF, EXR or DPX file in it (`.png .jpg .jpeg .jpe .tif
///   .tiff .exr .dpx`, any case) in natural order ("frame2" before "frame10"); hidden and
///   non-image files are ignored, images of other formats are an error, and all frames must
///   share one format (by content) and one size;
/// - a file: a PNG, JPEG, TIFF, EXR or DPX image (one frame) or a y4m stream, recognised by
///   content, not extension;
/// - with the `ffmpeg` feature, any other file libavformat recognises by content as video
///   ([`crate::FfmpegSource`]).
///
/// Errors name the path: missing, unreadable, unsupported, empty, or (for folders) a file whose
/// size differs from the first frame's. Frame data is only decoded by `next_frame`.
pub fn open_source(path: &Path) -> Result<Box<dyn FrameSource>, MediaError> {
    if path.as_os_str() == "-" {
        let stdin = BufReader::with_capacity(1 << 20, io::stdin());
        return Ok(Box::new(Y4mSource::new(
            stdin,
            path,
            Path::new("<stdin>"),
            None,
        )?));
    }
    let meta = fs::metadata(path).map_err(|e| MediaError::read(path, e))?;
    if meta.is_dir() {
        return Ok(Box::new(ImageSource::open_dir(path)?));
    }
    let mut file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MediaError::read(path, e)),
        }
    }
    let head = &head[..got];
    if ImageFormat::sniff(head).is_some() {
        return Ok(Box::new(ImageSource::open_file(path)?));
    }
    if head == MAGIC {
        drop(file);
        let file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
        let reader = BufReader::with_capacity(1 << 20, file);
        return Ok(Box::new(Y4mSource::new(
            reader,
            path,
            path,
            Some(meta.len()),
        )?));
    }
    drop(file);
    if let Some(video) = crate::ffmpeg::open_video(path)? {
        return Ok(video);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let reason = match ext.as_deref() {
        Some("png") => "not a PNG image".to_string(),
        Some(e) if READ_EXTENSIONS.contains(&e) => {
            format!("not a .{e} image (its content is no PNG, JPEG, TIFF, EXR or DPX)")
        }
        Some("y4m") => "not a y4m stream (no YUV4MPEG2 signature)".to_string(),
        Some(e) if VIDEO_EXTENSIONS.contains(&e) && cfg!(feature = "ffmpeg") => {
            format!("not a .{e} video libav can read")
        }
        Some(e) if VIDEO_EXTENSIONS.contains(&e) => {
            format!(".{e} video needs the ffmpeg reader, which this build does not have; pipe it as y4m (`-`)")
        }
        _ if got == 0 => "empty file".to_string(),
        _ => "neither a PNG image, a y4m stream nor a directory of PNG frames".to_string(),
    };
    Err(MediaError::Unsupported {
        path: path.to_path_buf(),
        reason,
    })
}

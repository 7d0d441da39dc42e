//! One error type for everything this crate does to files. Every message starts with the path it
//! concerns (`<stdin>`/`<stdout>` for the standard streams), so the CLI can print it as it is.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{}: no such file or directory", .path.display())]
    NotFound { path: PathBuf },

    #[error("{}: cannot read: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("{}: cannot write: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("{}: unsupported input: {reason}", .path.display())]
    Unsupported { path: PathBuf, reason: String },

    #[error("{}: corrupt PNG: {detail}", .path.display())]
    CorruptPng { path: PathBuf, detail: String },

    #[error("{}: corrupt {format}: {detail}", .path.display())]
    CorruptImage {
        path: PathBuf,
        /// "JPEG", "TIFF", "EXR" or "DPX".
        format: &'static str,
        detail: String,
    },

    #[error("{}: no frames: {detail}", .path.display())]
    NoFrames { path: PathBuf, detail: String },

    #[error(
        "{}: frame size {got_w}x{got_h} differs from the {want_w}x{want_h} of the first frame",
        .path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        got_w: usize,
        got_h: usize,
        want_w: usize,
        want_h: usize,
    },

    #[error("{}: invalid y4m: {detail}", .path.display())]
    Y4m { path: PathBuf, detail: String },

    #[error(
        "{}: truncated y4m frame {index}: {got} of {expected} bytes present",
        .path.display()
    )]
    TruncatedY4m {
        path: PathBuf,
        index: usize,
        expected: usize,
        got: usize,
    },

    #[error("{}: output already exists (pass overwrite to replace it)", .path.display())]
    OutputExists { path: PathBuf },

    #[error("{}: {detail}", .path.display())]
    BadOutput { path: PathBuf, detail: String },

    #[error(
        "{}: {}{detail}",
        .path.display(),
        .frame.map(|i| format!("cannot decode frame {i}: ")).unwrap_or_default()
    )]
    CorruptVideo {
        path: PathBuf,
        /// Index of the first frame that could not be decoded (the frames before it were read).
        frame: Option<usize>,
        detail: String,
    },
}

impl MediaError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            MediaError::NotFound { path }
            | MediaError::Read { path, .. }
            | MediaError::Write { path, .. }
            | MediaError::Unsupported { path, .. }
            | MediaError::CorruptPng { path, .. }
            | MediaError::CorruptImage { path, .. }
            | MediaError::NoFrames { path, .. }
            | MediaError::SizeMismatch { path, .. }
            | MediaError::Y4m { path, .. }
            | MediaError::TruncatedY4m { path, .. }
            | MediaError::OutputExists { path }
            | MediaError::BadOutput { path, .. }
            | MediaError::CorruptVideo { path, .. } => path,
        }
    }

    /// True for errors caused by the input or the requested output (CLI exit code 2), false for
    /// failures of the machine (I/O while writing: exit code 1).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, MediaError::Write { .. })
    }

    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            MediaError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            MediaError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        MediaError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn bad_output(path: &Path, detail: impl Into<String>) -> Self {
        MediaError::BadOutput {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

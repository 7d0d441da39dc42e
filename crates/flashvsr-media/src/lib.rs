//! Frames in and out for flashvsr: PNG sequences and y4m streams as RGB frames, atomic output
//! publication, and the two reference bicubic upscalers (Pillow's and torch's, spec §2.2).

mod dpx;
mod error;
mod ffmpeg;
mod frame;
mod image_format;
mod image_sink;
mod image_source;
mod natural;
mod output;
mod png_sink;
mod png_source;
pub mod prepare;
pub mod resize;
mod sink;
mod source;
mod y4m;
mod yuv;

pub use dpx::DpxColor;
pub use error::MediaError;
pub use ffmpeg::{
    ChromaLocation, ColourPrimaries, ContentLight, DisplayLuminance, DisplayPrimaries,
    MasteringDisplay, MatrixCoefficients, Timestamp, TransferCharacteristic, VideoColour,
    VideoOptions, VIDEO_OUTPUT_EXTENSIONS,
};
#[cfg(feature = "ffmpeg")]
pub use ffmpeg::{FfmpegSink, FfmpegSource};
pub use frame::{
    Frame, FrameData, FrameSink, FrameSource, SourceInfo, SourceKind, YuvInfo, YuvMatrix, YuvRange,
};
pub use image_format::ImageFormat;
pub use natural::natural_cmp;
pub use sink::{create_indexed_y4m, create_sink, publish_file, OutputFormat, SinkOptions};
pub use source::open_source;
pub use y4m::{cut_indexed_y4m, AllocatedY4m};

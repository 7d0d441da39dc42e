//! Frames in and out for flashvsr: PNG sequences and y4m streams as RGB frames, atomic output
//! publication, and the two reference bicubic upscalers (Pillow's and torch's, spec §2.2).

mod error;
mod frame;
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

pub use error::MediaError;
pub use frame::{
    Frame, FrameData, FrameSink, FrameSource, SourceInfo, SourceKind, YuvInfo, YuvMatrix, YuvRange,
};
pub use natural::natural_cmp;
pub use sink::{create_sink, OutputFormat, SinkOptions};
pub use source::open_source;

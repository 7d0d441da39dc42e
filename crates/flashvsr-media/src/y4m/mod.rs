//! YUV4MPEG2 streams: reading 8- to 16-bit 4:2:0/4:2:2/4:4:4/4:1:1/mono, writing 4:4:4.
//! Samples above 8 bits are 16-bit little-endian words, as ffmpeg writes them.

mod header;
mod indexed;
mod reader;
mod writer;

pub(crate) use indexed::Y4mAtIndex;
pub use indexed::{cut_indexed_y4m, AllocatedY4m};
pub(crate) use reader::Y4mSource;
pub(crate) use writer::Y4mSink;

/// The stream signature, followed by a space and the header tags.
pub(crate) const MAGIC: &[u8] = b"YUV4MPEG2";

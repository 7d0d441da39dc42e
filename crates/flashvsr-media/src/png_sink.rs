//! PNG frame encoding for the image-sequence sink (`image_sink`): 8- or 16-bit RGB, fast
//! deflate (PNG deflate is the slow part of writing; the sink runs several of these at once).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::frame::Frame;
use crate::MediaError;

pub(crate) fn encode(
    frame: &Frame,
    sixteen: bool,
    temp: &Path,
    shown: &Path,
) -> Result<(), MediaError> {
    let werr = |e: std::io::Error| MediaError::write(shown, e);
    let file = File::create(temp).map_err(werr)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut encoder = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    // Fast = fdeflate: several times quicker than the default at a few per cent more bytes.
    encoder.set_compression(png::Compression::Fast);
    let bytes: Vec<u8> = if sixteen {
        encoder.set_depth(png::BitDepth::Sixteen);
        frame
            .to_u16_samples()
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    } else {
        encoder.set_depth(png::BitDepth::Eight);
        frame.to_u8_samples()
    };
    let png_err = |e: png::EncodingError| match e {
        png::EncodingError::IoError(io) => werr(io),
        other => MediaError::bad_output(shown, format!("PNG encoding failed: {other}")),
    };
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&bytes).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    out.flush().map_err(werr)?;
    // Durable before the directory is renamed into place: a crash must not publish empty files.
    out.get_ref().sync_all().map_err(werr)
}

//! Frames from image files: one file, or a directory of files of one format (PNG, JPEG, TIFF,
//! EXR or DPX) in natural order. Formats are recognised by content; extensions only decide which
//! files of a folder are frames.
//!
//! Depths: 8-bit files give 8-bit frames; 16-bit integer files, 10/12-bit DPX and float files
//! (EXR, float TIFF) give 16-bit frames. A folder with any file above 8 bits yields 16-bit frames
//! throughout (8-bit files widened by 257). Float samples are taken as display-referred: clamped
//! to [0, 1] and scaled by 65535 (NaN becomes 0); scene-linear EXR is not tone-mapped.

use std::fs;
use std::io::{self, BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits};
use rayon::prelude::*;

use crate::dpx;
use crate::frame::{Frame, FrameData, FrameSource, SourceInfo, SourceKind, MAX_PIXELS};
use crate::image_format::{ImageFormat, READ_EXTENSIONS, UNREAD_EXTENSIONS};
use crate::natural::natural_cmp;
use crate::png_source;
use crate::MediaError;

/// What is checked of every file before the first frame is decoded.
struct Header {
    format: ImageFormat,
    width: usize,
    height: usize,
    /// Frames of this file are 16-bit.
    sixteen: bool,
    /// Bits per sample in the file (8, 10, 12, 16, 32 for float).
    source_bits: u8,
    /// DPX files: the header's transfer and colorimetric codes.
    dpx_color: Option<crate::DpxColor>,
}

fn read_head(path: &Path, n: usize) -> Result<Vec<u8>, MediaError> {
    let file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
    let mut head = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut head)
        .map_err(|e| MediaError::read(path, e))?;
    Ok(head)
}

/// The format of a file by its first bytes; an error naming the file if it is none of ours.
pub(crate) fn sniff_file(path: &Path) -> Result<ImageFormat, MediaError> {
    let head = read_head(path, 8)?;
    ImageFormat::sniff(&head).ok_or_else(|| MediaError::Unsupported {
        path: path.to_path_buf(),
        reason: if head.is_empty() {
            "empty file".into()
        } else {
            "not a PNG, JPEG, TIFF, EXR or DPX image".into()
        },
    })
}

fn corrupt(path: &Path, format: ImageFormat, detail: impl Into<String>) -> MediaError {
    MediaError::CorruptImage {
        path: path.to_path_buf(),
        format: format.name(),
        detail: detail.into(),
    }
}

fn image_error(path: &Path, format: ImageFormat, e: ImageError) -> MediaError {
    match e {
        ImageError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            corrupt(path, format, "file is truncated")
        }
        ImageError::IoError(io) => MediaError::read(path, io),
        ImageError::Unsupported(u) => MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: u.to_string(),
        },
        ImageError::Limits(l) => MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: l.to_string(),
        },
        other => corrupt(path, format, other.to_string()),
    }
}

fn exr_error(path: &Path, e: exr::error::Error) -> MediaError {
    match e {
        exr::error::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            corrupt(path, ImageFormat::Exr, "file is truncated")
        }
        exr::error::Error::Io(io) => MediaError::read(path, io),
        exr::error::Error::NotSupported(what) => MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("EXR feature not supported: {what}"),
        },
        other => corrupt(path, ImageFormat::Exr, other.to_string()),
    }
}

/// Runs a third-party decoder; a panic inside it becomes an error naming the file.
fn guarded<T>(
    path: &Path,
    format: ImageFormat,
    f: impl FnOnce() -> Result<T, MediaError>,
) -> Result<T, MediaError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(corrupt(path, format, "the decoder failed on this file")))
}

/// Allocation limit for the `image` decoders: room for the largest frame we accept, as RGBA f32.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS as u64 * 16 + (64 << 20));
    limits
}

/// Walks the marker segments of a whole JPEG file up to its end-of-image marker. JPEG decoders
/// tolerate truncation (they fill the missing part with grey), so a cut file would otherwise
/// pass as a frame.
fn check_jpeg_complete(b: &[u8]) -> Result<(), &'static str> {
    const TRUNCATED: &str = "file is truncated (no end-of-image marker)";
    let mut i = 2; // after SOI
    loop {
        // At a marker: 0xFF (fill bytes allowed), then the marker code.
        if *b.get(i).ok_or(TRUNCATED)? != 0xff {
            return Err("bad marker structure");
        }
        while *b.get(i).ok_or(TRUNCATED)? == 0xff {
            i += 1;
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xd9 => return Ok(()),          // EOI
            0x01 | 0xd0..=0xd7 => continue, // standalone: TEM, RSTn
            _ => {}
        }
        let len = u16::from_be_bytes([*b.get(i).ok_or(TRUNCATED)?, *b.get(i + 1).ok_or(TRUNCATED)?])
            as usize;
        if len < 2 {
            return Err("bad segment length");
        }
        i += len;
        if marker == 0xda {
            // SOS: entropy-coded data up to the next marker that is not a stuffed 0xFF00 or a
            // restart marker.
            loop {
                let at = b
                    .get(i..)
                    .ok_or(TRUNCATED)?
                    .iter()
                    .position(|&v| v == 0xff)
                    .ok_or(TRUNCATED)?;
                i += at;
                match *b.get(i + 1).ok_or(TRUNCATED)? {
                    0x00 | 0xd0..=0xd7 | 0xff => i += 1,
                    _ => break,
                }
            }
        }
    }
}

fn image_reader<R: io::BufRead + io::Seek>(format: ImageFormat, input: R) -> ImageReader<R> {
    let fmt = match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        ImageFormat::Exr => image::ImageFormat::OpenExr,
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Dpx => unreachable!("DPX is read by our own codec"),
    };
    let mut reader = ImageReader::with_format(input, fmt);
    reader.limits(limits());
    reader
}

fn open_buffered(path: &Path) -> Result<BufReader<fs::File>, MediaError> {
    let file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

fn check_size(path: &Path, format: ImageFormat, w: usize, h: usize) -> Result<(), MediaError> {
    if w == 0 || h == 0 {
        return Err(corrupt(path, format, "zero width or height"));
    }
    if w.saturating_mul(h) > MAX_PIXELS {
        return Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{w}x{h} is larger than the {MAX_PIXELS} pixels supported"),
        });
    }
    Ok(())
}

fn exr_header(path: &Path) -> Result<Header, MediaError> {
    let file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
    let meta = guarded(path, ImageFormat::Exr, || {
        exr::meta::MetaData::read_from_buffered(BufReader::new(file), false)
            .map_err(|e| exr_error(path, e))
    })?;
    // The layer the decoder will use: the first flat one with R, G and B channels.
    let rgb = ["R", "G", "B"].map(exr::meta::attribute::Text::from);
    let layer = meta.headers.iter().find(|h| {
        !h.deep
            && rgb
                .iter()
                .all(|c| h.channels.find_index_of_channel(c).is_some())
    });
    let Some(layer) = layer else {
        return Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: "EXR without an R, G, B layer (luminance, YC and deep images are not \
                     supported)"
                .into(),
        });
    };
    let size = layer.shared_attributes.display_window.size;
    let half = rgb.iter().all(|c| {
        layer.channels.find_index_of_channel(c).is_some_and(|i| {
            layer.channels.list[i].sample_type == exr::meta::attribute::SampleType::F16
        })
    });
    Ok(Header {
        format: ImageFormat::Exr,
        width: size.0,
        height: size.1,
        sixteen: true,
        source_bits: if half { 16 } else { 32 },
        dpx_color: None,
    })
}

/// Reads just enough of a file to know its format, size and depth.
fn read_header(path: &Path) -> Result<Header, MediaError> {
    let format = sniff_file(path)?;
    let header = match format {
        ImageFormat::Png => {
            let h = png_source::read_header(path)?;
            Header {
                format,
                width: h.width,
                height: h.height,
                sixteen: h.sixteen,
                source_bits: if h.sixteen { 16 } else { 8 },
                dpx_color: None,
            }
        }
        ImageFormat::Dpx => {
            let head = read_head(path, dpx::HEADER_SIZE)?;
            let h = dpx::DpxHeader::parse(path, &head)?;
            Header {
                format,
                width: h.width,
                height: h.height,
                sixteen: h.bits > 8,
                source_bits: h.bits,
                dpx_color: Some(h.color),
            }
        }
        ImageFormat::Exr => exr_header(path)?,
        ImageFormat::Jpeg | ImageFormat::Tiff => {
            let reader = image_reader(format, open_buffered(path)?);
            guarded(path, format, || {
                let decoder = reader
                    .into_decoder()
                    .map_err(|e| image_error(path, format, e))?;
                let (w, h) = decoder.dimensions();
                let ct = decoder.color_type();
                let bits = ct.bytes_per_pixel() as u32 * 8 / ct.channel_count().max(1) as u32;
                Ok(Header {
                    format,
                    width: w as usize,
                    height: h as usize,
                    sixteen: bits > 8,
                    source_bits: bits.min(255) as u8,
                    dpx_color: None,
                })
            })?
        }
    };
    check_size(path, format, header.width, header.height)?;
    Ok(header)
}

/// Clamps a display-referred float sample to a 16-bit code.
fn unit_to_u16(v: f32) -> u16 {
    // NaN fails both comparisons and ends at 0 through `as`.
    (v.clamp(0.0, 1.0) * 65535.0).round() as u16
}

/// Decodes one file to a frame; `sixteen` asks for 16-bit samples (8-bit files are widened).
fn decode(path: &Path, format: ImageFormat, sixteen: bool) -> Result<Frame, MediaError> {
    match format {
        ImageFormat::Png => png_source::decode(path, sixteen),
        ImageFormat::Dpx => {
            let bytes = fs::read(path).map_err(|e| MediaError::read(path, e))?;
            dpx::decode(path, &bytes, sixteen)
        }
        ImageFormat::Jpeg | ImageFormat::Tiff | ImageFormat::Exr => {
            let img = if format == ImageFormat::Jpeg {
                let bytes = fs::read(path).map_err(|e| MediaError::read(path, e))?;
                check_jpeg_complete(&bytes).map_err(|e| corrupt(path, format, e))?;
                let reader = image_reader(format, io::Cursor::new(bytes));
                guarded(path, format, || {
                    reader.decode().map_err(|e| image_error(path, format, e))
                })?
            } else {
                let reader = image_reader(format, open_buffered(path)?);
                guarded(path, format, || {
                    reader.decode().map_err(|e| image_error(path, format, e))
                })?
            };
            let (w, h) = (img.width() as usize, img.height() as usize);
            check_size(path, format, w, h)?;
            let frame = match img {
                DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_) => {
                    let d = img.into_rgb8().into_raw();
                    if sixteen {
                        Frame::from_u16(w, h, d.iter().map(|&v| v as u16 * 257).collect())
                    } else {
                        Frame::from_u8(w, h, d)
                    }
                }
                DynamicImage::ImageLuma16(_)
                | DynamicImage::ImageLumaA16(_)
                | DynamicImage::ImageRgb16(_)
                | DynamicImage::ImageRgba16(_) => {
                    Frame::from_u16(w, h, img.into_rgb16().into_raw())
                }
                _ => {
                    let d = img.into_rgb32f().into_raw();
                    Frame::from_u16(w, h, d.into_iter().map(unit_to_u16).collect())
                }
            };
            Ok(frame)
        }
    }
}

pub(crate) struct ImageSource {
    info: SourceInfo,
    format: ImageFormat,
    files: Vec<PathBuf>,
    next: usize,
}

impl ImageSource {
    fn new(path: &Path, files: Vec<PathBuf>, folder: bool) -> Result<Self, MediaError> {
        // Headers are independent: read them in parallel (folders on network storage), then
        // report the first problem in frame order.
        let headers: Vec<Result<Header, MediaError>> =
            files.par_iter().map(|f| read_header(f)).collect();
        let mut headers = headers.into_iter();
        let first = headers.next().expect("at least one file")?;
        let mut sixteen = first.sixteen;
        let mut source_bits = first.source_bits;
        for (file, h) in files[1..].iter().zip(headers) {
            let h = h?;
            if h.format != first.format {
                return Err(MediaError::Unsupported {
                    path: file.clone(),
                    reason: format!(
                        "this frame is {} but {} is {}: a folder must hold one image format",
                        h.format,
                        files[0].file_name().unwrap_or_default().to_string_lossy(),
                        first.format
                    ),
                });
            }
            if (h.width, h.height) != (first.width, first.height) {
                return Err(MediaError::SizeMismatch {
                    path: file.clone(),
                    got_w: h.width,
                    got_h: h.height,
                    want_w: first.width,
                    want_h: first.height,
                });
            }
            sixteen |= h.sixteen;
            source_bits = source_bits.max(h.source_bits);
        }
        let kind = match (first.format, folder) {
            (ImageFormat::Png, true) => SourceKind::PngSequence,
            (ImageFormat::Png, false) => SourceKind::PngImage,
            (f, true) => SourceKind::ImageSequence(f),
            (f, false) => SourceKind::Image(f),
        };
        let info = SourceInfo {
            kind,
            path: path.to_path_buf(),
            width: first.width,
            height: first.height,
            frame_count: Some(files.len()),
            fps: None,
            bit_depth: if sixteen { 16 } else { 8 },
            source_bits,
            pixel_aspect: None,
            interlaced: false,
            yuv: None,
            colour: None,
            dpx_color: first.dpx_color,
        };
        Ok(ImageSource {
            info,
            format: first.format,
            files,
            next: 0,
        })
    }

    /// One image file: a one-frame source.
    pub(crate) fn open_file(path: &Path) -> Result<Self, MediaError> {
        Self::new(path, vec![path.to_path_buf()], false)
    }

    /// Every image file in `dir` (by extension: png, jpg, jpeg, jpe, tif, tiff, exr, dpx, any
    /// case) in natural order; hidden files, subdirectories and other files are ignored, except
    /// images of formats we cannot read (an error rather than silently missing frames). All
    /// frames must have one format (by content) and one size.
    pub(crate) fn open_dir(dir: &Path) -> Result<Self, MediaError> {
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| MediaError::read(dir, e))? {
            let entry = entry.map_err(|e| MediaError::read(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            match ext.as_deref() {
                Some(e) if READ_EXTENSIONS.contains(&e) => files.push((name, path)),
                Some(e) if UNREAD_EXTENSIONS.contains(&e) => {
                    return Err(MediaError::Unsupported {
                        path,
                        reason: format!(
                            ".{e} frames cannot be read (PNG, JPEG, TIFF, EXR and DPX can)"
                        ),
                    })
                }
                _ => {}
            }
        }
        if files.is_empty() {
            return Err(MediaError::NoFrames {
                path: dir.to_path_buf(),
                detail: "the directory holds no image files (.png .jpg .tif .exr .dpx)".into(),
            });
        }
        files.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        Self::new(dir, files.into_iter().map(|(_, p)| p).collect(), true)
    }
}

impl FrameSource for ImageSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, MediaError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let frame = decode(path, self.format, self.info.bit_depth == 16)?;
        if (frame.width, frame.height) != (self.info.width, self.info.height) {
            return Err(MediaError::SizeMismatch {
                path: path.clone(),
                got_w: frame.width,
                got_h: frame.height,
                want_w: self.info.width,
                want_h: self.info.height,
            });
        }
        if !matches!(
            (&frame.data, self.info.bit_depth),
            (FrameData::U8(_), 8) | (FrameData::U16(_), 16)
        ) {
            // Its header said 8 bits when the folder was scanned: the file changed under us.
            return Err(corrupt(
                path,
                self.format,
                "bit depth changed while reading",
            ));
        }
        self.next += 1;
        Ok(Some(frame))
    }

    fn frame_name(&self, index: usize) -> Option<String> {
        let stem = self.files.get(index)?.file_stem()?;
        Some(stem.to_string_lossy().into_owned())
    }
}

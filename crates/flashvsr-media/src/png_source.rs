//! PNG frames: the header check and the decoder behind `image_source` (PNG files and folders).

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::frame::{Frame, FrameData, MAX_PIXELS};
use crate::MediaError;

pub(crate) const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The part of a PNG checked before decoding: size and whether its samples are 16-bit.
pub(crate) struct Header {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) sixteen: bool,
}

/// Reads just the signature and IHDR, so a folder is validated without decoding every frame.
pub(crate) fn read_header(path: &Path) -> Result<Header, MediaError> {
    let mut head = [0u8; 26];
    let mut file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MediaError::read(path, e)),
        }
    }
    if got < 8 || head[..8] != PNG_SIGNATURE {
        return Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: "not a PNG image".into(),
        });
    }
    let corrupt = |detail: &str| MediaError::CorruptPng {
        path: path.to_path_buf(),
        detail: detail.into(),
    };
    if got < head.len() || &head[12..16] != b"IHDR" {
        return Err(corrupt("no IHDR header chunk"));
    }
    let be32 =
        |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as usize;
    let (width, height) = (be32(16), be32(20));
    if width == 0 || height == 0 {
        return Err(corrupt("zero width or height"));
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{width}x{height} is larger than the {MAX_PIXELS} pixels supported"),
        });
    }
    Ok(Header {
        width,
        height,
        sixteen: head[24] == 16,
    })
}

fn decode_error(path: &Path, e: png::DecodingError) -> MediaError {
    match e {
        png::DecodingError::IoError(io) if io.kind() != io::ErrorKind::UnexpectedEof => {
            MediaError::read(path, io)
        }
        png::DecodingError::IoError(_) => MediaError::CorruptPng {
            path: path.to_path_buf(),
            detail: "file is truncated".into(),
        },
        other => MediaError::CorruptPng {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// Decodes one PNG to interleaved RGB: palette and low bit depths are expanded, gray is
/// replicated, alpha is dropped (not composited). `sixteen` widens 8-bit files by 257.
pub(crate) fn decode(path: &Path, sixteen: bool) -> Result<Frame, MediaError> {
    let file = fs::File::open(path).map_err(|e| MediaError::read(path, e))?;
    // The default 64 MiB limit on the decoder's own buffers is too small for 8K 16-bit rows with
    // interlacing; the output buffer is ours and not counted.
    let limits = png::Limits { bytes: 1 << 30 };
    let mut decoder = png::Decoder::new_with_limits(BufReader::new(file), limits);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| decode_error(path, e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| MediaError::CorruptPng {
            path: path.to_path_buf(),
            detail: "image too large".into(),
        })?;
    let mut buf = vec![0u8; size];
    let out = reader
        .next_frame(&mut buf)
        .map_err(|e| decode_error(path, e))?;
    buf.truncate(out.buffer_size());
    let (width, height) = (out.width as usize, out.height as usize);
    let channels = match out.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(MediaError::CorruptPng {
                path: path.to_path_buf(),
                detail: "palette image was not expanded".into(),
            })
        }
    };
    let is16 = out.bit_depth == png::BitDepth::Sixteen;
    if is16 && !sixteen {
        // Its header said 8 bits when the folder was scanned: the file changed under us.
        return Err(MediaError::CorruptPng {
            path: path.to_path_buf(),
            detail: "bit depth changed while reading".into(),
        });
    }
    let bytes_per_sample = if is16 { 2 } else { 1 };
    let row_bytes = out.line_size;
    let mut rgb16 = Vec::new();
    let mut rgb8 = Vec::new();
    let n = width * height * 3;
    if sixteen {
        rgb16.reserve(n)
    } else {
        rgb8.reserve(n)
    }
    for row in buf.chunks_exact(row_bytes).take(height) {
        for px in
            row[..width * channels * bytes_per_sample].chunks_exact(channels * bytes_per_sample)
        {
            let sample = |c: usize| -> u16 {
                if is16 {
                    u16::from_be_bytes([px[2 * c], px[2 * c + 1]])
                } else {
                    px[c] as u16
                }
            };
            let rgb = if channels < 3 {
                [sample(0); 3]
            } else {
                [sample(0), sample(1), sample(2)]
            };
            match (sixteen, is16) {
                (true, true) => rgb16.extend_from_slice(&rgb),
                (true, false) => rgb16.extend(rgb.iter().map(|&v| v * 257)),
                (false, _) => rgb8.extend(rgb.iter().map(|&v| v as u8)),
            }
        }
    }
    let data = if sixteen {
        FrameData::U16(rgb16)
    } else {
        FrameData::U8(rgb8)
    };
    let frame = Frame {
        width,
        height,
        bit_depth: if sixteen { 16 } else { 8 },
        data,
    };
    if !frame.is_consistent() {
        return Err(MediaError::CorruptPng {
            path: path.to_path_buf(),
            detail: "short image data".into(),
        });
    }
    Ok(frame)
}

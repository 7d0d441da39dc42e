//! DPX (SMPTE 268M) frames: our own reader and writer (no maintained crate reads DPX pixels).
//!
//! Reading: either byte order (`SDPX` big-endian, `XPDS` little-endian); the first image element;
//! RGB (descriptor 50), RGBA (51, alpha dropped), ABGR (52) or luma (6, replicated to RGB);
//! 8 and 16 bits, 10 and 12 bits filled to 32-bit words (packing 1 = method A, padding in the low
//! bits; 2 = method B, padding in the high bits). 10-bit samples are scaled to 16 bits as
//! `round(c · 65535 / 1023)`, 12-bit ones likewise; RLE encoding and bit-packed 10/12-bit data
//! (packing 0) are refused.
//!
//! Writing: 10-bit RGB, method A (three components per big-endian 32-bit word, R in bits 31–22,
//! G in 21–12, B in 11–2), a full 2048-byte header (generic, image, orientation, film and TV
//! headers), image data at offset 2048, full-range code values 0–1023.

use std::path::Path;

use crate::frame::{Frame, FrameData, MAX_PIXELS};
use crate::MediaError;

/// Size of the header we write (generic 1664 + industry 384 bytes); image data follows it.
pub(crate) const HEADER_SIZE: usize = 2048;

/// Transfer characteristic and colorimetric specification codes written to a DPX image element
/// (SMPTE 268M table values: 0 user-defined, 1 printing density, 2 linear, 3 logarithmic,
/// 4 unspecified video, 5 SMPTE 274M, 6 ITU-R BT.709-4, 7 BT.601 625-line, 8 BT.601 525-line,
/// 9 composite NTSC, 10 composite PAL, 11 Z linear, 12 Z homogeneous; later editions add
/// 13 ADX, 14 BT.2020 NCL, 15 BT.2020 CL). The default is BT.709 for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpxColor {
    pub transfer: u8,
    pub colorimetric: u8,
}

impl DpxColor {
    /// ITU-R BT.709-4 transfer and colorimetry (6, 6): ordinary SDR video frames.
    pub const BT709: DpxColor = DpxColor {
        transfer: 6,
        colorimetric: 6,
    };
    /// Printing density (1, 1): film scans.
    pub const PRINTING_DENSITY: DpxColor = DpxColor {
        transfer: 1,
        colorimetric: 1,
    };
    /// Linear light with BT.709 primaries (2, 6).
    pub const LINEAR_BT709: DpxColor = DpxColor {
        transfer: 2,
        colorimetric: 6,
    };
    /// User-defined (0, 0): the header makes no claim.
    pub const USER_DEFINED: DpxColor = DpxColor {
        transfer: 0,
        colorimetric: 0,
    };
}

impl Default for DpxColor {
    fn default() -> Self {
        DpxColor::BT709
    }
}

/// What the writer needs besides the frame.
#[derive(Clone, Debug, Default)]
pub(crate) struct DpxWriteOptions {
    pub color: DpxColor,
    pub fps: Option<(u32, u32)>,
    pub pixel_aspect: Option<(u32, u32)>,
    /// Written into the header's file name field (truncated to 99 bytes).
    pub file_name: String,
}

fn put_u32(h: &mut [u8], at: usize, v: u32) {
    h[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_u16(h: &mut [u8], at: usize, v: u16) {
    h[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put_str(h: &mut [u8], at: usize, len: usize, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(len - 1); // keep a terminating NUL
    h[at..at + n].copy_from_slice(&b[..n]);
}

const UNDEFINED: u32 = 0xffff_ffff;

/// 16-bit (or widened 8-bit) sample to a 10-bit code, rounded to nearest.
fn to10(v: u32, max: u32) -> u32 {
    (v * 1023 + max / 2) / max
}

/// Encodes a frame as a 10-bit RGB DPX file (header and data), ready to be written.
pub(crate) fn encode(frame: &Frame, opts: &DpxWriteOptions) -> Result<Vec<u8>, String> {
    let (w, h) = (frame.width, frame.height);
    let data_len = w
        .checked_mul(h)
        .and_then(|n| n.checked_mul(4))
        .filter(|&n| n <= u32::MAX as usize - HEADER_SIZE)
        .ok_or("frame too large for DPX")?;
    let total = HEADER_SIZE + data_len;
    let mut out = vec![0u8; total];
    let hd = &mut out[..HEADER_SIZE];

    // Generic file header (0..768).
    hd[0..4].copy_from_slice(b"SDPX");
    put_u32(hd, 4, HEADER_SIZE as u32); // offset to image data
    put_str(hd, 8, 8, "V2.0");
    put_u32(hd, 16, total as u32); // file size
    put_u32(hd, 20, 1); // ditto key: new frame
    put_u32(hd, 24, 1664); // generic header size
    put_u32(hd, 28, 384); // industry header size
    put_u32(hd, 32, 0); // user data size
    put_str(hd, 36, 100, &opts.file_name);
    put_str(
        hd,
        160,
        100,
        concat!("flashvsr ", env!("CARGO_PKG_VERSION")),
    );
    put_u32(hd, 660, UNDEFINED); // encryption key: not encrypted

    // Image information header (768..1408).
    put_u16(hd, 768, 0); // orientation: left to right, top to bottom
    put_u16(hd, 770, 1); // number of image elements
    put_u32(hd, 772, w as u32);
    put_u32(hd, 776, h as u32);
    let e = 780; // image element 1
    put_u32(hd, e, 0); // data sign: unsigned
    put_u32(hd, e + 4, 0); // reference low data code
    put_u32(hd, e + 8, UNDEFINED); // reference low quantity
    put_u32(hd, e + 12, 1023); // reference high data code
    put_u32(hd, e + 16, UNDEFINED); // reference high quantity
    hd[e + 20] = 50; // descriptor: RGB
    hd[e + 21] = opts.color.transfer;
    hd[e + 22] = opts.color.colorimetric;
    hd[e + 23] = 10; // bit size
    put_u16(hd, e + 24, 1); // packing: filled to 32-bit words, method A
    put_u16(hd, e + 26, 0); // encoding: none
    put_u32(hd, e + 28, HEADER_SIZE as u32); // offset to data
    put_u32(hd, e + 32, 0); // end-of-line padding
    put_u32(hd, e + 36, 0); // end-of-image padding

    // Orientation header (1408..1664).
    put_u32(hd, 1408, 0); // x offset
    put_u32(hd, 1412, 0); // y offset
    put_u32(hd, 1416, UNDEFINED); // x centre
    put_u32(hd, 1420, UNDEFINED); // y centre
    put_u32(hd, 1424, w as u32); // x original size
    put_u32(hd, 1428, h as u32); // y original size
    let (pa_h, pa_v) = opts.pixel_aspect.unwrap_or((1, 1));
    put_u32(hd, 1628, pa_h);
    put_u32(hd, 1632, pa_v);

    // Film industry header (1664..1920): numbers undefined, except the frame rate if known.
    for at in [1712, 1716, 1720, 1724, 1728] {
        put_u32(hd, at, UNDEFINED);
    }
    // Television industry header (1920..2048).
    put_u32(hd, 1920, UNDEFINED); // time code
    put_u32(hd, 1924, UNDEFINED); // user bits
    hd[1928] = 0; // interlace: none
    hd[1929] = 0xff; // field number: undefined
    hd[1930] = 0; // video signal standard: undefined
    for at in (1932..=1968).step_by(4) {
        put_u32(hd, at, UNDEFINED);
    }
    if let Some((num, den)) = opts.fps.filter(|&(n, d)| n > 0 && d > 0) {
        let rate = (num as f64 / den as f64) as f32;
        put_u32(hd, 1724, rate.to_bits()); // film frame rate
        put_u32(hd, 1940, rate.to_bits()); // television frame rate
    }

    let body = &mut out[HEADER_SIZE..];
    let words = body.chunks_exact_mut(4);
    match &frame.data {
        FrameData::U8(d) => {
            for (px, word) in d.chunks_exact(3).zip(words) {
                let [r, g, b] = [0, 1, 2].map(|c| to10(px[c] as u32, 255));
                word.copy_from_slice(&(r << 22 | g << 12 | b << 2).to_be_bytes());
            }
        }
        FrameData::U16(d) => {
            for (px, word) in d.chunks_exact(3).zip(words) {
                let [r, g, b] = [0, 1, 2].map(|c| to10(px[c] as u32, 65535));
                word.copy_from_slice(&(r << 22 | g << 12 | b << 2).to_be_bytes());
            }
        }
    }
    Ok(out)
}

/// The parts of a DPX header the reader uses.
#[derive(Clone, Debug)]
pub(crate) struct DpxHeader {
    pub width: usize,
    pub height: usize,
    big_endian: bool,
    data_offset: usize,
    /// Components per pixel in the file and how they map to RGB.
    layout: Layout,
    pub bits: u8,
    packing: u16,
    eol_padding: usize,
    /// Transfer characteristic and colorimetric codes of the first image element.
    pub color: DpxColor,
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Rgb,
    Rgba,
    Abgr,
    Luma,
}

impl Layout {
    fn components(self) -> usize {
        match self {
            Layout::Rgb => 3,
            Layout::Rgba | Layout::Abgr => 4,
            Layout::Luma => 1,
        }
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> MediaError {
    MediaError::CorruptImage {
        path: path.to_path_buf(),
        format: "DPX",
        detail: detail.into(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> MediaError {
    MediaError::Unsupported {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl DpxHeader {
    /// Parses the header from the start of a file (at least the first 808 bytes are needed; the
    /// file length is checked against the image size by [`decode`]).
    pub(crate) fn parse(path: &Path, b: &[u8]) -> Result<DpxHeader, MediaError> {
        let big_endian = match b.get(0..4) {
            Some(b"SDPX") => true,
            Some(b"XPDS") => false,
            _ => return Err(unsupported(path, "not a DPX image")),
        };
        if b.len() < 816 {
            return Err(corrupt(path, "file is truncated (header incomplete)"));
        }
        let u32_at = |at: usize| {
            let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        let u16_at = |at: usize| {
            let w = [b[at], b[at + 1]];
            if big_endian {
                u16::from_be_bytes(w)
            } else {
                u16::from_le_bytes(w)
            }
        };
        let data_offset = u32_at(4) as usize;
        let elements = u16_at(770);
        let (width, height) = (u32_at(772) as usize, u32_at(776) as usize);
        let sign = u32_at(780);
        let descriptor = b[800];
        let color = DpxColor {
            transfer: b[801],
            colorimetric: b[802],
        };
        let bits = b[803];
        let packing = u16_at(804);
        let encoding = u16_at(806);
        let eol = u32_at(812);
        if data_offset < 808 {
            return Err(corrupt(
                path,
                format!("offset to image data {data_offset} lies inside the header"),
            ));
        }
        if elements == 0 || elements > 8 {
            return Err(corrupt(
                path,
                format!("{elements} image elements (1 to 8 allowed)"),
            ));
        }
        if width == 0 || height == 0 || width == UNDEFINED as usize || height == UNDEFINED as usize
        {
            return Err(corrupt(path, format!("bad image size {width}x{height}")));
        }
        if width.saturating_mul(height) > MAX_PIXELS {
            return Err(unsupported(
                path,
                format!("{width}x{height} is larger than the {MAX_PIXELS} pixels supported"),
            ));
        }
        if sign == 1 {
            return Err(unsupported(path, "signed DPX samples are not supported"));
        }
        if encoding != 0 && encoding as u32 != 0xffff {
            return Err(unsupported(path, "run-length encoded DPX is not supported"));
        }
        let layout = match descriptor {
            50 => Layout::Rgb,
            51 => Layout::Rgba,
            52 => Layout::Abgr,
            6 => Layout::Luma,
            d => {
                return Err(unsupported(
                    path,
                    format!(
                        "DPX descriptor {d} is not supported (only RGB 50, RGBA 51, ABGR 52 \
                         and luma 6)"
                    ),
                ))
            }
        };
        match (bits, packing) {
            (8 | 16, _) => {}
            (10 | 12, 1 | 2) => {}
            (10 | 12, 0) => {
                return Err(unsupported(
                    path,
                    format!("bit-packed {bits}-bit DPX (packing 0) is not supported"),
                ))
            }
            (10 | 12, p) => return Err(corrupt(path, format!("unknown packing {p}"))),
            (b, _) => {
                return Err(unsupported(
                    path,
                    format!("{b}-bit DPX is not supported (8, 10, 12 and 16 bits are)"),
                ))
            }
        }
        Ok(DpxHeader {
            width,
            height,
            big_endian,
            data_offset,
            layout,
            bits,
            packing,
            eol_padding: if eol == UNDEFINED { 0 } else { eol as usize },
            color,
        })
    }

    /// Bytes of image data in one line, without end-of-line padding.
    fn line_bytes(&self) -> usize {
        let comps = self.width * self.layout.components();
        match self.bits {
            8 => comps,
            10 => comps.div_ceil(3) * 4,
            _ => comps * 2, // 12 bits in 16-bit words, or 16 bits
        }
    }
}

/// Decodes the first image element of a DPX file held in `b`. 8-bit files give 8-bit frames
/// unless `sixteen`; everything else gives 16-bit frames.
pub(crate) fn decode(path: &Path, b: &[u8], sixteen: bool) -> Result<Frame, MediaError> {
    let hdr = DpxHeader::parse(path, b)?;
    let (w, h) = (hdr.width, hdr.height);
    let line = hdr.line_bytes();
    // 8/12/16-bit lines are often padded to whole 32-bit words; ffmpeg accepts both when the
    // end-of-line padding field does not say, and so do we: aligned if the file is long enough.
    let mut stride = line + hdr.eol_padding;
    if hdr.eol_padding == 0 && line % 4 != 0 {
        let aligned = line.div_ceil(4) * 4;
        if hdr.data_offset.saturating_add(aligned * (h - 1) + line) <= b.len() {
            stride = aligned;
        }
    }
    let need = stride
        .checked_mul(h - 1)
        .and_then(|n| n.checked_add(line))
        .and_then(|n| n.checked_add(hdr.data_offset))
        .ok_or_else(|| corrupt(path, "image size overflows"))?;
    if need > b.len() {
        return Err(corrupt(
            path,
            format!(
                "file is truncated: {w}x{h} {}-bit image needs {need} bytes, the file has {}",
                hdr.bits,
                b.len()
            ),
        ));
    }
    let nc = hdr.layout.components();
    let be = hdr.big_endian;
    let rd16 = |p: &[u8]| {
        if be {
            u16::from_be_bytes([p[0], p[1]])
        } else {
            u16::from_le_bytes([p[0], p[1]])
        }
    };
    let rd32 = |p: &[u8]| {
        if be {
            u32::from_be_bytes([p[0], p[1], p[2], p[3]])
        } else {
            u32::from_le_bytes([p[0], p[1], p[2], p[3]])
        }
    };
    // Components of one line as raw codes.
    let mut comps: Vec<u16> = Vec::with_capacity(w * nc + 2);
    let mut rgb8: Vec<u8> = Vec::new();
    let mut rgb16: Vec<u16> = Vec::new();
    let out8 = hdr.bits == 8 && !sixteen;
    if out8 {
        rgb8.reserve(w * h * 3);
    } else {
        rgb16.reserve(w * h * 3);
    }
    let max = ((1u32 << hdr.bits) - 1) as u64;
    for y in 0..h {
        let start = hdr.data_offset + y * stride;
        let src = &b[start..start + line];
        comps.clear();
        match (hdr.bits, hdr.packing) {
            (8, _) => comps.extend(src[..w * nc].iter().map(|&v| v as u16)),
            (16, _) => comps.extend(src.chunks_exact(2).take(w * nc).map(rd16)),
            (12, 1) => comps.extend(src.chunks_exact(2).take(w * nc).map(|p| rd16(p) >> 4)),
            (12, _) => comps.extend(src.chunks_exact(2).take(w * nc).map(|p| rd16(p) & 0xfff)),
            (10, p) => {
                let shift = if p == 1 { 2 } else { 0 };
                for word in src.chunks_exact(4) {
                    let v = rd32(word) >> shift;
                    comps.extend([
                        (v >> 20) as u16 & 0x3ff,
                        (v >> 10) as u16 & 0x3ff,
                        v as u16 & 0x3ff,
                    ]);
                }
                comps.truncate(w * nc);
            }
            _ => unreachable!("checked by DpxHeader::parse"),
        }
        for px in comps.chunks_exact(nc) {
            let rgb = match hdr.layout {
                Layout::Rgb | Layout::Rgba => [px[0], px[1], px[2]],
                Layout::Abgr => [px[3], px[2], px[1]],
                Layout::Luma => [px[0]; 3],
            };
            if out8 {
                rgb8.extend(rgb.map(|v| v as u8));
            } else if hdr.bits == 16 {
                rgb16.extend(rgb);
            } else {
                rgb16.extend(rgb.map(|v| ((v as u64 * 65535 + max / 2) / max) as u16));
            }
        }
    }
    let frame = if out8 {
        Frame::from_u8(w, h, rgb8)
    } else {
        Frame::from_u16(w, h, rgb16)
    };
    Ok(frame)
}

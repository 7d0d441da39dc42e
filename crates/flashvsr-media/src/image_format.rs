//! Still-image formats of frame files, recognised by their first bytes (never by extension).

use crate::frame::SourceKind;

/// A still-image file format frames can be read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// PNG, 1–16 bits, gray, RGB, palette, with or without alpha.
    Png,
    /// Baseline and progressive JPEG (8 bits).
    Jpeg,
    /// TIFF: 8/16-bit integer or 32-bit float samples, gray or RGB, with or without alpha.
    Tiff,
    /// OpenEXR: half or float RGB(A); values are taken as display-referred, clamped to [0, 1].
    Exr,
    /// SMPTE 268M DPX: 8, 10 (packing method A or B), 12 (A or B) or 16 bits; RGB, RGBA or luma;
    /// either byte order.
    Dpx,
}

impl ImageFormat {
    /// The short name used in messages: "PNG", "JPEG", "TIFF", "EXR", "DPX".
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "PNG",
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::Exr => "EXR",
            ImageFormat::Dpx => "DPX",
        }
    }

    /// The format of a file that starts with `head` (8 bytes are enough), if it is one of ours.
    pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
        const PNG: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
        let starts = |m: &[u8]| head.starts_with(m);
        if starts(&PNG) {
            Some(ImageFormat::Png)
        } else if starts(&[0xff, 0xd8, 0xff]) {
            Some(ImageFormat::Jpeg)
        } else if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
            Some(ImageFormat::Tiff)
        } else if starts(&[0x76, 0x2f, 0x31, 0x01]) {
            Some(ImageFormat::Exr)
        } else if starts(b"SDPX") || starts(b"XPDS") {
            Some(ImageFormat::Dpx)
        } else {
            None
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// File extensions (lower case) of the formats we read; a folder's frames are the files with
/// one of these, whatever their content turns out to be.
pub(crate) const READ_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "jpe", "tif", "tiff", "exr", "dpx"];

/// Image formats someone may well put in a frame folder that we cannot read: refusing them beats
/// silently skipping frames.
pub(crate) const UNREAD_EXTENSIONS: &[&str] = &[
    "bmp", "webp", "gif", "avif", "heic", "heif", "jxl", "jp2", "j2k", "tga", "cin", "psd",
];

impl SourceKind {
    /// The still-image format of an image file or folder source; `None` for streams.
    pub fn image_format(&self) -> Option<ImageFormat> {
        match *self {
            SourceKind::PngImage | SourceKind::PngSequence => Some(ImageFormat::Png),
            SourceKind::Image(f) | SourceKind::ImageSequence(f) => Some(f),
            _ => None,
        }
    }

    /// True for a directory of image files (the frame rate is then unknown: `--fps` sets it).
    pub fn is_image_sequence(&self) -> bool {
        matches!(self, SourceKind::PngSequence | SourceKind::ImageSequence(_))
    }
}

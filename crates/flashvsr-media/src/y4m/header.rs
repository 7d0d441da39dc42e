//! The stream header: `YUV4MPEG2 W.. H.. F.. I.. A.. C.. X..` and the sample layout it implies.

use std::path::Path;

use crate::frame::{YuvRange, MAX_PIXELS};
use crate::yuv::Siting;
use crate::MediaError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Mono,
    /// Horizontal and vertical chroma subsampling factors and where chroma samples sit.
    Yuv {
        sub_x: usize,
        sub_y: usize,
        h_cosited: bool,
        v_cosited: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Colorspace {
    pub tag: &'static str,
    pub bits: u32,
    pub layout: Layout,
    /// `444alpha`: a fourth, full-size plane follows (read and dropped).
    pub alpha: bool,
}

const fn yuv(sub_x: usize, sub_y: usize, h_cosited: bool, v_cosited: bool) -> Layout {
    Layout::Yuv {
        sub_x,
        sub_y,
        h_cosited,
        v_cosited,
    }
}

const C420: Layout = yuv(2, 2, false, false);
const C422: Layout = yuv(2, 1, true, false);
const C444: Layout = yuv(1, 1, false, false);

/// Every colourspace tag we read (ffmpeg's set). High-bit 4:2:0 carries no siting in y4m; it is
/// taken as centred like plain `420`.
const COLORSPACES: &[(&str, u32, Layout, bool)] = &[
    ("420jpeg", 8, C420, false),
    ("420paldv", 8, yuv(2, 2, true, true), false),
    ("420mpeg2", 8, yuv(2, 2, true, false), false),
    ("420", 8, C420, false),
    ("411", 8, yuv(4, 1, true, false), false),
    ("422", 8, C422, false),
    ("444", 8, C444, false),
    ("444alpha", 8, C444, true),
    ("mono", 8, Layout::Mono, false),
    ("420p9", 9, C420, false),
    ("420p10", 10, C420, false),
    ("420p12", 12, C420, false),
    ("420p14", 14, C420, false),
    ("420p16", 16, C420, false),
    ("422p9", 9, C422, false),
    ("422p10", 10, C422, false),
    ("422p12", 12, C422, false),
    ("422p14", 14, C422, false),
    ("422p16", 16, C422, false),
    ("444p9", 9, C444, false),
    ("444p10", 10, C444, false),
    ("444p12", 12, C444, false),
    ("444p14", 14, C444, false),
    ("444p16", 16, C444, false),
    ("mono9", 9, Layout::Mono, false),
    ("mono10", 10, Layout::Mono, false),
    ("mono12", 12, Layout::Mono, false),
    ("mono14", 14, Layout::Mono, false),
    ("mono16", 16, Layout::Mono, false),
];

pub(crate) fn colorspace(tag: &str) -> Option<Colorspace> {
    COLORSPACES
        .iter()
        .find(|c| c.0 == tag)
        .map(|&(tag, bits, layout, alpha)| Colorspace {
            tag,
            bits,
            layout,
            alpha,
        })
}

impl Colorspace {
    pub(crate) fn bytes_per_sample(&self) -> usize {
        if self.bits > 8 {
            2
        } else {
            1
        }
    }

    /// Chroma plane size for a `w`×`h` frame (rounded up, as ffmpeg does for odd sizes).
    pub(crate) fn chroma_size(&self, w: usize, h: usize) -> (usize, usize) {
        match self.layout {
            Layout::Mono => (0, 0),
            Layout::Yuv { sub_x, sub_y, .. } => (w.div_ceil(sub_x), h.div_ceil(sub_y)),
        }
    }

    pub(crate) fn siting(&self) -> Siting {
        match self.layout {
            Layout::Yuv {
                h_cosited,
                v_cosited,
                ..
            } => Siting {
                h_cosited,
                v_cosited,
            },
            Layout::Mono => Siting {
                h_cosited: false,
                v_cosited: false,
            },
        }
    }

    /// Bytes of one frame's sample data (without the FRAME line).
    pub(crate) fn frame_bytes(&self, w: usize, h: usize) -> usize {
        let (cw, ch) = self.chroma_size(w, h);
        let planes = w * h * (1 + self.alpha as usize) + 2 * cw * ch;
        planes * self.bytes_per_sample()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub width: usize,
    pub height: usize,
    pub fps: Option<(u32, u32)>,
    pub aspect: Option<(u32, u32)>,
    pub interlaced: bool,
    pub colorspace: Colorspace,
    pub range: Option<YuvRange>,
}

fn ratio(value: &str) -> Option<(u32, u32)> {
    let (n, d) = value.split_once(':')?;
    Some((n.parse().ok()?, d.parse().ok()?))
}

/// Parses the header line (without its newline).
pub(crate) fn parse(line: &[u8], path: &Path) -> Result<Header, MediaError> {
    let bad = |detail: String| MediaError::Y4m {
        path: path.to_path_buf(),
        detail,
    };
    let line = std::str::from_utf8(line).map_err(|_| bad("header is not ASCII text".into()))?;
    let mut tokens = line.split(' ').filter(|t| !t.is_empty());
    if tokens.next() != Some("YUV4MPEG2") {
        return Err(bad("missing YUV4MPEG2 signature".into()));
    }
    let (mut width, mut height) = (None, None);
    let mut header = Header {
        width: 0,
        height: 0,
        fps: None,
        aspect: None,
        interlaced: false,
        colorspace: colorspace("420jpeg").expect("default colourspace is in the table"),
        range: None,
    };
    for token in tokens {
        let mut chars = token.chars();
        let tag = chars.next();
        let value = chars.as_str();
        match tag {
            Some('W') => {
                width = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad(format!("bad width {token:?}")))?,
                )
            }
            Some('H') => {
                height = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad(format!("bad height {token:?}")))?,
                )
            }
            Some('F') => {
                let r = ratio(value).ok_or_else(|| bad(format!("bad frame rate {token:?}")))?;
                header.fps = (r.0 > 0 && r.1 > 0).then_some(r);
            }
            Some('A') => {
                let r = ratio(value).ok_or_else(|| bad(format!("bad pixel aspect {token:?}")))?;
                header.aspect = (r.0 > 0 && r.1 > 0).then_some(r);
            }
            Some('I') => header.interlaced = matches!(value, "t" | "b" | "m"),
            Some('C') => {
                header.colorspace = colorspace(value)
                    .ok_or_else(|| bad(format!("unsupported colourspace C{value}")))?;
            }
            Some('X') => match value {
                "COLORRANGE=FULL" => header.range = Some(YuvRange::Full),
                "COLORRANGE=LIMITED" => header.range = Some(YuvRange::Limited),
                _ => {}
            },
            _ => {}
        }
    }
    let (Some(w), Some(h)) = (width, height) else {
        return Err(bad("header lacks the W or H tag".into()));
    };
    if w == 0 || h == 0 || w.checked_mul(h).is_none_or(|n| n > MAX_PIXELS) {
        return Err(bad(format!("unsupported frame size {w}x{h}")));
    }
    header.width = w;
    header.height = h;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ffmpeg_header() {
        let h = parse(
            b"YUV4MPEG2 W720 H480 F30000:1001 Ip A32:27 C420mpeg2 XYSCSS=420MPEG2 XCOLORRANGE=FULL",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!((h.width, h.height), (720, 480));
        assert_eq!(h.fps, Some((30000, 1001)));
        assert_eq!(h.aspect, Some((32, 27)));
        assert!(!h.interlaced);
        assert_eq!(h.colorspace.tag, "420mpeg2");
        assert_eq!(h.range, Some(YuvRange::Full));
        assert_eq!(h.colorspace.frame_bytes(720, 480), 720 * 480 * 3 / 2);
    }

    #[test]
    fn odd_sizes_round_chroma_up() {
        let c = colorspace("420p10").unwrap();
        assert_eq!(c.chroma_size(5, 3), (3, 2));
        assert_eq!(c.frame_bytes(5, 3), (15 + 2 * 6) * 2);
    }

    #[test]
    fn rejects_unknown_colourspace() {
        let e = parse(b"YUV4MPEG2 W4 H4 C420p11", Path::new("in.y4m")).unwrap_err();
        assert!(
            e.to_string().contains("in.y4m") && e.to_string().contains("C420p11"),
            "{e}"
        );
    }
}

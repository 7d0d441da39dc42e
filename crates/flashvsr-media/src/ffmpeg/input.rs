//! Opening containers by content, picking streams, and reading colour metadata.

use std::io;
use std::os::raw::c_int;
use std::path::Path;
use std::ptr;

use super::meta::{
    ChromaLocation, ColourPrimaries, ContentLight, DisplayLuminance, DisplayPrimaries,
    MasteringDisplay, MatrixCoefficients, TransferCharacteristic, VideoColour,
};
use super::sys::{self, c_path, enum_int, err_string, errno_of, ff, static_str, Dict, InputCtx};
use crate::frame::YuvRange;
use crate::MediaError;

/// Below this probe score libav itself warns "misdetection possible".
const MIN_SCORE: c_int = ff::AVPROBE_SCORE_MAX as c_int / 4;

/// Demuxers never used for inputs: playlists and scripts that open other files or URLs, text
/// formats that turn any file into "video".
const REFUSED: &[&str] = &["hls", "concat", "tty", "lavfi", "ffmetadata", "data"];

/// An opened demuxer whose error messages are watched.
pub(crate) struct Demuxer {
    // Declared first, so dropped first: the watch ends while the context still exists.
    pub(crate) log: sys::LogWatch,
    pub(crate) ctx: InputCtx,
}

impl Demuxer {
    pub(crate) fn streams(&self) -> &[*mut ff::AVStream] {
        // SAFETY: `streams` holds `nb_streams` valid pointers while the context lives.
        unsafe {
            let c = self.ctx.as_ptr();
            if (*c).nb_streams == 0 || (*c).streams.is_null() {
                return &[];
            }
            std::slice::from_raw_parts((*c).streams, (*c).nb_streams as usize)
        }
    }

    pub(crate) fn format_name(&self) -> &'static str {
        // SAFETY: an opened input has its format set.
        unsafe { static_str((*(*self.ctx.as_ptr()).iformat).name) }
    }
}

fn io_error(path: &Path, code: c_int) -> MediaError {
    match errno_of(code) {
        Some(e) => MediaError::read(path, io::Error::from_raw_os_error(e)),
        None => MediaError::read(path, io::Error::other(err_string(code))),
    }
}

/// Opens `path` if libav recognises its content (the file name plays no part). `Ok(None)`: not a
/// format libav reads with confidence. Errors: unreadable, or recognised but broken.
pub(crate) fn open(path: &Path) -> Result<Option<Demuxer>, MediaError> {
    sys::init();
    let unsupported = |reason: String| MediaError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let cpath = c_path(path).ok_or_else(|| unsupported("the path contains a NUL byte".into()))?;
    // SAFETY: every pointer below is checked; the AVIO context is closed on every path.
    unsafe {
        let mut pb: *mut ff::AVIOContext = ptr::null_mut();
        let r = ff::avio_open2(
            &mut pb,
            cpath.as_ptr(),
            ff::AVIO_FLAG_READ as c_int,
            ptr::null(),
            ptr::null_mut(),
        );
        if r < 0 {
            return Err(io_error(path, r));
        }
        let mut fmt: *const ff::AVInputFormat = ptr::null();
        let score = ff::av_probe_input_buffer2(pb, &mut fmt, c"".as_ptr(), ptr::null_mut(), 0, 0);
        ff::avio_closep(&mut pb);
        if score < MIN_SCORE || fmt.is_null() || REFUSED.contains(&static_str((*fmt).name)) {
            return Ok(None);
        }
        let long_name = static_str((*fmt).long_name);

        let mut ctx = ff::avformat_alloc_context();
        if ctx.is_null() {
            return Err(unsupported("out of memory".into()));
        }
        let log = sys::LogWatch::new(ctx);
        let mut opts = Dict::new();
        opts.set("protocol_whitelist", "file");
        let r = ff::avformat_open_input(&mut ctx, cpath.as_ptr(), fmt, &mut opts.0);
        if r < 0 {
            // avformat_open_input freed the context.
            return Err(match errno_of(r) {
                Some(_) if r != ff::AVERROR(ff::EINVAL) => io_error(path, r),
                _ => unsupported(format!(
                    "not a readable {long_name} file: {}",
                    log.error().unwrap_or_else(|| err_string(r))
                )),
            });
        }
        let ctx = InputCtx(ctx);
        let r = ff::avformat_find_stream_info(ctx.as_ptr(), ptr::null_mut());
        if r < 0 {
            return Err(unsupported(format!(
                "cannot read the streams of this {long_name} file: {}",
                log.error().unwrap_or_else(|| err_string(r))
            )));
        }
        Ok(Some(Demuxer { log, ctx }))
    }
}

/// Index of the main video stream: libav's best pick among video streams that are not cover art.
pub(crate) fn best_video_stream(d: &Demuxer) -> Option<usize> {
    let candidates: Vec<usize> = d
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, &st)| {
            // SAFETY: valid stream pointers.
            unsafe {
                enum_int(&(*(*st).codecpar).codec_type)
                    == ff::AVMediaType::AVMEDIA_TYPE_VIDEO as c_int
                    && (*st).disposition & ff::AV_DISPOSITION_ATTACHED_PIC as c_int == 0
            }
        })
        .map(|(i, _)| i)
        .collect();
    // SAFETY: valid context.
    let best = unsafe {
        ff::av_find_best_stream(
            d.ctx.as_ptr(),
            ff::AVMediaType::AVMEDIA_TYPE_VIDEO,
            -1,
            -1,
            ptr::null_mut(),
            0,
        )
    };
    if best >= 0 && candidates.contains(&(best as usize)) {
        Some(best as usize)
    } else {
        candidates.first().copied()
    }
}

/// `AVMasteringDisplayMetadata` (libavutil/mastering_display_metadata.h; unchanged since FFmpeg 3).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AvMastering {
    pub display_primaries: [[ff::AVRational; 2]; 3],
    pub white_point: [ff::AVRational; 2],
    pub min_luminance: ff::AVRational,
    pub max_luminance: ff::AVRational,
    pub has_primaries: c_int,
    pub has_luminance: c_int,
}

/// `AVContentLightMetadata`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AvContentLight {
    pub max_cll: u32,
    pub max_fall: u32,
}

fn units(q: ff::AVRational, per_unit: i64) -> u32 {
    if q.den == 0 || q.num < 0 {
        return 0;
    }
    let (n, d) = (q.num as i64, q.den as i64);
    ((n * per_unit + d / 2) / d).clamp(0, u32::MAX as i64) as u32
}

pub(crate) fn mastering_from_av(m: &AvMastering) -> MasteringDisplay {
    let xy = |q: &[ff::AVRational; 2]| [units(q[0], 50_000), units(q[1], 50_000)];
    MasteringDisplay {
        primaries: (m.has_primaries != 0).then(|| DisplayPrimaries {
            red: xy(&m.display_primaries[0]),
            green: xy(&m.display_primaries[1]),
            blue: xy(&m.display_primaries[2]),
            white_point: xy(&m.white_point),
        }),
        luminance: (m.has_luminance != 0).then(|| DisplayLuminance {
            max: units(m.max_luminance, 10_000),
            min: units(m.min_luminance, 10_000),
        }),
    }
}

pub(crate) fn mastering_to_av(m: &MasteringDisplay) -> AvMastering {
    let q = |v: u32, den: i32| ff::AVRational {
        num: v.min(i32::MAX as u32) as i32,
        den,
    };
    let zero = ff::AVRational { num: 0, den: 1 };
    let xy = |p: [u32; 2]| [q(p[0], 50_000), q(p[1], 50_000)];
    let mut out = AvMastering {
        display_primaries: [[zero; 2]; 3],
        white_point: [zero; 2],
        min_luminance: zero,
        max_luminance: zero,
        has_primaries: 0,
        has_luminance: 0,
    };
    if let Some(p) = m.primaries {
        out.display_primaries = [xy(p.red), xy(p.green), xy(p.blue)];
        out.white_point = xy(p.white_point);
        out.has_primaries = 1;
    }
    if let Some(l) = m.luminance {
        out.max_luminance = q(l.max, 10_000);
        out.min_luminance = q(l.min, 10_000);
        out.has_luminance = 1;
    }
    out
}

/// Reads a side-data payload as `T` if it is at least that large.
///
/// # Safety
/// `data` must point to `size` readable bytes.
unsafe fn read_payload<T: Copy>(data: *const u8, size: usize) -> Option<T> {
    (!data.is_null() && size >= std::mem::size_of::<T>())
        .then(|| ptr::read_unaligned(data as *const T))
}

/// HDR10 metadata stored by the container for a stream.
pub(crate) fn stream_hdr(
    st: *mut ff::AVStream,
) -> (Option<MasteringDisplay>, Option<ContentLight>) {
    // SAFETY: valid stream; libav returns the payload and its size.
    unsafe {
        let mut size = 0usize;
        let p = ff::av_stream_get_side_data(
            st,
            ff::AVPacketSideDataType::AV_PKT_DATA_MASTERING_DISPLAY_METADATA,
            &mut size,
        );
        let md = read_payload::<AvMastering>(p, size).map(|m| mastering_from_av(&m));
        let p = ff::av_stream_get_side_data(
            st,
            ff::AVPacketSideDataType::AV_PKT_DATA_CONTENT_LIGHT_LEVEL,
            &mut size,
        );
        let cl = read_payload::<AvContentLight>(p, size).map(|c| ContentLight {
            max_cll: c.max_cll,
            max_fall: c.max_fall,
        });
        (md, cl)
    }
}

/// HDR10 metadata a decoder attached to a frame (from SEI / OBU metadata).
pub(crate) fn frame_hdr(
    frame: *const ff::AVFrame,
) -> (Option<MasteringDisplay>, Option<ContentLight>) {
    // SAFETY: valid frame; side data entries hold `size` bytes.
    unsafe {
        let get = |t| {
            let sd = ff::av_frame_get_side_data(frame, t);
            if sd.is_null() {
                (ptr::null(), 0)
            } else {
                ((*sd).data as *const u8, (*sd).size)
            }
        };
        let (p, n) = get(ff::AVFrameSideDataType::AV_FRAME_DATA_MASTERING_DISPLAY_METADATA);
        let md = read_payload::<AvMastering>(p, n).map(|m| mastering_from_av(&m));
        let (p, n) = get(ff::AVFrameSideDataType::AV_FRAME_DATA_CONTENT_LIGHT_LEVEL);
        let cl = read_payload::<AvContentLight>(p, n).map(|c| ContentLight {
            max_cll: c.max_cll,
            max_fall: c.max_fall,
        });
        (md, cl)
    }
}

/// Colour tags as integers, 0 = unspecified for range (AVCOL_RANGE_UNSPECIFIED) and chroma
/// location; 2 = unspecified for primaries, transfer and matrix.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawTags {
    pub range: c_int,
    pub primaries: c_int,
    pub transfer: c_int,
    pub matrix: c_int,
    pub chroma: c_int,
}

impl RawTags {
    pub(crate) fn of_params(p: *const ff::AVCodecParameters) -> RawTags {
        // SAFETY: valid parameters.
        unsafe {
            RawTags {
                range: enum_int(&(*p).color_range),
                primaries: enum_int(&(*p).color_primaries),
                transfer: enum_int(&(*p).color_trc),
                matrix: enum_int(&(*p).color_space),
                chroma: enum_int(&(*p).chroma_location),
            }
        }
    }

    pub(crate) fn of_frame(f: *const ff::AVFrame) -> RawTags {
        // SAFETY: valid frame.
        unsafe {
            RawTags {
                range: enum_int(&(*f).color_range),
                primaries: enum_int(&(*f).color_primaries),
                transfer: enum_int(&(*f).color_trc),
                matrix: enum_int(&(*f).colorspace),
                chroma: enum_int(&(*f).chroma_location),
            }
        }
    }

    /// `self`, with unspecified values taken from `other`.
    pub(crate) fn or(self, other: RawTags) -> RawTags {
        let pick = |a: c_int, b: c_int, unspec: c_int| if a == unspec { b } else { a };
        RawTags {
            range: pick(self.range, other.range, 0),
            primaries: pick(self.primaries, other.primaries, 2),
            transfer: pick(self.transfer, other.transfer, 2),
            matrix: pick(self.matrix, other.matrix, 2),
            chroma: pick(self.chroma, other.chroma, 0),
        }
    }

    pub(crate) fn to_colour(self) -> VideoColour {
        let known =
            |v: c_int, unspec: c_int| (v != unspec && (0..=255).contains(&v)).then_some(v as u8);
        VideoColour {
            range: match self.range {
                1 => Some(YuvRange::Limited),
                2 => Some(YuvRange::Full),
                _ => None,
            },
            primaries: known(self.primaries, 2)
                .filter(|&v| v != 0)
                .map(ColourPrimaries)
                .filter(|p| p.name().is_some()),
            transfer: known(self.transfer, 2)
                .filter(|&v| v != 0)
                .map(TransferCharacteristic)
                .filter(|t| t.name().is_some()),
            matrix: known(self.matrix, 2)
                .map(MatrixCoefficients)
                .filter(|m| m.name().is_some()),
            chroma_location: known(self.chroma, 0)
                .map(ChromaLocation)
                .filter(|c| c.name().is_some()),
            mastering_display: None,
            content_light: None,
        }
    }
}

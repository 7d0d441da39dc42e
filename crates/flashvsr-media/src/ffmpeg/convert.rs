//! YUV ↔ RGB with swscale, with the matrix, range and chroma siting set explicitly (swscale's
//! defaults are BT.601 and limited range whatever the stream says).

use std::os::raw::c_int;
use std::ptr;

use super::meta::MatrixCoefficients;
use super::sys::{c_str, err_string, ff, static_str, AvFrame, SwsCtx};
use crate::frame::{Frame, FrameData};
use crate::MediaError;

use ff::AVPixelFormat as P;

#[cfg(target_endian = "little")]
pub(crate) const RGB48: P = P::AV_PIX_FMT_RGB48LE;
#[cfg(target_endian = "big")]
pub(crate) const RGB48: P = P::AV_PIX_FMT_RGB48BE;

/// The matrix used where a stream does not say: BT.709 from 720 rows up, BT.601 below (the
/// players' rule, as for y4m).
pub(crate) fn default_matrix(height: usize) -> MatrixCoefficients {
    if height >= 720 {
        MatrixCoefficients::BT709
    } else {
        MatrixCoefficients::SMPTE170M
    }
}

/// swscale's coefficient table for a matrix; `None` for matrices it cannot convert (then the
/// default rule applies).
pub(crate) fn sws_table(m: MatrixCoefficients) -> Option<c_int> {
    match m.0 {
        1 => Some(ff::SWS_CS_ITU709),
        4 => Some(ff::SWS_CS_FCC),
        5 | 6 => Some(ff::SWS_CS_ITU601),
        7 => Some(ff::SWS_CS_SMPTE240M),
        9 | 10 => Some(ff::SWS_CS_BT2020),
        _ => None,
    }
}

/// The matrix a conversion really uses: the given one if swscale has it, else the default rule.
pub(crate) fn effective_matrix(m: Option<MatrixCoefficients>, height: usize) -> MatrixCoefficients {
    match m {
        Some(m) if sws_table(m).is_some() => m,
        _ => default_matrix(height),
    }
}

pub(crate) struct PixFmt {
    pub fmt: c_int,
    desc: *const ff::AVPixFmtDescriptor,
}

impl PixFmt {
    pub(crate) fn new(fmt: c_int) -> Option<PixFmt> {
        if fmt < 0 {
            return None;
        }
        // SAFETY: av_pix_fmt_desc_get accepts any value and returns null for unknown ones.
        let desc = unsafe { ff::av_pix_fmt_desc_get(std::mem::transmute::<c_int, P>(fmt)) };
        (!desc.is_null()).then_some(PixFmt { fmt, desc })
    }

    pub(crate) fn by_name(name: &str) -> Option<PixFmt> {
        let c = c_str(name)?;
        // SAFETY: lookup by name.
        let f = unsafe { ff::av_get_pix_fmt(c.as_ptr()) } as c_int;
        PixFmt::new(f)
    }

    pub(crate) fn name(&self) -> &'static str {
        // SAFETY: valid descriptor.
        static_str(unsafe { (*self.desc).name })
    }

    fn flags(&self) -> u64 {
        // SAFETY: valid descriptor.
        unsafe { (*self.desc).flags }
    }

    pub(crate) fn is_rgb(&self) -> bool {
        self.flags() & ff::AV_PIX_FMT_FLAG_RGB as u64 != 0
    }

    /// Luma-only (gray) formats.
    pub(crate) fn is_gray(&self) -> bool {
        // SAFETY: valid descriptor.
        unsafe {
            (*self.desc).nb_components <= 2
                && !self.is_rgb()
                && self.flags() & ff::AV_PIX_FMT_FLAG_PAL as u64 == 0
        }
    }

    /// YUV (neither RGB, gray nor palette).
    pub(crate) fn is_yuv(&self) -> bool {
        !self.is_rgb() && !self.is_gray() && self.flags() & ff::AV_PIX_FMT_FLAG_PAL as u64 == 0
    }

    /// log2 of the horizontal and vertical chroma subsampling.
    pub(crate) fn chroma_shift(&self) -> (u8, u8) {
        // SAFETY: valid descriptor.
        unsafe { ((*self.desc).log2_chroma_w, (*self.desc).log2_chroma_h) }
    }

    pub(crate) fn subsampled(&self) -> bool {
        // SAFETY: valid descriptor.
        unsafe { (*self.desc).log2_chroma_w > 0 || (*self.desc).log2_chroma_h > 0 }
    }

    /// Bits of the deepest component.
    pub(crate) fn depth(&self) -> u8 {
        // SAFETY: valid descriptor with `nb_components` entries.
        unsafe {
            let d = &*self.desc;
            d.comp[..d.nb_components.min(4) as usize]
                .iter()
                .map(|c| c.depth)
                .max()
                .unwrap_or(8)
                .clamp(1, 16) as u8
        }
    }

    /// The JPEG ("yuvj") formats are full-range aliases: swscale wants the plain format plus an
    /// explicit range.
    pub(crate) fn dejpeg(&self) -> (c_int, bool) {
        let plain = match self.fmt {
            f if f == P::AV_PIX_FMT_YUVJ420P as c_int => P::AV_PIX_FMT_YUV420P,
            f if f == P::AV_PIX_FMT_YUVJ422P as c_int => P::AV_PIX_FMT_YUV422P,
            f if f == P::AV_PIX_FMT_YUVJ444P as c_int => P::AV_PIX_FMT_YUV444P,
            f if f == P::AV_PIX_FMT_YUVJ440P as c_int => P::AV_PIX_FMT_YUV440P,
            f if f == P::AV_PIX_FMT_YUVJ411P as c_int => P::AV_PIX_FMT_YUV411P,
            f => return (f, false),
        };
        (plain as c_int, true)
    }
}

/// Chroma sample position in swscale's units (1/256 of a luma sample) for an `AVChromaLocation`.
fn chroma_pos(loc: c_int) -> (i64, i64) {
    let loc = if (1..=6).contains(&loc) { loc } else { 1 };
    let pos = loc - 1;
    (
        ((pos & 1) * 128) as i64,
        (((pos >> 1) ^ (pos < 4) as c_int) * 128) as i64,
    )
}

/// One side of a conversion.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Side {
    pub fmt: c_int,
    /// Full-range YUV (or RGB, always full).
    pub full: bool,
    /// `AVChromaLocation` of subsampled YUV.
    pub chroma: c_int,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Spec {
    pub width: usize,
    pub height: usize,
    pub src: Side,
    pub dst: Side,
    /// swscale coefficient table (SWS_CS_*) of the YUV side.
    pub table: c_int,
}

pub(crate) struct Scaler {
    ctx: SwsCtx,
    pub spec: Spec,
}

impl Scaler {
    pub(crate) fn new(spec: Spec) -> Result<Scaler, String> {
        let flags = ff::SWS_BICUBIC
            | ff::SWS_ACCURATE_RND
            | ff::SWS_FULL_CHR_H_INT
            | ff::SWS_FULL_CHR_H_INP;
        // SAFETY: a fresh context configured through AVOptions, then initialised.
        unsafe {
            let ctx = SwsCtx(ff::sws_alloc_context());
            if ctx.0.is_null() {
                return Err("out of memory".into());
            }
            let c = ctx.as_ptr() as *mut std::ffi::c_void;
            let set = |name: &std::ffi::CStr, v: i64| ff::av_opt_set_int(c, name.as_ptr(), v, 0);
            let (src_chroma, dst_chroma) =
                (chroma_pos(spec.src.chroma), chroma_pos(spec.dst.chroma));
            let results = [
                set(c"srcw", spec.width as i64),
                set(c"srch", spec.height as i64),
                set(c"src_format", spec.src.fmt as i64),
                set(c"dstw", spec.width as i64),
                set(c"dsth", spec.height as i64),
                set(c"dst_format", spec.dst.fmt as i64),
                set(c"sws_flags", flags as i64),
                set(c"src_range", spec.src.full as i64),
                set(c"dst_range", spec.dst.full as i64),
                set(c"src_h_chr_pos", src_chroma.0),
                set(c"src_v_chr_pos", src_chroma.1),
                set(c"dst_h_chr_pos", dst_chroma.0),
                set(c"dst_v_chr_pos", dst_chroma.1),
            ];
            if let Some(&r) = results.iter().find(|&&r| r < 0) {
                return Err(format!("swscale setup: {}", err_string(r)));
            }
            let r = ff::sws_init_context(ctx.as_ptr(), ptr::null_mut(), ptr::null_mut());
            if r < 0 {
                return Err(format!(
                    "swscale cannot convert these formats: {}",
                    err_string(r)
                ));
            }
            let table = ff::sws_getCoefficients(spec.table);
            // Returns -1 when neither side is YUV (nothing to set then).
            ff::sws_setColorspaceDetails(
                ctx.as_ptr(),
                table,
                spec.src.full as c_int,
                table,
                spec.dst.full as c_int,
                0,
                1 << 16,
                1 << 16,
            );
            Ok(Scaler { ctx, spec })
        }
    }

    /// Converts `src` into `dst` (both frames of `spec`'s size and formats, `dst` writable).
    pub(crate) fn run(&self, src: *const ff::AVFrame, dst: *mut ff::AVFrame) -> Result<(), String> {
        // SAFETY: both frames are allocated with the sizes and formats of the spec.
        let r = unsafe {
            ff::sws_scale(
                self.ctx.as_ptr(),
                (*src).data.as_ptr() as *const *const u8,
                (*src).linesize.as_ptr(),
                0,
                self.spec.height as c_int,
                (*dst).data.as_ptr(),
                (*dst).linesize.as_ptr(),
            )
        };
        if r < 0 {
            Err(format!("swscale failed: {}", err_string(r)))
        } else {
            Ok(())
        }
    }
}

/// A frame with its own buffers of the given size and format.
pub(crate) fn alloc_frame(width: usize, height: usize, fmt: c_int) -> Result<AvFrame, String> {
    let f = AvFrame::new().ok_or("out of memory")?;
    // SAFETY: fresh frame; av_frame_get_buffer allocates aligned planes.
    unsafe {
        (*f.0).width = width as c_int;
        (*f.0).height = height as c_int;
        (*f.0).format = fmt;
        let r = ff::av_frame_get_buffer(f.0, 0);
        if r < 0 {
            return Err(format!(
                "cannot allocate a {width}x{height} frame: {}",
                err_string(r)
            ));
        }
    }
    Ok(f)
}

/// Copies an RGB24 / RGB48 frame out into a [`Frame`].
pub(crate) fn rgb_out(f: *const ff::AVFrame, width: usize, height: usize, sixteen: bool) -> Frame {
    let row = width * 3;
    // SAFETY: `f` holds `height` rows of at least `row` samples at `linesize` strides.
    unsafe {
        let (base, stride) = ((*f).data[0] as *const u8, (*f).linesize[0] as isize);
        if sixteen {
            let mut out = Vec::with_capacity(row * height);
            for y in 0..height {
                let line = std::slice::from_raw_parts(base.offset(stride * y as isize), row * 2);
                out.extend(
                    line.chunks_exact(2)
                        .map(|b| u16::from_ne_bytes([b[0], b[1]])),
                );
            }
            Frame::from_u16(width, height, out)
        } else {
            let mut out = Vec::with_capacity(row * height);
            for y in 0..height {
                out.extend_from_slice(std::slice::from_raw_parts(
                    base.offset(stride * y as isize),
                    row,
                ));
            }
            Frame::from_u8(width, height, out)
        }
    }
}

/// Copies a [`Frame`] into an RGB24 / RGB48 frame of the same size (allocated by [`alloc_frame`]
/// with the matching format, writable).
pub(crate) fn rgb_in(frame: &Frame, f: *mut ff::AVFrame) {
    let row = frame.width * 3;
    // SAFETY: `f` holds `height` rows of at least `row` samples at `linesize` strides.
    unsafe {
        let (base, stride) = ((*f).data[0], (*f).linesize[0] as isize);
        for y in 0..frame.height {
            let dst = base.offset(stride * y as isize);
            match &frame.data {
                FrameData::U8(d) => {
                    ptr::copy_nonoverlapping(d[y * row..].as_ptr(), dst, row);
                }
                FrameData::U16(d) => {
                    let line = std::slice::from_raw_parts_mut(dst, row * 2);
                    for (o, v) in line.chunks_exact_mut(2).zip(&d[y * row..(y + 1) * row]) {
                        o.copy_from_slice(&v.to_ne_bytes());
                    }
                }
            }
        }
    }
}

pub(crate) fn internal(path: &std::path::Path, detail: String) -> MediaError {
    MediaError::write(path, std::io::Error::other(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroma_positions_match_libav() {
        assert_eq!(chroma_pos(1), (0, 128)); // left
        assert_eq!(chroma_pos(2), (128, 128)); // center
        assert_eq!(chroma_pos(3), (0, 0)); // topleft
        assert_eq!(chroma_pos(4), (128, 0)); // top
        assert_eq!(chroma_pos(5), (0, 256)); // bottomleft
        assert_eq!(chroma_pos(6), (128, 256)); // bottom
    }
}

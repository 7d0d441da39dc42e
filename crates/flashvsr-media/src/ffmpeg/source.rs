//! Video decoding: the best video stream of a file, frame by frame, as RGB.

use std::os::raw::c_int;
use std::path::Path;
use std::ptr;

use super::convert::{self, alloc_frame, effective_matrix, sws_table, PixFmt, Scaler, Side, Spec};
use super::input::{self, Demuxer, RawTags};
use super::meta::{Timestamp, VideoColour};
use super::sys::{err_string, ff, get_dict, static_str, AvFrame, AvPacket, CodecCtx, EAGAIN};
use crate::frame::{Frame, FrameSource, SourceInfo, SourceKind, YuvRange, MAX_PIXELS};
use crate::MediaError;

/// Frames of a video file's main video stream, decoded in process and converted to RGB with the
/// stream's colour matrix, range and chroma siting (BT.709 for ≥ 720 rows and limited range where
/// the stream does not say). 8-bit sources give 8-bit frames, deeper ones 16-bit frames.
///
/// Every frame the decoder outputs is returned once, in presentation order, with its presentation
/// time ([`FrameSource::timestamp`]). Damage stops decoding with [`MediaError::CorruptVideo`],
/// which names the file and the index of the first frame that could not be decoded; the frames
/// before it are returned first.
pub struct FfmpegSource {
    info: SourceInfo,
    stream: c_int,
    time_base: ff::AVRational,
    /// Ticks of one frame at the nominal rate (for frames without a timestamp).
    frame_ticks: i64,
    pkt: AvPacket,
    raw: AvFrame,
    rgb: Option<AvFrame>,
    scaler: Option<Scaler>,
    tags: RawTags,
    /// Decoded but not yet returned (the first frame, decoded while opening).
    ready: Option<(Frame, Option<Timestamp>)>,
    last_time: Option<Timestamp>,
    /// Frames decoded so far.
    decoded: usize,
    flushing: bool,
    done: bool,
    /// Why reading stopped early; reported once the decoder has given back what it holds.
    failure: Option<String>,
    dec: CodecCtx,
    demux: Demuxer,
}

impl std::fmt::Debug for FfmpegSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegSource")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl FfmpegSource {
    /// Opens a video file (any container and codec libav reads, recognised by content). The first
    /// frame is decoded here, so a file without decodable video fails now.
    pub fn open(path: &Path) -> Result<FfmpegSource, MediaError> {
        match FfmpegSource::probe(path)? {
            Some(s) => Ok(s),
            None => Err(MediaError::Unsupported {
                path: path.to_path_buf(),
                reason: "not a video file libav recognises".into(),
            }),
        }
    }

    /// Like [`FfmpegSource::open`], but `Ok(None)` when libav does not recognise the content.
    pub(crate) fn probe(path: &Path) -> Result<Option<FfmpegSource>, MediaError> {
        let Some(demux) = input::open(path)? else {
            return Ok(None);
        };
        let unsupported = |reason: String| MediaError::Unsupported {
            path: path.to_path_buf(),
            reason,
        };
        let Some(index) = input::best_video_stream(&demux) else {
            return Err(MediaError::NoFrames {
                path: path.to_path_buf(),
                detail: format!("this {} file has no video stream", demux.format_name()),
            });
        };
        let st = demux.streams()[index];
        // SAFETY: valid stream and parameters; the decoder context is owned by `dec`.
        let (dec, time_base, params_tags, frame_ticks, nominal_fps) = unsafe {
            for (i, &s) in demux.streams().iter().enumerate() {
                if i != index {
                    (*s).discard = ff::AVDiscard::AVDISCARD_ALL;
                }
            }
            let par = (*st).codecpar;
            let codec = ff::avcodec_find_decoder((*par).codec_id);
            if codec.is_null() {
                let name = static_str(ff::avcodec_get_name((*par).codec_id));
                return Err(unsupported(format!(
                    "no decoder for {name} video in this libav"
                )));
            }
            let dec = CodecCtx(ff::avcodec_alloc_context3(codec));
            if dec.0.is_null() {
                return Err(unsupported("out of memory".into()));
            }
            let r = ff::avcodec_parameters_to_context(dec.0, par);
            if r < 0 {
                return Err(unsupported(format!(
                    "bad codec parameters: {}",
                    err_string(r)
                )));
            }
            (*dec.0).pkt_timebase = (*st).time_base;
            (*dec.0).thread_count = 0;
            let r = ff::avcodec_open2(dec.0, codec, ptr::null_mut());
            if r < 0 {
                return Err(unsupported(format!(
                    "cannot open the {} decoder: {}",
                    static_str((*codec).name),
                    err_string(r)
                )));
            }
            let rate = |q: ff::AVRational| (q.num > 0 && q.den > 0).then_some(q);
            let fps = rate((*st).avg_frame_rate).or(rate((*st).r_frame_rate));
            let tb = (*st).time_base;
            let ticks = match fps {
                Some(f) if tb.num > 0 => ff::av_rescale_q(
                    1,
                    ff::AVRational {
                        num: f.den,
                        den: f.num,
                    },
                    tb,
                )
                .max(1),
                _ => 1,
            };
            (dec, tb, RawTags::of_params(par), ticks, fps)
        };
        let (stream_md, stream_cl) = input::stream_hdr(st);
        // SAFETY: valid stream.
        let (nb_frames, sar, field_order, tags_dict) = unsafe {
            (
                (*st).nb_frames,
                ff::av_guess_sample_aspect_ratio(demux.ctx.as_ptr(), st, ptr::null_mut()),
                convert_field_order((*(*st).codecpar).field_order as c_int),
                (*st).metadata,
            )
        };
        let frame_count = if nb_frames > 0 {
            Some(nb_frames as usize)
        } else {
            ["NUMBER_OF_FRAMES", "NUMBER_OF_FRAMES-eng"]
                .iter()
                .find_map(|k| get_dict(tags_dict, k))
                .and_then(|v| v.trim().parse().ok())
        };
        let mut src = FfmpegSource {
            info: SourceInfo {
                kind: SourceKind::Video,
                path: path.to_path_buf(),
                width: 0,
                height: 0,
                frame_count,
                fps: nominal_fps.map(|q| (q.num as u32, q.den as u32)),
                bit_depth: 8,
                source_bits: 8,
                pixel_aspect: (sar.num > 0 && sar.den > 0)
                    .then_some((sar.num as u32, sar.den as u32)),
                interlaced: field_order,
                yuv: None,
                colour: None,
                dpx_color: None,
            },
            stream: index as c_int,
            time_base,
            frame_ticks,
            pkt: AvPacket::new().ok_or_else(|| unsupported("out of memory".into()))?,
            raw: AvFrame::new().ok_or_else(|| unsupported("out of memory".into()))?,
            rgb: None,
            scaler: None,
            tags: params_tags,
            ready: None,
            last_time: None,
            decoded: 0,
            flushing: false,
            done: false,
            failure: None,
            dec,
            demux,
        };
        // The first frame fixes size, depth and colour (frames carry the bitstream's VUI).
        if !src.decode()? {
            return Err(src.end_error().unwrap_or_else(|| MediaError::NoFrames {
                path: path.to_path_buf(),
                detail: "the video stream has no frames".into(),
            }));
        }
        let raw = src.raw.as_ptr();
        // SAFETY: a decoded frame.
        let (w, h, fmt, interlaced) = unsafe {
            (
                (*raw).width.max(0) as usize,
                (*raw).height.max(0) as usize,
                (*raw).format,
                (*raw).interlaced_frame != 0,
            )
        };
        if w == 0 || h == 0 || w.saturating_mul(h) > MAX_PIXELS {
            return Err(unsupported(format!("unusable frame size {w}x{h}")));
        }
        let pix =
            PixFmt::new(fmt).ok_or_else(|| unsupported(format!("unknown pixel format {fmt}")))?;
        src.tags = RawTags::of_frame(raw).or(src.tags);
        let mut colour: VideoColour = src.tags.to_colour();
        let (frame_md, frame_cl) = input::frame_hdr(raw);
        colour.mastering_display = stream_md.or(frame_md);
        colour.content_light = stream_cl.or(frame_cl);
        let bits = pix.depth();
        src.info.width = w;
        src.info.height = h;
        src.info.source_bits = bits;
        src.info.bit_depth = if bits > 8 { 16 } else { 8 };
        src.info.interlaced |= interlaced;
        src.info.colour = Some(colour);
        let first = src.convert()?;
        let time = src.frame_time();
        src.ready = Some((first, time));
        Ok(Some(src))
    }

    fn path(&self) -> &Path {
        &self.info.path
    }

    fn corrupt(&self, index: usize, detail: impl Into<String>) -> MediaError {
        MediaError::CorruptVideo {
            path: self.path().to_path_buf(),
            frame: Some(index),
            detail: detail.into(),
        }
    }

    /// Decodes the next frame into `raw`; `false` at the end (check `end_error`).
    ///
    /// Damage before the first good frame is skipped, as players do (a recording that starts
    /// mid-GOP begins with undecodable packets); after it, damage ends decoding with an error.
    fn decode(&mut self) -> Result<bool, MediaError> {
        let (dec, raw, pkt, ctx) = (
            self.dec.as_ptr(),
            self.raw.as_ptr(),
            self.pkt.as_ptr(),
            self.demux.ctx.as_ptr(),
        );
        loop {
            // SAFETY: opened decoder, allocated frame and packet, opened demuxer.
            unsafe {
                let r = ff::avcodec_receive_frame(dec, raw);
                let leading = self.decoded == 0;
                if r == 0 {
                    if (*raw).flags & ff::AV_FRAME_FLAG_CORRUPT != 0
                        || (*raw).decode_error_flags != 0
                    {
                        if leading {
                            continue;
                        }
                        return Err(self.corrupt(
                            self.decoded,
                            "the decoder found damaged data in this frame",
                        ));
                    }
                    self.decoded += 1;
                    return Ok(true);
                }
                if r == ff::AVERROR_EOF || (r == EAGAIN && self.flushing) {
                    return Ok(false);
                }
                if r != EAGAIN && leading && !self.flushing {
                    continue;
                }
                if r != EAGAIN {
                    return Err(
                        self.corrupt(self.decoded, format!("decoding failed: {}", err_string(r)))
                    );
                }
                let r = ff::av_read_frame(ctx, pkt);
                if r < 0 {
                    if r != ff::AVERROR_EOF {
                        self.failure
                            .get_or_insert_with(|| format!("read error: {}", err_string(r)));
                    }
                    self.start_flush();
                    continue;
                }
                if (*pkt).stream_index != self.stream {
                    ff::av_packet_unref(pkt);
                    continue;
                }
                let corrupt = (*pkt).flags & ff::AV_PKT_FLAG_CORRUPT != 0;
                if corrupt && leading {
                    ff::av_packet_unref(pkt);
                    continue;
                }
                if corrupt || self.demux.log.error().is_some() {
                    ff::av_packet_unref(pkt);
                    if corrupt {
                        self.failure
                            .get_or_insert_with(|| "truncated or damaged packet".into());
                    }
                    self.start_flush();
                    continue;
                }
                let r = ff::avcodec_send_packet(dec, pkt);
                ff::av_packet_unref(pkt);
                if r < 0 && r != EAGAIN && !leading {
                    self.failure
                        .get_or_insert_with(|| format!("decoding failed: {}", err_string(r)));
                    self.start_flush();
                }
            }
        }
    }

    fn start_flush(&mut self) {
        if !self.flushing {
            self.flushing = true;
            // SAFETY: a null packet starts draining.
            unsafe { ff::avcodec_send_packet(self.dec.as_ptr(), ptr::null()) };
        }
    }

    /// The error to report at the end of the stream, if reading stopped for a reason.
    fn end_error(&mut self) -> Option<MediaError> {
        let detail = self.failure.take().or_else(|| {
            let logged = self.demux.log.error()?;
            Some(format!("{logged} (the file is truncated or damaged)"))
        })?;
        Some(self.corrupt(self.decoded, detail))
    }

    fn frame_time(&mut self) -> Option<Timestamp> {
        // SAFETY: a decoded frame.
        let ts = unsafe { (*self.raw.as_ptr()).best_effort_timestamp };
        let pts = if ts != ff::AV_NOPTS_VALUE {
            ts
        } else {
            match self.last_time {
                Some(t) => t.pts + self.frame_ticks,
                None => 0,
            }
        };
        let t = Timestamp {
            pts,
            time_base: (self.time_base.num, self.time_base.den),
        };
        self.last_time = Some(t);
        Some(t)
    }

    /// Converts the frame in `raw` to RGB.
    fn convert(&mut self) -> Result<Frame, MediaError> {
        let raw = self.raw.as_ptr();
        let (w, h) = (self.info.width, self.info.height);
        // SAFETY: a decoded frame.
        let (fw, fh, fmt) =
            unsafe { ((*raw).width as usize, (*raw).height as usize, (*raw).format) };
        if (fw, fh) != (w, h) {
            return Err(self.corrupt(
                self.decoded - 1,
                format!("the frame size changes from {w}x{h} to {fw}x{fh} (not supported)"),
            ));
        }
        let sixteen = self.info.bit_depth == 16;
        let pix = PixFmt::new(fmt)
            .ok_or_else(|| self.corrupt(self.decoded - 1, format!("unknown pixel format {fmt}")))?;
        let (plain, jpeg) = pix.dejpeg();
        let colour = self.info.colour.as_ref();
        let full = jpeg || colour.and_then(|c| c.range) == Some(YuvRange::Full);
        let matrix = effective_matrix(colour.and_then(|c| c.matrix), h);
        let chroma = match colour.and_then(|c| c.chroma_location) {
            Some(c) => c.0 as c_int,
            None if jpeg => 2,
            None => 1,
        };
        let spec = Spec {
            width: w,
            height: h,
            src: Side {
                fmt: plain,
                full: full || !pix.is_yuv() && !pix.is_gray(),
                chroma,
            },
            dst: Side {
                fmt: if sixteen {
                    convert::RGB48
                } else {
                    ff::AVPixelFormat::AV_PIX_FMT_RGB24
                } as c_int,
                full: true,
                chroma: 0,
            },
            table: sws_table(matrix).unwrap_or(ff::SWS_CS_DEFAULT),
        };
        if self.scaler.as_ref().map(|s| s.spec) != Some(spec) {
            let index = self.decoded - 1;
            self.scaler = Some(Scaler::new(spec).map_err(|e| self.corrupt(index, e))?);
        }
        if self.rgb.is_none() {
            let index = self.decoded - 1;
            self.rgb = Some(alloc_frame(w, h, spec.dst.fmt).map_err(|e| self.corrupt(index, e))?);
        }
        let (scaler, rgb) = (self.scaler.as_ref().unwrap(), self.rgb.as_ref().unwrap());
        scaler
            .run(raw, rgb.as_ptr())
            .map_err(|e| self.corrupt(self.decoded - 1, e))?;
        Ok(convert::rgb_out(rgb.as_ptr(), w, h, sixteen))
    }
}

fn convert_field_order(order: c_int) -> bool {
    // AV_FIELD_UNKNOWN = 0, AV_FIELD_PROGRESSIVE = 1, anything else is interlaced.
    order > 1
}

impl FrameSource for FfmpegSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, MediaError> {
        if let Some((frame, time)) = self.ready.take() {
            self.last_time = time;
            return Ok(Some(frame));
        }
        if self.done {
            return Ok(None);
        }
        if !self.decode()? {
            self.done = true;
            return match self.end_error() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        let frame = self.convert()?;
        self.frame_time();
        Ok(Some(frame))
    }

    fn timestamp(&self) -> Option<Timestamp> {
        self.last_time
    }
}

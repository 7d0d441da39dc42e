//! Video encoding and muxing, with the input's audio and subtitles copied alongside.

use std::io;
use std::os::raw::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use super::convert::{self, alloc_frame, effective_matrix, sws_table, PixFmt, Scaler, Side, Spec};
use super::input::{self, mastering_to_av, AvContentLight, Demuxer};
use super::meta::{ChromaLocation, MatrixCoefficients, Timestamp, VideoColour};
use super::options::VideoOptions;
use super::source::FfmpegSource;
use super::sys::{
    self, c_path, c_str, enum_int, err_string, errno_of, ff, set_enum_int, static_str, AvFrame,
    AvPacket, CodecCtx, Dict, OutputCtx, EAGAIN,
};
use crate::frame::{Frame, FrameSink, FrameSource, YuvRange};
use crate::output::PendingOutput;
use crate::{MediaError, SinkOptions};

/// Writes RGB frames as a video file: encoded with the chosen encoder (PRODUCT.md defaults),
/// muxed into the container the extension names, with the input's audio and subtitle streams
/// copied packet for packet and the colour tags and HDR10 metadata of [`VideoOptions::colour`].
///
/// Frames written with [`FrameSink::write_frame_at`] keep their timestamps (rescaled to the
/// encoder's time base, which is that of the first timestamp); frames without one follow the
/// previous frame at the nominal rate (`SinkOptions::fps`, else the input's, else 30).
///
/// Everything is written to a hidden sibling and renamed at [`FrameSink::finish`]; a sink dropped
/// before that deletes it.
pub struct FfmpegSink {
    // Fields drop in order: the muxer closes its file before `pending` deletes it.
    out: OutputCtx,
    enc: Option<Encoder>,
    copier: Option<Copier>,
    pkt: AvPacket,
    plan: Plan,
    frames: usize,
    /// Set by the first error: libav state may be half-changed, so nothing more is written.
    broken: bool,
    final_path: PathBuf,
    pending: Option<PendingOutput>,
}

/// What `create` settled before the first frame fixes size and depth.
struct Plan {
    muxer: &'static str,
    options: VideoOptions,
    colour: VideoColour,
    fps: Option<(u32, u32)>,
    pixel_aspect: Option<(u32, u32)>,
}

struct Encoder {
    ctx: CodecCtx,
    name: String,
    tb: ff::AVRational,
    stream_tb: ff::AVRational,
    width: usize,
    height: usize,
    yuv: AvFrame,
    /// RGB staging frame and converter, for the bit depth of the last frame.
    rgb: Option<(u8, AvFrame, Scaler)>,
    dst: Side,
    table: c_int,
    last_pts: Option<i64>,
    /// Ticks of one frame at the nominal rate.
    step: i64,
}

/// The input's audio and subtitle streams, read in step with the video.
struct Copier {
    demux: Demuxer,
    input: PathBuf,
    /// For each input stream: its output stream and the two time bases.
    map: Vec<Option<(c_int, ff::AVRational, ff::AVRational)>>,
    held: AvPacket,
    has_held: bool,
    eof: bool,
}

fn mktag(t: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*t)
}

impl FfmpegSink {
    /// Checks everything that can be checked before the first frame (container, encoder, pixel
    /// format, that the input's streams fit the container, that the output can be created) and
    /// creates the temporary output. The encoder opens with the first frame.
    pub fn create(path: &Path, options: &SinkOptions) -> Result<FfmpegSink, MediaError> {
        sys::init();
        let bad = |detail: String| MediaError::bad_output(path, detail);
        let vopts = options.video.clone();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let probe_name = c_str(&format!("x.{ext}")).ok_or_else(|| bad("bad extension".into()))?;
        // SAFETY: a lookup by file name.
        let ofmt = unsafe { ff::av_guess_format(ptr::null(), probe_name.as_ptr(), ptr::null()) };
        if ofmt.is_null() || ext.is_empty() {
            return Err(bad(format!(
                "no video container is known for the extension {ext:?} (use .mp4, .mkv, .mov, \
                 .webm or .avi)"
            )));
        }
        // SAFETY: a valid output format.
        let muxer = static_str(unsafe { (*ofmt).name });

        if let Some(name) = &vopts.codec {
            let codec = find_encoder(name).ok_or_else(|| {
                bad(format!(
                    "no video encoder {name:?} in this libav (`ffmpeg -encoders` lists them)"
                ))
            })?;
            check_codec_fits(path, ofmt, codec)?;
            if let Some(pf) = &vopts.pix_fmt {
                check_pix_fmt(path, codec, pf)?;
            }
        } else if let Some(pf) = &vopts.pix_fmt {
            PixFmt::by_name(pf).ok_or_else(|| bad(format!("unknown pixel format {pf:?}")))?;
        }

        // The input: colour description and rate of its video, streams to copy.
        let input = vopts
            .input
            .clone()
            .filter(|p| p.as_os_str() != "-" && p.is_file());
        let mut colour = vopts.colour.clone();
        let mut fps = options.fps;
        let mut pixel_aspect = options.pixel_aspect;
        if let Some(inp) = &input {
            if colour.is_none() || fps.is_none() {
                if let Ok(Some(src)) = FfmpegSource::probe(inp) {
                    let info = src.info();
                    colour = colour.or(info.colour.clone());
                    fps = fps.or(info.fps);
                    pixel_aspect = pixel_aspect.or(info.pixel_aspect);
                }
            }
        }
        let copy_demux = match &input {
            Some(inp) if !(vopts.no_audio && vopts.no_subtitles) => input::open(inp)?,
            _ => None,
        };

        let pending = PendingOutput::create(path, false, options.overwrite)?;
        let temp = c_path(pending.temp_path())
            .ok_or_else(|| bad("the path contains a NUL byte".into()))?;
        // SAFETY: allocation of the muxer context and its file; failures are checked and the
        // owners free what was made.
        let out = unsafe {
            let mut ctx: *mut ff::AVFormatContext = ptr::null_mut();
            let r = ff::avformat_alloc_output_context2(&mut ctx, ofmt, ptr::null(), ptr::null());
            if r < 0 || ctx.is_null() {
                return Err(bad(format!(
                    "cannot set up the {muxer} muxer: {}",
                    err_string(r)
                )));
            }
            let out = OutputCtx(ctx);
            (*ctx).url = ff::av_strdup(temp.as_ptr());
            let r = ff::avio_open2(
                &mut (*ctx).pb,
                temp.as_ptr(),
                ff::AVIO_FLAG_WRITE,
                ptr::null(),
                ptr::null_mut(),
            );
            if r < 0 {
                return Err(write_error(path, "cannot open the output", r));
            }
            if muxer == "matroska" || muxer == "webm" {
                // Matroska stores presentation times only: the default shift that makes decode
                // times non-negative would move every timestamp by the encoder's delay.
                (*ctx).avoid_negative_ts = ff::AVFMT_AVOID_NEG_TS_DISABLED;
            }
            // The video stream comes first.
            if ff::avformat_new_stream(ctx, ptr::null()).is_null() {
                return Err(bad("out of memory".into()));
            }
            out
        };

        let copier = match copy_demux {
            Some(demux) => Some(Copier::new(
                path,
                &out,
                demux,
                input.clone().unwrap_or_default(),
                &vopts,
            )?),
            None => None,
        };

        Ok(FfmpegSink {
            out,
            enc: None,
            copier,
            pkt: AvPacket::new().ok_or_else(|| bad("out of memory".into()))?,
            plan: Plan {
                muxer,
                options: vopts,
                colour: colour.unwrap_or_default(),
                fps,
                pixel_aspect,
            },
            frames: 0,
            broken: false,
            final_path: path.to_path_buf(),
            pending: Some(pending),
        })
    }

    /// Runs `f` unless an earlier call failed; a failure stops the sink for good.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        if self.broken {
            return Err(self.bad("an earlier error stopped writing this output"));
        }
        let r = f(self);
        self.broken = r.is_err();
        r
    }

    fn bad(&self, detail: impl Into<String>) -> MediaError {
        MediaError::bad_output(&self.final_path, detail)
    }

    /// Opens the encoder for frames like `frame`, sets up the video stream and writes the header.
    fn open_encoder(&mut self, frame: &Frame, time: Option<Timestamp>) -> Result<(), MediaError> {
        let opts = &self.plan.options;
        let deep = frame.bit_depth > 8 || self.plan.colour.is_hdr();
        let codec_name = match &opts.codec {
            Some(c) => c.clone(),
            None if self.plan.muxer == "webm" => "libvpx-vp9".into(),
            None if deep => "libx265".into(),
            None => "libx264".into(),
        };
        let codec = find_encoder(&codec_name).ok_or_else(|| {
            self.bad(format!("no video encoder {codec_name:?} in this libav (install one or choose another codec)"))
        })?;
        // SAFETY: a valid output context.
        let ofmt = unsafe { (*self.out.as_ptr()).oformat };
        check_codec_fits(&self.final_path, ofmt, codec)?;
        // SAFETY: valid codec.
        let enc_name = static_str(unsafe { (*codec).name }).to_string();
        let pix = match &opts.pix_fmt {
            Some(pf) => check_pix_fmt(&self.final_path, codec, pf)?,
            None => default_pix_fmt(codec, deep, frame.width, frame.height),
        };
        let pix_desc = PixFmt::new(pix).ok_or_else(|| self.bad("unknown pixel format"))?;

        let (sx, sy) = pix_desc.chroma_shift();
        let (mask_x, mask_y) = ((1usize << sx) - 1, (1usize << sy) - 1);
        if frame.width & mask_x != 0 || frame.height & mask_y != 0 {
            return Err(self.bad(format!(
                "{} needs a width divisible by {} and a height divisible by {}; the frames are {}x{}",
                pix_desc.name(),
                1 << sx,
                1 << sy,
                frame.width,
                frame.height
            )));
        }

        // Colour: tags written = the conversion used.
        let c = &self.plan.colour;
        let (w, h) = (frame.width, frame.height);
        let (matrix, range, chroma) = if pix_desc.is_rgb() {
            (Some(MatrixCoefficients::GBR), None, None)
        } else {
            let m = effective_matrix(c.matrix, h);
            let chroma = if pix_desc.subsampled() {
                Some(c.chroma_location.unwrap_or(ChromaLocation::LEFT))
            } else {
                None
            };
            (Some(m), Some(c.range.unwrap_or(YuvRange::Limited)), chroma)
        };
        let dst = Side {
            fmt: pix,
            full: pix_desc.is_rgb() || range == Some(YuvRange::Full),
            chroma: chroma.map_or(0, |c| c.0 as c_int),
        };
        let table = matrix.and_then(sws_table).unwrap_or(ff::SWS_CS_DEFAULT);

        // Time base: the timestamps' own, else one tick per frame at the nominal rate.
        let fps = self
            .plan
            .fps
            .filter(|f| f.0 > 0 && f.1 > 0)
            .unwrap_or((30, 1));
        let tb = match time {
            Some(t) if t.time_base.0 > 0 && t.time_base.1 > 0 => ff::AVRational {
                num: t.time_base.0,
                den: t.time_base.1,
            },
            _ => ff::AVRational {
                num: fps.1 as c_int,
                den: fps.0 as c_int,
            },
        };
        let frame_q = ff::AVRational {
            num: fps.1 as c_int,
            den: fps.0 as c_int,
        };
        // SAFETY: plain arithmetic.
        let step = unsafe { ff::av_rescale_q(1, frame_q, tb) }.max(1);

        // Encoder options.
        let mut dict = Dict::new();
        let mut set = |k: &str, v: &str| {
            dict.set(k, v).ok_or_else(|| {
                MediaError::bad_output(&self.final_path, format!("bad encoder option {k}={v}"))
            })
        };
        // The default rate control gives way to any the caller chose through encoder options.
        let own_rate = opts.encoder_options.iter().any(|(k, _)| {
            matches!(
                k.as_str(),
                "crf" | "qp" | "b" | "lossless" | "global_quality"
            )
        });
        let crf_default =
            !own_rate && matches!(enc_name.as_str(), "libx264" | "libx265" | "libvpx-vp9");
        let preset_default = matches!(enc_name.as_str(), "libx264" | "libx265");
        match opts.crf {
            Some(_) if !has_private_option(codec, "crf") => {
                return Err(self.bad(format!("the {enc_name} encoder has no crf setting")))
            }
            Some(crf) => set("crf", &crf.to_string())?,
            None if crf_default => set("crf", "18")?,
            None => {}
        }
        if enc_name == "libvpx-vp9" && !opts.encoder_options.iter().any(|(k, _)| k == "b") {
            set("b", "0")?; // constant quality
        }
        match &opts.preset {
            Some(_) if !has_private_option(codec, "preset") => {
                return Err(self.bad(format!("the {enc_name} encoder has no presets")))
            }
            Some(p) => set("preset", p)?,
            None if preset_default => set("preset", "slow")?,
            None => {}
        }
        let mut x265_user = None;
        for (k, v) in &opts.encoder_options {
            if enc_name == "libx265" && k == "x265-params" {
                x265_user = Some(v.clone());
            } else {
                set(k, v)?;
            }
        }
        if enc_name == "libx265" {
            // x265 prints its banner and statistics unless told otherwise; HDR10 SEI comes from
            // its own parameters (libx265 in FFmpeg 5/6 does not read side data).
            let user = x265_user.unwrap_or_default();
            let mut params = vec!["log-level=error".to_string()];
            if !user.contains("master-display") {
                if let Some(md) = c.mastering_display.and_then(|m| m.x265_param()) {
                    params.push(format!("master-display={md}"));
                }
            }
            if !user.contains("max-cll") {
                if let Some(cl) = c.content_light {
                    params.push(format!("max-cll={},{}", cl.max_cll, cl.max_fall));
                }
            }
            if !user.is_empty() {
                params.push(user);
            }
            set("x265-params", &params.join(":"))?;
        }

        // SAFETY: the encoder context is configured before avcodec_open2 and owned by `ctx`.
        let ctx = unsafe {
            let ctx = CodecCtx(ff::avcodec_alloc_context3(codec));
            if ctx.0.is_null() {
                return Err(self.bad("out of memory"));
            }
            let e = ctx.0;
            (*e).width = w as c_int;
            (*e).height = h as c_int;
            set_enum_int(&mut (*e).pix_fmt, pix);
            (*e).time_base = tb;
            (*e).framerate = ff::AVRational {
                num: fps.0 as c_int,
                den: fps.1 as c_int,
            };
            if let Some((n, d)) = self.plan.pixel_aspect {
                (*e).sample_aspect_ratio = ff::AVRational {
                    num: n as c_int,
                    den: d as c_int,
                };
            }
            set_enum_int(
                &mut (*e).color_range,
                match range {
                    Some(YuvRange::Limited) => 1,
                    Some(YuvRange::Full) => 2,
                    None => 0,
                },
            );
            set_enum_int(
                &mut (*e).color_primaries,
                c.primaries.map_or(2, |p| p.0 as c_int),
            );
            set_enum_int(&mut (*e).color_trc, c.transfer.map_or(2, |t| t.0 as c_int));
            set_enum_int(&mut (*e).colorspace, matrix.map_or(2, |m| m.0 as c_int));
            set_enum_int(
                &mut (*e).chroma_sample_location,
                chroma.map_or(0, |c| c.0 as c_int),
            );
            (*e).thread_count = 0;
            if (*ofmt).flags & ff::AVFMT_GLOBALHEADER != 0 {
                (*e).flags |= ff::AV_CODEC_FLAG_GLOBAL_HEADER as c_int;
            }
            let r = ff::avcodec_open2(e, codec, &mut dict.0);
            if r < 0 {
                return Err(self.bad(format!(
                    "cannot open the {enc_name} encoder for {w}x{h} {}: {}",
                    pix_desc.name(),
                    err_string(r)
                )));
            }
            ctx
        };
        let unknown: Vec<String> = dict.entries().into_iter().map(|(k, _)| k).collect();
        if !unknown.is_empty() {
            return Err(self.bad(format!(
                "the {enc_name} encoder does not know the option(s) {}",
                unknown.join(", ")
            )));
        }

        // The video stream and the header.
        // SAFETY: stream 0 was created in `create`; side data is allocated with av_malloc and
        // handed to the stream.
        let stream_tb = unsafe {
            let octx = self.out.as_ptr();
            let st = *(*octx).streams;
            let r = ff::avcodec_parameters_from_context((*st).codecpar, ctx.0);
            if r < 0 {
                return Err(self.bad(format!("codec parameters: {}", err_string(r))));
            }
            (*st).time_base = tb;
            (*st).avg_frame_rate = (*ctx.0).framerate;
            (*st).sample_aspect_ratio = (*ctx.0).sample_aspect_ratio;
            let is_mov = matches!(self.plan.muxer, "mp4" | "mov");
            if is_mov && enum_int(&(*codec).id) == ff::AVCodecID::AV_CODEC_ID_HEVC as c_int {
                (*(*st).codecpar).codec_tag = mktag(b"hvc1");
            }
            if let Some(md) = &c.mastering_display {
                add_stream_side_data(
                    st,
                    ff::AVPacketSideDataType::AV_PKT_DATA_MASTERING_DISPLAY_METADATA,
                    mastering_to_av(md),
                );
            }
            if let Some(cl) = &c.content_light {
                add_stream_side_data(
                    st,
                    ff::AVPacketSideDataType::AV_PKT_DATA_CONTENT_LIGHT_LEVEL,
                    AvContentLight {
                        max_cll: cl.max_cll,
                        max_fall: cl.max_fall,
                    },
                );
            }
            let r = ff::avformat_write_header(octx, ptr::null_mut());
            if r < 0 {
                return Err(match errno_of(r) {
                    Some(_) if r != ff::AVERROR(ff::EINVAL) => {
                        write_error(&self.final_path, "cannot write the header", r)
                    }
                    _ => self.bad(format!(
                        "the {} muxer refuses these streams: {}",
                        self.plan.muxer,
                        err_string(r)
                    )),
                });
            }
            (*st).time_base
        };
        if let Some(copier) = &mut self.copier {
            copier.after_header(&self.out);
        }
        let yuv = alloc_frame(w, h, pix).map_err(|e| self.bad(e))?;
        self.enc = Some(Encoder {
            ctx,
            name: enc_name,
            tb,
            stream_tb,
            width: w,
            height: h,
            yuv,
            rgb: None,
            dst,
            table,
            last_pts: None,
            step,
        });
        Ok(())
    }

    /// Sends `frame` (or, for `None`, the end of the stream) to the encoder and writes out what
    /// it returns.
    fn encode(&mut self, frame: Option<*const ff::AVFrame>) -> Result<(), MediaError> {
        let Some(enc) = &self.enc else {
            return Ok(());
        };
        let ectx = enc.ctx.as_ptr();
        let name = enc.name.clone();
        let (tb, stb) = (enc.tb, enc.stream_tb);
        // SAFETY: opened encoder; a null frame flushes.
        let r = unsafe { ff::avcodec_send_frame(ectx, frame.unwrap_or(ptr::null())) };
        if r < 0 && r != ff::AVERROR_EOF {
            return Err(write_error(
                &self.final_path,
                &format!("the {name} encoder failed"),
                r,
            ));
        }
        let pkt = self.pkt.as_ptr();
        loop {
            // SAFETY: opened encoder, allocated packet.
            let r = unsafe { ff::avcodec_receive_packet(ectx, pkt) };
            if r == EAGAIN || r == ff::AVERROR_EOF {
                return Ok(());
            }
            if r < 0 {
                return Err(write_error(
                    &self.final_path,
                    &format!("the {name} encoder failed"),
                    r,
                ));
            }
            // SAFETY: a packet from the encoder, in its time base.
            let dts = unsafe {
                (*pkt).stream_index = 0;
                ff::av_packet_rescale_ts(pkt, tb, stb);
                if (*pkt).dts != ff::AV_NOPTS_VALUE {
                    (*pkt).dts
                } else {
                    (*pkt).pts
                }
            };
            if let Some(copier) = &mut self.copier {
                let limit = (dts != ff::AV_NOPTS_VALUE).then_some((dts, stb));
                if let Some(limit) = limit {
                    copier.pump(&self.out, Some(limit), &self.final_path)?;
                }
            }
            // SAFETY: the muxer takes the packet's reference.
            let r = unsafe { ff::av_interleaved_write_frame(self.out.as_ptr(), pkt) };
            if r < 0 {
                return Err(write_error(&self.final_path, "writing video failed", r));
            }
        }
    }

    fn write(&mut self, frame: &Frame, time: Option<Timestamp>) -> Result<(), MediaError> {
        if !frame.is_consistent() {
            return Err(self.bad("inconsistent frame (data length or bit depth)"));
        }
        if self.enc.is_none() {
            self.open_encoder(frame, time)?;
        }
        let enc = self.enc.as_mut().expect("opened above");
        if (frame.width, frame.height) != (enc.width, enc.height) {
            return Err(MediaError::SizeMismatch {
                path: self.final_path.clone(),
                got_w: frame.width,
                got_h: frame.height,
                want_w: enc.width,
                want_h: enc.height,
            });
        }
        let internal = |e: String| convert::internal(&self.final_path, e);
        if enc.rgb.as_ref().map(|r| r.0) != Some(frame.bit_depth) {
            let src_fmt = if frame.bit_depth == 16 {
                convert::RGB48
            } else {
                ff::AVPixelFormat::AV_PIX_FMT_RGB24
            } as c_int;
            let staging = alloc_frame(frame.width, frame.height, src_fmt).map_err(internal)?;
            let spec = Spec {
                width: frame.width,
                height: frame.height,
                src: Side {
                    fmt: src_fmt,
                    full: true,
                    chroma: 0,
                },
                dst: enc.dst,
                table: enc.table,
            };
            let scaler = Scaler::new(spec).map_err(internal)?;
            enc.rgb = Some((frame.bit_depth, staging, scaler));
        }
        let (_, staging, scaler) = enc.rgb.as_ref().expect("set above");
        // SAFETY: frames allocated for this size; the YUV frame is made writable first (the
        // encoder may still reference its previous buffers).
        unsafe {
            let r = ff::av_frame_make_writable(staging.as_ptr());
            if r < 0 {
                return Err(internal(err_string(r)));
            }
            convert::rgb_in(frame, staging.as_ptr());
            let r = ff::av_frame_make_writable(enc.yuv.as_ptr());
            if r < 0 {
                return Err(internal(err_string(r)));
            }
            scaler
                .run(staging.as_ptr(), enc.yuv.as_ptr())
                .map_err(internal)?;
        }
        let mut pts = match (time, enc.last_pts) {
            (Some(t), _) if t.time_base.0 > 0 && t.time_base.1 > 0 => {
                let q = ff::AVRational {
                    num: t.time_base.0,
                    den: t.time_base.1,
                };
                // SAFETY: arithmetic.
                unsafe { ff::av_rescale_q(t.pts, q, enc.tb) }
            }
            (_, Some(last)) => last + enc.step,
            (_, None) => 0,
        };
        if let Some(last) = enc.last_pts {
            // Encoders need strictly increasing times.
            pts = pts.max(last + 1);
        }
        enc.last_pts = Some(pts);
        let yuv = enc.yuv.as_ptr();
        // SAFETY: a valid frame.
        unsafe {
            (*yuv).pts = pts;
            set_enum_int(&mut (*yuv).pict_type, 0);
        }
        self.encode(Some(yuv))?;
        self.frames += 1;
        Ok(())
    }

    fn complete(&mut self) -> Result<(), MediaError> {
        if self.frames == 0 {
            return Err(self.bad("no frames to write"));
        }
        self.encode(None)?;
        if let Some(copier) = &mut self.copier {
            copier.pump(&self.out, None, &self.final_path)?;
        }
        // SAFETY: header written (there were frames).
        let r = unsafe { ff::av_write_trailer(self.out.as_ptr()) };
        if r < 0 {
            return Err(write_error(&self.final_path, "cannot finish the file", r));
        }
        let r = self.out.close_file();
        if r < 0 {
            return Err(write_error(&self.final_path, "cannot finish the file", r));
        }
        if let Some(pending) = &self.pending {
            std::fs::File::open(pending.temp_path())
                .and_then(|f| f.sync_all())
                .map_err(|e| MediaError::write(&self.final_path, e))?;
        }
        Ok(())
    }
}

impl FrameSink for FfmpegSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
        self.guarded(|s| s.write(frame, None))
    }

    fn write_frame_at(&mut self, frame: &Frame, time: Option<Timestamp>) -> Result<(), MediaError> {
        self.guarded(|s| s.write(frame, time))
    }

    fn finish(mut self: Box<Self>) -> Result<(), MediaError> {
        self.guarded(Self::complete)?;
        match self.pending.take() {
            Some(p) => p.publish(),
            None => Ok(()),
        }
    }
}

impl Copier {
    fn new(
        out_path: &Path,
        out: &OutputCtx,
        demux: Demuxer,
        input: PathBuf,
        opts: &VideoOptions,
    ) -> Result<Copier, MediaError> {
        let mut map = Vec::new();
        // SAFETY: valid contexts; new streams belong to the output context.
        unsafe {
            let octx = out.as_ptr();
            let ofmt = (*octx).oformat;
            for (i, &st) in demux.streams().iter().enumerate() {
                let par = (*st).codecpar;
                let kind = enum_int(&(*par).codec_type);
                let audio = kind == ff::AVMediaType::AVMEDIA_TYPE_AUDIO as c_int;
                let subtitle = kind == ff::AVMediaType::AVMEDIA_TYPE_SUBTITLE as c_int;
                let wanted = (audio && !opts.no_audio) || (subtitle && !opts.no_subtitles);
                if !wanted || (*st).disposition & ff::AV_DISPOSITION_ATTACHED_PIC != 0 {
                    (*st).discard = ff::AVDiscard::AVDISCARD_ALL;
                    map.push(None);
                    continue;
                }
                let codec_name = static_str(ff::avcodec_get_name((*par).codec_id));
                let what = if audio { "audio" } else { "subtitle" };
                if ff::avformat_query_codec(ofmt, (*par).codec_id, ff::FF_COMPLIANCE_NORMAL) == 0 {
                    let flag = if audio {
                        "no_audio (--no-audio)"
                    } else {
                        "no_subtitles (--no-subtitles)"
                    };
                    return Err(MediaError::bad_output(
                        out_path,
                        format!(
                            "the {} container cannot hold {what} stream #{i} ({codec_name}) of {}; \
                             choose another container (.mkv holds everything) or set {flag}",
                            static_str((*ofmt).name),
                            input.display()
                        ),
                    ));
                }
                let ost = ff::avformat_new_stream(octx, ptr::null());
                if ost.is_null() {
                    return Err(MediaError::bad_output(out_path, "out of memory"));
                }
                let r = ff::avcodec_parameters_copy((*ost).codecpar, par);
                if r < 0 {
                    return Err(MediaError::bad_output(out_path, err_string(r)));
                }
                (*(*ost).codecpar).codec_tag = 0;
                (*ost).time_base = (*st).time_base;
                (*ost).disposition = (*st).disposition;
                copy_tags(&mut (*ost).metadata, (*st).metadata);
                map.push(Some(((*ost).index, (*st).time_base, (*st).time_base)));
            }
            // Global tags (title, …), not the writer's own.
            copy_tags(&mut (*octx).metadata, (*demux.ctx.as_ptr()).metadata);
        }
        Ok(Copier {
            demux,
            input,
            map,
            held: AvPacket::new()
                .ok_or_else(|| MediaError::bad_output(out_path, "out of memory"))?,
            has_held: false,
            eof: false,
        })
    }

    /// Output time bases are final once the header is written.
    fn after_header(&mut self, out: &OutputCtx) {
        // SAFETY: indices of streams this copier created.
        unsafe {
            let octx = out.as_ptr();
            for (oi, _, otb) in self.map.iter_mut().flatten() {
                *otb = (*(*(*octx).streams.add(*oi as usize))).time_base;
            }
        }
    }

    /// Copies input packets up to the time `until` (all of them for `None`).
    fn pump(
        &mut self,
        out: &OutputCtx,
        until: Option<(i64, ff::AVRational)>,
        out_path: &Path,
    ) -> Result<(), MediaError> {
        let held = self.held.as_ptr();
        loop {
            if self.has_held {
                // SAFETY: a packet read from the input, of a mapped stream.
                unsafe {
                    let (oi, itb, otb) = self.map[(*held).stream_index as usize].expect("mapped");
                    let ts = if (*held).dts != ff::AV_NOPTS_VALUE {
                        (*held).dts
                    } else {
                        (*held).pts
                    };
                    if let Some((limit, ltb)) = until {
                        if ts != ff::AV_NOPTS_VALUE && ff::av_compare_ts(ts, itb, limit, ltb) > 0 {
                            return Ok(());
                        }
                    }
                    (*held).stream_index = oi;
                    (*held).pos = -1;
                    ff::av_packet_rescale_ts(held, itb, otb);
                    let r = ff::av_interleaved_write_frame(out.as_ptr(), held);
                    self.has_held = false;
                    if r < 0 {
                        return Err(write_error(out_path, "copying audio/subtitles failed", r));
                    }
                }
            }
            if self.eof {
                return Ok(());
            }
            // SAFETY: opened demuxer, allocated packet.
            unsafe {
                let r = ff::av_read_frame(self.demux.ctx.as_ptr(), held);
                if r == ff::AVERROR_EOF {
                    self.eof = true;
                    continue;
                }
                if r < 0 {
                    return Err(MediaError::CorruptVideo {
                        path: self.input.clone(),
                        frame: None,
                        detail: format!("reading audio/subtitles failed: {}", err_string(r)),
                    });
                }
                let i = (*held).stream_index;
                if i < 0 || self.map.get(i as usize).copied().flatten().is_none() {
                    ff::av_packet_unref(held);
                    continue;
                }
                self.has_held = true;
            }
        }
    }
}

/// Copies stream/container tags, except statistics that describe the old file.
///
/// # Safety
/// `dst` and `src` must be valid (or null) dictionaries.
unsafe fn copy_tags(dst: &mut *mut ff::AVDictionary, src: *const ff::AVDictionary) {
    let mut e: *mut ff::AVDictionaryEntry = ptr::null_mut();
    loop {
        e = ff::av_dict_get(src, c"".as_ptr(), e, ff::AV_DICT_IGNORE_SUFFIX);
        if e.is_null() {
            return;
        }
        let key = std::ffi::CStr::from_ptr((*e).key)
            .to_string_lossy()
            .to_ascii_uppercase();
        let skip = [
            "DURATION",
            "NUMBER_OF_",
            "BPS",
            "_STATISTICS",
            "ENCODER",
            "MAJOR_BRAND",
            "MINOR_VERSION",
            "COMPATIBLE_BRANDS",
            "CREATION_TIME",
        ];
        if skip.iter().any(|s| key.starts_with(s)) {
            continue;
        }
        ff::av_dict_set(dst, (*e).key, (*e).value, 0);
    }
}

/// Attaches a side-data struct to a stream (the stream owns the copy).
///
/// # Safety
/// `st` must be a valid stream of an output context whose header is not written yet.
unsafe fn add_stream_side_data<T: Copy>(
    st: *mut ff::AVStream,
    kind: ff::AVPacketSideDataType,
    value: T,
) {
    let size = std::mem::size_of::<T>();
    let p = ff::av_malloc(size) as *mut T;
    if p.is_null() {
        return;
    }
    ptr::write(p, value);
    if ff::av_stream_add_side_data(st, kind, p as *mut u8, size) < 0 {
        ff::av_free(p as *mut c_void);
    }
}

/// An encoder by encoder name (`libx264`) or codec name (`h264`).
fn find_encoder(name: &str) -> Option<*const ff::AVCodec> {
    let c = c_str(name)?;
    // SAFETY: lookups by name.
    unsafe {
        let mut codec = ff::avcodec_find_encoder_by_name(c.as_ptr());
        if codec.is_null() {
            let desc = ff::avcodec_descriptor_get_by_name(c.as_ptr());
            if !desc.is_null() {
                codec = ff::avcodec_find_encoder((*desc).id);
            }
        }
        let video = !codec.is_null()
            && enum_int(&(*codec).type_) == ff::AVMediaType::AVMEDIA_TYPE_VIDEO as c_int;
        video.then_some(codec)
    }
}

fn check_codec_fits(
    path: &Path,
    ofmt: *const ff::AVOutputFormat,
    codec: *const ff::AVCodec,
) -> Result<(), MediaError> {
    // SAFETY: valid format and codec.
    unsafe {
        if ff::avformat_query_codec(ofmt, (*codec).id, ff::FF_COMPLIANCE_NORMAL) == 0 {
            return Err(MediaError::bad_output(
                path,
                format!(
                    "the {} container cannot hold {} video",
                    static_str((*ofmt).name),
                    static_str(ff::avcodec_get_name((*codec).id))
                ),
            ));
        }
    }
    Ok(())
}

/// The pixel formats an encoder accepts (empty: not declared).
fn encoder_formats(codec: *const ff::AVCodec) -> Vec<c_int> {
    let mut out = Vec::new();
    // SAFETY: `pix_fmts` is null or terminated by AV_PIX_FMT_NONE.
    unsafe {
        let mut p = (*codec).pix_fmts;
        while !p.is_null() && enum_int(&*p) != -1 {
            out.push(enum_int(&*p));
            p = p.add(1);
        }
    }
    out
}

fn check_pix_fmt(path: &Path, codec: *const ff::AVCodec, name: &str) -> Result<c_int, MediaError> {
    let pf = PixFmt::by_name(name)
        .ok_or_else(|| MediaError::bad_output(path, format!("unknown pixel format {name:?}")))?;
    let list = encoder_formats(codec);
    if !list.is_empty() && !list.contains(&pf.fmt) {
        let names: Vec<&str> = list
            .iter()
            .filter_map(|&f| PixFmt::new(f))
            .map(|p| p.name())
            .collect();
        return Err(MediaError::bad_output(
            path,
            format!(
                "the {} encoder cannot encode {name} (it takes {})",
                static_str(unsafe { (*codec).name }),
                names.join(", ")
            ),
        ));
    }
    Ok(pf.fmt)
}

/// yuv420p (8-bit) or yuv420p10le (deep), else the encoder's closest format to RGB. A frame of
/// odd width or height cannot be 4:2:0: then yuv444p (or yuv444p10le) where the encoder takes it.
fn default_pix_fmt(codec: *const ff::AVCodec, deep: bool, width: usize, height: usize) -> c_int {
    use ff::AVPixelFormat as P;
    let odd = !width.is_multiple_of(2) || !height.is_multiple_of(2);
    let want = match (deep, odd) {
        (true, false) => P::AV_PIX_FMT_YUV420P10LE,
        (false, false) => P::AV_PIX_FMT_YUV420P,
        (true, true) => P::AV_PIX_FMT_YUV444P10LE,
        (false, true) => P::AV_PIX_FMT_YUV444P,
    } as c_int;
    let list = encoder_formats(codec);
    if list.is_empty() || list.contains(&want) {
        return want;
    }
    let src = if deep {
        convert::RGB48
    } else {
        P::AV_PIX_FMT_RGB24
    };
    // SAFETY: `pix_fmts` is a NONE-terminated list (non-empty, checked above).
    let best = unsafe {
        ff::avcodec_find_best_pix_fmt_of_list((*codec).pix_fmts, src, 0, ptr::null_mut())
    } as c_int;
    if best >= 0 {
        best
    } else {
        list[0]
    }
}

fn has_private_option(codec: *const ff::AVCodec, name: &str) -> bool {
    let Some(c) = c_str(name) else { return false };
    // SAFETY: AV_OPT_SEARCH_FAKE_OBJ searches a class through a pointer to the class pointer.
    unsafe {
        if (*codec).priv_class.is_null() {
            return false;
        }
        !ff::av_opt_find(
            &(*codec).priv_class as *const *const ff::AVClass as *mut c_void,
            c.as_ptr(),
            ptr::null(),
            0,
            ff::AV_OPT_SEARCH_FAKE_OBJ,
        )
        .is_null()
    }
}

/// A write failure: errno codes (a full disk, a lost mount) keep their `io::Error` kind.
fn write_error(path: &Path, what: &str, code: c_int) -> MediaError {
    let source = match errno_of(code) {
        Some(e) => {
            let os = io::Error::from_raw_os_error(e);
            io::Error::new(os.kind(), format!("{what}: {os}"))
        }
        None => io::Error::other(format!("{what}: {}", err_string(code))),
    };
    MediaError::write(path, source)
}

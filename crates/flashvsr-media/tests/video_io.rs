//! Video files through libav: read → 2× upscale → write round trips checked with ffprobe, colour
//! conversion checked against the ffmpeg program, and bad inputs/outputs. Test media are made
//! with the `ffmpeg` program, which these tests require (CI installs it).
#![cfg(feature = "ffmpeg")]

mod common;
mod video;

use std::fs;
use std::path::{Path, PathBuf};

use flashvsr_media::{
    create_sink, open_source, ColourPrimaries, Frame, MatrixCoefficients, MediaError, OutputFormat,
    SinkOptions, SourceKind, TransferCharacteristic, VideoColour, VideoOptions, YuvRange,
};
use video::{
    diff, ffmpeg_with, frame_times, listing, probe, read_all, side_data, str_of, streams,
    upscale_file, video_frames,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// H.264 (yuv420p, BT.709 tags) + AAC in MP4, 25 frames at 25 fps.
fn make_h264_aac_mp4(dir: &Path) -> PathBuf {
    let out = dir.join("h264_aac.mp4");
    ffmpeg_with(
        "-f lavfi -i testsrc2=size=96x64:rate=25:duration=1 \
         -f lavfi -i sine=frequency=440:duration=1 \
         -c:v libx264 -preset ultrafast -pix_fmt yuv420p -colorspace bt709 \
         -color_primaries bt709 -color_trc bt709 -color_range tv -c:a aac -shortest {}",
        &[&out],
    );
    out
}

const MASTER_DISPLAY: &str = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)";

/// HEVC Main 10 with HDR10 metadata (PQ, BT.2020, mastering display, content light), two audio
/// tracks (AAC, Opus; the second tagged French) and an SRT subtitle stream in Matroska.
fn make_hdr10_mkv(dir: &Path) -> PathBuf {
    let srt = dir.join("subs.srt");
    fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:00,400\nHello\n\n2\n00:00:00,500 --> 00:00:00,900\nWorld\n",
    )
    .unwrap();
    let out = dir.join("hdr10.mkv");
    let args = format!(
        "-f lavfi -i testsrc2=size=64x48:rate=24:duration=1 \
         -f lavfi -i sine=frequency=440:duration=1 -f lavfi -i sine=frequency=660:duration=1 \
         -i {{}} -map 0:v -map 1:a -map 2:a -map 3:s \
         -c:v libx265 -preset ultrafast -pix_fmt yuv420p10le \
         -x265-params log-level=error:master-display={MASTER_DISPLAY}:max-cll=1000,400:\
         colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc \
         -color_primaries bt2020 -color_trc smpte2084 -colorspace bt2020nc -color_range tv \
         -c:a:0 aac -c:a:1 libopus -c:s srt -metadata:s:a:1 language=fra {{}}"
    );
    ffmpeg_with(&args, &[&srt, &out]);
    out
}

/// Variable frame rate: 40 frames, gaps of 40, 80, 100 and 120 ms.
fn make_vfr_mkv(dir: &Path) -> PathBuf {
    let out = dir.join("vfr.mkv");
    ffmpeg_with(
        "-f lavfi -i testsrc2=size=64x48:rate=25:duration=1.6 \
         -vf setpts='if(lt(N,10),N*0.04,0.4+(N-10)*0.1+if(eq(mod(N,3),0),0.03,0))/TB' \
         -fps_mode vfr -c:v libx264 -preset ultrafast -pix_fmt yuv420p {}",
        &[&out],
    );
    out
}

/// Two seconds of H.264 in Matroska, a keyframe every 10 frames.
fn make_long_mkv(dir: &Path) -> PathBuf {
    let out = dir.join("long.mkv");
    ffmpeg_with(
        "-f lavfi -i testsrc2=size=64x48:rate=25:duration=2 \
         -c:v libx264 -preset ultrafast -g 10 {}",
        &[&out],
    );
    out
}

fn options(codec: &str, pix_fmt: &str, extra: &[(&str, &str)]) -> SinkOptions {
    SinkOptions {
        video: VideoOptions {
            codec: Some(codec.into()),
            pix_fmt: Some(pix_fmt.into()),
            encoder_options: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..VideoOptions::default()
        },
        ..SinkOptions::default()
    }
}

/// Same codecs, in order, of the streams of one kind.
fn codecs(p: &serde_json::Value, kind: &str) -> Vec<String> {
    streams(p, kind)
        .iter()
        .map(|s| str_of(s, "codec_name").to_string())
        .collect()
}

fn assert_same_colour_tags(a: &serde_json::Value, b: &serde_json::Value) {
    for key in [
        "color_range",
        "color_space",
        "color_transfer",
        "color_primaries",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn h264_aac_mp4_round_trip_keeps_frames_times_audio_and_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_h264_aac_mp4(tmp.path());
    let src = open_source(&input).unwrap();
    let info = src.info().clone();
    assert_eq!(info.kind, SourceKind::Video);
    assert_eq!((info.width, info.height, info.bit_depth), (96, 64, 8));
    assert_eq!(info.frame_count, Some(25));
    assert_eq!(info.fps, Some((25, 1)));
    let colour = info.colour.clone().unwrap();
    assert_eq!(colour.matrix, Some(MatrixCoefficients::BT709));
    assert_eq!(colour.range, Some(YuvRange::Limited));
    drop(src);

    // Lossless H.264 4:4:4, so decoded pixels can be compared.
    let output = tmp.path().join("up.mp4");
    let (frames, times) = upscale_file(
        &input,
        &output,
        options(
            "libx264",
            "yuv444p",
            &[("qp", "0"), ("preset", "ultrafast")],
        ),
    );
    assert_eq!(frames.len(), 25);
    assert!(times.iter().all(|t| t.is_some()));
    assert_eq!(
        listing(tmp.path()),
        ["h264_aac.mp4", "up.mp4"],
        "no temporary left"
    );

    let (pin, pout) = (probe(&input), probe(&output));
    assert_eq!(video_frames(&pout).len(), 25, "same frame count");
    assert_eq!(frame_times(&pin), frame_times(&pout), "same timestamps");
    assert_eq!(codecs(&pin, "audio"), ["aac"]);
    assert_eq!(
        codecs(&pout, "audio"),
        codecs(&pin, "audio"),
        "audio copied"
    );
    let (vin, vout) = (streams(&pin, "video")[0], streams(&pout, "video")[0]);
    assert_eq!(
        (vout["width"].as_u64(), vout["height"].as_u64()),
        (Some(192), Some(128))
    );
    assert_same_colour_tags(vin, vout);
    assert_eq!(str_of(vout, "codec_name"), "h264");
    assert_eq!(str_of(vout, "pix_fmt"), "yuv444p");
    // Audio packets are copied, not re-encoded: same packet count and sizes.
    assert_eq!(
        streams(&pin, "audio")[0]["duration_ts"],
        streams(&pout, "audio")[0]["duration_ts"]
    );

    let decoded = read_all(&output);
    assert_eq!(decoded.len(), frames.len());
    for (i, (d, f)) in decoded.iter().zip(&frames).enumerate() {
        let (max, mean) = diff(d, f);
        assert!(max <= 3 && mean < 0.8, "frame {i}: max {max}, mean {mean}");
    }
}

#[test]
fn hevc10_hdr10_mkv_round_trip_keeps_tracks_colour_and_hdr_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_hdr10_mkv(tmp.path());
    let src = open_source(&input).unwrap();
    let info = src.info().clone();
    drop(src);
    assert_eq!((info.bit_depth, info.source_bits), (16, 10));
    let colour = info.colour.clone().unwrap();
    assert_eq!(colour.primaries, Some(ColourPrimaries::BT2020));
    assert_eq!(colour.transfer, Some(TransferCharacteristic::SMPTE2084));
    assert_eq!(colour.matrix, Some(MatrixCoefficients::BT2020NC));
    assert!(colour.is_hdr());
    let md = colour.mastering_display.expect("mastering display read");
    assert_eq!(md.x265_param().unwrap(), MASTER_DISPLAY);
    let cl = colour.content_light.expect("content light read");
    assert_eq!((cl.max_cll, cl.max_fall), (1000, 400));

    // Lossless HEVC 4:4:4 10-bit.
    let output = tmp.path().join("up.mkv");
    let (frames, _) = upscale_file(
        &input,
        &output,
        options(
            "libx265",
            "yuv444p10le",
            &[("preset", "ultrafast"), ("x265-params", "lossless=1")],
        ),
    );
    assert_eq!(frames.len(), 24);

    let (pin, pout) = (probe(&input), probe(&output));
    assert_eq!(video_frames(&pout).len(), video_frames(&pin).len());
    assert_eq!(frame_times(&pin), frame_times(&pout), "same timestamps");
    assert_eq!(codecs(&pin, "audio"), ["aac", "opus"]);
    assert_eq!(
        codecs(&pout, "audio"),
        codecs(&pin, "audio"),
        "both audio tracks"
    );
    assert_eq!(codecs(&pout, "subtitle"), ["subrip"], "subtitles copied");
    assert_eq!(streams(&pout, "audio")[1]["tags"]["language"], "fra");
    let (vin, vout) = (streams(&pin, "video")[0], streams(&pout, "video")[0]);
    assert_same_colour_tags(vin, vout);
    assert_eq!(
        (vout["width"].as_u64(), vout["height"].as_u64()),
        (Some(128), Some(96))
    );
    // HDR10 side data on the frames (HEVC SEI), equal to the input's.
    let (fin, fout) = (video_frames(&pin)[0], video_frames(&pout)[0]);
    for kind in ["Mastering display metadata", "Content light level metadata"] {
        let a = side_data(fin, kind).unwrap_or_else(|| panic!("input lacks {kind}"));
        let b = side_data(fout, kind).unwrap_or_else(|| panic!("output lacks {kind}"));
        assert_eq!(a, b, "{kind}");
    }
    // … and in the container (Matroska colour elements).
    let sd: Vec<&str> = vout["side_data_list"]
        .as_array()
        .map(|l| l.iter().map(|e| str_of(e, "side_data_type")).collect())
        .unwrap_or_default();
    assert!(sd.contains(&"Mastering display metadata"), "{sd:?}");
    assert!(sd.contains(&"Content light level metadata"), "{sd:?}");

    let decoded = read_all(&output);
    assert_eq!(decoded.len(), frames.len());
    for (i, (d, f)) in decoded.iter().zip(&frames).enumerate() {
        let (max, mean) = diff(d, f);
        // 10-bit codes: one code is 64 in 16 bits.
        assert!(
            max <= 3 * 64 && mean < 40.0,
            "frame {i}: max {max}, mean {mean}"
        );
    }
}

#[test]
fn vfr_mkv_keeps_every_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_vfr_mkv(tmp.path());
    let pin = probe(&input);
    let output = tmp.path().join("up.mkv");
    let mut opts = SinkOptions::default();
    opts.video.preset = Some("ultrafast".into());
    let (frames, times) = upscale_file(&input, &output, opts);
    assert_eq!(frames.len(), 40);
    // The source reports the stream's own times.
    let source_times: Vec<String> = times
        .iter()
        .map(|t| format!("{:.6}", t.unwrap().seconds()))
        .collect();
    assert_eq!(source_times, frame_times(&pin));
    let pout = probe(&output);
    assert_eq!(frame_times(&pout), frame_times(&pin));
    let v = streams(&pout, "video")[0];
    assert_eq!(
        str_of(v, "codec_name"),
        "h264",
        "default codec for 8-bit SDR"
    );
}

/// A noisy RGB picture (every colour, so the matrices differ visibly).
fn noise_frame(w: usize, h: usize) -> Frame {
    common::rgb8(w, h, 7)
}

#[test]
fn source_converts_with_the_tagged_matrix_and_range() {
    let tmp = tempfile::tempdir().unwrap();
    let rgb = noise_frame(64, 48);
    let raw = tmp.path().join("in.rgb");
    fs::write(&raw, common::u8_data(&rgb)).unwrap();
    for (matrix, tag, range) in [
        ("bt601", "smpte170m", "tv"),
        ("bt709", "bt709", "tv"),
        ("bt2020", "bt2020nc", "pc"),
        ("bt709", "bt709", "pc"),
    ] {
        let out = tmp.path().join(format!("{tag}_{range}.mkv"));
        let vf = format!(
            "scale=out_color_matrix={matrix}:out_range={range}:\
             flags=accurate_rnd+full_chroma_inp+bicubic,format=yuv444p"
        );
        let args = format!(
            "-f rawvideo -pix_fmt rgb24 -s 64x48 -i {{}} -vf {vf} \
             -c:v ffv1 -colorspace {tag} -color_range {range} {{}}"
        );
        ffmpeg_with(&args, &[&raw, &out]);
        let frames = read_all(&out);
        assert_eq!(frames.len(), 1);
        let (max, mean) = diff(&frames[0], &rgb);
        assert!(
            max <= 3 && mean < 1.0,
            "{tag}/{range}: max {max}, mean {mean}"
        );
    }
}

#[test]
fn sink_converts_with_the_given_matrix_and_range() {
    let tmp = tempfile::tempdir().unwrap();
    let rgb = noise_frame(64, 48);
    for (matrix, name, range, rname) in [
        (
            MatrixCoefficients::SMPTE170M,
            "bt601",
            YuvRange::Limited,
            "tv",
        ),
        (MatrixCoefficients::BT2020NC, "bt2020", YuvRange::Full, "pc"),
    ] {
        let out = tmp.path().join(format!("{name}.mkv"));
        let mut opts = options("ffv1", "yuv444p", &[]);
        opts.video.colour = Some(VideoColour {
            matrix: Some(matrix),
            range: Some(range),
            ..VideoColour::default()
        });
        let mut sink = create_sink(&out, OutputFormat::Video, &opts).unwrap();
        sink.write_frame(&rgb).unwrap();
        sink.finish().unwrap();
        let p = probe(&out);
        let v = streams(&p, "video")[0];
        assert_eq!(str_of(v, "color_range"), rname);
        assert_eq!(str_of(v, "color_space"), matrix.name().unwrap());
        let back = tmp.path().join(format!("{name}.rgb"));
        let vf = format!(
            "scale=in_color_matrix={name}:in_range={rname}:\
             flags=accurate_rnd+full_chroma_int+bicubic,format=rgb24"
        );
        ffmpeg_with(
            &format!("-i {{}} -vf {vf} -f rawvideo {{}}"),
            &[&out, &back],
        );
        let decoded = Frame::from_u8(64, 48, fs::read(&back).unwrap());
        let (max, mean) = diff(&decoded, &rgb);
        assert!(max <= 3 && mean < 1.0, "{name}: max {max}, mean {mean}");
    }
}

#[test]
fn default_encoders_follow_bit_depth_and_hdr() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("sdr8.mp4", false, None, "h264", "yuv420p"),
        ("deep16.mp4", true, None, "hevc", "yuv420p10le"),
        (
            "hdr8.mkv",
            false,
            Some(TransferCharacteristic::SMPTE2084),
            "hevc",
            "yuv420p10le",
        ),
    ];
    for (name, sixteen, transfer, codec, pix) in cases {
        let out = tmp.path().join(name);
        let mut opts = SinkOptions::default();
        opts.video.preset = Some("ultrafast".into());
        opts.video.colour = Some(VideoColour {
            transfer,
            ..VideoColour::default()
        });
        let mut sink = create_sink(&out, OutputFormat::from_path(&out), &opts).unwrap();
        for i in 0..3 {
            let f = if sixteen {
                common::rgb16(32, 32, i)
            } else {
                common::rgb8(32, 32, i)
            };
            sink.write_frame(&f).unwrap();
        }
        sink.finish().unwrap();
        let p = probe(&out);
        let v = streams(&p, "video")[0];
        assert_eq!(str_of(v, "codec_name"), codec, "{name}");
        assert_eq!(str_of(v, "pix_fmt"), pix, "{name}");
        assert_eq!(video_frames(&p).len(), 3);
        assert_eq!(
            str_of(v, "color_space"),
            "smpte170m",
            "{name}: SD default matrix, tagged"
        );
    }
}

#[test]
fn no_audio_and_no_subtitles_drop_those_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_hdr10_mkv(tmp.path());
    for (no_audio, no_subtitles, audio, subs) in [(true, false, 0, 1), (false, true, 2, 0)] {
        let output = tmp
            .path()
            .join(format!("out_{no_audio}_{no_subtitles}.mkv"));
        let mut opts = options("libx265", "yuv420p10le", &[("preset", "ultrafast")]);
        opts.video.no_audio = no_audio;
        opts.video.no_subtitles = no_subtitles;
        upscale_file(&input, &output, opts);
        let p = probe(&output);
        assert_eq!(streams(&p, "audio").len(), audio);
        assert_eq!(streams(&p, "subtitle").len(), subs);
    }
}

#[test]
fn video_is_recognised_by_content_not_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_vfr_mkv(tmp.path());
    let odd = tmp.path().join("clip.dat");
    fs::copy(&input, &odd).unwrap();
    let src = open_source(&odd).unwrap();
    assert_eq!(src.info().kind, SourceKind::Video);
    assert_eq!(
        OutputFormat::from_path(Path::new("a/b.MKV")),
        OutputFormat::Video
    );
    assert_eq!(
        OutputFormat::from_path(Path::new("a/b.webm")),
        OutputFormat::Video
    );
}

fn read_until_error(path: &Path) -> (usize, MediaError) {
    let mut src = open_source(path).unwrap();
    let mut n = 0;
    loop {
        match src.next_frame() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("{}: read {n} frames without an error", path.display()),
            Err(e) => return (n, e),
        }
    }
}

#[test]
fn bad_video_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let expect_bad = |e: &MediaError, name: &str| {
        assert!(e.is_bad_input(), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    };

    let e = open_source(&dir.join("missing.mp4")).err().unwrap();
    assert!(matches!(e, MediaError::NotFound { .. }), "{e}");
    expect_bad(&e, "missing.mp4");

    for name in ["notes.txt", "text.mkv"] {
        fs::write(dir.join(name), "just some text\n".repeat(200)).unwrap();
        let e = open_source(&dir.join(name)).err().unwrap();
        assert!(matches!(e, MediaError::Unsupported { .. }), "{e}");
        expect_bad(&e, name);
    }

    // Zero frames: an MP4 written with no frames, and an audio-only file.
    let zero = dir.join("zero.mp4");
    ffmpeg_with(
        "-f lavfi -i testsrc2=size=64x48:rate=10 -frames:v 0 -c:v libx264 {}",
        &[&zero],
    );
    let audio_only = dir.join("audio.mka");
    ffmpeg_with("-f lavfi -i sine=duration=0.5 -c:a aac {}", &[&audio_only]);
    for (path, name) in [(&zero, "zero.mp4"), (&audio_only, "audio.mka")] {
        let e = open_source(path).err().unwrap();
        assert!(matches!(e, MediaError::NoFrames { .. }), "{e}");
        expect_bad(&e, name);
    }

    // Truncated mid-stream: the frames before the cut are returned, then an error naming the
    // file and the first frame that could not be decoded.
    let long = make_long_mkv(dir);
    let fast = dir.join("long.mp4");
    ffmpeg_with("-i {} -c copy -movflags +faststart {}", &[&long, &fast]);
    for (src, name) in [(&long, "cut.mkv"), (&fast, "cut_faststart.mp4")] {
        let bytes = fs::read(src).unwrap();
        let cut = dir.join(name);
        fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
        let (n, e) = read_until_error(&cut);
        assert!(n > 0 && n < 50, "{name}: {n} frames before the error");
        match &e {
            MediaError::CorruptVideo { frame, .. } => assert_eq!(*frame, Some(n), "{e}"),
            other => panic!("{name}: {other}"),
        }
        expect_bad(&e, name);
        assert!(e.to_string().contains(&format!("frame {n}")), "{e}");
    }

    // Truncated MP4 without its index (moov at the end): refused at open.
    let slow = dir.join("slow.mp4");
    ffmpeg_with("-i {} -c copy {}", &[&long, &slow]);
    let bytes = fs::read(&slow).unwrap();
    let cut = dir.join("cut_noindex.mp4");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_source(&cut).err().unwrap();
    expect_bad(&e, "cut_noindex.mp4");
}

#[test]
fn bad_video_outputs_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let frame = common::rgb8(32, 32, 1);
    let clean = |what: &str| {
        let left: Vec<String> = listing(dir)
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
    };

    // Unwritable: no such directory, or a file where a directory should be.
    fs::write(dir.join("file"), "x").unwrap();
    for out in [dir.join("nodir/out.mp4"), dir.join("file/out.mkv")] {
        let e = create_sink(&out, OutputFormat::Video, &SinkOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains(s(&out)), "{e}");
        assert!(!out.exists());
    }

    // Encoder problems: unknown encoder (at creation), unknown option (at the first frame).
    let out = dir.join("out.mp4");
    let e = create_sink(
        &out,
        OutputFormat::Video,
        &options("nosuchcodec", "yuv420p", &[]),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, MediaError::BadOutput { .. }) && e.to_string().contains("nosuchcodec"),
        "{e}"
    );
    clean("unknown encoder");
    let mut sink = create_sink(
        &out,
        OutputFormat::Video,
        &options("libx264", "yuv420p", &[("no-such-option", "1")]),
    )
    .unwrap();
    let e = sink.write_frame(&frame).unwrap_err();
    assert!(
        e.to_string().contains("no-such-option") && e.to_string().contains("out.mp4"),
        "{e}"
    );
    drop(sink);
    clean("unknown option");

    // A pixel format the encoder cannot take; a codec the container cannot hold.
    let e = create_sink(
        &out,
        OutputFormat::Video,
        &options("libx264", "rgb48le", &[]),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("rgb48le"), "{e}");
    let e = create_sink(
        &dir.join("x.mp4"),
        OutputFormat::Video,
        &options("ffv1", "yuv420p", &[]),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("ffv1"), "{e}");
    clean("refused settings");

    // SRT subtitles do not fit MP4: refused at creation, with the way out named.
    let input = make_hdr10_mkv(dir);
    let mut opts = SinkOptions::default();
    opts.video.input = Some(input.clone());
    let e = create_sink(&out, OutputFormat::Video, &opts).err().unwrap();
    assert!(
        e.to_string().contains("subrip") && e.to_string().contains("no-subtitles"),
        "{e}"
    );
    clean("subtitles into mp4");

    // Dropped without finish, finish without frames, existing output.
    let mut sink = create_sink(&out, OutputFormat::Video, &SinkOptions::default()).unwrap();
    sink.write_frame(&frame).unwrap();
    drop(sink);
    clean("dropped sink");
    assert!(!out.exists());
    let sink = create_sink(&out, OutputFormat::Video, &SinkOptions::default()).unwrap();
    assert!(sink.finish().is_err());
    clean("no frames");
    fs::write(&out, "old").unwrap();
    let e = create_sink(&out, OutputFormat::Video, &SinkOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, MediaError::OutputExists { .. }), "{e}");
    assert_eq!(fs::read(&out).unwrap(), b"old");

    // A decode error half-way through a real run: the sink is dropped, nothing is published.
    let long = make_long_mkv(dir);
    let bytes = fs::read(&long).unwrap();
    let cut = dir.join("cut.mkv");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let result = (|| -> Result<(), MediaError> {
        let mut src = open_source(&cut)?;
        let target = dir.join("result.mkv");
        let mut sink = create_sink(&target, OutputFormat::Video, &SinkOptions::default())?;
        while let Some(f) = src.next_frame()? {
            sink.write_frame_at(&video::upscale2(&f), src.timestamp())?;
        }
        sink.finish()
    })();
    assert!(result.is_err());
    assert!(!dir.join("result.mkv").exists());
    clean("failed run");
}

//! "Real video in, real video out": each kind of input is made with the ffmpeg CLI, upscaled with
//! the small golden model, and the output is checked with ffprobe/ffmpeg (independent readers):
//! frame count, per-frame timestamps, every audio and subtitle stream (packet for packet), colour
//! tags, HDR10 metadata, exactly 4× the size, and pixels equal to the image-sequence path's
//! within the rounding of the codec.
//!
//! Pixel bounds (in 16-bit code values, 65535 = white), decoded by ffmpeg:
//! - lossless RGB video (`ffv1` gbrp16le / bgr0) vs the PNG frames of the same run: 0 (exact);
//! - lossless 4:4:4 YUV video (`ffv1` yuv444p10le) vs PNG16: 2 ten-bit steps (2 · 65535 / 1023,
//!   128 codes): one step of quantisation per Y, Cb, Cr sample, mixed by the matrix;
//! - lossless 4:4:4 8-bit YUV (`libx264 -qp 0` yuv444p) vs 8-bit PNG: 2 eight-bit steps (514);
//! - DPX (10-bit, `round(v · 1023 / 65535)`) vs PNG16: half a 10-bit step plus ffmpeg's
//!   bit-replicating widening, 33 codes;
//! - EXR (half float) vs PNG16: half a half-float ulp at [0.5, 1), 2^-12 · 65535 = 16 codes.
#![cfg(feature = "ffmpeg")]

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cli_support::{ffmpeg, flashvsr, golden_models, sorted_files, stderr};
use serde_json::Value;

fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `flashvsr upscale INPUT -o OUTPUT --models <golden> --device cpu -q EXTRA…`, which must succeed.
fn upscale(input: &Path, output: &Path, extra: &[&str]) {
    let models = golden_models();
    let mut args = vec![
        "upscale",
        s(input),
        "-o",
        s(output),
        "--models",
        s(&models),
        "--device",
        "cpu",
        "-q",
    ];
    args.extend_from_slice(extra);
    let out = flashvsr(&args);
    assert!(
        out.status.success(),
        "upscale {}: {}",
        input.display(),
        stderr(&out)
    );
}

fn streams(path: &Path) -> Vec<Value> {
    ffprobe(path, &["-show_streams"])["streams"]
        .as_array()
        .unwrap()
        .clone()
}

fn video_frames(path: &Path) -> Vec<Value> {
    ffprobe(path, &["-select_streams", "v:0", "-show_frames"])["frames"]
        .as_array()
        .unwrap()
        .clone()
}

fn rational(v: &Value) -> (i128, i128) {
    let t = v.as_str().unwrap_or_else(|| panic!("not a rational: {v}"));
    let (n, d) = t.split_once('/').unwrap_or((t, "1"));
    (n.parse().unwrap(), d.parse().unwrap())
}

/// Presentation time of every frame of the first video stream: `(pts, time base num, den)`.
fn frame_times(path: &Path) -> Vec<(i128, i128, i128)> {
    let st = streams(path);
    let video = st.iter().find(|s| s["codec_type"] == "video").unwrap();
    let (num, den) = rational(&video["time_base"]);
    video_frames(path)
        .iter()
        .map(|f| {
            let pts = f["pts"]
                .as_i64()
                .unwrap_or_else(|| panic!("{}: frame without pts: {f}", path.display()));
            (pts as i128, num, den)
        })
        .collect()
}

/// Same number of frames at the same times: exactly where both files have the same time base,
/// else within half a tick of the output's (a container's own resolution: Matroska counts
/// milliseconds, MP4 the input's 1/12288).
fn assert_same_times(input: &Path, output: &Path) {
    let (a, b) = (frame_times(input), frame_times(output));
    assert_eq!(a.len(), b.len(), "frame count of {}", output.display());
    for (i, (&(p, n, d), &(q, m, e))) in a.iter().zip(&b).enumerate() {
        // |p·n/d − q·m/e| ≤ m / (2e)  ⇔  2·|p·n·e − q·m·d| ≤ m·d
        let diff = (p * n * e - q * m * d).abs();
        let ok = if (n, d) == (m, e) {
            p == q
        } else {
            2 * diff <= m * d
        };
        assert!(
            ok,
            "{}: frame {i} at {q}·{m}/{e} s, the input's at {p}·{n}/{d} s",
            output.display()
        );
    }
}

const TAGS: [&str; 4] = [
    "color_range",
    "color_space",
    "color_transfer",
    "color_primaries",
];

fn tags(v: &Value, which: &[&str]) -> Vec<String> {
    which
        .iter()
        .map(|k| v[*k].as_str().unwrap_or("unknown").to_string())
        .collect()
}

/// Every frame of `output` carries the colour tags of the input's frames (ffprobe's reading of
/// the bitstream), and the stream-level tags agree as well.
fn assert_same_colour_tags(input: &Path, output: &Path, which: &[&str]) {
    let want = tags(&video_frames(input)[0], which);
    assert!(
        want.iter().all(|t| t != "unknown"),
        "the test input should be fully tagged: {want:?}"
    );
    for (i, f) in video_frames(output).iter().enumerate() {
        assert_eq!(
            tags(f, which),
            want,
            "{}: colour tags of frame {i}",
            output.display()
        );
    }
    let st = streams(output);
    let video = st.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        tags(video, which),
        want,
        "{}: stream tags",
        output.display()
    );
}

/// `(codec_type, codec_name)` of every stream except the video.
fn other_streams(path: &Path) -> Vec<(String, String)> {
    streams(path)
        .iter()
        .filter(|s| s["codec_type"] != "video")
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap().to_string(),
                s["codec_name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `(pts_time, SHA-256)` of every packet of stream `spec` (`a:0`, `s:0`…).
fn packets(path: &Path, spec: &str) -> Vec<(String, String)> {
    ffprobe(
        path,
        &[
            "-select_streams",
            spec,
            "-show_packets",
            "-show_data_hash",
            "sha256",
            "-show_entries",
            "packet=pts_time,data_hash",
        ],
    )["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pts_time"].as_str().unwrap_or("").to_string(),
                p["data_hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every audio and subtitle stream of the input is in the output, copied packet for packet.
fn assert_streams_copied(input: &Path, output: &Path) {
    let (a, b) = (other_streams(input), other_streams(output));
    assert_eq!(a, b, "audio/subtitle streams of {}", output.display());
    let mut counters = std::collections::HashMap::new();
    for (kind, _) in &a {
        let n = counters.entry(kind.clone()).or_insert(0);
        let spec = format!("{}:{n}", &kind[..1]);
        *n += 1;
        let (pa, pb) = (packets(input, &spec), packets(output, &spec));
        assert!(!pa.is_empty(), "{spec} of {} has packets", input.display());
        assert_eq!(pa, pb, "{spec} of {}: packets", output.display());
    }
}

fn assert_video_size(output: &Path, width: u64, height: u64, pix_fmt: &str) {
    let st = streams(output);
    let video = st.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (
            video["width"].as_u64(),
            video["height"].as_u64(),
            video["pix_fmt"].as_str()
        ),
        (Some(width), Some(height), Some(pix_fmt)),
        "{}",
        output.display()
    );
}

/// Every frame of a video or image sequence (ffmpeg input syntax), decoded by ffmpeg to
/// little-endian RGB48 after the filter `vf` (if any).
fn rgb48(input: &str, vf: Option<&str>) -> Vec<u16> {
    rgb_raw(input, vf, "rgb48le")
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn rgb_raw(input: &str, vf: Option<&str>, pix_fmt: &str) -> Vec<u8> {
    let mut args = vec![
        "-v",
        "error",
        "-nostdin",
        "-i",
        input,
        "-fps_mode",
        "passthrough",
    ];
    if let Some(vf) = vf {
        args.extend(["-vf", vf]);
    }
    args.extend(["-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]);
    let out = Command::new("ffmpeg").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "decoding {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn png_frames(dir: &Path) -> String {
    format!("{}/%06d.png", dir.display())
}

fn max_abs_diff(a: &[u16], b: &[u16]) -> u32 {
    assert_eq!(a.len(), b.len(), "sample counts");
    assert!(!a.is_empty());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as i32 - y as i32).unsigned_abs())
        .max()
        .unwrap()
}

/// A YUV video decoded by ffmpeg with the given matrix, limited range, to RGB48.
fn yuv_to_rgb48(video: &Path, matrix: &str) -> Vec<u16> {
    let vf = format!(
        "scale=in_color_matrix={matrix}:in_range=tv:out_range=pc:flags=accurate_rnd+full_chroma_int,format=rgb48le"
    );
    rgb48(s(video), Some(&vf))
}

fn count_files(dir: &Path, ext: &str) -> usize {
    sorted_files(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .count()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

#[test]
fn h264_aac_mp4_keeps_frames_times_audio_tags_and_pixels() {
    let tmp = Dir::new();
    let input = tmp.join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=24:duration=1.25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1.25",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-color_range",
        "tv",
        "-colorspace",
        "bt709",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-c:a",
        "aac",
        "-shortest",
        s(&input),
    ]);
    assert_eq!(frame_times(&input).len(), 30);

    let out = tmp.join("out.mp4");
    upscale(&input, &out, &["--preset", "ultrafast"]);
    assert_same_times(&input, &out);
    assert_streams_copied(&input, &out);
    assert_same_colour_tags(&input, &out, &TAGS);
    assert_video_size(&out, 128, 96, "yuv420p");

    // Pixels: 8-bit PNG frames of the same input and model vs lossless encodes of them.
    let png = tmp.join("png");
    upscale(&input, &png, &["--output-format", "png"]);
    assert_eq!(count_files(&png, "png"), 30);
    let reference = rgb48(&png_frames(&png), None);

    let rgb = tmp.join("rgb.mkv");
    upscale(&input, &rgb, &["--codec", "ffv1", "--pix-fmt", "bgr0"]);
    assert_same_times(&input, &rgb);
    assert_eq!(max_abs_diff(&reference, &rgb48(s(&rgb), None)), 0);

    let yuv = tmp.join("yuv444.mkv");
    upscale(
        &input,
        &yuv,
        &[
            "--codec",
            "libx264",
            "-e",
            "qp=0",
            "--preset",
            "ultrafast",
            "--pix-fmt",
            "yuv444p",
        ],
    );
    assert_same_times(&input, &yuv);
    let err = max_abs_diff(&reference, &yuv_to_rgb48(&yuv, "bt709"));
    assert!(err <= 2 * 257, "8-bit 4:4:4 round trip off by {err}/65535");
}

#[test]
fn hevc_10bit_hdr10_mkv_keeps_tracks_subtitles_hdr10_and_pixels() {
    let tmp = Dir::new();
    let srt = tmp.join("subs.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:00,400\nHello\n\n2\n00:00:00,500 --> 00:00:00,900\nWorld\n",
    )
    .unwrap();
    let input = tmp.join("hdr.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=24:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660:duration=1",
        "-i",
        s(&srt),
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-map",
        "3",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p10le",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
        "-x265-params",
        "log-level=error:hdr-opt=1:repeat-headers=1:colorprim=bt2020:transfer=smpte2084:\
         colormatrix=bt2020nc:master-display=G(13250,34500)B(7500,3000)R(34000,16000)\
         WP(15635,16450)L(10000000,1):max-cll=1000,400",
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        s(&input),
    ]);
    assert_eq!(frame_times(&input).len(), 24);
    assert_eq!(
        other_streams(&input),
        [("audio", "aac"), ("audio", "aac"), ("subtitle", "subrip")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    let out = tmp.join("out.mkv");
    upscale(&input, &out, &["--preset", "ultrafast"]);
    assert_same_times(&input, &out);
    assert_streams_copied(&input, &out);
    assert_same_colour_tags(&input, &out, &TAGS);
    assert_video_size(&out, 128, 96, "yuv420p10le");
    assert_eq!(streams(&out)[0]["codec_name"], "hevc");

    // HDR10: the same mastering display and content light level in the bitstream (SEI, as
    // ffprobe reads it from the first frame) and, for the output, in the container.
    let want_md: [(&str, f64); 10] = [
        ("red_x", 0.68),
        ("red_y", 0.32),
        ("green_x", 0.265),
        ("green_y", 0.69),
        ("blue_x", 0.15),
        ("blue_y", 0.06),
        ("white_point_x", 0.3127),
        ("white_point_y", 0.329),
        ("min_luminance", 0.0001),
        ("max_luminance", 1000.0),
    ];
    let check_hdr = |side: &Value, what: &str| {
        let list = side
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no side data"));
        let md = list
            .iter()
            .find(|d| d["side_data_type"] == "Mastering display metadata")
            .unwrap_or_else(|| panic!("{what}: no mastering display metadata in {list:?}"));
        for (key, want) in want_md {
            let (n, d) = rational(&md[key]);
            let got = n as f64 / d as f64;
            assert!(
                (got - want).abs() <= want * 1e-9,
                "{what}: {key} = {got}, want {want}"
            );
        }
        let cl = list
            .iter()
            .find(|d| d["side_data_type"] == "Content light level metadata")
            .unwrap_or_else(|| panic!("{what}: no content light level in {list:?}"));
        assert_eq!(
            (cl["max_content"].as_u64(), cl["max_average"].as_u64()),
            (Some(1000), Some(400)),
            "{what}"
        );
    };
    check_hdr(&video_frames(&input)[0]["side_data_list"], "input frame 0");
    check_hdr(&video_frames(&out)[0]["side_data_list"], "output frame 0");
    check_hdr(&streams(&out)[0]["side_data_list"], "output stream");

    // Pixels: PNG16 frames of the same input and model vs lossless encodes of them.
    let png = tmp.join("png16");
    upscale(&input, &png, &["--output-format", "png16"]);
    assert_eq!(count_files(&png, "png"), 24);
    let reference = rgb48(&png_frames(&png), None);

    let rgb = tmp.join("rgb16.mkv");
    upscale(&input, &rgb, &["--codec", "ffv1", "--pix-fmt", "gbrp16le"]);
    assert_same_times(&input, &rgb);
    assert_streams_copied(&input, &rgb);
    assert_same_colour_tags(&input, &rgb, &["color_transfer", "color_primaries"]);
    assert_eq!(max_abs_diff(&reference, &rgb48(s(&rgb), None)), 0);

    let yuv = tmp.join("yuv444p10.mkv");
    upscale(
        &input,
        &yuv,
        &["--codec", "ffv1", "--pix-fmt", "yuv444p10le"],
    );
    assert_same_times(&input, &yuv);
    assert_same_colour_tags(&input, &yuv, &TAGS);
    let err = max_abs_diff(&reference, &yuv_to_rgb48(&yuv, "bt2020"));
    assert!(err <= 128, "10-bit 4:4:4 round trip off by {err}/65535");
}

#[test]
fn vfr_mkv_keeps_irregular_timestamps_tags_and_pixels() {
    let tmp = Dir::new();
    let input = tmp.join("vfr.mkv");
    // 20 frames, 33, 39, 45, … ms apart (a millisecond time base).
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=40x24:rate=25:duration=0.8",
        "-vf",
        "settb=1/1000,setpts=N*30+N*N*3",
        "-fps_mode",
        "passthrough",
        "-enc_time_base",
        "1/1000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-color_range",
        "pc",
        "-colorspace",
        "bt470bg",
        "-color_primaries",
        "bt470bg",
        "-color_trc",
        "smpte170m",
        s(&input),
    ]);
    let times = frame_times(&input);
    assert_eq!(times.len(), 20);
    let gaps: std::collections::BTreeSet<i128> =
        times.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.len() > 10, "the input is variable-rate: {gaps:?}");

    let out = tmp.join("out.mkv");
    upscale(&input, &out, &["--preset", "ultrafast"]);
    assert_same_times(&input, &out);
    assert_same_colour_tags(&input, &out, &TAGS);
    // Full-range 4:2:0 (libav calls it yuvj420p), as the input.
    let pix_fmt = streams(&input)[0]["pix_fmt"].as_str().unwrap().to_string();
    assert_video_size(&out, 160, 96, &pix_fmt);

    let png = tmp.join("png");
    upscale(&input, &png, &["--output-format", "png"]);
    assert_eq!(count_files(&png, "png"), 20);
    let rgb = tmp.join("rgb.mkv");
    upscale(&input, &rgb, &["--codec", "ffv1", "--pix-fmt", "bgr0"]);
    assert_same_times(&input, &rgb);
    assert_eq!(
        max_abs_diff(&rgb48(&png_frames(&png), None), &rgb48(s(&rgb), None)),
        0
    );
}

/// What ffprobe reads from one image file: codec, size, pixel format, bits, colour tags.
fn image_facts(path: &Path) -> Value {
    let st = streams(path);
    assert_eq!(st.len(), 1, "{}", path.display());
    st[0].clone()
}

/// Checks every file of an image-sequence output with ffprobe: `count` files of `codec`,
/// `width`×`height`, `pix_fmt`.
fn assert_image_sequence(dir: &Path, ext: &str, count: usize, expect: &[(&str, Value)]) {
    assert_eq!(count_files(dir, ext), count, "{}", dir.display());
    for f in sorted_files(dir) {
        let facts = image_facts(&f);
        for (key, want) in expect {
            assert_eq!(&facts[*key], want, "{}: {key}", f.display());
        }
    }
}

/// `(width, height, transfer, colorimetric, bit size)` of a DPX header read straight from the
/// bytes (SMPTE 268M offsets; `SDPX` big-endian, `XPDS` little-endian).
fn dpx_header(path: &Path) -> (u32, u32, u8, u8, u8) {
    let b = std::fs::read(path).unwrap();
    let big = match &b[..4] {
        b"SDPX" => true,
        b"XPDS" => false,
        m => panic!("{}: no DPX magic: {m:?}", path.display()),
    };
    let u32_at = |at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if big {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    (u32_at(772), u32_at(776), b[801], b[802], b[803])
}

/// EXR frames decoded by ffmpeg (planar float G, B, R) as interleaved RGB in 16-bit code units.
fn exr_as_codes(pattern: &str) -> Vec<f64> {
    let raw = rgb_raw(pattern, None, "gbrpf32le");
    let floats: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let plane = 128 * 96;
    let mut out = Vec::with_capacity(floats.len());
    for frame in floats.chunks_exact(plane * 3) {
        let (g, rest) = frame.split_at(plane);
        let (b, r) = rest.split_at(plane);
        for i in 0..plane {
            out.extend([r[i], g[i], b[i]].map(|v| v as f64 * 65535.0));
        }
    }
    out
}

#[test]
fn png16_sequence_to_png16_dpx10_and_exr() {
    let tmp = Dir::new();
    let input = tmp.join("in");
    std::fs::create_dir(&input).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=24",
        "-frames:v",
        "9",
        "-pix_fmt",
        "rgb48be",
        &format!("{}/frame_%04d.png", input.display()),
    ]);
    assert_image_sequence(
        &input,
        "png",
        9,
        &[("pix_fmt", "rgb48be".into()), ("width", 32.into())],
    );

    let png = tmp.join("png16");
    upscale(&input, &png, &["--output-format", "png16"]);
    assert_image_sequence(
        &png,
        "png",
        9,
        &[
            ("codec_name", "png".into()),
            ("pix_fmt", "rgb48be".into()),
            ("width", 128.into()),
            ("height", 96.into()),
        ],
    );
    let reference = rgb48(&png_frames(&png), None);

    let dpx = tmp.join("dpx");
    upscale(&input, &dpx, &["--output-format", "dpx10"]);
    // A PNG source has no transfer: the DPX header says BT.709 (codes 6, 6).
    assert_image_sequence(
        &dpx,
        "dpx",
        9,
        &[
            ("codec_name", "dpx".into()),
            ("width", 128.into()),
            ("height", 96.into()),
            ("bits_per_raw_sample", "10".into()),
            ("color_transfer", "bt709".into()),
            ("color_primaries", "bt709".into()),
        ],
    );
    for f in sorted_files(&dpx) {
        assert_eq!(dpx_header(&f), (128, 96, 6, 6, 10), "{}", f.display());
    }
    let decoded = rgb48(&format!("{}/%06d.dpx", dpx.display()), None);
    let err = max_abs_diff(&reference, &decoded);
    assert!(err <= 33, "DPX vs PNG16 off by {err}/65535");

    let exr = tmp.join("exr");
    upscale(&input, &exr, &["--output-format", "exr"]);
    assert_image_sequence(
        &exr,
        "exr",
        9,
        &[
            ("codec_name", "exr".into()),
            ("pix_fmt", "gbrpf32le".into()),
            ("width", 128.into()),
            ("height", 96.into()),
        ],
    );
    let floats = exr_as_codes(&format!("{}/%06d.exr", exr.display()));
    assert_eq!(floats.len(), reference.len());
    let err = floats
        .iter()
        .zip(&reference)
        .map(|(&f, &r)| (f - r as f64).abs())
        .fold(0.0, f64::max);
    assert!(err <= 16.01, "EXR vs PNG16 off by {err}/65535");
}

#[test]
fn dpx_sequence_keeps_count_size_depth_and_transfer() {
    let tmp = Dir::new();
    let input = tmp.join("in");
    std::fs::create_dir(&input).unwrap();
    // ffmpeg writes 10-bit DPX with transfer and colorimetric "linear" (codes 2, 2).
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=24",
        "-frames:v",
        "9",
        "-c:v",
        "dpx",
        "-pix_fmt",
        "gbrp10le",
        &format!("{}/shot_%04d.dpx", input.display()),
    ]);
    let first_in = sorted_files(&input)[0].clone();
    let facts_in = image_facts(&first_in);
    assert_eq!(facts_in["color_transfer"], "linear");
    let (_, _, transfer, colorimetric, bits) = dpx_header(&first_in);
    assert_eq!(bits, 10);

    let dpx = tmp.join("dpx");
    upscale(&input, &dpx, &["--output-format", "dpx10"]);
    let mut expect = vec![
        ("codec_name", "dpx".into()),
        ("width", 128.into()),
        ("height", 96.into()),
        ("bits_per_raw_sample", "10".into()),
    ];
    // The input's colour tags, as ffprobe reads them, survive.
    for key in ["color_transfer", "color_primaries", "color_space"] {
        expect.push((key, facts_in[key].clone()));
    }
    assert_image_sequence(&dpx, "dpx", 9, &expect);
    for f in sorted_files(&dpx) {
        assert_eq!(
            dpx_header(&f),
            (128, 96, transfer, colorimetric, 10),
            "{}",
            f.display()
        );
    }

    let png = tmp.join("png16");
    upscale(&input, &png, &["--output-format", "png16"]);
    assert_image_sequence(&png, "png", 9, &[("pix_fmt", "rgb48be".into())]);
    let err = max_abs_diff(
        &rgb48(&png_frames(&png), None),
        &rgb48(&format!("{}/%06d.dpx", dpx.display()), None),
    );
    assert!(err <= 33, "DPX vs PNG16 off by {err}/65535");
}

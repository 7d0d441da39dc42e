//! Helpers of the video tests: test media made with the `ffmpeg` program, `ffprobe` reports, a
//! trivial 2× upscale and the read → upscale → write round trip.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use flashvsr_media::{
    create_sink, open_source, Frame, FrameData, OutputFormat, SinkOptions, Timestamp,
};
use serde_json::Value;

/// Fails (never skips) when the programs are missing: CI installs them.
pub fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the video tests need the `{tool}` program on PATH to make and check test media \
             (Debian/Ubuntu: apt-get install ffmpeg)"
        );
    }
}

/// Runs `ffmpeg -y -v error ARGS`, failing the test with its stderr.
pub fn ffmpeg(args: &[&str]) {
    require_ffmpeg();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y", "-v", "error"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs ffmpeg with `args` split at whitespace, each `{}` replaced by the next of `paths`.
pub fn ffmpeg_with(args: &str, paths: &[&Path]) {
    let mut paths = paths.iter();
    let owned: Vec<String> = args
        .split_whitespace()
        .map(|a| match a {
            "{}" => paths
                .next()
                .expect("a path for every {}")
                .to_str()
                .unwrap()
                .to_string(),
            a => a.to_string(),
        })
        .collect();
    assert!(paths.next().is_none(), "more paths than {{}} in {args}");
    ffmpeg(&owned.iter().map(String::as_str).collect::<Vec<_>>());
}

/// `ffprobe -show_streams -show_frames -of json` of a file.
pub fn probe(path: &Path) -> Value {
    require_ffmpeg();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_frames",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

pub fn streams<'a>(p: &'a Value, kind: &str) -> Vec<&'a Value> {
    p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == kind)
        .collect()
}

pub fn video_frames(p: &Value) -> Vec<&Value> {
    p["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["media_type"] == "video")
        .collect()
}

/// Presentation times of the video frames, seconds as ffprobe prints them.
pub fn frame_times(p: &Value) -> Vec<String> {
    video_frames(p)
        .iter()
        .map(|f| f["pts_time"].as_str().expect("pts_time").to_string())
        .collect()
}

/// A side-data entry of a frame by its type name.
pub fn side_data<'a>(frame: &'a Value, kind: &str) -> Option<&'a Value> {
    frame["side_data_list"]
        .as_array()?
        .iter()
        .find(|s| s["side_data_type"] == kind)
}

/// Nearest-neighbour 2× upscale.
pub fn upscale2(f: &Frame) -> Frame {
    let (w, h) = (f.width * 2, f.height * 2);
    fn grow<T: Copy>(src: &[T], w0: usize, h0: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(w0 * h0 * 12);
        for y in 0..h0 * 2 {
            let row = &src[(y / 2) * w0 * 3..(y / 2 + 1) * w0 * 3];
            for x in 0..w0 * 2 {
                out.extend_from_slice(&row[(x / 2) * 3..(x / 2) * 3 + 3]);
            }
        }
        out
    }
    match &f.data {
        FrameData::U8(d) => Frame::from_u8(w, h, grow(d, f.width, f.height)),
        FrameData::U16(d) => Frame::from_u16(w, h, grow(d, f.width, f.height)),
    }
}

/// Reads `input` through `open_source`, upscales every frame 2× and writes it to `output` with
/// the source's timestamps and colour. Returns the upscaled frames and their timestamps.
pub fn upscale_file(
    input: &Path,
    output: &Path,
    mut options: SinkOptions,
) -> (Vec<Frame>, Vec<Option<Timestamp>>) {
    let mut src = open_source(input).unwrap();
    let info = src.info().clone();
    options.video.input = Some(input.to_path_buf());
    if options.video.colour.is_none() {
        options.video.colour = info.colour.clone();
    }
    options.fps = options.fps.or(info.fps);
    let mut sink = create_sink(output, OutputFormat::Video, &options).unwrap();
    let (mut frames, mut times) = (Vec::new(), Vec::new());
    while let Some(f) = src.next_frame().unwrap() {
        let up = upscale2(&f);
        let t = src.timestamp();
        sink.write_frame_at(&up, t).unwrap();
        frames.push(up);
        times.push(t);
    }
    sink.finish().unwrap();
    (frames, times)
}

/// Every frame of a video through `open_source`.
pub fn read_all(path: &Path) -> Vec<Frame> {
    let mut src = open_source(path).unwrap();
    let mut out = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        out.push(f);
    }
    out
}

/// Largest and mean absolute sample difference of two frames of one size and depth.
pub fn diff(a: &Frame, b: &Frame) -> (u32, f64) {
    assert_eq!(
        (a.width, a.height, a.bit_depth),
        (b.width, b.height, b.bit_depth)
    );
    let (x, y) = (a.to_u16_samples(), b.to_u16_samples());
    let mut max = 0u32;
    let mut sum = 0f64;
    for (p, q) in x.iter().zip(&y) {
        let d = (*p as i32 - *q as i32).unsigned_abs();
        max = max.max(d);
        sum += d as f64;
    }
    let scale = if a.bit_depth == 8 { 257 } else { 1 };
    (max / scale, sum / x.len() as f64 / scale as f64)
}

/// Names in a directory, hidden ones included, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

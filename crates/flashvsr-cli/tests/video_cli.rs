//! A real video through the command line: every frame, its timestamps and the audio survive.
#![cfg(feature = "ffmpeg")]

mod cli_support;

use std::path::Path;
use std::process::Command;

use cli_support::{stderr, upscale_on_cpu};

fn ffprobe_json(path: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn mp4_with_audio_keeps_frames_timestamps_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=32x24:rate=24:duration=1.25",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=1.25"])
        .args([
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&input)
        .status()
        .expect("ffmpeg must be installed (apt-get install ffmpeg)");
    assert!(made.success());
    let output = tmp.path().join("out.mp4");
    let out = upscale_on_cpu(
        &input,
        &output,
        &["--crf", "30", "--preset", "ultrafast", "-q"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let frames = |p: &Path| {
        let v = ffprobe_json(
            p,
            &["-select_streams", "v:0", "-show_entries", "frame=pts_time"],
        );
        v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["pts_time"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (fin, fout) = (frames(&input), frames(&output));
    assert_eq!(fin.len(), 30);
    assert_eq!(fin, fout, "frame count and timestamps");
    let streams = ffprobe_json(
        &output,
        &["-show_entries", "stream=codec_type,width,height"],
    );
    let streams = streams["streams"].as_array().unwrap();
    assert!(
        streams.iter().any(|s| s["codec_type"] == "audio"),
        "audio copied: {streams:?}"
    );
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(128), Some(96))
    );
}

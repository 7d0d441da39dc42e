//! Bad inputs and outputs: each gives a clear error naming the file, the documented exit code
//! (2 bad input or usage, 1 write failure), and leaves nothing behind in the output folder: no
//! OUTPUT, no hidden `.OUTPUT.partial-*` temporary, no `OUTPUT.flashvsr/` job store. Odd and 1×1
//! sizes work and give exactly scale × size.
//!
//! A full disk is simulated with RLIMIT_FSIZE (`ulimit -f` in a `sh` wrapper, SIGXFSZ ignored so
//! writes past the limit fail with EFBIG, "File too large"): it needs neither root nor a mount,
//! and the write fails part-way through the output as on a full disk.
#![cfg(feature = "ffmpeg")]

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cli_support::{ffmpeg, golden_models, read_png, sorted_files, stderr, write_png_rgb8};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `flashvsr` command for `upscale INPUT -o OUTPUT` with the golden model on the CPU.
fn upscale_cmd(program: &str, input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["upscale", s(input), "-o", s(output), "--models"])
        .arg(golden_models())
        .args(["--device", "cpu", "-q"])
        .args(extra)
        .env_remove("FLASHVSR_MODELS")
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HOME",
            std::env::temp_dir().join("flashvsr-tests-empty-hf-home"),
        );
    cmd
}

fn upscale(input: &Path, output: &Path, extra: &[&str]) -> Output {
    upscale_cmd(env!("CARGO_BIN_EXE_flashvsr"), input, output, extra)
        .output()
        .unwrap()
}

/// A test folder with `out/`, an empty folder for outputs.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Case { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn out(&self, name: &str) -> PathBuf {
        self.path("out").join(name)
    }
    /// Everything in `out/`, hidden files included.
    fn leftovers(&self) -> Vec<String> {
        sorted_files(&self.path("out"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

/// The run failed with `code`, the message names `names` (the file at fault), and `out/` is
/// empty.
fn assert_failed_clean(case: &Case, out: &Output, code: i32, names: &Path, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{what}: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("flashvsr: error: "))
        .unwrap_or_else(|| panic!("{what}: no error line in {err:?}"));
    assert!(
        line.contains(s(names)),
        "{what}: the error names {}: {line}",
        names.display()
    );
    assert_eq!(case.leftovers(), Vec::<String>::new(), "{what}: {err}");
}

/// A 32×24 H.264 + AAC clip of 30 frames.
fn make_clip(path: &Path, extra: &[&str]) {
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=24:duration=1.25",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1.25",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    ];
    args.extend_from_slice(extra);
    args.push(s(path));
    ffmpeg(&args);
}

#[test]
fn missing_file_and_not_a_video_are_bad_input() {
    let case = Case::new();
    let missing = case.path("nope.mp4");
    let out = upscale(&missing, &case.out("x.mp4"), &[]);
    assert_failed_clean(&case, &out, 2, &missing, "missing file");
    assert!(stderr(&out).contains("no such file"), "{}", stderr(&out));

    for name in ["notes.txt", "notes.mp4", "notes.mkv"] {
        let text = case.path(name);
        std::fs::write(&text, "this is not a video\n".repeat(50)).unwrap();
        let out = upscale(&text, &case.out("x.mp4"), &[]);
        assert_failed_clean(&case, &out, 2, &text, name);
        assert!(
            stderr(&out).contains("unsupported input"),
            "{}",
            stderr(&out)
        );
    }

    let empty = case.path("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let out = upscale(&empty, &case.out("x.mp4"), &[]);
    assert_failed_clean(&case, &out, 2, &empty, "empty file");
}

#[test]
fn zero_frames_are_bad_input() {
    let case = Case::new();
    // A Matroska file whose video stream has no frames (its audio has some).
    let zero = case.path("zero.mkv");
    make_clip(&zero, &["-vf", "trim=end_frame=0"]);
    // Audio only.
    let audio = case.path("audio_only.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        s(&audio),
    ]);
    // A y4m header and no frame.
    let y4m = case.path("zero.y4m");
    std::fs::write(&y4m, "YUV4MPEG2 W32 H24 F24:1 Ip A1:1 C420jpeg\n").unwrap();
    // A folder without images.
    let folder = case.path("no_frames");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("readme.txt"), "no frames here").unwrap();

    for (input, output) in [
        (&zero, "x.mkv"),
        (&audio, "x.mkv"),
        (&y4m, "x.y4m"),
        (&folder, "frames"),
    ] {
        let out = upscale(input, &case.out(output), &[]);
        assert_failed_clean(&case, &out, 2, input, &input.display().to_string());
        assert!(
            stderr(&out).contains("no frames") || stderr(&out).contains("no image files"),
            "{}",
            stderr(&out)
        );
    }
}

/// A deterministic stream of garbage bytes.
fn garbage(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn truncated_or_corrupt_streams_are_bad_input_and_leave_nothing() {
    let case = Case::new();
    // Index first (faststart MP4, Matroska), so that cutting the file damages the stream mid-way;
    // a plain MP4 cut in half has lost its index (moov) altogether.
    let faststart = case.path("faststart.mp4");
    make_clip(&faststart, &["-movflags", "+faststart"]);
    let mkv = case.path("clip.mkv");
    make_clip(&mkv, &[]);
    let plain = case.path("plain.mp4");
    make_clip(&plain, &[]);

    let mut damaged = Vec::new();
    for src in [&faststart, &mkv, &plain] {
        let bytes = std::fs::read(src).unwrap();
        let name = src.file_name().unwrap().to_string_lossy();
        let cut = case.path(&format!("cut_{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        damaged.push(cut);
        if src != &plain {
            // 2000 bytes of garbage in the middle, the length unchanged.
            let mut bad = bytes.clone();
            let at = bad.len() / 2;
            bad[at..at + 2000].copy_from_slice(&garbage(2000));
            let corrupt = case.path(&format!("corrupt_{name}"));
            std::fs::write(&corrupt, &bad).unwrap();
            damaged.push(corrupt);
        }
    }
    for input in &damaged {
        // Matroska inputs do not say how many frames they have: they run through the job store,
        // which must go too.
        for output in ["x.mkv", "frames"] {
            let out = upscale(input, &case.out(output), &[]);
            let what = format!("{} -> {output}", input.display());
            assert_failed_clean(&case, &out, 2, input, &what);
        }
    }
}

#[test]
fn unwritable_outputs_fail_with_exit_1() {
    let case = Case::new();
    let clip = case.path("clip.mp4");
    make_clip(&clip, &[]);
    let mkv = case.path("clip.mkv");
    make_clip(&mkv, &[]);
    // Root ignores permission bits: a parent that is a file, or /proc, fails for everyone.
    let file = case.out("a_file");
    std::fs::write(&file, "").unwrap();
    for (input, output) in [
        (&clip, file.join("x.mp4")),
        (&clip, file.join("frames")),
        (&clip, file.join("x.y4m")),
        (&mkv, file.join("x.mkv")),
        (&clip, PathBuf::from("/proc/flashvsr-test.mp4")),
        (&clip, PathBuf::from("/proc/flashvsr-test-frames")),
    ] {
        let out = upscale(input, &output, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", output.display());
        assert!(
            err.contains(s(&output)) && err.contains("cannot write")
                || err.contains(&format!("{}.flashvsr", output.display())),
            "{}: {err}",
            output.display()
        );
        assert!(!output.exists());
    }
    assert_eq!(case.leftovers(), vec!["a_file".to_string()]);
    assert_eq!(std::fs::read(&file).unwrap(), b"");
}

#[test]
fn a_full_disk_fails_with_exit_1_and_leaves_nothing() {
    let case = Case::new();
    let clip = case.path("clip.mp4");
    make_clip(&clip, &[]);
    let mkv = case.path("clip.mkv");
    make_clip(&mkv, &[]);
    // `ulimit -f 8`: 4 KiB (dash counts 512-byte blocks) or 8 KiB (bash, 1 KiB blocks); the job
    // store's own small files fit, every output file is larger (a 128×96 frame is 36 KiB raw, about
    // 30 KiB as an 8-bit PNG).
    for (input, output, extra) in [
        (&clip, "x.mp4", &["--preset", "ultrafast"][..]),
        (&clip, "x.y4m", &[][..]),
        (&clip, "frames", &["--output-format", "png16"][..]),
        (&clip, "dpx", &["--output-format", "dpx10"][..]),
        (&mkv, "x.mkv", &["--preset", "ultrafast"][..]),
        (&mkv, "frames", &[][..]),
    ] {
        let output = case.out(output);
        let real = upscale_cmd(env!("CARGO_BIN_EXE_flashvsr"), input, &output, extra);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' XFSZ; ulimit -f 8; exec \"$@\"", "sh"])
            .arg(real.get_program())
            .args(real.get_args())
            .envs(
                real.get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .env_remove("FLASHVSR_MODELS");
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        let what = format!("{} -> {}", input.display(), output.display());
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("File too large"), "{what}: {err}");
        assert!(
            err.contains(s(&output)),
            "{what}: the error names the output: {err}"
        );
        assert_eq!(case.leftovers(), Vec::<String>::new(), "{what}: {err}");
    }
}

fn png_size(path: &Path) -> (usize, usize) {
    let (w, h, _, _) = read_png(path);
    (w, h)
}

fn video_size(path: &Path) -> (u64, u64, String, usize) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-count_frames",
            "-select_streams",
            "v:0",
        ])
        .args([
            "-show_entries",
            "stream=width,height,pix_fmt,nb_read_frames",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &v["streams"][0];
    (
        st["width"].as_u64().unwrap(),
        st["height"].as_u64().unwrap(),
        st["pix_fmt"].as_str().unwrap().to_string(),
        st["nb_read_frames"].as_str().unwrap().parse().unwrap(),
    )
}

#[test]
fn odd_and_one_pixel_sizes_give_exactly_scale_times_size() {
    let case = Case::new();
    // A 33×17 PNG sequence → 132×68 frames.
    let frames = case.path("odd_frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..9 {
        let data: Vec<u8> = (0..33 * 17 * 3)
            .map(|j| ((j * 7 + i * 13) % 251) as u8)
            .collect();
        write_png_rgb8(&frames.join(format!("f{i:02}.png")), 33, 17, &data);
    }
    let out = upscale(&frames, &case.out("odd"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written = sorted_files(&case.out("odd"));
    assert_eq!(written.len(), 9);
    for f in &written {
        assert_eq!(png_size(f), (132, 68), "{}", f.display());
    }

    // One 1×1 PNG → 4×4.
    let one = case.path("one.png");
    write_png_rgb8(&one, 1, 1, &[200, 40, 90]);
    let out = upscale(&one, &case.out("one"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written = sorted_files(&case.out("one"));
    assert_eq!(written.len(), 1);
    assert_eq!(png_size(&written[0]), (4, 4));

    // Odd-sized video (4:4:4, as 4:2:0 cannot be odd): ×4 is even, ×3 stays odd and is encoded
    // 4:4:4 by default; asking for 4:2:0 there is a clear error with nothing left behind.
    let odd = case.path("odd.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=34x18:rate=24:duration=0.5",
        "-vf",
        "format=yuv444p,crop=33:17:0:0",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
        s(&odd),
    ]);
    let x4 = case.out("odd_x4.mp4");
    let out = upscale(&odd, &x4, &["--preset", "ultrafast"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(video_size(&x4), (132, 68, "yuv420p".into(), 12));
    let x3 = case.out("odd_x3.mkv");
    let out = upscale(&odd, &x3, &["--scale", "3", "--preset", "ultrafast"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(video_size(&x3), (99, 51, "yuv444p".into(), 12));
    let fail = Case::new();
    let bad = fail.out("odd_420.mkv");
    let out = upscale(
        &odd,
        &bad,
        &[
            "--scale",
            "3",
            "--pix-fmt",
            "yuv420p",
            "--preset",
            "ultrafast",
        ],
    );
    assert_failed_clean(&fail, &out, 2, &bad, "99x51 as yuv420p");
    assert!(
        stderr(&out).contains("yuv420p needs a width divisible by 2"),
        "{}",
        stderr(&out)
    );

    // A 1×1 video → 4×4.
    let one = case.path("one.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=2x2:rate=24:duration=0.4",
        "-vf",
        "format=yuv444p,crop=1:1:0:0",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        s(&one),
    ]);
    let out4 = case.out("one.mkv");
    let out = upscale(&one, &out4, &["--preset", "ultrafast"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(video_size(&out4), (4, 4, "yuv420p".into(), 10));
}

//! How `flashvsr upscale` behaves around the computation: JSON progress, Ctrl-C and resume,
//! folders of videos, and the seed CLI's flag spellings.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::{golden_models, stderr, write_y4m};

fn y4m_frames(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(6).filter(|w| w == b"FRAME\n").count()
}

/// `flashvsr <args> --models <golden> --device cpu`, with the test environment of cli_support.
fn upscale(args: &[&str]) -> Command {
    let models = golden_models();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashvsr"));
    cmd.arg("upscale")
        .args(args)
        .args(["--models", models.to_str().unwrap(), "--device", "cpu"])
        .env_remove("FLASHVSR_MODELS")
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HOME",
            std::env::temp_dir().join("flashvsr-tests-empty-hf-home"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn run(args: &[&str]) -> Output {
    upscale(args).output().unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stderr(out)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", stderr(out)))
        })
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn progress_json_lines_parse_and_end_with_an_end_event() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 30, 16, 16);
    let output = tmp.path().join("out.y4m");
    let out = run(&[p(&input), "-o", p(&output), "--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    let progress: Vec<_> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "no progress events: {events:?}");
    for e in &progress {
        assert_eq!(e["total"], 30, "{e}");
        for key in ["frame", "fps", "elapsed_s"] {
            assert!(e[key].is_number(), "{key} in {e}");
        }
    }
    assert_eq!(progress.last().unwrap()["frame"], 30);
    let end = events.last().unwrap();
    assert_eq!(end["event"], "end", "{events:?}");
    assert_eq!((&end["status"], &end["code"]), (&"done".into(), &0.into()));
    assert_eq!(end["frames"], 30);
    for stage in [
        "read_s",
        "prepare_s",
        "model_s",
        "write_s",
        "dit_s",
        "decode_s",
    ] {
        assert!(end["stages"][stage].is_number(), "{stage} in {end}");
    }
    assert_eq!(y4m_frames(&output), 30);

    // A failure is an error event with the exit code, still followed by the end event.
    let missing = tmp.path().join("missing.y4m");
    let out = run(&[p(&missing), "-o", p(&output), "-y", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let events = json_lines(&out);
    let error = events.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(error["code"], 2);
    assert!(
        error["message"].as_str().unwrap().contains("missing.y4m"),
        "{error}"
    );
    let end = events.last().unwrap();
    assert_eq!((&end["event"], &end["code"]), (&"end".into(), &2.into()));
}

fn commits(store: &Path) -> usize {
    std::fs::read_to_string(store.join("events.log"))
        .map(|s| s.lines().filter(|l| l.starts_with("commit ")).count())
        .unwrap_or(0)
}

#[test]
fn sigint_stops_cleanly_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("long.y4m");
    write_y4m(&input, 400, 16, 16);
    let output = tmp.path().join("out.y4m");
    let store = tmp.path().join("out.y4m.flashvsr");
    let args = [p(&input), "-o", p(&output), "--segment-frames", "24"];

    let mut child = upscale(&args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while commits(&store) < 1 {
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        assert!(Instant::now() < deadline, "no segment committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("interrupted; rerun the same command to resume"),
        "{msg}"
    );
    assert!(!output.exists(), "no final output after an interrupt");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "partial outputs left: {leftovers:?}");
    assert!(commits(&store) >= 1, "the job store is kept for the resume");

    let out = run(&args);
    let msg = stderr(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("resuming"), "{msg}");
    assert_eq!(y4m_frames(&output), 400);
    assert!(!store.exists(), "the store is removed after success");
}

#[cfg(feature = "ffmpeg")]
fn make_video(path: &Path) {
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=32x24:rate=24:duration=0.5")
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .expect("ffmpeg must be installed (apt-get install ffmpeg)");
    assert!(made.success());
}

#[cfg(feature = "ffmpeg")]
#[test]
fn a_folder_of_videos_is_a_batch_that_skips_finished_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    std::fs::create_dir(&videos).unwrap();
    make_video(&videos.join("a.mp4"));
    make_video(&videos.join("b.mov"));
    // Not a video: ignored. A broken video: reported, and the batch goes on.
    std::fs::write(videos.join("notes.txt"), "not a video").unwrap();
    std::fs::write(videos.join("c.mkv"), "not really a video").unwrap();
    let outs = tmp.path().join("outs");
    let (a, b) = (outs.join("a.mp4"), outs.join("b.mov"));
    let fast = ["--crf", "30", "--preset", "ultrafast"];
    let batch = |extra: &[&str]| {
        let mut args = vec![p(&videos), "-o", p(&outs)];
        args.extend_from_slice(&fast);
        args.extend_from_slice(extra);
        run(&args)
    };

    let out = batch(&[]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "the broken video fails: {msg}");
    assert!(msg.contains("c.mkv"), "{msg}");
    assert!(a.is_file() && b.is_file(), "{msg}");
    assert!(!outs.join("c.mkv").exists());
    let written = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (ta, tb) = (written(&a), written(&b));

    let out = batch(&[]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("skipping 2") && msg.contains(p(&a)) && msg.contains(p(&b)),
        "{msg}"
    );
    assert_eq!(
        (written(&a), written(&b)),
        (ta, tb),
        "finished outputs kept"
    );

    std::fs::remove_file(videos.join("c.mkv")).unwrap();
    let out = batch(&["-y", "--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    let done: Vec<_> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 2, "{events:?}");
    assert!(done.iter().all(|e| e["frames"] == 12), "{done:?}");
    let end = events.last().unwrap();
    assert_eq!(end["event"], "end");
    assert_eq!(end["videos"]["done"], 2, "{end}");
    assert_eq!(end["frames"], 24, "{end}");
    assert!(written(&a) > ta, "-y redoes a finished output");
}

#[test]
fn seed_cli_spellings_give_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 9, 16, 16);
    let ours = tmp.path().join("ours.y4m");
    let seed = tmp.path().join("seed.y4m");
    let out = run(&[
        p(&input),
        "-o",
        p(&ours),
        "--model-ver",
        "1.1",
        "--color-fix",
        "adain",
        "--attention",
        "sage",
        "--sparse-ratio",
        "1.5",
        "--kv-ratio",
        "3",
        "--local-range",
        "9",
        "--max-frames",
        "5",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&[
        "--input",
        p(&input),
        "--output",
        p(&seed),
        "--model_ver",
        "1.1",
        "--mode",
        "tiny",
        "--scale",
        "4",
        "--color_fix",
        "True",
        "--tiled_vae",
        "False",
        "--attention_mode",
        "sparse_sage_attention",
        "--sparse_ratio",
        "1.5",
        "--kv_ratio",
        "3.0",
        "--local_range",
        "9",
        "--seed",
        "0",
        "--precision",
        "fp32",
        "--max_frames",
        "5",
    ]);
    let msg = stderr(&out);
    assert!(out.status.success(), "{msg}");
    assert!(
        msg.contains("--model_ver is the seed CLI's spelling; use --model-ver"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&seed).unwrap(), std::fs::read(&ours).unwrap());
    assert_eq!(y4m_frames(&seed), 5);
}

/// `--decoder-stream on` needs a CUDA device: on the CPU it is a usage error (exit 2) that names
/// the option and leaves no output; `auto` and `off` run.
#[test]
fn a_decoder_stream_asked_for_on_the_cpu_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 3, 16, 16);
    let output = tmp.path().join("out.y4m");
    let out = run(&[p(&input), "-o", p(&output), "--decoder-stream", "on"]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("--decoder-stream on") && msg.contains("CUDA"),
        "{msg}"
    );
    assert!(!output.exists(), "no output after a usage error");
    for choice in ["auto", "off"] {
        let out = run(&[
            p(&input),
            "-o",
            p(&output),
            "-y",
            "--decoder-stream",
            choice,
        ]);
        assert!(out.status.success(), "{choice}: {}", stderr(&out));
        assert_eq!(y4m_frames(&output), 3, "{choice}");
    }
}

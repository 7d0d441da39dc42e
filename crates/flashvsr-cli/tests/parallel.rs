//! Parallel jobs (`--devices cpu:N`): cold segments with warm-up and cross-faded joins, computed
//! by several worker processes. The join-difference curve (docs/SEGMENTS.md) is an ignored test:
//! `cargo test -p flashvsr-cli --release --test parallel -- --ignored --nocapture join_difference`.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cli_support::{golden_models, read_png, stderr, write_y4m};

/// The format the tests write: y4m for a `.y4m` output, else a folder of 8-bit PNGs.
fn output_format(output: &Path) -> &'static str {
    match output.extension() {
        Some(e) if e == "y4m" => "y4m",
        _ => "png",
    }
}

fn upscale(input: &Path, output: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let models = golden_models();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashvsr"));
    cmd.args([
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--output-format",
        output_format(output),
    ])
    .args(["--models", models.to_str().unwrap(), "-q"])
    .args(extra)
    .env_remove("FLASHVSR_MODELS")
    .env("HF_HUB_OFFLINE", "1")
    .env(
        "HF_HOME",
        std::env::temp_dir().join("flashvsr-tests-empty-hf-home"),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
    out
}

/// The PNG frames of an output folder, in order.
fn frames(dir: &Path) -> Vec<Vec<u16>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    names.sort();
    names.iter().map(|p| read_png(p).3).collect()
}

fn mean_abs_diff(a: &[u16], b: &[u16]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

/// Starts `upscale input -o output extra…` and SIGKILLs it once its job store `store` holds a
/// done marker.
fn kill_after_first_commit(input: &Path, output: &Path, extra: &[&str], store: &Path) {
    let models = golden_models();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashvsr"))
        .args(["upscale", input.to_str().unwrap(), "-o"])
        .arg(output)
        .args(["--output-format", output_format(output), "-q", "--models"])
        .arg(&models)
        .args(extra)
        .env_remove("FLASHVSR_MODELS")
        .env("HF_HUB_OFFLINE", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(store.join("done")).is_ok_and(|d| d.count() > 0) {
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        assert!(std::time::Instant::now() < deadline, "no commit");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

const PARALLEL: [&str; 8] = [
    "--devices",
    "cpu:2",
    "--segment-frames",
    "48",
    "--warmup-frames",
    "24",
    "--crossfade-frames",
    "8",
];

#[test]
fn two_cpu_workers_give_every_frame_once_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 150, 16, 12);
    let stream = tmp.path().join("stream");
    upscale(&input, &stream, &["--device", "cpu"], &[]);
    let a = tmp.path().join("a");
    let mut keep = PARALLEL.to_vec();
    keep.push("--keep-job");
    upscale(&input, &a, &keep, &[]);
    let b = tmp.path().join("b");
    upscale(&input, &b, &PARALLEL, &[]);
    assert!(!tmp.path().join("b.flashvsr").exists(), "store removed");

    let (s, fa, fb) = (frames(&stream), frames(&a), frames(&b));
    assert_eq!(s.len(), 150);
    assert_eq!(fa.len(), 150, "every frame present once");
    assert!(fa == fb, "two parallel runs differ");
    // Segment 0 has no warm-up: its frames up to the first join equal the stream's exactly.
    assert!(
        fa[..40] == s[..40],
        "segment 0 differs from the single stream"
    );
    // Each frame is the stream's frame at the same index (not a neighbour's), joins included.
    for j in 0..150 {
        let same = mean_abs_diff(&fa[j], &s[j]);
        for n in [j.wrapping_sub(1), j + 1] {
            if n < 150 {
                assert!(
                    same < mean_abs_diff(&fa[j], &s[n]),
                    "frame {j} looks like stream frame {n}"
                );
            }
        }
    }
    // Every segment committed exactly once.
    let store = tmp.path().join("a.flashvsr");
    let events = std::fs::read_to_string(store.join("events.log")).unwrap();
    let mut commits: Vec<usize> = events
        .lines()
        .filter_map(|l| l.strip_prefix("commit ")?.parse().ok())
        .collect();
    commits.sort();
    assert_eq!(commits, vec![0, 1, 2, 3], "{events}");
    // The output takes each segment while the workers still compute the later ones: segments 2
    // and 3 start only after a first commit, and take far longer than copying segment 0.
    let lines: Vec<&str> = events.lines().collect();
    let assembled_0 = lines.iter().position(|&l| l == "assembled 0").unwrap();
    let last_commit = lines
        .iter()
        .rposition(|l| l.starts_with("commit "))
        .unwrap();
    assert!(
        assembled_0 < last_commit,
        "assembled only at the end: {events}"
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["segmenting"]["mode"], "parallel");
    assert_eq!(plan["segments"][1]["read_from"], 24);
    assert_eq!(plan["segments"][1]["emit_from"], 40);
    // Segment 0's own frames, before the cross-fade, are the stream's.
    let done: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("done/s000000.json")).unwrap()).unwrap();
    let seg0 = frames(&store.join(done["data"].as_str().unwrap()));
    assert_eq!(seg0.len(), 48);
    assert!(
        seg0[..] == s[..48],
        "segment 0 data differs from the single stream"
    );
}

#[test]
fn a_crashed_worker_is_restarted_and_its_segment_requeued() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 100, 16, 12);
    let args = [
        "--devices",
        "cpu:2",
        "--segment-frames",
        "32",
        "--warmup-frames",
        "16",
        "--crossfade-frames",
        "8",
    ];
    let clean = tmp.path().join("clean");
    upscale(&input, &clean, &args, &[]);
    let crashed = tmp.path().join("crashed");
    let out = upscale(
        &input,
        &crashed,
        &args,
        &[("FLASHVSR_TEST_CRASH_SEGMENT", "1")],
    );
    let fc = frames(&crashed);
    assert_eq!(fc.len(), 100);
    assert!(fc == frames(&clean), "{}", stderr(&out));
}

#[test]
fn a_killed_parallel_job_resumes_to_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 150, 16, 12);
    let clean = tmp.path().join("clean");
    upscale(&input, &clean, &PARALLEL, &[]);
    let output = tmp.path().join("out");
    let store = tmp.path().join("out.flashvsr");
    kill_after_first_commit(&input, &output, &PARALLEL, &store);
    // The orphaned workers stop and release their leases; the rerun takes over at once.
    let started = std::time::Instant::now();
    upscale(&input, &output, &PARALLEL, &[]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "the rerun waited for stale leases"
    );
    assert!(frames(&output) == frames(&clean), "resumed output differs");
}

/// The frames of an 8-bit 4:4:4 y4m file (tags checked, nothing left over).
fn y4m_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let header = std::str::from_utf8(&bytes[..header_end]).unwrap();
    let field = |tag: char| -> usize {
        header
            .split_whitespace()
            .find_map(|t| t.strip_prefix(tag)?.parse().ok())
            .unwrap()
    };
    assert!(header.contains(" C444 "), "{header}");
    let stride = b"FRAME\n".len() + 3 * field('W') * field('H');
    let body = &bytes[header_end..];
    assert_eq!(body.len() % stride, 0, "a partial frame at the end");
    body.chunks(stride)
        .map(|f| f.strip_prefix(b"FRAME\n").expect("every frame tagged"))
        .collect()
}

/// 8-bit RGB frames of `width`×`height` as the y4m sink writes them (at the test clip's 24 fps).
fn as_y4m(frames: &[Vec<u16>], width: usize, height: usize, path: &Path) -> Vec<u8> {
    let options = flashvsr_media::SinkOptions {
        fps: Some((24, 1)),
        ..Default::default()
    };
    let mut sink =
        flashvsr_media::create_sink(path, flashvsr_media::OutputFormat::Y4m, &options).unwrap();
    for f in frames {
        let samples = f.iter().map(|&v| v as u8).collect();
        sink.write_frame(&flashvsr_media::Frame::from_u8(width, height, samples))
            .unwrap();
    }
    sink.finish().unwrap();
    std::fs::read(path).unwrap()
}

fn events(store: &Path) -> Vec<String> {
    std::fs::read_to_string(store.join("events.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The segments started after they were committed (recomputed) in a job store's events.
fn recomputed(events: &[String]) -> Vec<usize> {
    let mut committed = Vec::new();
    let mut again = Vec::new();
    for e in events {
        if let Some(k) = e.strip_prefix("commit ").and_then(|k| k.parse().ok()) {
            committed.push(k);
        }
        if let Some(k) = e
            .strip_prefix("start ")
            .and_then(|k| k.parse::<usize>().ok())
        {
            if committed.contains(&k) {
                again.push(k);
            }
        }
    }
    again
}

/// A short clip in three small segments (two joins), for the y4m tests: about 2 s a run.
const CLIP: usize = 56;
const SMALL: [&str; 8] = [
    "--devices",
    "cpu:2",
    "--segment-frames",
    "24",
    "--warmup-frames",
    "16",
    "--crossfade-frames",
    "8",
];

/// A y4m output is filled in place by the workers (their own frames) and the parent (the
/// cross-faded joins): every frame once, the same bytes on every run, and the frames of the PNG
/// job, converted as the y4m sink converts them.
#[test]
fn a_parallel_y4m_output_is_the_png_jobs_frames_written_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, CLIP, 16, 12);
    let png = tmp.path().join("png");
    upscale(&input, &png, &SMALL, &[]);
    let a = tmp.path().join("a.y4m");
    let mut keep = SMALL.to_vec();
    keep.push("--keep-job");
    upscale(&input, &a, &keep, &[]);
    let b = tmp.path().join("b.y4m");
    upscale(&input, &b, &SMALL, &[]);

    let (fa, fb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(y4m_frames(&fa).len(), CLIP, "every frame once");
    assert!(fa == fb, "two parallel y4m runs differ");
    let expected = as_y4m(&frames(&png), 64, 48, &tmp.path().join("expected.y4m"));
    assert!(
        fa == expected,
        "the y4m output differs from the PNG job's frames"
    );
    // The workers wrote no segment frames beside the output: only the join frames for blending.
    let store = tmp.path().join("a.y4m.flashvsr");
    for entry in std::fs::read_dir(store.join("segments")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name.ends_with(".blend") || name.ends_with(".pts.json"),
            "segment data {name} written for a y4m output"
        );
    }
    let events = events(&store);
    assert!(recomputed(&events).is_empty(), "{events:?}");
    for join in ["joined 1", "joined 2"] {
        assert!(events.iter().any(|e| e == join), "{events:?}");
    }
}

/// A parallel y4m job killed with SIGKILL resumes to the same bytes, and no committed segment is
/// computed again.
#[test]
fn a_killed_parallel_y4m_job_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, CLIP, 16, 12);
    let clean = tmp.path().join("clean.y4m");
    upscale(&input, &clean, &SMALL, &[]);
    let output = tmp.path().join("out.y4m");
    let store = tmp.path().join("out.y4m.flashvsr");
    kill_after_first_commit(&input, &output, &SMALL, &store);
    assert!(!output.exists(), "no output before the job is complete");
    let mut keep = SMALL.to_vec();
    keep.push("--keep-job");
    upscale(&input, &output, &keep, &[]);
    assert!(
        std::fs::read(&output).unwrap() == std::fs::read(&clean).unwrap(),
        "resumed output differs"
    );
    let events = events(&store);
    assert_eq!(recomputed(&events), Vec::<usize>::new(), "{events:?}");
    let mut commits: Vec<usize> = events
        .iter()
        .filter_map(|l| l.strip_prefix("commit ")?.parse().ok())
        .collect();
    commits.sort();
    assert_eq!(
        commits,
        vec![0, 1, 2],
        "each segment committed once: {events:?}"
    );
}

#[test]
fn bad_parallel_options_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 40, 16, 12);
    for extra in [
        &["--devices", "cpu:2", "--warmup-frames", "12"][..],
        &[
            "--devices",
            "cpu:2",
            "--warmup-frames",
            "8",
            "--crossfade-frames",
            "16",
        ],
        &["--devices", "cpu:2", "--segment-frames", "20"],
        &["--devices", "gpu:2"],
        // A stream split by layers runs whole canvases on devices it was given by --devices.
        &[
            "--devices",
            "cpu:2",
            "--parallel",
            "layers",
            "--tile-size",
            "64",
        ],
        &[
            "--devices",
            "cpu:2",
            "--parallel",
            "layers",
            "--max-vram",
            "8G",
        ],
        &[
            "--devices",
            "cpu:2",
            "--parallel",
            "layers",
            "--device",
            "cpu",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flashvsr"))
            .args(["upscale", input.to_str().unwrap(), "-o"])
            .arg(tmp.path().join("o"))
            .args(["--models", golden_models().to_str().unwrap(), "-q"])
            .args(extra)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
    }
}

/// The join-difference curve of docs/SEGMENTS.md: hard joins (X = 0) after W warm-up frames
/// against the single stream, mean absolute difference in 8-bit RGB code values over the first 8
/// frames after each join.
#[test]
#[ignore = "slow: measures the join-difference curve (docs/SEGMENTS.md)"]
fn join_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    let (total, segment) = (300usize, 128usize);
    write_y4m(&input, total, 16, 12);
    let stream = tmp.path().join("stream");
    upscale(&input, &stream, &["--device", "cpu"], &[]);
    let s = frames(&stream);
    let joins: Vec<usize> = (segment..total).step_by(segment).collect();
    let mut table = Vec::new();
    for w in [8usize, 24, 56, 120] {
        for x in [0usize, 8] {
            if x > w {
                continue;
            }
            let out = tmp.path().join(format!("w{w}x{x}"));
            let (ws, xs, ns) = (w.to_string(), x.to_string(), segment.to_string());
            upscale(
                &input,
                &out,
                &[
                    "--devices",
                    "cpu:2",
                    "--segment-frames",
                    &ns,
                    "--warmup-frames",
                    &ws,
                    "--crossfade-frames",
                    &xs,
                ],
                &[],
            );
            let p = frames(&out);
            assert_eq!(p.len(), total);
            // After the join: the first 8 frames of each non-first segment.
            let after: Vec<f64> = joins
                .iter()
                .flat_map(|&a| (a..a + 8).map(|j| mean_abs_diff(&p[j], &s[j])))
                .collect();
            // Around the join: 8 frames before it (the cross-fade region) and 8 after.
            let around: Vec<f64> = joins
                .iter()
                .flat_map(|&a| (a - 8..a + 8).map(|j| mean_abs_diff(&p[j], &s[j])))
                .collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
            // Far from the joins (the rest of each non-first segment).
            let far: Vec<f64> = joins
                .iter()
                .flat_map(|&a| {
                    (a + 8..(a + segment - 8).min(total)).map(|j| mean_abs_diff(&p[j], &s[j]))
                })
                .collect();
            // The seam: the largest excess frame-to-frame step (parallel step minus stream step)
            // from 9 frames before each join to 8 after, averaged over the joins.
            let step = |f: &[Vec<u16>], j: usize| -> Vec<f64> {
                f[j + 1]
                    .iter()
                    .zip(&f[j])
                    .map(|(&b, &a)| b as f64 - a as f64)
                    .collect()
            };
            let seams: Vec<f64> = joins
                .iter()
                .map(|&a| {
                    (a - 9..a + 8)
                        .map(|j| {
                            let (ps, ss) = (step(&p, j), step(&s, j));
                            ps.iter().zip(&ss).map(|(x, y)| (x - y).abs()).sum::<f64>()
                                / ps.len() as f64
                        })
                        .fold(0.0, f64::max)
                })
                .collect();
            assert!(mean(&after).is_finite());
            table.push(format!(
                "| {w:>3} | {x} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                mean(&after),
                max(&after),
                mean(&around),
                mean(&far),
                mean(&seams)
            ));
        }
    }
    println!("| W | X | after join: mean | after join: max | ±8 around join: mean | rest of segment: mean | seam: max excess step |");
    println!("|---|---|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
}

/// `--parallel layers`: one stream through both devices, checkpointed with chunks in flight
/// between them: the single stream's frames exactly, also after a kill and a resume.
#[test]
fn a_stream_split_by_layers_is_the_single_stream_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 150, 16, 12);
    let stream = tmp.path().join("stream");
    upscale(
        &input,
        &stream,
        &["--device", "cpu", "--segment-frames", "48"],
        &[],
    );
    let split_args = [
        "--devices",
        "cpu:2",
        "--parallel",
        "layers",
        "--segment-frames",
        "48",
    ];
    let split = tmp.path().join("split");
    let out = upscale(&input, &split, &split_args, &[]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let s = frames(&stream);
    assert_eq!(s.len(), 150);
    assert!(frames(&split) == s, "the split stream differs");

    let output = tmp.path().join("resumed");
    let store = tmp.path().join("resumed.flashvsr");
    kill_after_first_commit(&input, &output, &split_args, &store);
    upscale(&input, &output, &split_args, &[]);
    assert!(frames(&output) == s, "the resumed split stream differs");
}

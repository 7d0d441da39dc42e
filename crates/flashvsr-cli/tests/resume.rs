//! Long videos: host memory does not grow with length, and a job killed with SIGKILL resumes to
//! a byte-identical output without recomputing committed segments.

mod cli_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{golden_models, stderr, write_y4m};

fn upscale_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let models = golden_models();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashvsr"));
    cmd.args([
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ])
    .args([
        "--models",
        models.to_str().unwrap(),
        "--device",
        "cpu",
        "-q",
    ])
    .args(extra)
    .env_remove("FLASHVSR_MODELS")
    .env("HF_HUB_OFFLINE", "1")
    .env(
        "HF_HOME",
        std::env::temp_dir().join("flashvsr-tests-empty-hf-home"),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// Runs to completion; returns the peak resident set in KiB.
// The child is reaped by wait4 (which also reports its peak RSS), not by Child::wait.
#[allow(clippy::zombie_processes)]
fn run_measuring_rss(mut cmd: Command) -> i64 {
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    usage.ru_maxrss
}

#[test]
#[ignore = "heavy (~45 s on 2 cores): .ci/run runs it after the README's command (--ignored)"]
fn host_memory_does_not_grow_with_video_length() {
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.y4m");
    let long = tmp.path().join("long.y4m");
    write_y4m(&short, 200, 16, 16);
    write_y4m(&long, 2000, 16, 16);
    let seg = ["--segment-frames", "96"];
    let rss_short = run_measuring_rss(upscale_command(&short, &tmp.path().join("s.y4m"), &seg));
    let rss_long = run_measuring_rss(upscale_command(&long, &tmp.path().join("l.y4m"), &seg));
    eprintln!("peak RSS: 200 frames {rss_short} KiB, 2000 frames {rss_long} KiB");
    assert!(
        (rss_long as f64) <= 1.10 * rss_short as f64,
        "2000 frames peaked at {rss_long} KiB, 200 frames at {rss_short} KiB"
    );
    let out = std::fs::read(tmp.path().join("l.y4m")).unwrap();
    assert_eq!(out.windows(6).filter(|w| w == b"FRAME\n").count(), 2000);
}

fn commits(events: &[String]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| e.strip_prefix("commit ")?.parse().ok())
        .collect()
}

fn read_events(store: &Path) -> Vec<String> {
    std::fs::read_to_string(store.join("events.log"))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Kills `child` once the job store holds `after_commits` commits plus `extra_ms`.
fn kill_after(mut child: Child, store: &Path, after_commits: usize, extra_ms: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits(&read_events(store)).len() < after_commits {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished before the kill point ({status})");
        }
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(extra_ms));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_three_times_and_resumed_gives_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 203, 16, 12);
    let args = ["--segment-frames", "24", "--keep-job"];

    let reference = tmp.path().join("reference.y4m");
    let out = upscale_command(&input, &reference, &args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let output = tmp.path().join("out.y4m");
    let store = tmp.path().join("out.y4m.flashvsr");
    // Pseudo-random kill points, reported on failure.
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    let mut kills = Vec::new();
    for (i, after) in [1usize, 3, 5].into_iter().enumerate() {
        let extra = (seed >> (8 * i)) % 40;
        kills.push((after, extra));
        let child = upscale_command(&input, &output, &args).spawn().unwrap();
        kill_after(child, &store, after, extra);
        assert!(!output.exists(), "no final output before completion");
    }
    let out = upscale_command(&input, &output, &args).output().unwrap();
    assert!(out.status.success(), "kills {kills:?}: {}", stderr(&out));
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&reference).unwrap(),
        "kills at {kills:?}: resumed output differs"
    );

    // Every segment committed exactly once, and none started again after its commit.
    let events = read_events(&store);
    let committed = commits(&events);
    let mut sorted = committed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        committed.len(),
        "kills {kills:?}: a segment was committed twice: {events:?}"
    );
    for (i, e) in events.iter().enumerate() {
        if let Some(k) = e
            .strip_prefix("start ")
            .and_then(|k| k.parse::<usize>().ok())
        {
            assert!(
                !commits(&events[..i]).contains(&k),
                "kills {kills:?}: segment {k} recomputed after commit: {events:?}"
            );
        }
    }
    let status = Command::new(env!("CARGO_BIN_EXE_flashvsr"))
        .args(["status", output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout)
        .contains(&format!("{} segment(s) done", committed.len())));
}

#[test]
fn a_changed_option_refuses_the_old_store_until_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 60, 8, 8);
    let output = tmp.path().join("out.y4m");
    let store = tmp.path().join("out.y4m.flashvsr");
    let child = upscale_command(&input, &output, &["--segment-frames", "8"])
        .spawn()
        .unwrap();
    kill_after(child, &store, 1, 0);
    let other = upscale_command(&input, &output, &["--segment-frames", "8", "--seed", "5"])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    assert!(stderr(&other).contains("--restart"), "{}", stderr(&other));
    let restarted = upscale_command(
        &input,
        &output,
        &["--segment-frames", "8", "--seed", "5", "--restart"],
    )
    .output()
    .unwrap();
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    assert!(!store.exists(), "the store is removed after success");
}

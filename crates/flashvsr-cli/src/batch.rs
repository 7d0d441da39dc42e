//! A folder of videos as INPUT (PRODUCT.md §5): OUTPUT is a folder, each video goes to
//! `OUTPUT/<stem>.<ext>`; finished outputs are skipped (and listed) unless `--overwrite`; a failed
//! video is reported and the batch goes on; the exit status is the worst one.
//!
//! A folder is a batch when it holds video files and no image files (decided by content): a
//! folder with images stays an image sequence.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flashvsr_media::{natural_cmp, open_source, ImageFormat, SourceKind};
use serde_json::json;

use crate::args::{OutputFormatArg, UpscaleArgs};
use crate::failure::{Failure, Outcome};
use crate::upscale::{run_one, Context};

/// Extensions taken as videos even when the file cannot be opened, so that a broken video is
/// reported as a failure of the batch rather than silently left out.
const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "mov", "webm", "avi", "m4v", "ts", "mts", "m2ts", "mxf", "flv", "wmv", "mpg",
    "mpeg", "y4m",
];

/// Containers a batch output keeps from its input; others become mkv.
const KEPT_CONTAINERS: &[&str] = &["mp4", "mkv", "mov", "webm", "y4m"];

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

fn head(path: &Path) -> Vec<u8> {
    let mut buf = [0u8; 16];
    let mut got = 0;
    if let Ok(mut f) = fs::File::open(path) {
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    }
    buf[..got].to_vec()
}

fn is_video(path: &Path) -> bool {
    match open_source(path) {
        Ok(source) => matches!(source.info().kind, SourceKind::Video | SourceKind::Y4m),
        Err(_) => extension(path).is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str())),
    }
}

/// The videos of `input` in natural order, when `input` is a folder of videos (and of no
/// images); `None` for anything else.
pub fn videos_in(input: &Path) -> Option<Vec<PathBuf>> {
    if !input.is_dir() {
        return None;
    }
    let mut candidates = Vec::new();
    for entry in fs::read_dir(input).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        if ImageFormat::sniff(&head(&path)).is_some() {
            return None;
        }
        candidates.push((name, path));
    }
    let mut videos: Vec<(String, PathBuf)> = candidates
        .into_iter()
        .filter(|(_, p)| is_video(p))
        .collect();
    if videos.is_empty() {
        return None;
    }
    videos.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    Some(videos.into_iter().map(|(_, p)| p).collect())
}

/// Where `input` goes inside the output folder.
fn output_for(args: &UpscaleArgs, input: &Path) -> PathBuf {
    let stem = input.file_stem().unwrap_or(input.as_os_str());
    let name = match args.output_format {
        Some(OutputFormatArg::Y4m) => Path::new(stem).with_extension("y4m"),
        // Frames: one folder per video.
        Some(_) => PathBuf::from(stem),
        None => {
            let ext = extension(input)
                .filter(|e| KEPT_CONTAINERS.contains(&e.as_str()))
                .unwrap_or_else(|| "mkv".into());
            Path::new(stem).with_extension(ext)
        }
    };
    args.output.join(name)
}

pub fn run(args: &UpscaleArgs, ctx: &mut Context, videos: Vec<PathBuf>) -> Outcome<()> {
    let reporter = ctx.reporter;
    let out_dir = &args.output;
    if out_dir.as_os_str() == "-" {
        return Err(Failure::bad(format!(
            "{}: a folder of videos needs an output folder, not -",
            args.input.display()
        )));
    }
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Failure::bad(format!(
            "{}: INPUT is a folder of videos, so OUTPUT must be a folder",
            out_dir.display()
        )));
    }
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same(&args.input, out_dir) {
        return Err(Failure::bad(format!(
            "{}: the output folder must differ from the input folder",
            out_dir.display()
        )));
    }
    fs::create_dir_all(out_dir)
        .map_err(|e| Failure::failed(format!("{}: {e}", out_dir.display())))?;

    // Inputs whose outputs would collide (a.avi and a.m4v both become a.mkv): the first one wins.
    let mut owner: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    for input in &videos {
        let output = output_for(args, input);
        if let Some(first) = owner.get(&output) {
            let e = Failure::bad(format!(
                "{}: its output {} is also the output of {}; upscale it on its own",
                input.display(),
                output.display(),
                first.display()
            ));
            reporter.error(&e, Some(input));
            failures.push(e);
            continue;
        }
        owner.insert(output.clone(), input.clone());
        if !args.overwrite && fs::symlink_metadata(&output).is_ok() {
            skipped.push((input.clone(), output));
        } else {
            todo.push((input.clone(), output));
        }
    }
    if !skipped.is_empty() {
        reporter.info(&format!(
            "skipping {} video(s) whose output exists (pass --overwrite to redo them):",
            skipped.len()
        ));
        for (input, output) in &skipped {
            reporter.info(&format!("  {}", output.display()));
            reporter.event(json!({
                "event": "skip",
                "input": input.display().to_string(),
                "output": output.display().to_string(),
                "reason": "output exists",
            }));
        }
    }
    let mut done = 0;
    let counts = |done: usize, failed: usize| json!({"total": videos.len(), "done": done, "skipped": skipped.len(), "failed": failed});
    if !todo.is_empty() {
        // Device and model problems concern every video: they end the batch.
        let start = std::time::Instant::now();
        ctx.backend(args)?;
        ctx.load_models(args)?;
        ctx.totals.load += start.elapsed();
    }
    for (i, (input, output)) in todo.iter().enumerate() {
        reporter.set_prefix(format!("[{}/{}] ", i + 1, todo.len()));
        reporter.info(&format!("{} → {}", input.display(), output.display()));
        let mut one = args.clone();
        one.input = input.clone();
        one.output = output.clone();
        match run_one(&one, ctx) {
            Ok(summary) => {
                done += 1;
                let mut event = summary.json();
                event["event"] = json!("done");
                event["input"] = json!(input.display().to_string());
                event["output"] = json!(output.display().to_string());
                reporter.event(event);
            }
            Err(Failure::Interrupted) => {
                reporter.set_prefix(String::new());
                ctx.batch = Some(counts(done, failures.len()));
                return Err(Failure::Interrupted);
            }
            Err(e) => {
                reporter.error(&e, Some(input));
                failures.push(e);
            }
        }
    }
    reporter.set_prefix(String::new());
    ctx.batch = Some(counts(done, failures.len()));
    let mut line = format!(
        "batch: {done} done, {} skipped, {} failed",
        skipped.len(),
        failures.len()
    );
    if done > 1 {
        line = format!(
            "{line}; {} frames {}",
            ctx.totals.frames,
            ctx.totals.speed_text()
        );
    }
    reporter.info(&line);
    if done > 1 {
        reporter.info(&ctx.totals.stages_line());
    }
    match failures.iter().max_by_key(|f| f.code()) {
        None => Ok(()),
        Some(worst) => {
            let msg = format!(
                "{} of {} video(s) failed (see above)",
                failures.len(),
                videos.len()
            );
            Err(match worst {
                Failure::BadInput(_) => Failure::bad(msg),
                _ => Failure::failed(msg),
            })
        }
    }
}

//! What `upscale` tells the user while it runs (PRODUCT.md §5): on a terminal one updating line
//! (frames done/total, fps or s/frame, elapsed, ETA); otherwise a plain line every few seconds;
//! `--progress json` writes JSON lines (`start`, `progress`, `done`, `skip`, `error`, `end`
//! events) on stderr or to `--progress-file`; `-q` shows errors only. A per-stage summary ends
//! each video.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use flashvsr_model::pipeline::EngineStats;
use serde_json::{json, Value};

use crate::args::{ProgressArg, UpscaleArgs};
use crate::failure::{Failure, Outcome};
use crate::interrupt::Notice;
use crate::term;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// One line redrawn in place (a terminal).
    Line,
    /// A plain line every [`PLAIN_EVERY`].
    Plain,
    /// JSON `progress` events.
    Json,
    /// Nothing.
    Silent,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);
const LINE_EVERY: Duration = Duration::from_millis(100);
const JSON_EVERY: Duration = Duration::from_millis(500);

/// Where messages and events go; shared by every video of a batch.
pub struct Reporter {
    style: Style,
    /// Human messages (notes, summaries) on stderr.
    human: bool,
    /// Errors as human lines on stderr (false only when stderr carries JSON lines).
    human_errors: bool,
    json: Option<RefCell<Box<dyn Write>>>,
    line_drawn: Cell<bool>,
    /// `[2/5] ` while a batch runs.
    prefix: RefCell<String>,
}

impl Reporter {
    pub fn new(args: &UpscaleArgs) -> Outcome<Reporter> {
        let json_wanted = args.progress == ProgressArg::Json || args.progress_file.is_some();
        let json: Option<Box<dyn Write>> = match (&args.progress_file, json_wanted) {
            (Some(path), _) => Some(Box::new(File::create(path).map_err(|e| {
                Failure::bad(format!("--progress-file {}: {e}", path.display()))
            })?)),
            (None, true) => Some(Box::new(io::stderr())),
            (None, false) => None,
        };
        let json_on_stderr = json_wanted && args.progress_file.is_none();
        let human = !args.quiet && !json_on_stderr;
        let style = if json_wanted {
            Style::Json
        } else if !human || args.progress == ProgressArg::None {
            Style::Silent
        } else if args.progress == ProgressArg::Auto && term::can_redraw() {
            Style::Line
        } else {
            Style::Plain
        };
        Ok(Reporter {
            style,
            human,
            human_errors: !json_on_stderr,
            json: json.map(RefCell::new),
            line_drawn: Cell::new(false),
            prefix: RefCell::new(String::new()),
        })
    }

    /// How the signal handler should announce itself.
    pub fn notice(&self) -> Notice {
        if !self.human_errors {
            Notice::Json
        } else if self.human {
            Notice::Human
        } else {
            Notice::None
        }
    }

    /// Whether human messages are shown (neither `-q` nor JSON on stderr).
    pub fn human(&self) -> bool {
        self.human
    }

    /// Whether anyone reads an end-of-run summary.
    pub fn wants_summary(&self) -> bool {
        self.human || self.json.is_some()
    }

    pub fn set_prefix(&self, prefix: String) {
        *self.prefix.borrow_mut() = prefix;
    }

    /// A human message, `flashvsr: ` first.
    pub fn info(&self, msg: &str) {
        if self.human {
            self.clear_line();
            eprintln!("flashvsr: {}{msg}", self.prefix.borrow());
        }
    }

    /// An error: a human line (also under `-q`) and/or a JSON `error` event.
    pub fn error(&self, failure: &Failure, input: Option<&Path>) {
        if self.human_errors {
            self.clear_line();
            let (label, colour) = match failure {
                Failure::Interrupted => ("", "1;33"),
                _ => ("error: ", "1;31"),
            };
            let head = term::paint(&format!("flashvsr: {label}"), colour);
            match input {
                Some(p) if !failure.to_string().contains(&p.display().to_string()) => {
                    eprintln!("{head}{}: {failure}", p.display())
                }
                _ => eprintln!("{head}{failure}"),
            }
        }
        let mut event = json!({
            "event": "error",
            "code": failure.code(),
            "kind": match failure {
                Failure::BadInput(_) => "bad_input",
                Failure::Failed(_) => "failed",
                Failure::Interrupted => "interrupted",
                Failure::OutOfMemory(_) => "out_of_memory",
            },
            "message": failure.to_string(),
        });
        if let Some(p) = input {
            event["input"] = json!(p.display().to_string());
        }
        self.event(event);
    }

    /// Writes one JSON line (only with `--progress json`).
    pub fn event(&self, value: Value) {
        if let Some(out) = &self.json {
            let mut out = out.borrow_mut();
            // A reader that went away must not fail the upscale.
            let _ = writeln!(out, "{value}").and_then(|()| out.flush());
        }
    }

    fn clear_line(&self) {
        if self.line_drawn.replace(false) {
            eprint!("\r\x1b[2K");
        }
    }

    fn draw_line(&self, text: &str) {
        eprint!("\r\x1b[2K{}{text}", self.prefix.borrow());
        let _ = io::stderr().flush();
        self.line_drawn.set(true);
    }
}

/// Progress of one video.
pub struct Progress<'r> {
    reporter: &'r Reporter,
    total: Option<usize>,
    done: usize,
    /// Frames done by an earlier run (a resumed job).
    resumed: usize,
    start: Instant,
    last_shown: Option<Instant>,
}

impl<'r> Progress<'r> {
    pub fn new(reporter: &'r Reporter, total: Option<usize>) -> Progress<'r> {
        Progress {
            reporter,
            total,
            done: 0,
            resumed: 0,
            start: Instant::now(),
            last_shown: None,
        }
    }

    pub fn reporter(&self) -> &'r Reporter {
        self.reporter
    }

    /// Frames already done before this process started (a resumed job).
    pub fn skip(&mut self, frames: usize) {
        self.done += frames;
        self.resumed += frames;
    }

    /// Frames computed by this process.
    pub fn computed(&self) -> usize {
        self.done - self.resumed
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Frames per second of this process.
    fn rate(&self) -> f64 {
        self.computed() as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    fn eta(&self) -> Option<f64> {
        let rate = self.rate();
        let total = self.total?;
        (rate > 0.0).then(|| total.saturating_sub(self.done) as f64 / rate)
    }

    pub fn frame_done(&mut self) {
        self.done += 1;
        let last = Some(self.done) == self.total;
        let since = self.last_shown.map(|t| t.elapsed());
        let due = match self.reporter.style {
            Style::Silent => false,
            Style::Line => last || since.is_none_or(|s| s >= LINE_EVERY),
            Style::Plain => self.last_shown.unwrap_or(self.start).elapsed() >= PLAIN_EVERY,
            Style::Json => last || since.is_none_or(|s| s >= JSON_EVERY),
        };
        if !due {
            return;
        }
        self.last_shown = Some(Instant::now());
        let elapsed = self.start.elapsed().as_secs_f64();
        match self.reporter.style {
            Style::Json => self.reporter.event(json!({
                "event": "progress",
                "frame": self.done,
                "total": self.total,
                "fps": round3(self.rate()),
                "elapsed_s": round3(elapsed),
                "eta_s": self.eta().map(round3),
            })),
            Style::Line => self.reporter.draw_line(&self.text(elapsed, true)),
            Style::Plain => eprintln!(
                "flashvsr: {}{}",
                self.reporter.prefix.borrow(),
                self.text(elapsed, false)
            ),
            Style::Silent => {}
        }
    }

    fn text(&self, elapsed: f64, short: bool) -> String {
        let rate = self.rate();
        let speed = if rate >= 1.0 || self.computed() == 0 {
            format!("{rate:.2} fps")
        } else {
            format!("{:.1} s/frame", 1.0 / rate)
        };
        let (done, sep) = (self.done, if short { "  " } else { ", " });
        let count = match self.total {
            Some(t) if t > 0 => format!("{done}/{t} frames ({}%)", done * 100 / t),
            _ => format!("{done} frames"),
        };
        let eta = self
            .eta()
            .map_or(String::new(), |e| format!("{sep}ETA {}", clock(e)));
        format!("{count}{sep}{speed}{sep}elapsed {}{eta}", clock(elapsed))
    }

    /// Removes the updating line before other output.
    pub fn end(&mut self) {
        self.reporter.clear_line();
    }
}

/// `m:ss` or `h:mm:ss`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Host-side stage times of one or more videos (no device synchronisation), plus the engine's
/// own breakdown when it profiled.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub frames: usize,
    pub computed: usize,
    pub elapsed: Duration,
    pub load: Duration,
    pub read: Duration,
    pub prepare: Duration,
    /// Engine push/finish calls: LQ projector + DiT + decode + colour fix (+ uploads).
    pub model: Duration,
    pub write: Duration,
    /// Colour fix of the finished frames, summed over the threads that ran it.
    pub color_fix: Duration,
    /// The engine's synchronised per-stage times (`--profile`, or the CPU).
    pub engine: Option<EngineStats>,
}

impl Summary {
    pub fn add(&mut self, other: &Summary) {
        self.frames += other.frames;
        self.computed += other.computed;
        self.elapsed += other.elapsed;
        self.load += other.load;
        self.read += other.read;
        self.prepare += other.prepare;
        self.model += other.model;
        self.write += other.write;
        self.color_fix += other.color_fix;
        if let Some(o) = &other.engine {
            self.engine
                .get_or_insert_with(EngineStats::default)
                .accumulate(o);
        }
    }

    fn fps(&self) -> f64 {
        self.computed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `stages: load 1.2 s, read 0.1 s, …` for the human summary.
    pub fn stages_line(&self) -> String {
        let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let model = match &self.engine {
            Some(e) => format!(
                "LQ projector {}, DiT {}, decode {}",
                s(e.projector),
                s(e.dit),
                s(e.decode)
            ),
            None => format!(
                "model {} (LQ projector + DiT + decode; --profile splits it)",
                s(self.model)
            ),
        };
        format!(
            "stages: load {}, read {}, prepare {}, {model}, colour fix {}, write {}",
            s(self.load),
            s(self.read),
            s(self.prepare),
            s(self.color_fix),
            s(self.write)
        )
    }

    /// `in 12.3 s (2.44 fps)`.
    pub fn speed_text(&self) -> String {
        let rate = self.fps();
        let speed = if rate >= 1.0 || self.computed == 0 {
            format!("{rate:.2} fps")
        } else {
            format!("{:.1} s/frame", 1.0 / rate)
        };
        format!("in {:.1} s ({speed})", self.elapsed.as_secs_f64())
    }

    /// The summary as JSON fields: frames, fps, elapsed and a `stages` object (seconds; the
    /// engine's three stages are null unless profiled; prepare and colour fix are thread times).
    pub fn json(&self) -> Value {
        let s = |d: Duration| round3(d.as_secs_f64());
        let e = self.engine.as_ref();
        json!({
            "frames": self.frames,
            "computed": self.computed,
            "elapsed_s": s(self.elapsed),
            "fps": round3(self.fps()),
            "profiled": e.is_some(),
            "stages": {
                "load_s": s(self.load),
                "read_s": s(self.read),
                "prepare_s": s(self.prepare),
                "lq_projector_s": e.map(|e| s(e.projector)),
                "dit_s": e.map(|e| s(e.dit)),
                "decode_s": e.map(|e| s(e.decode)),
                "color_fix_s": s(self.color_fix),
                "model_s": s(self.model),
                "write_s": s(self.write),
            },
        })
    }
}

//! A plain progress line on stderr every few frames: frames done, fps, elapsed.

use std::time::Instant;

pub struct Progress {
    quiet: bool,
    total: Option<usize>,
    done: usize,
    start: Instant,
    last_report: usize,
}

impl Progress {
    pub fn new(quiet: bool, total: Option<usize>) -> Progress {
        Progress {
            quiet,
            total,
            done: 0,
            start: Instant::now(),
            last_report: 0,
        }
    }

    /// Frames already done before this process started (a resumed job).
    pub fn skip(&mut self, frames: usize) {
        self.done += frames;
        self.last_report = self.done;
    }

    pub fn frame_done(&mut self) {
        self.done += 1;
        if self.quiet || self.done - self.last_report < 8 && Some(self.done) != self.total {
            return;
        }
        self.last_report = self.done;
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let speed = if rate >= 1.0 {
            format!("{rate:.2} fps")
        } else {
            format!("{:.1} s/frame", 1.0 / rate)
        };
        let total = self.total.map_or(String::from("?"), |t| t.to_string());
        eprintln!(
            "flashvsr: {}/{total} frames, {speed}, {secs:.1} s elapsed",
            self.done
        );
    }
}

//! Download progress on stderr: an updating line on a terminal, a plain line now and then
//! otherwise. Implements `hf_hub`'s `Progress` so the hub downloads report through it too.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Meter {
    name: String,
    quiet: bool,
    tty: bool,
    size: u64,
    done: u64,
    last: Instant,
    drawn: bool,
    /// `init` calls seen (hf-hub: one per download, plus one per attempt).
    inits: usize,
    /// Announce the resume point at the next `update`.
    announce_resume: bool,
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

impl Meter {
    pub fn new(name: &str, quiet: bool) -> Meter {
        Meter {
            name: name.to_string(),
            quiet,
            tty: std::io::stderr().is_terminal(),
            size: 0,
            done: 0,
            last: Instant::now(),
            drawn: false,
            inits: 0,
            announce_resume: false,
        }
    }

    pub fn start(&mut self, size: u64, already: u64) {
        self.size = size;
        self.done = already;
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(10)
        };
        if self.last.elapsed() >= every {
            self.draw();
        }
    }

    fn draw(&mut self) {
        self.last = Instant::now();
        if self.quiet {
            return;
        }
        let pct = if self.size > 0 {
            format!("{:3.0}%", 100.0 * self.done as f64 / self.size as f64)
        } else {
            String::from("  ?%")
        };
        let line = format!(
            "flashvsr: {} {pct} ({} of {})",
            self.name,
            bytes(self.done),
            bytes(self.size)
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the updating line, if one was drawn.
    pub fn end(&mut self) {
        if self.drawn && !self.quiet {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl hf_hub::api::Progress for Meter {
    fn init(&mut self, size: usize, _filename: &str) {
        // hf-hub 0.5 calls init once per download, then init + update(bytes already in the .part
        // file) for every attempt: a third init is a retry after a lost connection.
        self.inits += 1;
        self.announce_resume = self.inits > 2;
        self.start(size as u64, 0);
    }

    fn update(&mut self, size: usize) {
        if std::mem::take(&mut self.announce_resume) {
            self.end();
            if !self.quiet {
                eprintln!(
                    "flashvsr: {}: connection lost; resuming at {}",
                    self.name,
                    bytes(size as u64)
                );
            }
        }
        self.advance(size as u64);
    }

    fn finish(&mut self) {
        self.end();
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.end();
    }
}

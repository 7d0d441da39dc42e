//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: the first sets a flag that the frame loops check between
//! frames, so the run stops cleanly (nothing partial is committed or published; exit 3); a second
//! exits at once, also with 3 (the job store is still consistent: commits are atomic).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::failure::{Failure, Outcome};

static STOP: AtomicBool = AtomicBool::new(false);
static NOTICE: AtomicU8 = AtomicU8::new(Notice::Human as u8);

/// How the handler tells the user what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Notice {
    /// Nothing (`-q`, or JSON lines to a file).
    None = 0,
    /// A line on stderr.
    Human = 1,
    /// stderr carries JSON lines only: a second signal writes the error and end events.
    Json = 2,
}

/// Installs the handler (once per process; a failure to install leaves the default behaviour).
pub fn install(notice: Notice) {
    NOTICE.store(notice as u8, Ordering::SeqCst);
    let _ = ctrlc::set_handler(|| {
        let notice = NOTICE.load(Ordering::SeqCst);
        if STOP.swap(true, Ordering::SeqCst) {
            if notice == Notice::Human as u8 {
                eprintln!("\nflashvsr: stopped at once; rerun the same command to resume");
            } else if notice == Notice::Json as u8 {
                eprintln!(
                    "{}\n{}",
                    serde_json::json!({"event": "error", "code": 3, "kind": "interrupted",
                        "message": "stopped at once; rerun the same command to resume"}),
                    serde_json::json!({"event": "end", "status": "interrupted", "code": 3})
                );
            }
            std::process::exit(3);
        }
        if notice == Notice::Human as u8 {
            let lead = if crate::term::can_redraw() { "\n" } else { "" };
            eprintln!(
                "{lead}flashvsr: stopping after the current frame (Ctrl-C again to stop at once)"
            );
        }
    });
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Failure::Interrupted)` once a stop was requested.
pub fn check() -> Outcome<()> {
    if requested() {
        Err(Failure::Interrupted)
    } else {
        Ok(())
    }
}

//! `FLASHVSR_HOST_STALLS_MS=T`: every timed host step (driver calls that may block, allocations,
//! host-side tables) that takes at least `T` ms is printed on stderr as
//! `host stall <label> <ms> at <s since the first timed step>`. For finding where the thread that
//! enqueues the device's work waits; off (one relaxed load per step) unless set.

use std::sync::OnceLock;
use std::time::Instant;

fn settings() -> Option<(f64, Instant)> {
    static ON: OnceLock<Option<(f64, Instant)>> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("FLASHVSR_HOST_STALLS_MS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map(|t| (t, Instant::now()))
    })
}

/// Runs `f`, reporting it under `label` when it took at least the threshold.
#[inline]
pub fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let Some((threshold, epoch)) = settings() else {
        return f();
    };
    let start = Instant::now();
    let out = f();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if ms >= threshold {
        eprintln!(
            "host stall {label} {ms:.3} at {:.4}",
            start.duration_since(epoch).as_secs_f64()
        );
    }
    out
}

//! Where the thread that enqueues the device's work waits.
//!
//! - Calls that enqueue device work (kernel launches, library calls that launch, async copies) go
//!   through [`enqueue`]: one that takes [`QUEUE_WAIT_MIN`] or longer is counted in
//!   [`queue_wait`]. Such a call normally returns in microseconds; it takes milliseconds when the
//!   driver's launch queue is full (the host is a queue's worth of work, ~1,000 launches, ahead of
//!   the device) and it waits for the device to drain some. The bench subtracts nothing: it reports
//!   this beside the engine thread's time, so that the host's own work is the difference.
//! - `FLASHVSR_HOST_STALLS_MS=T`: every timed step (those calls, allocations, host-side tables)
//!   that takes at least `T` ms is printed on stderr as `host stall <label> <ms> at <s since the
//!   first timed step>`; `T = 0` prints every step. Off (one load per step) unless set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Enqueue calls at least this long count as waiting for the launch queue (an uncontended launch
/// takes a few microseconds, a library call tens).
pub const QUEUE_WAIT_MIN: Duration = Duration::from_micros(250);

static QUEUE_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// Time spent so far, by all threads, in enqueue calls of at least [`QUEUE_WAIT_MIN`].
pub fn queue_wait() -> Duration {
    Duration::from_nanos(QUEUE_WAIT_NS.load(Ordering::Relaxed))
}

fn settings() -> Option<(f64, Instant)> {
    static ON: OnceLock<Option<(f64, Instant)>> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("FLASHVSR_HOST_STALLS_MS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map(|t| (t, Instant::now()))
    })
}

fn log(label: &str, start: Instant, took: Duration) {
    let Some((threshold, epoch)) = settings() else {
        return;
    };
    let ms = took.as_secs_f64() * 1e3;
    if ms >= threshold {
        eprintln!(
            "host stall {label} {ms:.3} at {:.4}",
            start.saturating_duration_since(epoch).as_secs_f64()
        );
    }
}

/// Runs `f`, logged under `label` when it took at least the `FLASHVSR_HOST_STALLS_MS` threshold.
#[inline]
pub fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    if settings().is_none() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    log(label, start, start.elapsed());
    out
}

/// Runs `f`, a call that enqueues device work: counted in [`queue_wait`] when it took at least
/// [`QUEUE_WAIT_MIN`], and logged like [`timed`].
#[inline]
pub fn enqueue<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    if took >= QUEUE_WAIT_MIN {
        QUEUE_WAIT_NS.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
    log(label, start, took);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_long_enqueue_calls_count_as_queue_waits() {
        // Other tests of this crate do not enqueue: nothing else adds to the counter.
        let before = queue_wait();
        let sum: u64 = (0..1000).map(|i| enqueue("short", || i)).sum();
        assert_eq!(sum, 499_500);
        // A thousand calls of nanoseconds: none counted, but for the odd preemption of the thread.
        let short = queue_wait() - before;
        assert!(short < QUEUE_WAIT_MIN * 20, "{short:?}");
        enqueue("long", || std::thread::sleep(QUEUE_WAIT_MIN * 2));
        let long = queue_wait() - before - short;
        assert!(long >= QUEUE_WAIT_MIN * 2, "{long:?}");
    }
}

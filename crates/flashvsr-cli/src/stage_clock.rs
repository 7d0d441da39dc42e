//! Host time per pipeline stage, summed over every thread that works on the stage (the prepare and
//! finish jobs run on the host pool, several at once), so a stage's time can exceed the wall time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running total of time, addable from any thread.
#[derive(Default)]
pub struct StageTime(AtomicU64);

impl StageTime {
    pub fn add(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// Adds the time `f` takes to `total`.
pub fn timed<T>(total: &StageTime, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    total.add(t.elapsed());
    out
}

/// Running stage times of the video being upscaled.
#[derive(Default)]
pub struct StageClock {
    /// Waiting for decoded input frames.
    pub read: StageTime,
    /// Bicubic upscale onto the model canvas (host pool threads).
    pub prepare: StageTime,
    /// Engine push/finish calls on the engine thread.
    pub model: StageTime,
    /// Colour fix of finished frames (host pool threads).
    pub color_fix: StageTime,
    /// Conversion to output frames (host pool threads) and handing frames to the writer.
    pub write: StageTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_several_threads_add_up() {
        let total = StageTime::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| total.add(Duration::from_millis(250)));
            }
        });
        assert_eq!(total.get(), Duration::from_secs(1));
        let v = timed(&total, || 7);
        assert_eq!(v, 7);
        assert!(total.get() >= Duration::from_secs(1));
    }
}

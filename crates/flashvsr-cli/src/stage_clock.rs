//! Host time per pipeline stage, summed over every thread that works on the stage (the prepare and
//! finish jobs run on the host workers, several at once), so a stage's time can exceed the wall
//! time.

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

/// Adds the time of a host job to `total`: on a host worker the CPU time of its thread, which
/// runs the whole job (wall time would count time the engine's threads, which take precedence,
/// kept it waiting); elsewhere the wall time, as the job's parallel loops then run on other
/// threads too.
pub fn job_timed<T>(total: &StageTime, f: impl FnOnce() -> T) -> T {
    if !crate::host_pool::on_worker() {
        return timed(total, f);
    }
    match thread_cpu_time() {
        Some(start) => {
            let out = f();
            if let Some(end) = thread_cpu_time() {
                total.add(end.saturating_sub(start));
            }
            out
        }
        None => timed(total, f),
    }
}

/// CPU time of the calling thread so far.
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills the plain struct passed in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (rc == 0).then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Running stage times of the video being upscaled.
#[derive(Default)]
pub struct StageClock {
    /// Waiting for decoded input frames.
    pub read: StageTime,
    /// Bicubic upscale onto the model canvas (host worker CPU time).
    pub prepare: StageTime,
    /// Engine push/finish calls on the engine thread.
    pub model: StageTime,
    /// Colour fix of finished frames (host worker CPU time).
    pub color_fix: StageTime,
    /// Conversion to output frames (host worker CPU time) and handing frames to the writer.
    pub write: StageTime,
    /// The engine thread's part of `write`: handing frames to the writer (waiting for room).
    pub handoff: StageTime,
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

    #[test]
    fn a_worker_job_counts_its_thread_work_not_its_sleep() {
        let on_worker = |f: fn()| {
            let total = StageTime::default();
            let mut jobs = crate::host_pool::InOrder::new(true);
            let t = std::sync::Arc::new(total);
            let t2 = t.clone();
            jobs.submit(move || job_timed(&t2, f));
            jobs.next().unwrap().unwrap();
            t.get()
        };
        let slept = on_worker(|| std::thread::sleep(Duration::from_millis(200)));
        assert!(slept < Duration::from_millis(50), "{slept:?}");
        let spun = on_worker(|| {
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_millis(200) {
                std::hint::black_box(0);
            }
        });
        // Even on a busy machine the spinning thread gets some of its 200 ms.
        assert!(spun >= Duration::from_millis(20), "{spun:?}");
        // Off a worker, a job's time is wall time.
        let total = StageTime::default();
        job_timed(&total, || std::thread::sleep(Duration::from_millis(50)));
        assert!(total.get() >= Duration::from_millis(50));
    }
}

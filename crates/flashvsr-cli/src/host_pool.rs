//! Threads for the per-frame host work around the engine: preparing LQ frames and finishing output
//! frames (colour fix, conversion), each on workers of their own (see [`Workers`]). They are kept
//! apart from rayon's global pool, which the engine uses for its own parallel ops: a frame's worth
//! of host work queued there would hold up the engine, and with it the GPU. Each worker runs one
//! frame at a time on its own thread (parallel loops inside a job run sequentially there): frames
//! in parallel rather than rows, so a job's time is one thread's time, and the workers run at a
//! lower priority than the engine's threads, which they must never slow down. The output
//! conversion's row loop is the exception ([`rows`]): it runs on threads the finishing workers
//! share, so that a stream's last frames do not take one core's time each after the device is done.
//! Where the engine itself runs on the CPU it already keeps every core busy, and overlapping would
//! only slow it: the jobs then run where they are submitted.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use flashvsr_tensor::Device;

type Job = Box<dyn FnOnce() + Send>;

/// Niceness of the workers: under contention the engine's threads get the cores.
const WORKER_NICENESS: i32 = 10;

/// Workers: half the process's cores (all of the host's, or its share as a worker process:
/// `RAYON_NUM_THREADS`), 2 to 8. A GPU engine leaves the host's cores to these jobs (its own
/// thread mostly waits on the device), and with a quarter of 16 cores the host work of a frame
/// (bicubic preparation, colour fix, conversion: ~50 ms of one core at 1408×768) set the pace of
/// the first chunk, which waits for 25 prepared frames, and of split streams.
fn worker_count() -> usize {
    let share = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let cores =
        share.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    (cores / 2).clamp(2, 8)
}

/// Which workers run a job. Output frames are finished by workers of their own: a finishing job
/// first waits for its chunk's copy from the device, and workers shared with the preparation of
/// input frames would then sit idle while the engine, and with it the device, waited for the next
/// chunk's prepared frames.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Prepare,
    Finish,
}

/// The queue the workers take jobs from, or `None` where no worker could be started.
fn queue(workers: Workers) -> Option<&'static Mutex<Sender<Job>>> {
    static PREPARE: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    static FINISH: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    let (queue, name) = match workers {
        Workers::Prepare => (&PREPARE, "host"),
        Workers::Finish => (&FINISH, "finish"),
    };
    queue
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..worker_count() {
                // A one-thread rayon pool per worker: rayon loops inside a job stay on it.
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("flashvsr-{name}-{i}"))
                    .start_handler(|_| {
                        ON_WORKER.set(true);
                        lower_priority();
                    })
                    .build();
                let Ok(pool) = pool else { continue };
                let rx = rx.clone();
                pool.spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
                // The worker's thread lives as long as the process.
                std::mem::forget(pool);
                started += 1;
            }
            (started > 0).then(|| Mutex::new(tx))
        })
        .as_ref()
}

thread_local! {
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a parallel loop over the rows of one frame, on threads that the workers share (as
/// many as the host's cores, at the workers' priority) when called on a worker; elsewhere where
/// it is called. A worker's own pool has one thread, so a frame's conversion took one core's
/// time: ~10 ms at 1920×1080, and the last chunk's frames, converted after the device is done,
/// added that to every stream's end. Shared, the frames that are left take every idle core.
pub fn rows<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static ROWS: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    if !on_worker() {
        return f();
    }
    let pool = ROWS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores)
            .thread_name(|i| format!("flashvsr-rows-{i}"))
            .start_handler(|_| {
                ON_WORKER.set(true);
                lower_priority();
            })
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Whether host work should overlap an engine on `device`: on a GPU (the engine leaves the CPU
/// idle), not on the CPU. `FLASHVSR_HOST_OVERLAP=1` or `0` decides instead (tests, experiments).
pub fn overlap_for(device: Device) -> bool {
    match std::env::var("FLASHVSR_HOST_OVERLAP").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => device != Device::Cpu,
    }
}

/// Whether the calling thread is a host worker (its jobs run on it alone).
pub fn on_worker() -> bool {
    ON_WORKER.get()
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread (on Linux, PRIO_PROCESS with a thread id
    // sets that thread's niceness); a failure leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, WORKER_NICENESS);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

fn spawn(workers: Workers, job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let job = match queue(workers).map(|q| q.lock()) {
        Some(Ok(q)) => match q.send(job) {
            Ok(()) => return,
            Err(e) => e.0,
        },
        _ => job,
    };
    rayon::spawn(job);
}

/// Jobs run on the host pool (or where submitted, without overlap), their results taken back in
/// the order they were submitted.
pub struct InOrder<T> {
    results: VecDeque<Receiver<Result<T, String>>>,
    overlap: bool,
    workers: Workers,
}

impl<T: Send + 'static> InOrder<T> {
    /// `overlap`: run jobs on the host workers; otherwise right away, on the submitting thread.
    pub fn new(overlap: bool) -> InOrder<T> {
        InOrder::on(Workers::Prepare, overlap)
    }

    /// The same, on `workers`.
    pub fn on(workers: Workers, overlap: bool) -> InOrder<T> {
        InOrder {
            results: VecDeque::new(),
            overlap,
            workers,
        }
    }

    /// Starts `job` on the host pool (runs it, without overlap).
    pub fn submit(&mut self, job: impl FnOnce() -> T + Send + 'static) {
        let (tx, rx) = sync_channel(1);
        let run = move || {
            // A panicking job becomes an error for the taker (an unwinding pool thread would
            // abort the process).
            let result = catch_unwind(AssertUnwindSafe(job)).map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a host job panicked".into())
            });
            // The taker may have gone (a failed run): the result is not needed then.
            let _ = tx.send(result);
        };
        if self.overlap {
            spawn(self.workers, run);
        } else {
            run();
        }
        self.results.push_back(rx);
    }

    /// Queues a value that needs no work, in order with the jobs.
    pub fn ready(&mut self, value: T) {
        let (tx, rx) = sync_channel(1);
        let _ = tx.send(Ok(value));
        self.results.push_back(rx);
    }

    /// Jobs and values not taken yet.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// The oldest result, waiting for its job; `None` when nothing is queued, `Some(Err)` with
    /// the panic message when its job panicked.
    pub fn next(&mut self) -> Option<Result<T, String>> {
        let rx = self.results.pop_front()?;
        Some(
            rx.recv()
                .unwrap_or_else(|_| Err("a host job vanished".into())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_submission_order() {
        let mut jobs = InOrder::new(true);
        for i in 0..16u64 {
            // Early jobs take longest, so they finish last.
            jobs.submit(move || {
                std::thread::sleep(Duration::from_millis(2 * (16 - i)));
                i * 10
            });
        }
        jobs.ready(160);
        assert_eq!(jobs.len(), 17);
        let got: Vec<u64> = std::iter::from_fn(|| jobs.next().map(Result::unwrap)).collect();
        assert_eq!(got, (0..17).map(|i| i * 10).collect::<Vec<_>>());
        assert!(jobs.is_empty());
    }

    #[test]
    fn a_panicking_job_is_an_error_for_its_taker_only() {
        for overlap in [true, false] {
            let mut jobs = InOrder::new(overlap);
            jobs.submit(|| 1);
            jobs.submit(|| -> i32 { panic!("bad frame") });
            jobs.submit(|| 3);
            assert_eq!(jobs.next(), Some(Ok(1)));
            assert_eq!(jobs.next(), Some(Err("bad frame".to_string())));
            assert_eq!(jobs.next(), Some(Ok(3)));
            assert_eq!(jobs.next(), None);
        }
    }

    #[test]
    fn jobs_run_on_workers_only_with_overlap() {
        let submitter = std::thread::current().id();
        let mut jobs = InOrder::new(true);
        jobs.submit(move || (std::thread::current().id() != submitter, on_worker()));
        assert_eq!(jobs.next(), Some(Ok((true, true))));
        let mut jobs = InOrder::new(false);
        jobs.submit(move || (std::thread::current().id() == submitter, on_worker()));
        assert_eq!(jobs.next(), Some(Ok((true, false))));
    }
}

//! Per-op GPU time (`FLASHVSR_CUDA_OP_PROFILE=1`): CUDA events around every op, summed by op
//! name. For finding where a pipeline spends its time; it adds two events per op.
//!
//! `FLASHVSR_CUDA_OP_PROFILE=alone` waits for the GPU to be idle before each op: each op's time is
//! then its own, without the previous kernels' memory traffic still draining or the clocks of a
//! GPU under sustained load (the pass gets slower). Against the `1` profile it tells how much of an
//! op's time in the pipeline comes from running back to back.
//!
//! `FLASHVSR_CUDA_OP_TIMELINE=FILE` (with either profile) also writes every timed op to FILE as
//! tab-separated rows: name, GPU start and end, host start and end of its dispatch, in milliseconds
//! from the first op after the profile's reset. The GPU is idle at that reset, so the two clocks
//! start together to within a launch: where the GPU waited for the host shows in the rows.
//!
//! The ops of one stream run in order, so the time between one op's end event and the next op's
//! start event is time the GPU had nothing of ours to run: the host had not enqueued the next op
//! yet (its dispatch, a host wait, a synchronising copy). That idle time is summed by the op that
//! came after it, which names where the host was late. The host's time inside each op (its
//! dispatch: allocation, plan lookups, launches) is summed too: an op whose GPU time is close to
//! it ran with nothing queued ahead of it, so its GPU time holds host time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use crate::error::CudaResult;

/// Completed events are resolved in batches so that the pending list stays short; resolving
/// never waits for the GPU (that would add idle time of its own).
const BATCH: usize = 4096;

/// Gaps longer than this are the host's pauses between passes (the bench's run boundaries,
/// a model load), not op dispatch.
const LONG_GAP_MS: f64 = 50.0;
const MAX_LONG_GAPS_LISTED: usize = 40;

/// An op whose events may not have completed yet: name, start, end, host start, host ms.
type Pending = (&'static str, CudaEvent, CudaEvent, Instant, f64);

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    /// name → (milliseconds, calls, idle milliseconds before it, host milliseconds inside it)
    totals: BTreeMap<&'static str, (f64, u64, f64, f64)>,
    last_end: Option<(&'static str, CudaEvent)>,
    /// Gaps over [`LONG_GAP_MS`]: (milliseconds, the op before, the op after), in order.
    long_gaps: Vec<(f64, &'static str, &'static str)>,
    /// The first op's start event and host time since the reset: the timeline's zero.
    origin: Option<(CudaEvent, Instant)>,
    /// name, GPU start, GPU end, host start, host end (ms from `origin`).
    timeline: Vec<(&'static str, f64, f64, f64, f64)>,
}

/// Rows kept for `FLASHVSR_CUDA_OP_TIMELINE`: a few 1080p passes.
const TIMELINE_MAX_ROWS: usize = 200_000;

pub(crate) struct OpProfiler {
    ctx: Arc<CudaContext>,
    state: Mutex<State>,
    alone: bool,
    timeline_path: Option<std::path::PathBuf>,
}

impl OpProfiler {
    pub fn new(ctx: &Arc<CudaContext>) -> OpProfiler {
        OpProfiler {
            ctx: ctx.clone(),
            state: Mutex::new(State::default()),
            alone: std::env::var("FLASHVSR_CUDA_OP_PROFILE").is_ok_and(|v| v == "alone"),
            timeline_path: std::env::var_os("FLASHVSR_CUDA_OP_TIMELINE").map(Into::into),
        }
    }

    /// Whether each op starts on an idle GPU (`FLASHVSR_CUDA_OP_PROFILE=alone`).
    pub fn alone(&self) -> bool {
        self.alone
    }

    /// An event recorded on `stream` now.
    pub fn mark(&self, stream: &CudaStream) -> CudaResult<CudaEvent> {
        flashvsr_tensor::host_stalls::timed("profile event", || {
            let e = self
                .ctx
                .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
            e.record(stream)?;
            Ok(e)
        })
    }

    /// An op's events, and when the host started enqueueing it and how many milliseconds that took.
    pub fn add(
        &self,
        name: &'static str,
        (start, end): (CudaEvent, CudaEvent),
        host_start: Instant,
        host_ms: f64,
    ) -> CudaResult<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending.push((name, start, end, host_start, host_ms));
        if s.pending.len() >= BATCH {
            resolve(&mut s, false, self.timeline_path.is_some())?;
        }
        Ok(())
    }

    /// Starts over: the ops enqueued so far are waited for and forgotten.
    pub fn reset(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, last, _, _)) = s.pending.last() {
            // A failed wait leaves events that later resolve as they can; nothing to report.
            let _ = last.synchronize();
        }
        *s = State::default();
    }

    /// Milliseconds and calls per op, most time first, and the idle time before each.
    pub fn report(&self) -> CudaResult<String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        resolve(&mut s, true, self.timeline_path.is_some())?;
        if let Some(path) = &self.timeline_path {
            write_timeline(path, &s.timeline);
        }
        let total: f64 = s.totals.values().map(|v| v.0).sum();
        let idle: f64 = s.totals.values().map(|v| v.2).sum();
        let mut rows: Vec<_> = s.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let long: f64 = s.long_gaps.iter().map(|g| g.0).sum();
        let mut out = format!(
            "GPU time per op ({total:.1} ms in all; idle between ops {idle:.1} ms, not counting \
             {long:.1} ms of gaps over {LONG_GAP_MS} ms):\n"
        );
        for (name, (ms, calls, idle_ms, host_ms)) in rows {
            out.push_str(&format!(
                "  {name:<24} {ms:>10.1} ms {:>5.1} % {calls:>8} calls {:>9.3} ms/call {idle_ms:>9.1} ms idle before {:>8.3} host ms/call\n",
                100.0 * ms / total.max(1e-9),
                ms / *calls as f64,
                host_ms / *calls as f64
            ));
        }
        // Where the long gaps fall tells a pause between passes from a host stall inside one.
        out.push_str(&format!("gaps over {LONG_GAP_MS} ms, in order:"));
        for (ms, before, after) in s.long_gaps.iter().take(MAX_LONG_GAPS_LISTED) {
            out.push_str(&format!(" {ms:.0} ({before} → {after});"));
        }
        out.push('\n');
        Ok(out)
    }
}

/// Moves completed ops from `pending` into the totals, in order; `all` waits for the rest.
fn resolve(s: &mut State, all: bool, timeline: bool) -> CudaResult<()> {
    if all {
        if let Some((_, _, last, _, _)) = s.pending.last() {
            last.synchronize()?;
        }
    }
    let done = if all {
        s.pending.len()
    } else {
        s.pending
            .iter()
            .position(|(_, _, end, _, _)| !end.is_complete())
            .unwrap_or(s.pending.len())
    };
    let mut last_end = s.last_end.take();
    let mut long_gaps = Vec::new();
    let mut origin = s.origin.take();
    let mut rows = Vec::new();
    for (name, start, end, host_start, host_ms) in s.pending.drain(..done) {
        let ms = start.elapsed_ms(&end)? as f64;
        if timeline && s.timeline.len() + rows.len() < TIMELINE_MAX_ROWS {
            let (zero, host_zero) = match &origin {
                Some((e, h)) => (e.elapsed_ms(&start)? as f64, *h),
                None => (0.0, host_start),
            };
            let host = host_start
                .saturating_duration_since(host_zero)
                .as_secs_f64()
                * 1e3;
            rows.push((name, zero, zero + ms, host, host + host_ms));
        }
        let (gap, before) = match &last_end {
            Some((before, prev)) => ((prev.elapsed_ms(&start)? as f64).max(0.0), *before),
            None => (0.0, ""),
        };
        let entry = s.totals.entry(name).or_insert((0.0, 0, 0.0, 0.0));
        entry.0 += ms;
        entry.1 += 1;
        entry.3 += host_ms;
        if gap > LONG_GAP_MS {
            long_gaps.push((gap, before, name));
        } else {
            entry.2 += gap;
        }
        last_end = Some((name, end));
        if timeline && origin.is_none() {
            origin = Some((start, host_start));
        }
    }
    s.origin = origin;
    s.timeline.extend(rows);
    s.last_end = last_end;
    s.long_gaps.extend(long_gaps);
    Ok(())
}

/// The timeline as tab-separated rows; a file that cannot be written is reported, not fatal.
fn write_timeline(path: &std::path::Path, rows: &[(&'static str, f64, f64, f64, f64)]) {
    use std::fmt::Write as _;
    let mut text = String::from("op\tgpu_start_ms\tgpu_end_ms\thost_start_ms\thost_end_ms\n");
    for (name, a, b, c, d) in rows {
        let _ = writeln!(text, "{name}\t{a:.4}\t{b:.4}\t{c:.4}\t{d:.4}");
    }
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("op timeline: cannot write {}: {e}", path.display());
    }
}

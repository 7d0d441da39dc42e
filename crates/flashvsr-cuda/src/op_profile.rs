//! Per-op GPU time (`FLASHVSR_CUDA_OP_PROFILE=1`): CUDA events around every op, summed by op
//! name. For finding where a pipeline spends its time; it adds two events per op.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use crate::error::CudaResult;

/// Events are resolved in batches so that the pending list stays short.
const BATCH: usize = 2048;

#[derive(Default)]
struct State {
    pending: Vec<(&'static str, CudaEvent, CudaEvent)>,
    /// name → (milliseconds, calls)
    totals: BTreeMap<&'static str, (f64, u64)>,
}

pub(crate) struct OpProfiler {
    ctx: Arc<CudaContext>,
    state: Mutex<State>,
}

impl OpProfiler {
    pub fn new(ctx: &Arc<CudaContext>) -> OpProfiler {
        OpProfiler {
            ctx: ctx.clone(),
            state: Mutex::new(State::default()),
        }
    }

    /// An event recorded on `stream` now.
    pub fn mark(&self, stream: &CudaStream) -> CudaResult<CudaEvent> {
        let e = self
            .ctx
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        e.record(stream)?;
        Ok(e)
    }

    pub fn add(&self, name: &'static str, start: CudaEvent, end: CudaEvent) -> CudaResult<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending.push((name, start, end));
        if s.pending.len() >= BATCH {
            resolve(&mut s)?;
        }
        Ok(())
    }

    /// Milliseconds and calls per op, most time first.
    pub fn report(&self) -> CudaResult<String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        resolve(&mut s)?;
        let total: f64 = s.totals.values().map(|v| v.0).sum();
        let mut rows: Vec<_> = s.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let mut out = format!("GPU time per op ({total:.1} ms in all):\n");
        for (name, (ms, calls)) in rows {
            out.push_str(&format!(
                "  {name:<24} {ms:>10.1} ms {:>5.1} % {calls:>8} calls {:>9.3} ms/call\n",
                100.0 * ms / total.max(1e-9),
                ms / *calls as f64
            ));
        }
        Ok(out)
    }
}

fn resolve(s: &mut State) -> CudaResult<()> {
    if let Some((_, _, last)) = s.pending.last() {
        last.synchronize()?;
    }
    for (name, start, end) in s.pending.drain(..) {
        let ms = start.elapsed_ms(&end)? as f64;
        let entry = s.totals.entry(name).or_insert((0.0, 0));
        entry.0 += ms;
        entry.1 += 1;
    }
    Ok(())
}

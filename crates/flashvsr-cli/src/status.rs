//! `flashvsr status OUTPUT`: what the job store of an output holds.

use std::path::Path;

use flashvsr_job::JobStore;

use crate::failure::{Failure, Outcome};

pub fn run(output: &Path) -> Outcome<()> {
    let root = JobStore::path_for_output(output);
    if !root.join("plan.json").exists() {
        if output.exists() {
            println!("{}: complete (no job store)", output.display());
            return Ok(());
        }
        return Err(Failure::bad(format!(
            "{}: no job store at {}",
            output.display(),
            root.display()
        )));
    }
    let store = JobStore::open_existing(&root)?;
    let done = store.done()?;
    let frames: usize = done.iter().map(|m| m.frames).sum();
    let complete = done.last().is_some_and(|m| m.state.is_none());
    println!("job store: {}", root.display());
    for m in &done {
        println!(
            "segment {:>4}: done, frames {}..{} ({:.1} s)",
            m.segment,
            m.emit_from,
            m.emit_from + m.frames,
            m.compute_s
        );
    }
    let events = store.events();
    let started = events.iter().rev().find_map(|e| {
        e.strip_prefix("start ")
            .and_then(|k| k.parse::<usize>().ok())
    });
    match started {
        Some(k) if k >= done.len() && !complete => {
            println!("segment {k:>4}: running, or interrupted (rerun the same command to resume)")
        }
        _ => {}
    }
    println!(
        "{} segment(s) done, {frames} frames{}",
        done.len(),
        if complete {
            ", all computed (assembly pending or done)"
        } else {
            ""
        }
    );
    Ok(())
}

//! The job store (SCALEOUT.md §3) on a local folder: a create-only plan, segment data committed
//! by create-only done markers, the newest stream checkpoint, and an event log. Correctness rests
//! on create-only commits: a segment with a done marker is never computed again.

mod fingerprint;
mod lease;
mod segments;
mod store;

pub use fingerprint::{fingerprint_path, Fingerprint};
pub use lease::{now_ms, HeldLease, Lease, LeaseKind};
pub use segments::{plan_balanced, plan_segments, SegmentRange};
pub use store::{DoneMarker, JobError, JobStore, SegmentSlot};

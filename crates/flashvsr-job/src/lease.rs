//! Segment leases (SCALEOUT.md §3): create-only generations `leases/sNNNNNN/gNNNNNNN.json`. The
//! current lease of a segment is its highest generation; it is live while `kind == hold` and
//! `now < expires_at`. Acquiring, renewing and releasing all create the next generation, so two
//! workers can never both win the same generation. Leases only avoid duplicated work: the
//! create-only done marker decides which result counts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::{create_only, io, JobError, JobStore};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    Hold,
    Release,
}

/// One lease generation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub segment: usize,
    pub generation: u64,
    pub worker: String,
    pub kind: LeaseKind,
    /// Unix milliseconds.
    pub acquired_at: u64,
    pub expires_at: u64,
}

impl Lease {
    pub fn live(&self, now_ms: u64) -> bool {
        self.kind == LeaseKind::Hold && now_ms < self.expires_at
    }
}

/// A lease this worker holds.
#[derive(Clone, Debug)]
pub struct HeldLease {
    pub segment: usize,
    pub generation: u64,
    pub worker: String,
    pub ttl_ms: u64,
}

impl JobStore {
    fn lease_dir(&self, segment: usize) -> PathBuf {
        self.root().join("leases").join(format!("s{segment:06}"))
    }

    fn lease_path(&self, segment: usize, generation: u64) -> PathBuf {
        self.lease_dir(segment)
            .join(format!("g{generation:07}.json"))
    }

    /// Whether `segment` has a done marker (any order: parallel jobs commit out of order).
    pub fn is_done(&self, segment: usize) -> bool {
        self.root()
            .join("done")
            .join(format!("s{segment:06}.json"))
            .exists()
    }

    /// The current (highest) lease generation of `segment`, if any.
    pub fn current_lease(&self, segment: usize) -> Result<Option<Lease>, JobError> {
        let dir = self.lease_dir(segment);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut best: Option<(u64, PathBuf)> = None;
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(g) = name
                .strip_prefix('g')
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| g > *b) {
                best = Some((g, path));
            }
        }
        let Some((_, path)) = best else {
            return Ok(None);
        };
        let lease =
            serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?).map_err(|e| {
                JobError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Some(lease))
    }

    fn create_generation(
        &self,
        segment: usize,
        generation: u64,
        worker: &str,
        kind: LeaseKind,
        ttl_ms: u64,
    ) -> Result<bool, JobError> {
        let dir = self.lease_dir(segment);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let now = now_ms();
        let lease = Lease {
            segment,
            generation,
            worker: worker.to_string(),
            kind,
            acquired_at: now,
            expires_at: now + ttl_ms,
        };
        let bytes = serde_json::to_vec_pretty(&lease).unwrap_or_default();
        create_only(&self.lease_path(segment, generation), &bytes)
    }

    /// Takes the lease of `segment` if it is not done and its current lease is not live.
    pub fn try_acquire(
        &self,
        segment: usize,
        worker: &str,
        ttl_ms: u64,
    ) -> Result<Option<HeldLease>, JobError> {
        if self.is_done(segment) {
            return Ok(None);
        }
        let current = self.current_lease(segment)?;
        if current.as_ref().is_some_and(|l| l.live(now_ms())) {
            return Ok(None);
        }
        let generation = current.map_or(1, |l| l.generation + 1);
        if !self.create_generation(segment, generation, worker, LeaseKind::Hold, ttl_ms)? {
            return Ok(None);
        }
        Ok(Some(HeldLease {
            segment,
            generation,
            worker: worker.to_string(),
            ttl_ms,
        }))
    }

    /// Extends a held lease by creating the next generation. False: someone took it over (stop
    /// working on the segment).
    pub fn renew(&self, lease: &mut HeldLease) -> Result<bool, JobError> {
        let next = lease.generation + 1;
        if !self.create_generation(
            lease.segment,
            next,
            &lease.worker,
            LeaseKind::Hold,
            lease.ttl_ms,
        )? {
            return Ok(false);
        }
        lease.generation = next;
        // Best effort: older generations are no longer needed.
        if next >= 3 {
            let _ = std::fs::remove_file(self.lease_path(lease.segment, next - 2));
        }
        Ok(true)
    }

    /// Gives a held lease back (a `release` generation).
    pub fn release(&self, lease: HeldLease) -> Result<bool, JobError> {
        self.create_generation(
            lease.segment,
            lease.generation + 1,
            &lease.worker,
            LeaseKind::Release,
            0,
        )
    }

    /// Releases every live lease held by `worker` (its process died): the segments are free at once.
    pub fn release_worker(&self, worker: &str, segments: usize) -> Result<Vec<usize>, JobError> {
        let mut freed = Vec::new();
        for k in 0..segments {
            if let Some(l) = self.current_lease(k)? {
                if l.worker == worker
                    && l.kind == LeaseKind::Hold
                    && self.create_generation(k, l.generation + 1, worker, LeaseKind::Release, 0)?
                {
                    freed.push(k);
                }
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_once_renewed_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            JobStore::open_or_create(&dir.path().join("j"), &serde_json::json!({})).unwrap();
        let mut a = store.try_acquire(3, "a", 60_000).unwrap().expect("free");
        assert_eq!(a.generation, 1);
        assert!(store.try_acquire(3, "b", 60_000).unwrap().is_none(), "live");
        assert!(store.renew(&mut a).unwrap());
        assert_eq!(store.current_lease(3).unwrap().unwrap().generation, 2);
        // A stale copy of the lease (a paused holder) cannot renew over the newer generation.
        let mut stale = a.clone();
        stale.generation = 1;
        assert!(!store.renew(&mut stale).unwrap());
        assert!(store.release(a).unwrap());
        let b = store
            .try_acquire(3, "b", 60_000)
            .unwrap()
            .expect("released");
        assert_eq!(b.generation, 4);
        assert_eq!(store.release_worker("b", 5).unwrap(), vec![3]);
        assert!(!store.current_lease(3).unwrap().unwrap().live(now_ms()));
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            JobStore::open_or_create(&dir.path().join("j"), &serde_json::json!({})).unwrap();
        let _a = store.try_acquire(0, "a", 0).unwrap().expect("free");
        let b = store.try_acquire(0, "b", 60_000).unwrap().expect("expired");
        assert_eq!(b.generation, 2);
    }
}

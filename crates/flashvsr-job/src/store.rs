use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
    /// The store belongs to another input, model or options.
    #[error("{}: this job store was made for a different input, model or options; rerun with --restart to discard it", .path.display())]
    PlanMismatch { path: PathBuf },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JobError + '_ {
    move |source| JobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The commit record of one segment: which data object and checkpoint it names.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DoneMarker {
    pub segment: usize,
    pub plan_hash: String,
    /// Segment data, relative to the store.
    pub data: String,
    /// Stream checkpoint after the segment, relative to the store (absent for the last segment).
    pub state: Option<String>,
    /// First output frame of the segment and how many it holds.
    pub emit_from: usize,
    pub frames: usize,
    pub compute_s: f64,
}

/// Where a segment being computed writes, before it is committed.
pub struct SegmentSlot {
    pub segment: usize,
    pub data: PathBuf,
    pub state: PathBuf,
    nonce: String,
}

#[derive(Clone)]
pub struct JobStore {
    root: PathBuf,
    plan_hash: String,
}

fn unique_nonce() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{:x}-{}",
        std::process::id(),
        t,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes `bytes` at `path` only if nothing is there: temp file, fsync, hard link (which fails
/// when the target exists), so concurrent committers cannot both win.
pub(crate) fn create_only(path: &Path, bytes: &[u8]) -> Result<bool, JobError> {
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        unique_nonce()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    drop(f);
    let result = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

impl JobStore {
    /// The store beside an output: `<output>.flashvsr/`.
    pub fn path_for_output(output: &Path) -> PathBuf {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        output.with_file_name(format!("{name}.flashvsr"))
    }

    /// Opens the store at `root` for `plan`, creating it if absent. An existing store with another
    /// plan is an error ([`JobError::PlanMismatch`]).
    pub fn open_or_create(root: &Path, plan: &Value) -> Result<JobStore, JobError> {
        let canonical = serde_json::to_vec(plan).map_err(|e| JobError::Invalid {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
        let plan_hash = format!("xxh3-128:{:032x}", xxhash_rust::xxh3::xxh3_128(&canonical));
        for dir in ["", "segments", "stream", "done"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let mut record = plan.clone();
        if let Value::Object(m) = &mut record {
            m.insert("schema".into(), "flashvsr.plan/1".into());
            m.insert("plan_hash".into(), plan_hash.clone().into());
        }
        let plan_path = root.join("plan.json");
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        if !create_only(&plan_path, &bytes)? {
            let existing: Value =
                serde_json::from_slice(&std::fs::read(&plan_path).map_err(io(&plan_path))?)
                    .map_err(|e| JobError::Invalid {
                        path: plan_path.clone(),
                        reason: e.to_string(),
                    })?;
            if existing.get("plan_hash").and_then(Value::as_str) != Some(plan_hash.as_str()) {
                return Err(JobError::PlanMismatch {
                    path: root.to_path_buf(),
                });
            }
        }
        Ok(JobStore {
            root: root.to_path_buf(),
            plan_hash,
        })
    }

    /// Opens an existing store without checking a plan (for `status`).
    pub fn open_existing(root: &Path) -> Result<JobStore, JobError> {
        let plan_path = root.join("plan.json");
        let plan: Value = serde_json::from_slice(
            &std::fs::read(&plan_path).map_err(io(&plan_path))?,
        )
        .map_err(|e| JobError::Invalid {
            path: plan_path.clone(),
            reason: e.to_string(),
        })?;
        let plan_hash = plan
            .get("plan_hash")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(JobStore {
            root: root.to_path_buf(),
            plan_hash,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn plan_hash(&self) -> &str {
        &self.plan_hash
    }

    fn marker_path(&self, segment: usize) -> PathBuf {
        self.root.join("done").join(format!("s{segment:06}.json"))
    }

    /// Every committed segment, in order. Segments must be contiguous from 0 (one-stream jobs
    /// commit in order).
    pub fn done(&self) -> Result<Vec<DoneMarker>, JobError> {
        let markers = self.done_any()?;
        for (i, m) in markers.iter().enumerate() {
            if m.segment != i {
                return Err(JobError::Invalid {
                    path: self.marker_path(m.segment),
                    reason: format!("segment {} out of sequence", m.segment),
                });
            }
        }
        Ok(markers)
    }

    /// Every committed segment of a parallel job (committed in any order), by segment number.
    pub fn done_any(&self) -> Result<Vec<DoneMarker>, JobError> {
        let dir = self.root.join("done");
        let mut markers = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let marker: DoneMarker =
                serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?).map_err(|e| {
                    JobError::Invalid {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
            if marker.plan_hash != self.plan_hash {
                return Err(JobError::Invalid {
                    path,
                    reason: "segment committed under another plan".into(),
                });
            }
            markers.push(marker);
        }
        markers.sort_by_key(|m| m.segment);
        Ok(markers)
    }

    /// Fresh, unique paths for computing `segment`.
    pub fn slot(&self, segment: usize) -> SegmentSlot {
        let nonce = unique_nonce();
        SegmentSlot {
            segment,
            data: self
                .root
                .join("segments")
                .join(format!("s{segment:06}.{nonce}")),
            state: self
                .root
                .join("stream")
                .join(format!("s{segment:06}.{nonce}.state")),
            nonce,
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Commits a segment whose data (and checkpoint, if any) are already written at the slot's
    /// paths. Returns false if another worker committed it first (our data is then deleted).
    pub fn commit(
        &self,
        slot: &SegmentSlot,
        emit_from: usize,
        frames: usize,
        with_state: bool,
        compute_s: f64,
    ) -> Result<bool, JobError> {
        let marker = DoneMarker {
            segment: slot.segment,
            plan_hash: self.plan_hash.clone(),
            data: format!(
                "segments/{}",
                slot.data.file_name().unwrap_or_default().to_string_lossy()
            ),
            state: with_state.then(|| {
                format!(
                    "stream/{}",
                    slot.state.file_name().unwrap_or_default().to_string_lossy()
                )
            }),
            emit_from,
            frames,
            compute_s,
        };
        let bytes = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        let won = create_only(&self.marker_path(slot.segment), &bytes)?;
        if won {
            self.log(&format!("commit {}", slot.segment))?;
            self.prune_checkpoints(&marker)?;
        } else {
            let _ = std::fs::remove_dir_all(&slot.data);
            let _ = std::fs::remove_file(&slot.state);
        }
        let _ = &slot.nonce;
        Ok(won)
    }

    /// Only the newest stream checkpoint is kept (they are large).
    fn prune_checkpoints(&self, newest: &DoneMarker) -> Result<(), JobError> {
        let keep = newest.state.as_deref().map(|s| self.root.join(s));
        let dir = self.root.join("stream");
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let older = name
                .get(1..7)
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|k| k < newest.segment);
            if older && Some(&path) != keep.as_ref() {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// Appends a line to `events.log` (segment starts and commits; read by `status` and tests).
    pub fn log(&self, line: &str) -> Result<(), JobError> {
        let path = self.root.join("events.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{line}").map_err(io(&path))
    }

    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("events.log"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    pub fn remove(self) -> Result<(), JobError> {
        std::fs::remove_dir_all(&self.root).map_err(io(&self.root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_create_only_and_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out.flashvsr");
        let plan = serde_json::json!({"input": "a", "scale": 4});
        let a = JobStore::open_or_create(&root, &plan).unwrap();
        let b = JobStore::open_or_create(&root, &plan).unwrap();
        assert_eq!(a.plan_hash(), b.plan_hash());
        let other = serde_json::json!({"input": "a", "scale": 2});
        assert!(matches!(
            JobStore::open_or_create(&root, &other),
            Err(JobError::PlanMismatch { .. })
        ));
    }

    #[test]
    fn a_segment_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            JobStore::open_or_create(&dir.path().join("j"), &serde_json::json!({})).unwrap();
        let s1 = store.slot(0);
        std::fs::create_dir_all(&s1.data).unwrap();
        let s2 = store.slot(0);
        std::fs::create_dir_all(&s2.data).unwrap();
        assert!(store.commit(&s1, 0, 21, false, 0.0).unwrap());
        assert!(!store.commit(&s2, 0, 21, false, 0.0).unwrap());
        assert!(!s2.data.exists(), "the loser's data is deleted");
        let done = store.done().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].frames, 21);
        assert_eq!(store.events(), vec!["commit 0".to_string()]);
    }
}

//! Cheap, stable identities of inputs and model files: size plus a hash of the first and last
//! MiB (files), or of the sorted names and sizes (folders). Hashing gigabytes of weights on every
//! run would cost more than it protects.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

const EDGE: u64 = 1 << 20;

pub type Fingerprint = String;

pub fn fingerprint_path(path: &Path) -> std::io::Result<Fingerprint> {
    let mut h = Xxh3::new();
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<(String, u64)> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().ok()?.len(),
                ))
            })
            .collect();
        entries.sort();
        for (name, len) in entries {
            h.update(name.as_bytes());
            h.update(&len.to_le_bytes());
        }
        return Ok(format!("xxh3-128:dir:{:032x}", h.digest128()));
    }
    let len = meta.len();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; EDGE.min(len) as usize];
    f.read_exact(&mut buf)?;
    h.update(&buf);
    if len > EDGE {
        let tail = EDGE.min(len - EDGE);
        f.seek(SeekFrom::End(-(tail as i64)))?;
        buf.resize(tail as usize, 0);
        f.read_exact(&mut buf)?;
        h.update(&buf);
    }
    h.update(&len.to_le_bytes());
    Ok(format!("xxh3-128:{len}:{:032x}", h.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_content_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"hello").unwrap();
        let f1 = fingerprint_path(&a).unwrap();
        std::fs::write(&a, b"hellp").unwrap();
        let f2 = fingerprint_path(&a).unwrap();
        std::fs::write(&a, b"hello!").unwrap();
        let f3 = fingerprint_path(&a).unwrap();
        assert!(f1 != f2 && f2 != f3 && f1 != f3);
        assert_eq!(f3, fingerprint_path(&a).unwrap());
        let d1 = fingerprint_path(dir.path()).unwrap();
        std::fs::write(dir.path().join("b"), b"x").unwrap();
        assert_ne!(d1, fingerprint_path(dir.path()).unwrap());
    }
}

//! Stream checkpoints: every tensor of the stream state plus a few counters, in one safetensors
//! file written under a temporary name and renamed, so a checkpoint on disk is always whole.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use flashvsr_tensor::{BackendRef, HostData, Tensor};

use crate::{ModelError, Result};

fn bad(path: &Path, why: impl std::fmt::Display) -> ModelError {
    ModelError::Mismatch {
        path: path.to_path_buf(),
        reason: format!("stream checkpoint: {why}"),
    }
}

/// Tensors keep the storage the backend had them in: bf16 KV caches stay bf16, in memory and in
/// the file (half the bytes of f32; the checkpoint of a large canvas is gigabytes).
#[derive(Default)]
pub struct StateWriter {
    tensors: Vec<(String, Vec<usize>, HostData)>,
    meta: BTreeMap<String, String>,
}

impl StateWriter {
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        self.tensors
            .push((name.to_string(), t.shape().to_vec(), t.to_host_data()?));
        Ok(())
    }

    pub fn host(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        self.tensors.push((
            name.to_string(),
            shape.to_vec(),
            HostData::F32(values.to_vec()),
        ));
    }

    pub fn optional(&mut self, name: &str, t: Option<&Tensor>) -> Result<()> {
        match t {
            Some(t) => self.tensor(name, t),
            None => Ok(()),
        }
    }

    pub fn value(&mut self, name: &str, v: impl ToString) {
        self.meta.insert(name.to_string(), v.to_string());
    }

    /// Copies every entry of `other` under `prefix`.
    pub fn extend_prefixed(&mut self, other: &StateWriter, prefix: &str) {
        for (n, shape, values) in &other.tensors {
            self.tensors
                .push((format!("{prefix}{n}"), shape.clone(), values.clone()));
        }
        for (n, v) in &other.meta {
            self.meta.insert(format!("{prefix}{n}"), v.clone());
        }
    }

    pub fn write(self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = self
            .tensors
            .into_iter()
            .map(|(n, s, v)| match v {
                HostData::F32(v) => {
                    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    (n, s, safetensors::Dtype::F32, bytes)
                }
                HostData::Bf16(v) => {
                    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    (n, s, safetensors::Dtype::BF16, bytes)
                }
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, s, dtype, b)| {
                safetensors::tensor::TensorView::new(*dtype, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| bad(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = self.meta.into_iter().collect();
        let tmp = temporary_sibling(path);
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| bad(path, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                bad(path, e)
            })
    }
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

pub struct StateReader {
    path: PathBuf,
    backend: BackendRef,
    tensors: Arc<HashMap<String, (Vec<usize>, HostData)>>,
    meta: Arc<HashMap<String, String>>,
}

impl StateReader {
    pub fn open(path: &Path, backend: &BackendRef) -> Result<StateReader> {
        let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(path, e))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e))?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let values = match v.dtype() {
                    safetensors::Dtype::F32 => HostData::F32(
                        v.data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    ),
                    safetensors::Dtype::BF16 => HostData::Bf16(
                        v.data()
                            .chunks_exact(2)
                            .map(|b| u16::from_le_bytes([b[0], b[1]]))
                            .collect(),
                    ),
                    other => return Err(bad(path, format!("`{n}` is {other:?}"))),
                };
                Ok((n, (v.shape().to_vec(), values)))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(StateReader {
            path: path.to_path_buf(),
            backend: backend.clone(),
            tensors: Arc::new(tensors),
            meta: Arc::new(meta),
        })
    }

    /// Reads what `w` holds, without a file (tiles parked in host memory).
    pub fn in_memory(w: StateWriter, backend: &BackendRef, label: &str) -> StateReader {
        StateReader {
            path: PathBuf::from(label),
            backend: backend.clone(),
            tensors: Arc::new(
                w.tensors
                    .into_iter()
                    .map(|(n, shape, values)| (n, (shape, values)))
                    .collect(),
            ),
            meta: Arc::new(w.meta.into_iter().collect()),
        }
    }

    /// The same entries, with tensors read onto `backend` (a stream split over several devices).
    pub fn on_backend(&self, backend: &BackendRef) -> StateReader {
        StateReader {
            path: self.path.clone(),
            backend: backend.clone(),
            tensors: self.tensors.clone(),
            meta: self.meta.clone(),
        }
    }

    pub fn optional(&self, name: &str) -> Result<Option<Tensor>> {
        match self.tensors.get(name) {
            Some((shape, data)) => Ok(Some(Tensor::from_host_data(&self.backend, data, shape)?)),
            None => Ok(None),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.optional(name)?
            .ok_or_else(|| bad(&self.path, format!("missing `{name}`")))
    }

    /// A stored tensor's shape and values, on the host.
    pub fn host(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.tensors
            .get(name)
            .map(|(shape, data)| (shape.clone(), data.to_f32()))
            .ok_or_else(|| bad(&self.path, format!("missing `{name}`")))
    }

    /// Names of stored tensors under `prefix`.
    pub fn names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tensors
            .keys()
            .map(String::as_str)
            .filter(move |n| n.starts_with(prefix))
    }

    pub fn value<T: FromStr>(&self, name: &str) -> Result<T> {
        self.meta
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&self.path, format!("missing or invalid `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_state_is_stored_as_bf16_and_read_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        let bits: Vec<u16> = (0..96u16).map(|i| i.wrapping_mul(0x1f3b)).collect();
        let mut w = StateWriter::default();
        w.tensors
            .push(("kv".into(), vec![8, 12], HostData::Bf16(bits.clone())));
        w.host("lq", &[2, 2], &[0.5, -1.0, 3.25, 1e-3]);
        w.value("received", 7);
        w.write(&path).unwrap();
        // Two bytes per bf16 value in the file, not four.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 96 * 2 + 16 + 1024, "{size} bytes");
        let r = StateReader::open(&path, &flashvsr_tensor::cpu::CpuBackend::new_ref()).unwrap();
        match r.tensors.get("kv") {
            Some((shape, HostData::Bf16(read))) => {
                assert_eq!(shape, &[8, 12]);
                assert_eq!(read, &bits);
            }
            _ => panic!("kv not read back as bf16"),
        }
        assert_eq!(r.host("lq").unwrap().1, vec![0.5, -1.0, 3.25, 1e-3]);
        assert_eq!(r.value::<usize>("received").unwrap(), 7);
        assert_eq!(r.tensor("kv").unwrap().shape(), &[8, 12]);
    }
}

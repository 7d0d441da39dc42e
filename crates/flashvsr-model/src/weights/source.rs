//! What the model loaders read from: a weight file on disk, or tensors made in memory (random
//! full-size weights for benchmarks).

use std::path::Path;

use flashvsr_tensor::{BackendRef, Tensor};

use super::{WeightError, WeightFile};

pub trait WeightSource: Sync {
    /// The file (or a descriptive pseudo-path) named in error messages.
    fn path(&self) -> &Path;
    /// Sorted tensor names.
    fn names(&self) -> Vec<&str>;
    fn contains(&self, name: &str) -> bool;
    fn shape(&self, name: &str) -> Option<&[usize]>;
    /// Row-major contiguous f32 values.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightError>;
    /// True for a file holding one bare tensor (posi_prompt.pth).
    fn is_bare_tensor(&self) -> bool {
        false
    }

    /// The tensor made directly on `backend` where this source can do better than values read
    /// on the host (random weights generated on the device); None otherwise. Callers check the
    /// name and shape first.
    fn tensor_on(&self, name: &str, backend: &BackendRef) -> Option<crate::Result<Tensor>> {
        let _ = (name, backend);
        None
    }

    fn read_f32_shaped(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        match self.shape(name) {
            Some(found) if found == expected => self.read_f32(name),
            Some(found) => Err(WeightError::Shape {
                path: self.path().to_path_buf(),
                key: name.to_string(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            }),
            None => Err(WeightError::MissingKey {
                path: self.path().to_path_buf(),
                key: name.to_string(),
                what: "not in this file".into(),
            }),
        }
    }
}

impl WeightSource for WeightFile {
    fn path(&self) -> &Path {
        WeightFile::path(self)
    }
    fn names(&self) -> Vec<&str> {
        WeightFile::names(self)
    }
    fn contains(&self, name: &str) -> bool {
        WeightFile::contains(self, name)
    }
    fn shape(&self, name: &str) -> Option<&[usize]> {
        WeightFile::shape(self, name)
    }
    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightError> {
        WeightFile::read_f32(self, name)
    }
    fn is_bare_tensor(&self) -> bool {
        WeightFile::is_bare_tensor(self)
    }
    fn read_f32_shaped(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        WeightFile::read_f32_shaped(self, name, expected)
    }
}

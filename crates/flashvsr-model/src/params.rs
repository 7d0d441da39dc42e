//! A prefix view over one weight file (the pattern of candle's `VarBuilder`): every lookup checks
//! presence and shape and names the file and the key when either is wrong.

use flashvsr_tensor::{BackendRef, Tensor};

use crate::weights::{WeightError, WeightSource};
use crate::Result;

#[derive(Clone)]
pub struct Params<'a> {
    file: &'a dyn WeightSource,
    backend: &'a BackendRef,
    prefix: String,
    what: &'static str,
}

impl<'a> Params<'a> {
    /// `what` names the kind of file for error messages ("a FlashVSR DiT file").
    pub fn new(file: &'a dyn WeightSource, backend: &'a BackendRef, what: &'static str) -> Self {
        Params {
            file,
            backend,
            prefix: String::new(),
            what,
        }
    }

    pub fn file(&self) -> &'a dyn WeightSource {
        self.file
    }

    pub fn backend(&self) -> &'a BackendRef {
        self.backend
    }

    pub fn pp(&self, name: impl std::fmt::Display) -> Params<'a> {
        Params {
            prefix: format!("{}{}.", self.prefix, name),
            ..self.clone()
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file.contains(&self.key(name))
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let key = self.key(name);
        self.file
            .shape(&key)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| self.missing(key).into())
    }

    fn missing(&self, key: String) -> WeightError {
        WeightError::MissingKey {
            path: self.file.path().to_path_buf(),
            key,
            what: format!("expected in {}", self.what),
        }
    }

    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let key = self.key(name);
        if !self.file.contains(&key) {
            return Err(self.missing(key).into());
        }
        Ok(self.file.read_f32_shaped(&key, shape)?)
    }

    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let key = self.key(name);
        if self.file.shape(&key) == Some(shape) {
            if let Some(made) = self.file.tensor_on(&key, self.backend) {
                return made;
            }
        }
        let values = self.values(name, shape)?;
        Ok(Tensor::from_slice(self.backend, &values, shape)?)
    }

    /// A weight matrix read by every chunk, in the backend's compact storage (bf16 on CUDA in
    /// fast mode; see `Tensor::compact`).
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.tensor(name, shape)?.compact()?)
    }

    /// The tensor with a different (same-size) logical shape, e.g. a 1×1 conv weight as a matrix.
    pub fn tensor_as(&self, name: &str, shape: &[usize], as_shape: &[usize]) -> Result<Tensor> {
        Ok(self.tensor(name, shape)?.reshape(as_shape)?)
    }
}

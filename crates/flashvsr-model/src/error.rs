use std::path::PathBuf;

use thiserror::Error;

use crate::weights::WeightError;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Tensor(#[from] flashvsr_tensor::TensorError),
    /// A model file that loads but does not fit the architecture or the other files.
    #[error("{path}: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    /// Settings that cannot run (bad knobs, sizes out of range).
    #[error("{0}")]
    Settings(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// The device ran out of memory (retrying with smaller tiles may succeed).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, ModelError::Tensor(e) if e.is_out_of_memory())
    }
}

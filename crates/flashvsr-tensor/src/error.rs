use thiserror::Error;

#[derive(Clone, Debug, Error)]
pub enum TensorError {
    #[error("shape error in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{backend} backend: {detail}")]
    Backend { backend: String, detail: String },
    /// The device (or the memory limit set on it) has no room for an allocation: a caller may
    /// retry with smaller pieces of work.
    #[error("{backend}: out of memory: {detail}")]
    OutOfMemory { backend: String, detail: String },
}

impl TensorError {
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, TensorError::OutOfMemory { .. })
    }
}

pub type Result<T> = std::result::Result<T, TensorError>;

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(TensorError::Shape {
        op,
        detail: detail.into(),
    })
}

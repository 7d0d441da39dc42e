use thiserror::Error;

#[derive(Debug, Error)]
pub enum TensorError {
    #[error("shape error in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{backend} backend: {detail}")]
    Backend { backend: String, detail: String },
}

pub type Result<T> = std::result::Result<T, TensorError>;

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(TensorError::Shape {
        op,
        detail: detail.into(),
    })
}

use flashvsr_tensor::TensorError;
use thiserror::Error;

/// Everything that can go wrong in the CUDA backend. A missing library is an error value, never a
/// panic: callers fall back to the CPU backend on any of these.
#[derive(Debug, Error)]
pub enum CudaError {
    #[error("CUDA library not available: {0}")]
    Library(String),
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    #[error("cuBLASLt: {0}")]
    Blas(String),
    #[error("cuDNN: {0}")]
    Dnn(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("panic inside the CUDA bindings: {0}")]
    Panic(String),
}

pub type CudaResult<T> = Result<T, CudaError>;

impl CudaError {
    pub fn is_out_of_memory(&self) -> bool {
        use cudarc::driver::sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY;
        match self {
            CudaError::Driver(e) => e.0 == CUDA_ERROR_OUT_OF_MEMORY,
            CudaError::Blas(msg) => msg.contains("CUBLAS_STATUS_ALLOC_FAILED"),
            _ => false,
        }
    }

    pub(crate) fn into_tensor(self, device: flashvsr_tensor::Device) -> TensorError {
        if self.is_out_of_memory() {
            return TensorError::OutOfMemory {
                backend: device.to_string(),
                detail: self.to_string(),
            };
        }
        TensorError::Backend {
            backend: device.to_string(),
            detail: self.to_string(),
        }
    }
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning a panic (cudarc panics when a library cannot be loaded) into an error.
pub(crate) fn catch<T>(f: impl FnOnce() -> CudaResult<T>) -> CudaResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(CudaError::Panic(panic_message(p.as_ref()))),
    }
}

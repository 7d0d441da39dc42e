use std::any::Any;

use cudarc::driver::{CudaSlice, DevicePtr};
use flashvsr_tensor::Buffer;

/// Device memory of one tensor. Zero-length tensors still own a one-element allocation so that
/// every buffer has a valid device pointer.
pub struct CudaBuffer {
    slice: CudaSlice<f32>,
    len: usize,
}

impl CudaBuffer {
    pub(crate) fn new(slice: CudaSlice<f32>, len: usize) -> Self {
        debug_assert!(slice.len() >= len);
        CudaBuffer { slice, len }
    }

    pub fn slice(&self) -> &CudaSlice<f32> {
        &self.slice
    }

    pub(crate) fn ptr(&self) -> u64 {
        raw_ptr(&self.slice)
    }
}

/// The raw device pointer. Event tracking is off, so the guard cudarc returns is a no-op.
pub(crate) fn raw_ptr(slice: &CudaSlice<f32>) -> u64 {
    let (ptr, _guard) = slice.device_ptr(slice.stream());
    ptr
}

impl Buffer for CudaBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.len
    }
}

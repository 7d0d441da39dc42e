use std::any::Any;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaSlice, DevicePtr};
use flashvsr_tensor::{Buffer, MemoryMeter};

/// How a buffer holds its f32-valued elements on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    /// Rounded to bf16 (fast mode's weights and KV cache): half the memory and traffic.
    Bf16,
}

impl Storage {
    pub fn bytes(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::Bf16 => 2,
        }
    }

    /// f32 words of an allocation holding `len` elements (at least one, so that every buffer
    /// has a valid device pointer).
    pub(crate) fn words(self, len: usize) -> usize {
        (len * self.bytes()).div_ceil(4).max(1)
    }
}

/// Device memory of one tensor. Zero-length tensors still own a one-word allocation.
pub struct CudaBuffer {
    slice: CudaSlice<f32>,
    len: usize,
    storage: Storage,
    /// The same values rounded to bf16, for the bf16 GEMMs of the fast mode: written by the
    /// producer alongside the f32 values, or made by the first GEMM that reads this buffer, so that
    /// a tensor read by several GEMMs (the q, k, v projections) is rounded once.
    bf16_copy: OnceLock<Box<CudaBuffer>>,
    /// The backend's tensor-memory account, released on drop.
    meter: Option<Arc<MemoryMeter>>,
}

impl CudaBuffer {
    pub(crate) fn new(slice: CudaSlice<f32>, len: usize) -> Self {
        Self::with_storage(slice, len, Storage::F32)
    }

    pub(crate) fn with_storage(slice: CudaSlice<f32>, len: usize, storage: Storage) -> Self {
        debug_assert!(slice.len() >= storage.words(len));
        CudaBuffer {
            slice,
            len,
            storage,
            bf16_copy: OnceLock::new(),
            meter: None,
        }
    }

    /// This f32 buffer with `copy`, its values rounded to bf16 (see `bf16_copy`).
    pub(crate) fn with_bf16_copy(self, copy: Option<CudaBuffer>) -> Self {
        debug_assert!(copy
            .as_ref()
            .is_none_or(|c| c.storage == Storage::Bf16 && c.len == self.len));
        if let Some(copy) = copy {
            let _ = self.bf16_copy.set(Box::new(copy));
        }
        self
    }

    /// The bf16 copy of this buffer's values, if one was made.
    pub(crate) fn bf16_copy(&self) -> Option<&CudaBuffer> {
        self.bf16_copy.get().map(|c| &**c)
    }

    /// Keeps `copy` as this buffer's bf16 copy (the first one kept wins); the copy kept.
    pub(crate) fn remember_bf16_copy(&self, copy: CudaBuffer) -> &CudaBuffer {
        self.bf16_copy.get_or_init(|| Box::new(copy))
    }

    /// Counts this buffer's bytes in `meter` until it is dropped.
    pub(crate) fn metered(mut self, meter: &Arc<MemoryMeter>) -> Self {
        // Device allocations are not refused here: the device (or the capped pool) does that.
        let _ = meter.try_add(self.bytes());
        self.meter = Some(meter.clone());
        self
    }

    fn bytes(&self) -> u64 {
        (self.slice.len() * 4) as u64
    }

    pub fn slice(&self) -> &CudaSlice<f32> {
        &self.slice
    }

    pub fn storage(&self) -> Storage {
        self.storage
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

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.release(self.bytes());
        }
    }
}

impl Buffer for CudaBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.len
    }
}

use std::any::Any;
use std::mem::ManuallyDrop;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaSlice, DevicePtr};
use flashvsr_tensor::{Buffer, MemoryMeter};

use crate::paged::PagedAllocator;

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

/// Where the elements of a bf16 tensor `(C, T, H, W)` sit when it is stored channels-last: frame
/// by frame, position by position, the `c` channels of a position next to each other (cuDNN's
/// NHWC / NDHWC). The fast mode's convolutions exchange activations this way, so that consecutive
/// convolutions need no layout conversion. `c` is a multiple of 8: cuDNN's bf16 tensor-core
/// kernels want it, and the channels-last kernels move 8 channels (16 bytes) at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelsLast {
    pub c: usize,
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl ChannelsLast {
    /// Channels moved together by the channels-last kernels.
    pub const CHANNEL_GROUP: usize = 8;

    /// The geometry of a tensor of logical shape `(c, t, h, w)`; None for another rank or a
    /// channel count that is not a multiple of [`Self::CHANNEL_GROUP`].
    pub fn of_shape(shape: &[usize]) -> Option<ChannelsLast> {
        match *shape {
            [c, t, h, w] if c > 0 && c.is_multiple_of(Self::CHANNEL_GROUP) => {
                Some(ChannelsLast { c, t, h, w })
            }
            _ => None,
        }
    }

    pub fn shape(&self) -> [usize; 4] {
        [self.c, self.t, self.h, self.w]
    }

    pub fn plane(&self) -> usize {
        self.h * self.w
    }

    pub fn elems(&self) -> usize {
        self.c * self.t * self.plane()
    }
}

/// A device allocation: from the driver's stream-ordered pool (freed by the slice's drop), or a
/// block of the paged allocator (handed back to it on drop; the slice is leaked, never freed).
pub struct DeviceBlock<T> {
    slice: ManuallyDrop<CudaSlice<T>>,
    home: Option<Arc<PagedAllocator>>,
}

impl<T> DeviceBlock<T> {
    /// A block of `home` at `slice`'s address.
    pub(crate) fn paged(slice: CudaSlice<T>, home: Arc<PagedAllocator>) -> Self {
        DeviceBlock {
            slice: ManuallyDrop::new(slice),
            home: Some(home),
        }
    }
}

impl<T> DeviceBlock<T> {
    /// Whether the block is mapped by the paged allocator (the virtual memory API) rather than
    /// taken from the driver's pool.
    pub(crate) fn is_paged(&self) -> bool {
        self.home.is_some()
    }
}

impl<T> From<CudaSlice<T>> for DeviceBlock<T> {
    fn from(slice: CudaSlice<T>) -> Self {
        DeviceBlock {
            slice: ManuallyDrop::new(slice),
            home: None,
        }
    }
}

impl<T> std::ops::Deref for DeviceBlock<T> {
    type Target = CudaSlice<T>;
    fn deref(&self) -> &CudaSlice<T> {
        &self.slice
    }
}

impl<T> std::ops::DerefMut for DeviceBlock<T> {
    fn deref_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

impl<T> Drop for DeviceBlock<T> {
    fn drop(&mut self) {
        // SAFETY: the slice is taken once, here.
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        match &self.home {
            // Work already enqueued on the stream finishes before any later use of the block.
            Some(home) => {
                flashvsr_tensor::host_stalls::timed("paged free", || home.free(slice.leak()))
            }
            None => flashvsr_tensor::host_stalls::timed("pool free", || drop(slice)),
        }
    }
}

/// Device memory of one tensor. Zero-length tensors still own a one-word allocation.
pub struct CudaBuffer {
    slice: DeviceBlock<f32>,
    len: usize,
    storage: Storage,
    /// Some: bf16 elements in channels-last order; None: row-major in the tensor's shape (any
    /// reshape of it reads the same order).
    channels_last: Option<ChannelsLast>,
    /// The same values rounded to bf16, for the bf16 GEMMs of the fast mode: written by the
    /// producer alongside the f32 values, or made by the first GEMM that reads this buffer, so that
    /// a tensor read by several GEMMs (the q, k, v projections) is rounded once.
    bf16_copy: OnceLock<Box<CudaBuffer>>,
    /// The backend's tensor-memory account, released on drop.
    meter: Option<Arc<MemoryMeter>>,
    /// A conv weight's stand-in: none of the values, only the key of the converted copy that
    /// the cuDNN convs read (`Tensor::conv_weight_stand_in`).
    stand_in: bool,
}

impl CudaBuffer {
    pub(crate) fn new(slice: impl Into<DeviceBlock<f32>>, len: usize) -> Self {
        Self::with_storage(slice, len, Storage::F32)
    }

    pub(crate) fn with_storage(
        slice: impl Into<DeviceBlock<f32>>,
        len: usize,
        storage: Storage,
    ) -> Self {
        let slice = slice.into();
        debug_assert!(slice.len() >= storage.words(len));
        CudaBuffer {
            slice,
            len,
            storage,
            channels_last: None,
            bf16_copy: OnceLock::new(),
            meter: None,
            stand_in: false,
        }
    }

    /// A stand-in for a conv weight of `len` elements, holding `slice` (one word) only.
    pub(crate) fn stand_in(slice: impl Into<DeviceBlock<f32>>, len: usize) -> Self {
        CudaBuffer {
            slice: slice.into(),
            len,
            storage: Storage::Bf16,
            channels_last: None,
            bf16_copy: OnceLock::new(),
            meter: None,
            stand_in: true,
        }
    }

    pub(crate) fn is_stand_in(&self) -> bool {
        self.stand_in
    }

    /// The same bf16 buffer, its elements declared to be in channels-last order.
    pub(crate) fn into_channels_last(mut self, geometry: ChannelsLast) -> Self {
        debug_assert!(self.storage == Storage::Bf16 && geometry.elems() == self.len);
        self.channels_last = Some(geometry);
        self
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

    /// Whether the memory is a block of the paged allocator.
    pub(crate) fn is_paged(&self) -> bool {
        self.slice.is_paged()
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The channels-last geometry when the elements are stored that way.
    pub fn channels_last(&self) -> Option<ChannelsLast> {
        self.channels_last
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

/// [`raw_ptr`] of a bf16 staging buffer.
pub(crate) fn raw_u16(slice: &CudaSlice<u16>) -> u64 {
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

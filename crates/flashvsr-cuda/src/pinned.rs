//! Page-locked host buffers for copies that do not make the host wait: a copy between device
//! memory and pageable host memory waits for the stream to reach it, one with pinned memory is
//! only queued. Pinning memory is slow (and a chunk of decoded frames is ~100 MB), so buffers are
//! kept in a pool and reused. Each buffer carries an event recorded after the last copy that used
//! it: the host touches its values only once that copy completed.

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream, PinnedHostSlice};

use crate::error::CudaResult;

pub(crate) struct PinnedBuffer {
    host: PinnedHostSlice<f32>,
    /// Recorded after the last copy that read or wrote `host`.
    copied: CudaEvent,
}

impl PinnedBuffer {
    fn new(ctx: &Arc<CudaContext>, len: usize, flags: u32) -> CudaResult<PinnedBuffer> {
        // SAFETY: the host reads only values a copy wrote (downloads) and writes values before a
        // copy reads them (uploads).
        let host = flashvsr_tensor::host_stalls::timed("pinned alloc", || unsafe {
            ctx.alloc_pinned_with_flags::<f32>(len, flags)
        })?;
        let copied = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))?;
        Ok(PinnedBuffer { host, copied })
    }

    fn capacity(&self) -> usize {
        self.host.len()
    }

    fn copy_completed(&self) -> bool {
        self.copied.is_complete()
    }

    /// The first `len` values, once the last copy that used them completed.
    pub fn values(&mut self, len: usize) -> CudaResult<&mut [f32]> {
        flashvsr_tensor::host_stalls::timed("pinned wait", || self.copied.synchronize())?;
        // cudarc's own event of the slice is never recorded (no cudarc copy uses it): no wait.
        Ok(&mut self.host.as_mut_slice()?[..len])
    }

    /// Queues on `stream` the copy of `len` values from the device memory at `src` into this
    /// buffer.
    ///
    /// # Safety
    /// `src` holds `len` f32 values, and stays allocated until the copy ran: its free must be
    /// ordered after the copy on `stream`.
    pub unsafe fn copy_from_device(
        &mut self,
        stream: &CudaStream,
        src: u64,
        len: usize,
    ) -> CudaResult<()> {
        stream.context().bind_to_thread()?;
        let dst = &mut self.host.as_mut_slice()?[..len];
        flashvsr_tensor::host_stalls::enqueue("memcpy dtoh async", || unsafe {
            result::memcpy_dtoh_async(dst, src, stream.cu_stream())
        })?;
        self.copied.record(stream)?;
        Ok(())
    }

    /// Queues on `stream` the copy of the first `len` values of this buffer to the device memory
    /// at `dst`.
    ///
    /// # Safety
    /// `dst` has room for `len` f32 values, and stays allocated until the copy ran.
    pub unsafe fn copy_to_device(
        &self,
        stream: &CudaStream,
        dst: u64,
        len: usize,
    ) -> CudaResult<()> {
        stream.context().bind_to_thread()?;
        let src = &self.host.as_slice()?[..len];
        flashvsr_tensor::host_stalls::enqueue("memcpy htod async", || unsafe {
            result::memcpy_htod_async(dst, src, stream.cu_stream())
        })?;
        self.copied.record(stream)?;
        Ok(())
    }
}

pub(crate) struct PinnedPool {
    ctx: Arc<CudaContext>,
    /// `cuMemHostAlloc` flags of new buffers.
    flags: u32,
    /// Idle buffers kept at most.
    keep: usize,
    /// The longest idle first.
    idle: Mutex<VecDeque<PinnedBuffer>>,
    /// Set once pinning host memory failed: the backend then copies synchronously, as it would
    /// without the pool, instead of failing the run (or trying again on every copy).
    unavailable: AtomicBool,
}

impl PinnedPool {
    /// Buffers the host reads (downloads).
    pub fn for_downloads(ctx: &Arc<CudaContext>, keep: usize) -> Arc<PinnedPool> {
        PinnedPool::new(ctx, 0, keep)
    }

    /// Buffers the host only writes (upload staging): write-combined, which the device reads
    /// faster; `FLASHVSR_CUDA_UPLOAD_WC=0` makes them ordinary pinned memory (for measurements:
    /// at 1920×1080 the host's copies took as long either way, PERF_NOTES.md session 13).
    pub fn for_uploads(ctx: &Arc<CudaContext>, keep: usize) -> Arc<PinnedPool> {
        let wc = std::env::var("FLASHVSR_CUDA_UPLOAD_WC").map_or(true, |v| v != "0");
        let flags = if wc {
            sys::CU_MEMHOSTALLOC_WRITECOMBINED
        } else {
            0
        };
        PinnedPool::new(ctx, flags, keep)
    }

    fn new(ctx: &Arc<CudaContext>, flags: u32, keep: usize) -> Arc<PinnedPool> {
        Arc::new(PinnedPool {
            ctx: ctx.clone(),
            flags,
            keep: keep.max(1),
            idle: Mutex::new(VecDeque::new()),
            unavailable: AtomicBool::new(false),
        })
    }

    /// A buffer of at least `len` values, back in the pool when dropped: an idle one whose last
    /// copy completed; with the pool full, the longest idle one that fits (its values wait for its
    /// copy); else a new one.
    /// [`take`](PinnedPool::take), or None when host memory cannot be pinned (said once).
    pub fn try_take(self: &Arc<Self>, len: usize) -> Option<LentBuffer> {
        if self.unavailable.load(Ordering::Relaxed) {
            return None;
        }
        match self.take(len) {
            Ok(buffer) => Some(buffer),
            Err(e) => {
                if !self.unavailable.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "flashvsr: cannot pin {} MiB of host memory ({e}); copies to and from \
                         the GPU wait for it from now on",
                        (len * 4) >> 20
                    );
                }
                None
            }
        }
    }

    fn take(self: &Arc<Self>, len: usize) -> CudaResult<LentBuffer> {
        let reused = {
            let mut idle = self.lock();
            let fits = |b: &PinnedBuffer| b.capacity() >= len;
            let pick = idle
                .iter()
                .position(|b| fits(b) && b.copy_completed())
                .or_else(|| {
                    (idle.len() >= self.keep)
                        .then(|| idle.iter().position(fits))
                        .flatten()
                });
            pick.and_then(|i| idle.remove(i))
        };
        let buffer = match reused {
            Some(b) => b,
            None => PinnedBuffer::new(&self.ctx, len, self.flags)?,
        };
        Ok(LentBuffer {
            buffer: ManuallyDrop::new(buffer),
            pool: self.clone(),
        })
    }

    fn give_back(&self, buffer: PinnedBuffer) {
        let evicted = {
            let mut idle = self.lock();
            idle.push_back(buffer);
            (idle.len() > self.keep).then(|| idle.pop_front()).flatten()
        };
        // Freed outside the lock: freeing waits for the buffer's copy.
        flashvsr_tensor::host_stalls::timed("pinned free", || drop(evicted));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PinnedBuffer>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer taken from a [`PinnedPool`], given back when dropped (a copy still in flight is fine:
/// the next user's `values` waits for it).
pub(crate) struct LentBuffer {
    buffer: ManuallyDrop<PinnedBuffer>,
    pool: Arc<PinnedPool>,
}

impl Deref for LentBuffer {
    type Target = PinnedBuffer;

    fn deref(&self) -> &PinnedBuffer {
        &self.buffer
    }
}

impl DerefMut for LentBuffer {
    fn deref_mut(&mut self) -> &mut PinnedBuffer {
        &mut self.buffer
    }
}

impl Drop for LentBuffer {
    fn drop(&mut self) {
        // SAFETY: `buffer` is not touched again after this.
        let buffer = unsafe { ManuallyDrop::take(&mut self.buffer) };
        self.pool.give_back(buffer);
    }
}

/// The values of a completed download, read in place: the buffer stays lent until they are
/// dropped (the frames of a decoded piece read their planes from it).
pub(crate) struct DownloadedValues {
    /// Owns the memory `values` points into; never written while lent here.
    _buffer: LentBuffer,
    values: *const f32,
    len: usize,
}

// SAFETY: `values` points into the pinned buffer this owns, which nothing writes while it is lent
// here: shared reads from any thread are fine.
unsafe impl Send for DownloadedValues {}
unsafe impl Sync for DownloadedValues {}

impl DownloadedValues {
    /// Waits for the buffer's last copy, whose first `len` values are then readable.
    pub fn wait(mut buffer: LentBuffer, len: usize) -> CudaResult<DownloadedValues> {
        let values = buffer.values(len)?.as_ptr();
        Ok(DownloadedValues {
            _buffer: buffer,
            values,
            len,
        })
    }
}

impl AsRef<[f32]> for DownloadedValues {
    fn as_ref(&self) -> &[f32] {
        // SAFETY: `values` holds `len` values (taken from a slice of that length in `wait`), in
        // the pinned memory `_buffer` keeps, which no copy writes while it is lent here.
        unsafe { std::slice::from_raw_parts(self.values, self.len) }
    }
}

//! A memory pool with a maximum size, made the device's current pool so that every stream-ordered
//! allocation of this process comes from it (`--max-vram`).

use cudarc::driver::sys;

use crate::context::Gpu;
use crate::error::{CudaError, CudaResult};

/// Allocations the libraries make outside the pool (cuBLASLt/cuDNN internals, module loads of
/// later kernels) are kept out of the pool's share.
const OUTSIDE_POOL_HEADROOM: u64 = 256 << 20;
/// The driver maps pool memory in 2 MiB pages.
const GRANULARITY: u64 = 2 << 20;

pub(crate) struct CappedPool {
    pool: sys::CUmemoryPool,
    device: sys::CUdevice,
    max_bytes: u64,
}

// SAFETY: a driver handle; the driver's pool calls are thread-safe.
unsafe impl Send for CappedPool {}
unsafe impl Sync for CappedPool {}

impl CappedPool {
    /// Caps this process's device memory at `limit` bytes in all: the memory already in use (the
    /// context, kernels, library workspaces) and a headroom are subtracted, the rest is the pool.
    pub fn install(gpu: &Gpu, limit: u64) -> CudaResult<CappedPool> {
        gpu.ctx.bind_to_thread()?;
        let (free, total) = cudarc::driver::result::mem_get_info()?;
        let used = (total - free) as u64;
        let max_bytes = limit
            .checked_sub(used + OUTSIDE_POOL_HEADROOM)
            .map(|b| b / GRANULARITY * GRANULARITY)
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                CudaError::Input(format!(
                    "a memory limit of {} MiB leaves nothing for tensors: the CUDA context and \
                     libraries already use {} MiB",
                    limit >> 20,
                    used >> 20
                ))
            })?;
        let mut device = 0;
        let mut pool = std::ptr::null_mut();
        unsafe {
            sys::cuCtxGetDevice(&mut device).result()?;
            let mut props: sys::CUmemPoolProps = std::mem::zeroed();
            props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
            props.handleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
            props.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
            props.location.id = device;
            props.maxSize = max_bytes as usize;
            sys::cuMemPoolCreate(&mut pool, &props).result()?;
            if let Err(e) = sys::cuDeviceSetMemPool(device, pool).result() {
                sys::cuMemPoolDestroy(pool);
                return Err(e.into());
            }
        }
        Ok(CappedPool {
            pool,
            device,
            max_bytes,
        })
    }

    /// The most the pool hands out, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Returns the pool's unused memory to the driver.
    pub fn trim(&self) -> CudaResult<()> {
        unsafe { sys::cuMemPoolTrimTo(self.pool, 0) }.result()?;
        Ok(())
    }
}

impl Drop for CappedPool {
    fn drop(&mut self) {
        // Back to the default pool; outstanding allocations keep ours alive until freed.
        unsafe {
            let mut default = std::ptr::null_mut();
            if sys::cuDeviceGetDefaultMemPool(&mut default, self.device)
                .result()
                .is_ok()
            {
                let _ = sys::cuDeviceSetMemPool(self.device, default).result();
            }
            sys::cuMemPoolDestroy(self.pool);
        }
    }
}

/// The high-water marks of the device's current memory pool (ours under a limit, else the
/// driver's default pool): `(reserved, used)` bytes. Reserved beyond used is the pool's
/// fragmentation and cache.
pub(crate) fn current_pool_high_water(gpu: &Gpu) -> CudaResult<(u64, u64)> {
    gpu.ctx.bind_to_thread()?;
    let mut device = 0;
    let mut pool = std::ptr::null_mut();
    unsafe {
        sys::cuCtxGetDevice(&mut device).result()?;
        sys::cuDeviceGetMemPool(&mut pool, device).result()?;
    }
    pool_high_water(pool)
}

/// Returns the unused memory of the device's current pool to the driver.
pub(crate) fn trim_current_pool(gpu: &Gpu) -> CudaResult<()> {
    gpu.ctx.bind_to_thread()?;
    let mut device = 0;
    let mut pool = std::ptr::null_mut();
    unsafe {
        sys::cuCtxGetDevice(&mut device).result()?;
        sys::cuDeviceGetMemPool(&mut pool, device).result()?;
        sys::cuMemPoolTrimTo(pool, 0).result()?;
    }
    Ok(())
}

/// Lets the device's current pool keep up to `bytes` of freed memory across synchronisations
/// (the driver's default, 0, hands every free byte back at each stream, event or context
/// synchronisation, and the next allocations map it again).
pub(crate) fn set_current_pool_release_threshold(gpu: &Gpu, bytes: u64) -> CudaResult<()> {
    let mut keep = bytes;
    // SAFETY: the attribute takes a u64.
    unsafe {
        set_current_pool_attribute(
            gpu,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        )
    }
}

/// Stops the device's default pool from reusing memory freed on one stream for another stream's
/// allocation by making the second wait for the first: with a sibling backend
/// ([`crate::CudaBackend::sibling`]) such waits would tie the two streams' work together. Reuse
/// of frees already complete stays allowed.
pub(crate) fn set_current_pool_cross_stream_waits(gpu: &Gpu, allowed: bool) -> CudaResult<()> {
    let mut value: i32 = allowed.into();
    // SAFETY: the attribute takes an int.
    unsafe {
        set_current_pool_attribute(
            gpu,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES,
            (&mut value as *mut i32).cast(),
        )
    }
}

/// Sets `attribute` of the default pool of `gpu`'s device.
///
/// # Safety
/// `value` points to a value of the type the attribute takes.
unsafe fn set_current_pool_attribute(
    gpu: &Gpu,
    attribute: sys::CUmemPool_attribute,
    value: *mut std::ffi::c_void,
) -> CudaResult<()> {
    gpu.ctx.bind_to_thread()?;
    let mut device = 0;
    let mut pool = std::ptr::null_mut();
    unsafe {
        sys::cuCtxGetDevice(&mut device).result()?;
        sys::cuDeviceGetMemPool(&mut pool, device).result()?;
        sys::cuMemPoolSetAttribute(pool, attribute, value).result()?;
    }
    Ok(())
}

fn pool_high_water(pool: sys::CUmemoryPool) -> CudaResult<(u64, u64)> {
    let (mut reserved, mut used) = (0u64, 0u64);
    unsafe {
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            (&mut reserved as *mut u64).cast(),
        )
        .result()?;
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            (&mut used as *mut u64).cast(),
        )
        .result()?;
    }
    Ok((reserved, used))
}

/// A pool for tensors that live across chunks (weights, the KV cache's groups, queued uploads),
/// so that they do not sit between each chunk's short-lived tensors. Freed memory stays in this
/// pool for the next chunk's groups, which come in a few sizes.
pub(crate) struct KeptPool {
    pool: sys::CUmemoryPool,
}

// SAFETY: a driver handle; the driver's pool calls are thread-safe.
unsafe impl Send for KeptPool {}
unsafe impl Sync for KeptPool {}

impl KeptPool {
    pub fn create(gpu: &Gpu) -> CudaResult<KeptPool> {
        gpu.ctx.bind_to_thread()?;
        let mut pool = std::ptr::null_mut();
        unsafe {
            let mut device = 0;
            sys::cuCtxGetDevice(&mut device).result()?;
            let mut props: sys::CUmemPoolProps = std::mem::zeroed();
            props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
            props.handleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
            props.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
            props.location.id = device;
            sys::cuMemPoolCreate(&mut pool, &props).result()?;
            let mut keep = u64::MAX;
            if let Err(e) = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep as *mut u64).cast(),
            )
            .result()
            {
                sys::cuMemPoolDestroy(pool);
                return Err(e.into());
            }
        }
        Ok(KeptPool { pool })
    }

    /// Room for `len` values of `T` from this pool, ordered on `stream`, uninitialised; freed
    /// like any stream allocation.
    pub fn alloc<T>(
        &self,
        stream: &std::sync::Arc<cudarc::driver::CudaStream>,
        len: usize,
    ) -> CudaResult<cudarc::driver::CudaSlice<T>> {
        stream.context().bind_to_thread()?;
        let mut ptr = 0;
        let bytes = len.max(1) * std::mem::size_of::<T>();
        unsafe {
            sys::cuMemAllocFromPoolAsync(&mut ptr, bytes, self.pool, stream.cu_stream())
                .result()?;
            // SAFETY: a live allocation of `len` values; its drop frees it on `stream`.
            Ok(stream.upgrade_device_ptr(ptr, len))
        }
    }

    /// The pool's high-water marks, `(reserved, used)` bytes.
    pub fn high_water(&self) -> CudaResult<(u64, u64)> {
        pool_high_water(self.pool)
    }
}

impl Drop for KeptPool {
    fn drop(&mut self) {
        // Outstanding allocations keep the pool's memory until they are freed.
        unsafe {
            sys::cuMemPoolDestroy(self.pool);
        }
    }
}

/// `FLASHVSR_CUDA_POOL_TRACE=1`: a line on stderr each time the default pool's reserved memory
/// passes its previous maximum by 64 MiB or more, with the op that allocated; for finding what
/// makes the pool reserve more than it uses.
pub(crate) struct PoolTrace {
    pool: sys::CUmemoryPool,
    reported: std::sync::atomic::AtomicU64,
}

// SAFETY: a driver handle; the driver's pool calls are thread-safe.
unsafe impl Send for PoolTrace {}
unsafe impl Sync for PoolTrace {}

impl PoolTrace {
    pub fn from_env(gpu: &Gpu) -> Option<PoolTrace> {
        if !std::env::var("FLASHVSR_CUDA_POOL_TRACE").is_ok_and(|v| v == "1") {
            return None;
        }
        let mut device = 0;
        let mut pool = std::ptr::null_mut();
        unsafe {
            gpu.ctx.bind_to_thread().ok()?;
            sys::cuCtxGetDevice(&mut device).result().ok()?;
            sys::cuDeviceGetMemPool(&mut pool, device).result().ok()?;
        }
        Some(PoolTrace {
            pool,
            reported: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn after_alloc(&self, op: &str, bytes: usize) {
        let read = |attr| {
            let mut v = 0u64;
            unsafe { sys::cuMemPoolGetAttribute(self.pool, attr, (&mut v as *mut u64).cast()) };
            v
        };
        let reserved = read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
        let last = self.reported.load(std::sync::atomic::Ordering::Relaxed);
        if reserved >= last + (64 << 20) {
            self.reported
                .store(reserved, std::sync::atomic::Ordering::Relaxed);
            let used = read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
            eprintln!(
                "pool trace: reserved {} MiB, used {} MiB, after {} MiB for {op}",
                reserved >> 20,
                used >> 20,
                bytes >> 20
            );
        }
    }
}

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
    let (mut reserved, mut used) = (0u64, 0u64);
    unsafe {
        sys::cuCtxGetDevice(&mut device).result()?;
        sys::cuDeviceGetMemPool(&mut pool, device).result()?;
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

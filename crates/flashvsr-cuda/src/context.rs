//! One CUDA context and one non-default stream (graph capture needs a non-default stream).

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream};

use crate::error::{CudaError, CudaResult};

pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub cc: (i32, i32),
    pub sm_count: u32,
    /// L2 cache bytes (0 where the driver does not say).
    pub l2_bytes: usize,
}

/// The driver's CUDA version, e.g. 13000. Needs a present libcuda.
pub(crate) fn driver_version() -> CudaResult<i32> {
    let mut v = 0;
    unsafe { sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok(v)
}

pub(crate) fn driver_present() -> bool {
    crate::error::catch(|| Ok(unsafe { sys::is_culib_present() })).unwrap_or(false)
}

impl Gpu {
    /// The same device and context with a stream of its own.
    pub fn with_new_stream(&self) -> CudaResult<Gpu> {
        Ok(Gpu {
            ctx: self.ctx.clone(),
            stream: self.ctx.new_stream()?,
            name: self.name.clone(),
            cc: self.cc,
            sm_count: self.sm_count,
            l2_bytes: self.l2_bytes,
        })
    }

    pub fn open(ordinal: usize) -> CudaResult<Gpu> {
        if !driver_present() {
            return Err(CudaError::Library(
                "libcuda.so.1 not found: no NVIDIA driver".into(),
            ));
        }
        cudarc::driver::result::init()?;
        let count = CudaContext::device_count()? as usize;
        if ordinal >= count {
            return Err(CudaError::Input(format!(
                "cuda:{ordinal} requested, {count} device(s) present"
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: done before any allocation of this context. Everything runs on one stream, so
        // cudarc's per-slice events would only cost time and break graph capture.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            as u32;
        let l2_bytes = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
            .map_or(0, |b| b.max(0) as usize);
        Ok(Gpu {
            name: ctx.name()?,
            cc: ctx.compute_capability()?,
            sm_count,
            l2_bytes,
            ctx,
            stream,
        })
    }
}

//! Kernel launches through `cuLaunchKernel` with an owned argument array: every value lives in its
//! own heap slot until the launch returns, so no argument can dangle (cudarc's builder keeps raw
//! pointers to the caller's locals).

use std::ffi::c_void;

use cudarc::driver::{result, CudaFunction, CudaStream, DeviceRepr, LaunchConfig};

use crate::error::CudaResult;

#[derive(Default)]
pub(crate) struct KernelArgs {
    slots: Vec<Box<[u64]>>,
}

impl KernelArgs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one kernel parameter. `T` must match the kernel's parameter type exactly
    /// (u64 for `u64`, i32 for `int`, f32 for `float`, a `#[repr(C)]` mirror for a struct).
    pub fn push<T: DeviceRepr + Copy>(mut self, value: T) -> Self {
        assert!(
            std::mem::align_of::<T>() <= 8,
            "kernel argument over-aligned"
        );
        let words = std::mem::size_of::<T>().div_ceil(8).max(1);
        let mut slot = vec![0u64; words].into_boxed_slice();
        // SAFETY: the slot is at least size_of::<T>() bytes and 8-byte aligned.
        unsafe { std::ptr::write(slot.as_mut_ptr().cast::<T>(), value) };
        self.slots.push(slot);
        self
    }
}

/// Threads per block of the grid-stride kernels.
pub(crate) const BLOCK: u32 = 256;

/// A 1-D grid for `n` elements, capped at `max_blocks` (the kernels loop over the rest).
pub(crate) fn grid_1d(n: u64, max_blocks: u32) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as u64).clamp(1, max_blocks as u64) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn launch(
    stream: &CudaStream,
    f: &CudaFunction,
    cfg: LaunchConfig,
    mut args: KernelArgs,
) -> CudaResult<()> {
    stream.context().bind_to_thread()?;
    let mut params: Vec<*mut c_void> = args
        .slots
        .iter_mut()
        .map(|s| s.as_mut_ptr().cast::<c_void>())
        .collect();
    // SAFETY: `params` points at owned slots alive until this call returns (cuLaunchKernel copies
    // them); callers pass the parameter list each kernel's signature declares.
    flashvsr_tensor::host_stalls::enqueue("cuLaunchKernel", || unsafe {
        result::launch_kernel(
            f.cu_function(),
            cfg.grid_dim,
            cfg.block_dim,
            cfg.shared_mem_bytes,
            stream.cu_stream(),
            &mut params,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_capped_and_never_empty() {
        assert_eq!(grid_1d(0, 100).grid_dim.0, 1);
        assert_eq!(grid_1d(257, 100).grid_dim.0, 2);
        assert_eq!(grid_1d(1 << 40, 100).grid_dim.0, 100);
    }

    #[test]
    fn arguments_keep_their_bytes() {
        let args = KernelArgs::new().push(7i32).push(1.5f32).push(u64::MAX);
        assert_eq!(args.slots.len(), 3);
        assert_eq!(args.slots[0][0] as u32, 7);
        assert_eq!(f32::from_bits(args.slots[1][0] as u32), 1.5);
        assert_eq!(args.slots[2][0], u64::MAX);
    }
}

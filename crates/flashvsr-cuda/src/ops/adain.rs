//! The AdaIN colour fix on the device (adain.cu): the statistics of every plane of the frames and
//! of their references, then one elementwise pass.

use cudarc::driver::LaunchConfig;
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::{raw_ptr, CudaBuffer};
use crate::error::CudaResult;
use crate::launch::{KernelArgs, BLOCK};

impl CudaBackend {
    pub(crate) fn op_adain(&self, x: &Tensor, reference: &Tensor) -> CudaResult<CudaBuffer> {
        let n = x.elem_count();
        let out = self.output(n)?;
        let plane: usize = x.shape()[x.rank() - 2..].iter().product();
        if n == 0 || plane == 0 {
            return Ok(out);
        }
        let planes = n / plane;
        // SAFETY: every (mean, std) pair is written by the statistics kernel before it is read.
        let stats = unsafe { self.gpu.stream.alloc::<f32>(4 * 2 * planes) }?;
        let (x_stats, r_stats) = (raw_ptr(&stats), raw_ptr(&stats) + (16 * planes) as u64);
        let per_plane = LaunchConfig {
            grid_dim: (planes as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        for (source, stats) in [(self.ptr(x)?, x_stats), (self.ptr(reference)?, r_stats)] {
            let args = KernelArgs::new()
                .push(source)
                .push(stats)
                .push(plane as u64);
            self.launch("plane_mean_std_f32", per_plane, args)?;
        }
        let args = KernelArgs::new()
            .push(self.ptr(x)?)
            .push(x_stats)
            .push(r_stats)
            .push(out.ptr())
            .push(plane as u64)
            .push(n as u64);
        self.launch("adain_apply_f32", self.grid(n as u64), args)?;
        Ok(out)
    }
}

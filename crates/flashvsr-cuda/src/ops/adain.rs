//! The AdaIN colour fix on the device (adain.cu): the statistics of every plane of the frames and
//! of their references (two passes, each split over many CTAs per plane), then one elementwise
//! pass.

use cudarc::driver::LaunchConfig;
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::{raw_ptr, CudaBuffer};
use crate::error::{CudaError, CudaResult};
use crate::launch::{KernelArgs, BLOCK};

/// CTAs per plane (`ADAIN_PARTS` in adain.cu).
const PARTS: usize = 64;

impl CudaBackend {
    pub(crate) fn op_adain(&self, x: &Tensor, reference: &Tensor) -> CudaResult<CudaBuffer> {
        let n = x.elem_count();
        let out = self.output(n)?;
        let plane: usize = x.shape()[x.rank() - 2..].iter().product();
        if n == 0 || plane == 0 {
            return Ok(out);
        }
        let planes = n / plane;
        if planes > u16::MAX as usize {
            return Err(CudaError::Unsupported(format!(
                "AdaIN over {planes} planes"
            )));
        }
        // f64 words as pairs of f32 words: (mean, std) per plane for x and the reference, and
        // the partial sums of one pass.
        // SAFETY: every value is written by a kernel before another reads it.
        let scratch = unsafe { self.alloc_block::<f32>(2 * (4 * planes + PARTS * planes)) }?;
        let base = raw_ptr(&scratch);
        let (x_stats, r_stats) = (base, base + (16 * planes) as u64);
        let partial = base + (32 * planes) as u64;
        for (source, stats) in [(self.ptr(x)?, x_stats), (self.ptr(reference)?, r_stats)] {
            self.plane_stats(source, stats, partial, plane, planes)?;
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

    /// `(mean, √(var + 1e-5))` of each plane of `source` into `stats`: the sums, then the
    /// squared deviations from the mean, each over PARTS slices added in order.
    fn plane_stats(
        &self,
        source: u64,
        stats: u64,
        partial: u64,
        plane: usize,
        planes: usize,
    ) -> CudaResult<()> {
        let parts = LaunchConfig {
            grid_dim: (PARTS as u32, planes as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        for (deviation, means) in [(0i32, 0u64), (1, stats)] {
            let args = KernelArgs::new()
                .push(source)
                .push(means)
                .push(partial)
                .push(plane as u64);
            self.launch("plane_partial_sums_f32", parts, args)?;
            let args = KernelArgs::new()
                .push(partial)
                .push(stats)
                .push(plane as u64)
                .push(planes as u64)
                .push(deviation);
            self.launch("plane_stats_finish", self.grid(planes as u64), args)?;
        }
        Ok(())
    }
}

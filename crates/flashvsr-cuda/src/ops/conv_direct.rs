//! A 3×3 frame convolution with 3 output channels, zero padding 1, from a channels-last bf16
//! input (fast mode) straight to f32 row-major (conv_direct.cu): the TCDecoder's last conv. On
//! cuDNN it costs 0.45 ms a 1408×768 frame (128 → 3 channels, the outputs padded to 8, then
//! unstaged) for 7.5 GFLOP and 264 MiB of input: a memory-bound shape for a tensor-core kernel.
//! An experiment, off by default (`FLASHVSR_CUDA_DIRECT_CONV3=1` turns it on): this kernel took
//! 0.61 ms on an H100 (PERF_NOTES.md), most likely for staging the weights per 64-position
//! block with 64-bit index divisions.

use std::sync::atomic::Ordering;

use cudarc::driver::LaunchConfig;
use flashvsr_tensor::{PadMode, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::launch::KernelArgs;

/// D3_THREADS, D3_RUN and D3_RUNS of conv_direct.cu: a block computes 64 positions of a row.
const THREADS: u32 = 256;
const BLOCK_POSITIONS: usize = 64;
/// The weights in shared memory, 27 floats an input channel.
const MAX_WEIGHT_BYTES: usize = 48 << 10;
// The TCDecoder's 128 channels fit, and at most 455 (the kernel's 32-bit weight indices).
const _: () = assert!(27 * 128 * 4 <= MAX_WEIGHT_BYTES && 27 * 456 * 4 > MAX_WEIGHT_BYTES);
/// Grid y (rows) and z (frames).
const MAX_GRID_YZ: usize = 65_535;

impl CudaBackend {
    /// `conv3d(x, w, b, 1, 1, Zero)` (then ReLU when `relu`) for `w (3, C, 1, 3, 3)` and a
    /// channels-last `x`; None (nothing enqueued) where this path does not apply.
    pub(crate) fn try_conv3x3_to_three(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        (stride_t, pad, mode): (usize, usize, PadMode),
        relu: bool,
    ) -> CudaResult<Option<CudaBuffer>> {
        let applies = self.options().conv_direct_three
            && w.shape() == [3, x.dim(0), 1, 3, 3]
            && (stride_t, pad, mode) == (1, 1, PadMode::Zero);
        if !applies {
            return Ok(None);
        }
        let Some((src, g)) = self.channels_last_view(x)? else {
            return Ok(None);
        };
        let weight_bytes = 27 * g.c * 4;
        if weight_bytes > MAX_WEIGHT_BYTES || g.h > MAX_GRID_YZ || g.t > MAX_GRID_YZ {
            return Ok(None);
        }
        let out = self.output(3 * g.elems() / g.c)?;
        if g.elems() == 0 {
            return Ok(Some(out));
        }
        let cfg = LaunchConfig {
            grid_dim: (g.w.div_ceil(BLOCK_POSITIONS) as u32, g.h as u32, g.t as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: weight_bytes as u32,
        };
        let args = KernelArgs::new()
            .push(src)
            .push(self.ptr(w)?)
            .push(self.opt_ptr(b)?)
            .push(out.ptr())
            .push(g.t as u64)
            .push(g.h as u64)
            .push(g.w as u64)
            .push((g.c / 8) as u64)
            .push(relu as i32);
        self.launch("conv3x3_cl_to_three_f32", cfg, args)?;
        self.direct_convs.fetch_add(1, Ordering::Relaxed);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_constants_match_the_source() {
        let src = include_str!("../kernels/conv_direct.cu");
        assert!(src.contains(&format!("#define D3_THREADS {THREADS}\n")));
        assert!(src.contains("#define D3_RUN 4\n"));
        assert!(src.contains("#define D3_LANES 16\n"));
        assert_eq!(THREADS as usize / 16 * 4, BLOCK_POSITIONS);
    }
}

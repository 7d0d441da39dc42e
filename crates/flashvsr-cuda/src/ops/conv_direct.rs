//! A 3×3 frame convolution with 3 output channels, zero padding 1, from a channels-last bf16
//! input (fast mode) straight to f32 row-major (conv_direct.cu): the TCDecoder's last conv. On
//! cuDNN it costs 0.424 ms a 1408×768 frame on an H100 (128 → 3 channels, the outputs padded to
//! 8, then unstaged) for 7.5 GFLOP and 264 MiB of input. Two kernels, 8 warps a block, each
//! walking its input rows once for their 3 vertical taps: on tensor cores (mma.m16n8k16, bf16
//! weights; the default where the channels come in chunks of 32) 0.195 ms, with f32 FMAs and
//! f32 weights (`FLASHVSR_CUDA_DIRECT_CONV3=fma`) 0.308 ms (PERF_NOTES.md, helper h20);
//! `FLASHVSR_CUDA_DIRECT_CONV3=0` keeps cuDNN.

use std::sync::atomic::Ordering;

use cudarc::driver::LaunchConfig;
use flashvsr_tensor::{PadMode, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::launch::KernelArgs;

/// D3_THREADS, D3_RUN, D3_RUNS and D3_ROWS of conv_direct.cu: a block computes 64 positions of
/// 16 rows.
const THREADS: u32 = 256;
const BLOCK_POSITIONS: usize = 64;
const BLOCK_ROWS: usize = 16;
/// D3_GROUP_STRIDE of conv_direct.cu: floats of shared memory per tap and group of 8 input
/// channels (24 weights, padded against bank conflicts).
const GROUP_STRIDE: usize = 28;
/// The weights in shared memory, 9 · GROUP_STRIDE floats a group of 8 input channels.
const MAX_WEIGHT_BYTES: usize = 48 << 10;
/// Shared memory for the weights of `c` input channels (a multiple of 8).
const fn weight_bytes(c: usize) -> usize {
    9 * (c / 8) * GROUP_STRIDE * 4
}
/// The tensor-core kernel (D3M_WARPS · 16 positions of D3M_ROWS rows a block): its B fragments
/// take 16 bytes a lane, 32 lanes, 9 taps and C / 32 chunks of channels.
const MMA_BLOCK_POSITIONS: usize = 8 * 16;
const MMA_BLOCK_ROWS: usize = 16;
/// D3M_ROWS_C128: the rows a block of the 128-channel tensor-core kernel computes.
const MMA_C128_BLOCK_ROWS: usize = 32;
/// `FLASHVSR_CUDA_DIRECT_CONV3_C128=0`: 128 channels on the generic tensor-core kernel (read per
/// call, for A/B measurements in one process).
const ENV_C128: &str = "FLASHVSR_CUDA_DIRECT_CONV3_C128";
const fn mma_weight_bytes(c: usize) -> usize {
    9 * (c / 32) * 32 * 16
}
// The TCDecoder's 128 channels fit (and at most 384).
const _: () =
    assert!(weight_bytes(128) <= MAX_WEIGHT_BYTES && weight_bytes(392) > MAX_WEIGHT_BYTES);
/// Grid z (frames).
const MAX_GRID_Z: usize = 65_535;

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
        // The kernels' row and position indices are 32-bit (their channel-group offsets 64-bit).
        let fits_u32 = |n: usize| u32::try_from(n).is_ok();
        if g.t > MAX_GRID_Z || !fits_u32(g.t * g.h) || !fits_u32(g.w + MMA_BLOCK_POSITIONS) {
            return Ok(None);
        }
        // Tensor cores where asked for and the channels come in whole 32-channel chunks.
        let mma = self.options().conv_direct_three_mma
            && g.c.is_multiple_of(32)
            && mma_weight_bytes(g.c) <= MAX_WEIGHT_BYTES;
        // The 128-channel kernel: all of a row's loads in flight at once (the same sums).
        let c128 = mma && g.c == 128 && std::env::var(ENV_C128).map_or(true, |v| v != "0");
        let (kernel, positions, rows, weight_bytes) = if c128 {
            let bytes = mma_weight_bytes(g.c);
            let name = "conv3x3_cl_to_three_mma_c128";
            (name, MMA_BLOCK_POSITIONS, MMA_C128_BLOCK_ROWS, bytes)
        } else if mma {
            let bytes = mma_weight_bytes(g.c);
            let name = "conv3x3_cl_to_three_mma";
            (name, MMA_BLOCK_POSITIONS, MMA_BLOCK_ROWS, bytes)
        } else {
            let name = "conv3x3_cl_to_three_f32";
            (name, BLOCK_POSITIONS, BLOCK_ROWS, weight_bytes(g.c))
        };
        if weight_bytes > MAX_WEIGHT_BYTES {
            return Ok(None);
        }
        let out = self.output(3 * g.elems() / g.c)?;
        if g.elems() == 0 {
            return Ok(Some(out));
        }
        let cfg = LaunchConfig {
            grid_dim: (
                g.w.div_ceil(positions) as u32,
                g.h.div_ceil(rows) as u32,
                g.t as u32,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: weight_bytes as u32,
        };
        let args = KernelArgs::new()
            .push(src)
            .push(self.ptr(w)?)
            .push(self.opt_ptr(b)?)
            .push(out.ptr())
            .push(g.t as u32)
            .push(g.h as u32)
            .push(g.w as u32);
        // The 128-channel kernel has its channel count built in.
        let args = if c128 {
            args
        } else {
            args.push((g.c / 8) as u32)
        };
        let args = args.push(relu as i32);
        self.launch(kernel, cfg, args)?;
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
        assert!(src.contains(&format!("#define D3_ROWS {BLOCK_ROWS}\n")));
        assert!(src.contains(&format!("#define D3_GROUP_STRIDE {GROUP_STRIDE}\n")));
        assert!(src.contains("#define D3M_WARPS 8\n"));
        assert!(src.contains(&format!("#define D3M_ROWS {MMA_BLOCK_ROWS}\n")));
        assert!(src.contains(&format!("#define D3M_ROWS_C128 {MMA_C128_BLOCK_ROWS}\n")));
        assert_eq!(MMA_BLOCK_POSITIONS, 8 * 16);
        assert_eq!(THREADS, 8 * 32, "both kernels run 8 warps a block");
        assert_eq!(THREADS as usize / 16 * 4, BLOCK_POSITIONS);
    }
}

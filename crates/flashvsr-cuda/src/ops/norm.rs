use cudarc::driver::LaunchConfig;
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

/// One block per row: enough warps to cover the row once, at most 256 threads.
pub(super) fn row_config(rows: usize, dim: usize) -> CudaResult<LaunchConfig> {
    if rows > i32::MAX as usize || dim > i32::MAX as usize {
        return Err(CudaError::Unsupported(format!("{rows} rows of {dim}")));
    }
    let threads = dim.next_multiple_of(32).clamp(32, 256) as u32;
    Ok(LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Whether layer norms of whole float4 rows take the one-read kernel (`FLASHVSR_CUDA_NORM_VEC4=0`:
/// the row-loop kernel, to compare).
fn vec4_norms() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLASHVSR_CUDA_NORM_VEC4").map_or(true, |v| v != "0"))
}

/// Whether layer norms of rows of 128·k values (k ≤ 16) take the warp-per-row kernel
/// (`FLASHVSR_CUDA_NORM_WARP=0`: the block-per-row kernels, to compare). On an H100 at config A:
/// modulate 0.058 → 0.041 ms a call, layer_norm 0.059 → 0.050 (PERF_NOTES.md, h21).
fn warp_norms() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLASHVSR_CUDA_NORM_WARP").map_or(true, |v| v != "0"))
}

/// `LN_WARP_MAX` and `LN_WARP_ROWS` of norm.cu: float4s per lane at most, rows (warps) per block.
const WARP_NORM_MAX_PER_LANE: usize = 16;
const WARP_NORM_ROWS: usize = 4;

/// `LN_WARP_REGS_MAX` of norm.cu: float4s per lane at most in `layer_norm_warp_regs_f32`.
const WARP_NORM_REGS_MAX_PER_LANE: usize = 12;
/// `ROW_REGS_MAX` of norm.cu: values per thread at most in `rms_norm_regs_f32`.
const ROW_REGS_MAX_PER_THREAD: usize = 6;

/// Whether group means of even rows take the two-outputs-per-thread kernels
/// (`FLASHVSR_CUDA_GROUP_MEAN_PAIRS=0`: one output per thread, to compare; the same bits).
fn group_mean_pairs() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLASHVSR_CUDA_GROUP_MEAN_PAIRS").map_or(true, |v| v != "0"))
}

fn last_dim(x: &Tensor) -> usize {
    x.shape().last().copied().unwrap_or(1)
}

impl CudaBackend {
    /// Layer norm; `modulate = Some((shift, scale))` turns it into DiT modulation. In the fast
    /// mode the result is stored bf16 only: in the DiT it feeds nothing but bf16 GEMMs, and the
    /// f32 values were written for no reader.
    pub(crate) fn op_layer_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        modulate: Option<(&Tensor, &Tensor)>,
        eps: f32,
    ) -> CudaResult<CudaBuffer> {
        let dim = last_dim(x);
        let rows = x.elem_count().checked_div(dim).unwrap_or(0);
        let x_ptr = if rows * dim == 0 { 0 } else { self.ptr(x)? };
        self.layer_norm_rows(x_ptr, rows, dim, weight, bias, modulate, eps)
    }

    /// [`Self::op_layer_norm`] of the `rows` f32 rows of `dim` values at `x` (rows of a larger
    /// buffer: the feed-forward net's passes modulate their rows of the stream in place).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_norm_rows(
        &self,
        x: u64,
        rows: usize,
        dim: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        modulate: Option<(&Tensor, &Tensor)>,
        eps: f32,
    ) -> CudaResult<CudaBuffer> {
        let n = rows * dim;
        let (out, f32_out, bf16_out) = if self.options().compact_bf16 {
            let out = self.output_as(n, Storage::Bf16)?;
            let ptr = out.ptr();
            (out, 0, ptr)
        } else {
            let out = self.output(n)?;
            let ptr = out.ptr();
            (out, ptr, 0)
        };
        if n == 0 {
            return Ok(out);
        }
        let (shift, scale) = modulate.unzip();
        row_config(rows, dim)?; // the same limits on rows and dim for every kernel
        if dim.is_multiple_of(128) && dim / 128 <= WARP_NORM_MAX_PER_LANE && warp_norms() {
            let args = KernelArgs::new()
                .push(x)
                .push(f32_out)
                .push(rows as i32)
                .push(dim as i32)
                .push(eps)
                .push(self.opt_ptr(weight)?)
                .push(self.opt_ptr(bias)?)
                .push(self.opt_ptr(shift)?)
                .push(self.opt_ptr(scale)?)
                .push(bf16_out);
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(WARP_NORM_ROWS) as u32, 1, 1),
                block_dim: (32 * WARP_NORM_ROWS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            if dim / 128 <= WARP_NORM_REGS_MAX_PER_LANE && self.options().row_norm_regs {
                self.launch("layer_norm_warp_regs_f32", cfg, args)?;
            } else {
                self.launch("layer_norm_warp_f32", cfg, args)?;
            }
            return Ok(out);
        }
        let args = KernelArgs::new()
            .push(x)
            .push(f32_out)
            .push(dim as i32)
            .push(eps)
            .push(self.opt_ptr(weight)?)
            .push(self.opt_ptr(bias)?)
            .push(self.opt_ptr(shift)?)
            .push(self.opt_ptr(scale)?)
            .push(bf16_out);
        // Rows of whole float4s (every buffer starts 256-byte aligned) in one block each.
        if dim.is_multiple_of(4) && dim / 4 <= 1024 && vec4_norms() {
            let threads = (dim / 4).next_multiple_of(32) as u32;
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch("layer_norm_vec4_f32", cfg, args)?;
        } else {
            self.launch("layer_norm_f32", row_config(rows, dim)?, args)?;
        }
        Ok(out)
    }

    pub(crate) fn op_rms_norm(
        &self,
        x: &Tensor,
        weight: &Tensor,
        eps: f32,
    ) -> CudaResult<CudaBuffer> {
        let n = x.elem_count();
        let out = self.output(n)?;
        let dim = last_dim(x);
        if n == 0 {
            return Ok(out);
        }
        let rows = n / dim;
        let cfg = row_config(rows, dim)?;
        let regs = dim <= ROW_REGS_MAX_PER_THREAD * cfg.block_dim.0 as usize
            && self.options().row_norm_regs;
        // A bf16-stored input (`linear_compact`) is read as stored where the register form runs.
        if let (true, (x_bf16, Storage::Bf16)) = (regs, self.raw(x)?) {
            let args = KernelArgs::new()
                .push(x_bf16)
                .push(out.ptr())
                .push(dim as i32)
                .push(eps)
                .push(self.ptr(weight)?);
            self.launch("rms_norm_regs_bf16_input", cfg, args)?;
            return Ok(out);
        }
        let args = KernelArgs::new()
            .push(self.ptr(x)?)
            .push(out.ptr())
            .push(dim as i32)
            .push(eps)
            .push(self.ptr(weight)?);
        if regs {
            self.launch("rms_norm_regs_f32", cfg, args)?;
        } else {
            self.launch("rms_norm_f32", cfg, args)?;
        }
        Ok(out)
    }

    /// A channels-last input (the Wan VAE's attention block in the fast mode) stays channels-last
    /// (norm_silu.rs, without the SiLU): the 1×1 conv after it reads it in place. An f32 one
    /// takes the same kernel as the fused norm + SiLU, without the SiLU.
    pub(crate) fn op_channel_rms_norm(&self, x: &Tensor, gamma: &Tensor) -> CudaResult<CudaBuffer> {
        self.op_channel_rms_norm_silu(x, gamma, None, false)
    }

    pub(crate) fn op_group_mean(&self, x: &Tensor) -> CudaResult<CudaBuffer> {
        let (rows, group, dim) = (x.dim(0), x.dim(1), x.dim(2));
        let out = self.output(rows * dim)?;
        let n = (rows * dim) as u64;
        if n == 0 {
            return Ok(out);
        }
        if group == 0 {
            // The mean of no rows: the CPU reference divides 0 by 0.
            self.fill(out.ptr(), rows * dim, f32::NAN)?;
            return Ok(out);
        }
        let (ptr, bf16) = match self.raw(x)? {
            (p, Storage::Bf16) => (p, true),
            (_, Storage::F32) => (self.ptr(x)?, false),
        };
        // Pairs need an even row (so that every pair is aligned) and a block row per grid row.
        if dim.is_multiple_of(2) && rows <= 65_535 && group_mean_pairs() {
            let threads = (dim / 2).next_multiple_of(32).min(256);
            let cfg = LaunchConfig {
                grid_dim: ((dim / 2).div_ceil(threads) as u32, rows as u32, 1),
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let kernel = if bf16 {
                "group_mean_pairs_bf16"
            } else {
                "group_mean_pairs_f32"
            };
            let args = KernelArgs::new()
                .push(ptr)
                .push(out.ptr())
                .push(group as u64)
                .push(dim as u64);
            self.launch(kernel, cfg, args)?;
            return Ok(out);
        }
        let kernel = if bf16 {
            "group_mean_bf16"
        } else {
            "group_mean_f32"
        };
        let args = KernelArgs::new()
            .push(ptr)
            .push(out.ptr())
            .push(rows as u64)
            .push(group as u64)
            .push(dim as u64);
        self.launch(kernel, self.grid(n), args)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ROW_REGS_MAX_PER_THREAD, WARP_NORM_MAX_PER_LANE, WARP_NORM_REGS_MAX_PER_LANE,
        WARP_NORM_ROWS,
    };

    #[test]
    fn warp_norm_constants_match_the_kernel_source() {
        let norm = include_str!("../kernels/norm.cu");
        for (src, file, name, value) in [
            (norm, "norm.cu", "LN_WARP_MAX", WARP_NORM_MAX_PER_LANE),
            (norm, "norm.cu", "LN_WARP_ROWS", WARP_NORM_ROWS),
            (
                norm,
                "norm.cu",
                "LN_WARP_REGS_MAX",
                WARP_NORM_REGS_MAX_PER_LANE,
            ),
            (norm, "norm.cu", "ROW_REGS_MAX", ROW_REGS_MAX_PER_THREAD),
        ] {
            assert!(
                src.contains(&format!("#define {name} {value}\n")),
                "{name} != {value} in {file}"
            );
        }
    }
}

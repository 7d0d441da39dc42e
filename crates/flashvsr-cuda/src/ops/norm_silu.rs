//! The channel RMS norm of the conv nets, fused with the SiLU that follows it in the Wan VAE and
//! with the causal conv's history in front (norm_silu.cu). A channels-last input (fast mode) gives
//! a channels-last output that the conv reads in place; an f32 row-major input gives f32.
//!
//! Bytes per element of the activation x (E elements), against the three ops it replaces (norm,
//! SiLU, cat of the history with the result): f32 norm 4 + 4, SiLU 4 + 4, cat 4 + 4, then the
//! conv's staging to bf16 4 + 2 = 30 bytes; channels-last bf16 here: 2 + 2 = 4 bytes (the 2
//! history frames aside).

use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::{ChannelsLast, CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

/// NS_THREADS and NS_LANES of norm_silu.cu: 32 positions a block at most.
const THREADS: u32 = 256;
const MAX_POSITIONS: usize = 32;
/// CRN_POSITIONS and CRN_LANES of norm_silu.cu: the f32 kernel's block is 32 positions × 16
/// warps, each warp summing every 16th channel.
const F32_POSITIONS: usize = 32;
const F32_LANES: usize = 16;
/// The f32 kernel loops over the positions beyond this many blocks.
const MAX_F32_BLOCKS: usize = 1 << 20;
/// A block's staged positions take at most this much shared memory.
const TILE_BYTES: usize = 48 << 10;

/// Positions a block stages for `channels` channels of bf16 (0: too wide for one tile).
fn positions_per_block(channels: usize) -> usize {
    (TILE_BYTES / (channels * 2).max(1)).min(MAX_POSITIONS)
}

impl CudaBackend {
    /// `cat([prefix, act(channel_rms_norm(x, gamma))], 1)` with `act` SiLU when `silu`; `x` of
    /// rank ≥ 2 (channels, frames, …), `prefix` shaped like it but for dim 1 (shapes checked by
    /// the tensor crate).
    pub(crate) fn op_channel_rms_norm_silu(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        prefix: Option<&Tensor>,
        silu: bool,
    ) -> CudaResult<CudaBuffer> {
        let c = x.dim(0);
        let t = if x.rank() > 1 { x.dim(1) } else { 1 };
        let tp = prefix.map_or(0, |p| p.dim(1));
        let frame = x.elem_count() / (c * t).max(1);
        if let Some((src, g)) = self.channels_last_view(x)? {
            if positions_per_block(g.c) > 0 {
                return self.norm_silu_channels_last(src, g, gamma, prefix, silu);
            }
        }
        let out = self.output(c * (tp + t) * frame)?;
        if out_len(&out) == 0 {
            return Ok(out);
        }
        let stride = (tp + t) * frame;
        if let Some(p) = prefix.filter(|_| tp > 0) {
            self.copy_blocks(
                Storage::F32,
                self.ptr(p)?,
                out.ptr(),
                c,
                tp * frame,
                (tp * frame, 0),
                (stride, 0),
            )?;
        }
        let n = t * frame;
        if n == 0 {
            return Ok(out);
        }
        let args = KernelArgs::new()
            .push(self.ptr(x)?)
            .push(self.ptr(gamma)?)
            .push(out.ptr())
            .push(c as u64)
            .push(n as u64)
            .push(stride as u64)
            .push((tp * frame) as u64)
            .push(silu as i32);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (n.div_ceil(F32_POSITIONS).min(MAX_F32_BLOCKS) as u32, 1, 1),
            block_dim: ((F32_POSITIONS * F32_LANES) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch("channel_rms_norm_silu_f32", cfg, args)?;
        Ok(out)
    }

    fn norm_silu_channels_last(
        &self,
        src: u64,
        g: ChannelsLast,
        gamma: &Tensor,
        prefix: Option<&Tensor>,
        silu: bool,
    ) -> CudaResult<CudaBuffer> {
        let tp = prefix.map_or(0, |p| p.dim(1));
        let out = self.output_channels_last(ChannelsLast { t: tp + g.t, ..g })?;
        let c8 = g.c / ChannelsLast::CHANNEL_GROUP;
        if let Some(p) = prefix.filter(|_| tp > 0) {
            let head = ChannelsLast { t: tp, ..g };
            match self.channels_last_view(p)? {
                Some((ptr, pg)) if pg == head => {
                    self.copy_channel_groups(ptr, out.ptr(), tp * g.plane() * c8)?
                }
                _ => self.stage_to_channels_last(self.ptr(p)?, out.ptr(), head)?,
            }
        }
        let n = g.t * g.plane();
        if n == 0 {
            return Ok(out);
        }
        let pt = positions_per_block(g.c);
        let blocks = n.div_ceil(pt).min(self.gpu.sm_count.max(1) as usize * 32);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: (pt * g.c * 2) as u32,
        };
        let args = KernelArgs::new()
            .push(src)
            .push(self.ptr(gamma)?)
            .push(out.ptr())
            .push(n as u64)
            .push(c8 as u64)
            .push((tp * g.plane() * c8) as u64)
            .push(i32::try_from(pt).map_err(|_| CudaError::Unsupported("tile".into()))?)
            .push(silu as i32);
        self.launch("channel_rms_norm_silu_cl", cfg, args)?;
        Ok(out)
    }
}

fn out_len(b: &CudaBuffer) -> usize {
    flashvsr_tensor::Buffer::len(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_shared_memory() {
        // The VAE's widths: 32 positions a block.
        for c in [96, 192, 384, 768] {
            assert_eq!(positions_per_block(c), 32);
        }
        assert_eq!(positions_per_block(1536), 16);
        assert!(positions_per_block(1536) * 1536 * 2 <= TILE_BYTES);
        assert_eq!(positions_per_block(32 << 10), 0);
    }

    #[test]
    fn kernel_constants_match_the_source() {
        let src = include_str!("../kernels/norm_silu.cu");
        assert!(src.contains(&format!("#define NS_THREADS {THREADS}\n")));
        assert!(src.contains("#define NS_LANES 8\n"));
        assert_eq!(THREADS as usize / 8, MAX_POSITIONS);
        assert!(src.contains(&format!("#define CRN_POSITIONS {F32_POSITIONS}\n")));
        assert!(src.contains(&format!("#define CRN_LANES {F32_LANES}\n")));
    }
}

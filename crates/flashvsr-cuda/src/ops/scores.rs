//! Per-head block scores of the sparse mask (`head_scores_f32` in mask.cu): one launch for all
//! heads instead of a GEMM per head and the narrows and concatenation around them.

use cudarc::driver::LaunchConfig;
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

/// SCORE_TILE and SCORE_ROWS in mask.cu.
const TILE: usize = 32;
const ROWS: u32 = 8;
/// SCORE_MT in mask.cu: the queries and keys a block of `head_scores_tiled_f32` covers.
const TILED: usize = 64;
/// `FLASHVSR_CUDA_HEAD_SCORES_TILED=0`: the one-entry-a-load kernel (read per call, for A/B
/// measurements and the bit comparison in gpu_ops).
const ENV_TILED: &str = "FLASHVSR_CUDA_HEAD_SCORES_TILED";

fn int(what: &str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported(format!("{what} = {v} exceeds i32")))
}

impl CudaBackend {
    pub(crate) fn op_head_scores(
        &self,
        q: &Tensor,
        k: &Tensor,
        heads: usize,
    ) -> CudaResult<CudaBuffer> {
        let (nq, nk, dim) = (q.dim(0), k.dim(0), q.dim(1));
        let out = self.output(heads * nq * nk)?;
        if heads * nq * nk == 0 {
            return Ok(out);
        }
        let hd = dim / heads;
        // Grid y and z hold at most 65535 blocks.
        let query_tiles = nq.div_ceil(TILE);
        if heads > u16::MAX as usize || query_tiles > u16::MAX as usize {
            return Err(CudaError::Unsupported(format!(
                "{heads} heads of {nq} query rows"
            )));
        }
        // Empty heads (hd = 0) give zeros: the kernel's sums then have no terms.
        let args = KernelArgs::new()
            .push(self.ptr(q)?)
            .push(self.ptr(k)?)
            .push(out.ptr())
            .push(int("query rows", nq)?)
            .push(int("key rows", nk)?)
            .push(int("dim", dim)?)
            .push(int("head dim", hd)?);
        // Register tiles (the same sums, same bits) unless asked for the old kernel.
        if std::env::var(ENV_TILED).map_or(true, |v| v != "0") {
            let cfg = LaunchConfig {
                grid_dim: (
                    int("key tiles", nk.div_ceil(TILED))? as u32,
                    nq.div_ceil(TILED) as u32,
                    heads as u32,
                ),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch("head_scores_tiled_f32", cfg, args)?;
            return Ok(out);
        }
        let cfg = LaunchConfig {
            grid_dim: (
                int("key tiles", nk.div_ceil(TILE))? as u32,
                query_tiles as u32,
                heads as u32,
            ),
            block_dim: (TILE as u32, ROWS, 1),
            shared_mem_bytes: 0,
        };
        self.launch("head_scores_f32", cfg, args)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_constants_match_the_source() {
        let src = include_str!("../kernels/mask.cu");
        assert!(src.contains(&format!("#define SCORE_TILE {TILE}\n")));
        assert!(src.contains(&format!("#define SCORE_ROWS {ROWS}\n")));
        assert!(src.contains(&format!("#define SCORE_MT {TILED}\n")));
    }
}

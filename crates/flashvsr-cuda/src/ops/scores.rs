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

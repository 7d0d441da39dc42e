use flashvsr_tensor::Tensor;

use super::norm::row_config;
use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

impl CudaBackend {
    /// The self-attention's q, k, v from the fused projection `x (M, 3·D)` in one kernel (see
    /// `Backend::qkv_split_norm_rope`): the projection's output is read once instead of by three
    /// narrows, two norms, two ropes and two compactions. `q` is f32; `k` and `v` are stored as
    /// `compact` stores them, since they go to the KV cache.
    pub(crate) fn op_qkv_split_norm_rope(
        &self,
        x: &Tensor,
        (norm_q, norm_k): (&Tensor, &Tensor),
        (cos, sin): (&Tensor, &Tensor),
        heads: usize,
        eps: f32,
    ) -> CudaResult<(CudaBuffer, CudaBuffer, CudaBuffer)> {
        let (rows, dim) = (x.dim(0), x.dim(1) / 3);
        let kv_storage = self.compact_storage();
        let q = self.output(rows * dim)?;
        let k = self.output_as(rows * dim, kv_storage)?;
        let v = self.output_as(rows * dim, kv_storage)?;
        if rows * dim == 0 {
            return Ok((q, k, v));
        }
        let half = dim / heads / 2;
        if 3 * dim > i32::MAX as usize {
            return Err(CudaError::Unsupported(format!("rows of 3 × {dim}")));
        }
        let args = KernelArgs::new()
            .push(self.ptr(x)?)
            .push(self.ptr(norm_q)?)
            .push(self.ptr(norm_k)?)
            .push(self.ptr(cos)?)
            .push(self.ptr(sin)?)
            .push(q.ptr())
            .push(k.ptr())
            .push(v.ptr())
            .push(dim as i32)
            .push(half as i32)
            .push(eps)
            .push((kv_storage == Storage::Bf16) as i32);
        // The block size rms_norm_f32 gets for a row of `dim`: the sums of squares then add up
        // in its order (see qkv.cu).
        self.launch("qkv_split_norm_rope_f32", row_config(rows, dim)?, args)?;
        Ok((q, k, v))
    }
}

use flashvsr_tensor::Tensor;

use super::norm::row_config;
use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

impl CudaBackend {
    /// The self-attention's q, k, v from the fused projection `x (M, 3·D)` in one kernel per
    /// KV-cache group (see `Backend::qkv_split_norm_rope`): the projection's output is read once
    /// instead of by three narrows, two norms, two ropes and two compactions. `q` is f32; `k` and
    /// `v` are stored as `compact` stores them, one buffer per group, in the memory kept for
    /// long-lived tensors (they are the KV cache).
    pub(crate) fn op_qkv_split_norm_rope(
        &self,
        x: &Tensor,
        (norm_q, norm_k): (&Tensor, &Tensor),
        (cos, sin): (&Tensor, &Tensor),
        heads: usize,
        eps: f32,
        groups: usize,
    ) -> CudaResult<(CudaBuffer, Vec<CudaBuffer>, Vec<CudaBuffer>)> {
        let (rows, dim) = (x.dim(0), x.dim(1) / 3);
        let group_rows = rows / groups;
        let kv_storage = self.compact_storage();
        let q = self.output(rows * dim)?;
        let kept = |_| self.kept_output(group_rows * dim, kv_storage);
        let k = (0..groups).map(kept).collect::<CudaResult<Vec<_>>>()?;
        let v = (0..groups).map(kept).collect::<CudaResult<Vec<_>>>()?;
        if rows * dim == 0 {
            return Ok((q, k, v));
        }
        let half = dim / heads / 2;
        if 3 * dim > i32::MAX as usize || rows > i32::MAX as usize {
            return Err(CudaError::Unsupported(format!("{rows} rows of 3 × {dim}")));
        }
        // A bf16-stored projection (`linear_compact`) is read as it is stored.
        let (x_ptr, kernel) = match self.raw(x)? {
            (p, Storage::Bf16) => (p, "qkv_split_norm_rope_bf16_input"),
            (_, Storage::F32) => (self.ptr(x)?, "qkv_split_norm_rope_f32"),
        };
        for (g, (k, v)) in k.iter().zip(&v).enumerate() {
            let args = KernelArgs::new()
                .push(x_ptr)
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
                .push((kv_storage == Storage::Bf16) as i32)
                .push((g * group_rows) as i32);
            // The block size rms_norm_f32 gets for a row of `dim`: the sums of squares then add
            // up in its order (see qkv.cu).
            self.launch(kernel, row_config(group_rows, dim)?, args)?;
        }
        Ok((q, k, v))
    }
}

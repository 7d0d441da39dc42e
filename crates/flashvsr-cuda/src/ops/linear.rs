use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::gemm::{GemmPtrs, GemmShape};

impl CudaBackend {
    /// `x (M, K) · w (N, K)ᵀ + b`, the bias fused as cuBLASLt's BIAS epilogue.
    pub(crate) fn op_linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> CudaResult<CudaBuffer> {
        let (m, k, n) = (x.dim(0), x.dim(1), w.dim(0));
        let out = self.output(m * n)?;
        if m * n == 0 {
            return Ok(out);
        }
        let bias = self.opt_ptr(b)?;
        if k == 0 {
            match b {
                Some(_) => self.broadcast(bias, out.ptr(), m * n, 1, n)?,
                None => self.fill(out.ptr(), m * n, 0.0)?,
            }
            return Ok(out);
        }
        let shape = GemmShape {
            m,
            n,
            k,
            lda: k,
            ldb: k,
            ldc: n,
            b_transposed: true,
            bias: b.is_some(),
        };
        let ptrs = GemmPtrs {
            a: self.ptr(x)?,
            b: self.ptr(w)?,
            c: out.ptr(),
            bias,
            accumulate: false,
        };
        self.gemm().run(&self.gpu.stream, shape, ptrs)?;
        Ok(out)
    }
}

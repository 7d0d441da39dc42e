use flashvsr_tensor::{Tensor, UnaryOp};

use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::CudaResult;
use crate::gemm::{Epilogue, GemmPtrs, GemmShape};

impl CudaBackend {
    /// `x (M, K) · w (N, K)ᵀ + b`, then tanh GELU when `gelu`. The bias (and the GELU, with bf16
    /// weights) run as cuBLASLt's epilogue. A bf16-stored weight makes it a bf16 GEMM: `x` is
    /// read as bf16 (its bf16 storage or copy, see `bf16_input`); accumulation and the output stay
    /// fp32. (cuBLASLt 13 has no algorithm for a bf16 output with the fp32 bias of the fused GELU,
    /// so the feed-forward net's hidden layer stays fp32 and its second GEMM rounds it once.)
    pub(crate) fn op_linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        gelu: bool,
    ) -> CudaResult<CudaBuffer> {
        let (m, k, n) = (x.dim(0), x.dim(1), w.dim(0));
        if m * n == 0 || k == 0 {
            return self.linear_without_products(m * n, n, b, gelu);
        }
        let bias = self.opt_ptr(b)?;
        let (w_ptr, w_storage) = self.raw(w)?;
        let bf16_inputs = w_storage == Storage::Bf16;
        let a = if bf16_inputs {
            self.bf16_input(x)?
        } else {
            self.ptr(x)?
        };
        let b_ptr = if bf16_inputs { w_ptr } else { self.ptr(w)? };
        // Fused GELU only in fast mode: the exact mode keeps the elementwise kernel's formula.
        let fuse_gelu = gelu && bf16_inputs && b.is_some();
        let shape = GemmShape {
            m,
            n,
            k,
            lda: k,
            ldb: k,
            ldc: n,
            b_transposed: true,
            epilogue: if fuse_gelu {
                Epilogue::GeluBias
            } else {
                Epilogue::bias(b.is_some())
            },
            bf16_inputs,
        };
        let out = self.output(m * n)?;
        let ptrs = GemmPtrs {
            a,
            b: b_ptr,
            c: out.ptr(),
            bias,
            accumulate: false,
        };
        self.gemm().run(&self.gpu.stream, shape, ptrs)?;
        self.then_gelu(out, m * n, gelu && !fuse_gelu)
    }

    /// The output when there are no products to sum: empty, or K = 0 (the bias, or zeros).
    fn linear_without_products(
        &self,
        len: usize,
        n: usize,
        b: Option<&Tensor>,
        gelu: bool,
    ) -> CudaResult<CudaBuffer> {
        let out = self.output(len)?;
        if len == 0 {
            return Ok(out);
        }
        match b {
            Some(b) => self.broadcast(self.ptr(b)?, out.ptr(), len, 1, n)?,
            None => self.fill(out.ptr(), len, 0.0)?,
        }
        self.then_gelu(out, len, gelu)
    }

    fn then_gelu(&self, y: CudaBuffer, n: usize, gelu: bool) -> CudaResult<CudaBuffer> {
        if !gelu {
            return Ok(y);
        }
        let out = self.output(n)?;
        self.unary_raw(y.ptr(), out.ptr(), n, UnaryOp::GeluTanh)?;
        Ok(out)
    }
}

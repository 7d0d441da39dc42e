use flashvsr_tensor::{Tensor, UnaryOp};

use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::CudaResult;
use crate::gemm::{Epilogue, GemmPtrs, GemmShape};

impl CudaBackend {
    /// `x (M, K) · w (N, K)ᵀ + b`, then tanh GELU when `gelu`. The bias (and the GELU, with bf16
    /// weights) run as cuBLASLt's epilogue. A bf16-stored weight makes it a bf16 GEMM: `x` is
    /// rounded to bf16 first, accumulation and the output stay fp32.
    pub(crate) fn op_linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        gelu: bool,
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
            return self.then_gelu(out, m * n, gelu);
        }
        let (w_ptr, w_storage) = self.raw(w)?;
        let bf16_inputs = w_storage == Storage::Bf16;
        let a = match (bf16_inputs, self.raw(x)?) {
            (true, (ptr, Storage::Bf16)) => ptr,
            (true, (_, Storage::F32)) => self.keep_for_op(self.narrow_to_bf16(x)?),
            (false, _) => self.ptr(x)?,
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

    fn then_gelu(&self, y: CudaBuffer, n: usize, gelu: bool) -> CudaResult<CudaBuffer> {
        if !gelu {
            return Ok(y);
        }
        let out = self.output(n)?;
        self.unary_raw(y.ptr(), out.ptr(), n, UnaryOp::GeluTanh)?;
        Ok(out)
    }
}

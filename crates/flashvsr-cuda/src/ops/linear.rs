use std::sync::atomic::{AtomicBool, Ordering};

use flashvsr_tensor::{Tensor, UnaryOp};

use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::gemm::{Epilogue, GemmPtrs, GemmShape};

/// Set once cuBLASLt had no algorithm for a bf16 output of the fused GELU: the output stays fp32
/// from then on (and the next GEMM rounds it, as before that output existed).
static NO_BF16_GELU_OUTPUT: AtomicBool = AtomicBool::new(false);
/// The same for the bias epilogue of `linear_compact`.
static NO_BF16_BIAS_OUTPUT: AtomicBool = AtomicBool::new(false);

impl CudaBackend {
    /// `x (M, K) · w (N, K)ᵀ + b (+ residual)`, then tanh GELU when `gelu`. The bias, the
    /// residual (as cuBLASLt's C) and the GELU (with bf16 weights) run inside the GEMM. A
    /// bf16-stored weight makes it a bf16 GEMM: `x` is read as bf16 (its bf16 storage or copy, see
    /// `bf16_input`); accumulation stays fp32, and so does the output, except the feed-forward
    /// net's hidden layer (fused GELU): only its second GEMM reads it, as bf16, so it is stored
    /// bf16 (with a bf16 copy of the bias, as cuBLASLt wants for a bf16 output); and where the
    /// caller asks for `compact` output (`Backend::linear_compact`: the self-attention's q/k/v
    /// projection, which only the q/k/v split reads).
    pub(crate) fn op_linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        (gelu, compact): (bool, bool),
        residual: Option<&Tensor>,
    ) -> CudaResult<CudaBuffer> {
        let (m, k, n) = (x.dim(0), x.dim(1), w.dim(0));
        if m * n == 0 || k == 0 {
            if residual.is_some() {
                return Err(CudaError::Unsupported(
                    "a residual GEMM without products (the backend composes it)".into(),
                ));
            }
            return self.linear_without_products(m * n, n, b, gelu);
        }
        let (a, b_ptr, bf16_inputs) = self.gemm_operands(x, w)?;
        // Fused GELU only in fast mode: the exact mode keeps the elementwise kernel's formula.
        let fuse_gelu = gelu && bf16_inputs && b.is_some() && residual.is_none();
        let residual_ptr = match residual {
            Some(r) => self.ptr(r)?,
            None => 0,
        };
        let epilogue = if fuse_gelu {
            Epilogue::GeluBias
        } else {
            Epilogue::bias(b.is_some())
        };
        let bf16_output = if fuse_gelu {
            Some(&NO_BF16_GELU_OUTPUT)
        } else if compact && !gelu && bf16_inputs && residual.is_none() {
            Some(&NO_BF16_BIAS_OUTPUT)
        } else {
            None
        };
        if let Some(refused) = bf16_output.filter(|r| !r.load(Ordering::Relaxed)) {
            let out = self.output_as(m * n, Storage::Bf16)?;
            let ptrs = GemmPtrs {
                a,
                b: b_ptr,
                c: out.ptr(),
                bias: b.map(|b| self.bf16_input(b)).transpose()?.unwrap_or(0),
                accumulate: false,
                residual: 0,
            };
            let shape = row_major_shape((m, n, k), epilogue, bf16_inputs, true);
            match self.gemm().run(&self.gpu.stream, shape, ptrs) {
                Ok(()) => return Ok(out),
                Err(CudaError::Blas(_)) => refused.store(true, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        let out = self.output(m * n)?;
        let shape = row_major_shape((m, n, k), epilogue, bf16_inputs, false);
        self.gemm_f32_output(shape, (a, b_ptr), b, residual_ptr, out.ptr())?;
        self.then_gelu(out, m * n, gelu && !fuse_gelu)
    }

    /// `residual + x · wᵀ + b` as `op_linear` computes it for `linear_add` (the same GEMM shape
    /// and epilogue), read from the rows at `residual` and written to the rows at `out` (f32
    /// rows of `w.dim(0)` values, parts of larger buffers the caller holds). The caller
    /// guarantees products to sum (`x` has rows and columns, `w` rows).
    pub(crate) fn linear_add_rows(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        residual: u64,
        out: u64,
    ) -> CudaResult<()> {
        let (m, k, n) = (x.dim(0), x.dim(1), w.dim(0));
        debug_assert!(m * n * k > 0 && residual != 0);
        let (a, b_ptr, bf16_inputs) = self.gemm_operands(x, w)?;
        let shape = row_major_shape((m, n, k), Epilogue::bias(b.is_some()), bf16_inputs, false);
        self.gemm_f32_output(shape, (a, b_ptr), b, residual, out)
    }

    /// The pointers of `x` and `w` as the GEMM reads them, and whether it reads bf16: a
    /// bf16-stored weight makes it a bf16 GEMM, `x` read as bf16 (see `bf16_input`).
    fn gemm_operands(&self, x: &Tensor, w: &Tensor) -> CudaResult<(u64, u64, bool)> {
        let (w_ptr, w_storage) = self.raw(w)?;
        let bf16_inputs = w_storage == Storage::Bf16;
        let a = if bf16_inputs {
            self.bf16_input(x)?
        } else {
            self.ptr(x)?
        };
        let b_ptr = if bf16_inputs { w_ptr } else { self.ptr(w)? };
        Ok((a, b_ptr, bf16_inputs))
    }

    /// One GEMM of f32 output into `out` (`residual` 0: none).
    fn gemm_f32_output(
        &self,
        shape: GemmShape,
        (a, b_ptr): (u64, u64),
        b: Option<&Tensor>,
        residual: u64,
        out: u64,
    ) -> CudaResult<()> {
        let ptrs = GemmPtrs {
            a,
            b: b_ptr,
            c: out,
            bias: self.opt_ptr(b)?,
            accumulate: false,
            residual,
        };
        self.gemm().run(&self.gpu.stream, shape, ptrs)
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

/// `x (M, K) · w (N, K)ᵀ` of contiguous row-major operands.
fn row_major_shape(
    (m, n, k): (usize, usize, usize),
    epilogue: Epilogue,
    bf16_inputs: bool,
    bf16_output: bool,
) -> GemmShape {
    GemmShape {
        m,
        n,
        k,
        lda: k,
        ldb: k,
        ldc: n,
        b_transposed: true,
        epilogue,
        bf16_inputs,
        bf16_output,
    }
}

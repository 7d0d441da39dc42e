//! Row-major GEMM through cuBLASLt: `C[M,N] (+)= A[M,K] · B + bias[N]` (optionally through tanh
//! GELU), B given either as `[N,K]` (weights, `X·Wᵀ`) or as `[K,N]`. A and B are fp32 (compute
//! type `CUBLAS_COMPUTE_32F`, exact: the parity mode; or TF32 in fast mode) or both bf16 (fast
//! mode's weights); C, D and the bias are fp32 (or, with bf16 inputs, bf16) and accumulation is
//! fp32 in every case. C may be another matrix than D (a residual added by the GEMM).
//! Descriptors and the heuristic's algorithm are cached per shape, not rebuilt per call as
//! cudarc's safe `Matmul` would.
//!
//! Row-major `C = A·op(B)` is column-major `Cᵀ = op(B)ᵀ·Aᵀ`, so cuBLASLt's "A" is our B and its
//! "B" is our A; cuBLASLt's BIAS epilogue adds per row of its column-major D, i.e. per column N.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::sys as lt;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use crate::error::{CudaError, CudaResult};

const WORKSPACE_BYTES: usize = 32 << 20;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Row strides (elements) of A `[M,K]`, B and C `[M,N]`.
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// B is `[N,K]` (true) or `[K,N]` (false).
    pub b_transposed: bool,
    pub epilogue: Epilogue,
    /// A and B are bf16 (else fp32).
    pub bf16_inputs: bool,
    /// C, D and the bias are bf16 (else fp32); only with bf16 inputs.
    pub bf16_output: bool,
}

/// What cuBLASLt applies to `A·B` before storing D.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Epilogue {
    None,
    Bias,
    /// `gelu_tanh(A·B + bias)`.
    GeluBias,
}

impl Epilogue {
    pub fn bias(b: bool) -> Epilogue {
        if b {
            Epilogue::Bias
        } else {
            Epilogue::None
        }
    }

    fn has_bias(self) -> bool {
        self != Epilogue::None
    }
}

/// Device pointers of one call; `bias` is 0 when the shape has none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmPtrs {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub bias: u64,
    /// `C += …` instead of `C = …` (C is not read when false).
    pub accumulate: bool,
    /// Non-zero: `C = residual + …` (a matrix shaped like C, read instead of C).
    pub residual: u64,
}

#[derive(Hash, PartialEq, Eq)]
struct PlanKey {
    shape: GemmShape,
    /// Alignment in bytes of cuBLASLt's A (our B), B (our A) and C/D pointers; algorithms
    /// differ by the alignment they assume.
    align: [u32; 3],
}

struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    layouts: [lt::cublasLtMatrixLayout_t; 3],
    algo: lt::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            lt::cublasLtMatmulDescDestroy(self.desc);
            for l in self.layouts.into_iter().filter(|l| !l.is_null()) {
                lt::cublasLtMatrixLayoutDestroy(l);
            }
        }
    }
}

pub(crate) struct Gemm {
    /// TF32 tensor cores (about 10 bits of mantissa in the products) instead of exact fp32.
    tf32: bool,
    handle: lt::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: HashMap<PlanKey, Plan>,
}

// SAFETY: the handle and descriptors are plain heap objects of cuBLASLt, used by one thread at a
// time (the backend keeps `Gemm` behind a mutex).
unsafe impl Send for Gemm {}

fn check(what: &str, s: lt::cublasStatus_t) -> CudaResult<()> {
    if s == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Blas(format!("{what}: {s:?}")))
    }
}

pub(crate) fn cublaslt_present() -> bool {
    crate::error::catch(|| Ok(unsafe { lt::is_culib_present() })).unwrap_or(false)
}

/// cuBLASLt's version, e.g. 130100, or None when the library is missing.
pub(crate) fn cublaslt_version() -> Option<usize> {
    if !cublaslt_present() {
        return None;
    }
    crate::error::catch(|| Ok(unsafe { lt::cublasLtGetVersion() })).ok()
}

fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        (1u64 << ptr.trailing_zeros().min(8)) as u32
    }
}

unsafe fn set_desc<T>(
    desc: lt::cublasLtMatmulDesc_t,
    attr: lt::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> CudaResult<()> {
    check(
        "cublasLtMatmulDescSetAttribute",
        lt::cublasLtMatmulDescSetAttribute(
            desc,
            attr,
            (value as *const T).cast::<c_void>(),
            std::mem::size_of::<T>(),
        ),
    )
}

unsafe fn set_pref<T>(
    pref: lt::cublasLtMatmulPreference_t,
    attr: lt::cublasLtMatmulPreferenceAttributes_t,
    value: &T,
) -> CudaResult<()> {
    check(
        "cublasLtMatmulPreferenceSetAttribute",
        lt::cublasLtMatmulPreferenceSetAttribute(
            pref,
            attr,
            (value as *const T).cast::<c_void>(),
            std::mem::size_of::<T>(),
        ),
    )
}

fn layout(
    rows: usize,
    cols: usize,
    ld: usize,
    bf16: bool,
) -> CudaResult<lt::cublasLtMatrixLayout_t> {
    let mut l = std::ptr::null_mut();
    let dtype = if bf16 {
        lt::cudaDataType_t::CUDA_R_16BF
    } else {
        lt::cudaDataType_t::CUDA_R_32F
    };
    check("cublasLtMatrixLayoutCreate", unsafe {
        lt::cublasLtMatrixLayoutCreate(&mut l, dtype, rows as u64, cols as u64, ld as i64)
    })?;
    Ok(l)
}

impl Gemm {
    pub fn new(stream: &Arc<CudaStream>, tf32: bool) -> CudaResult<Gemm> {
        if !cublaslt_present() {
            return Err(CudaError::Library(
                "libcublasLt.so.13 not found (pip install nvidia-cublas, or set FLASHVSR_CUDA_LIBS)"
                    .into(),
            ));
        }
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES)?;
        let mut handle = std::ptr::null_mut();
        stream.context().bind_to_thread()?;
        check("cublasLtCreate", unsafe { lt::cublasLtCreate(&mut handle) })?;
        Ok(Gemm {
            tf32,
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }

    fn plan(handle: lt::cublasLtHandle_t, key: &PlanKey, tf32: bool) -> CudaResult<Plan> {
        use lt::cublasLtMatmulDescAttributes_t as D;
        use lt::cublasLtMatmulPreferenceAttributes_t as P;
        let s = key.shape;
        let mut desc = std::ptr::null_mut();
        check("cublasLtMatmulDescCreate", unsafe {
            lt::cublasLtMatmulDescCreate(
                &mut desc,
                if tf32 && !s.bf16_inputs {
                    lt::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
                } else {
                    lt::cublasComputeType_t::CUBLAS_COMPUTE_32F
                },
                lt::cudaDataType_t::CUDA_R_32F,
            )
        })?;
        // Destroys the descriptor and layouts if a later step fails.
        let mut plan = Plan {
            desc,
            layouts: [std::ptr::null_mut(); 3],
            algo: unsafe { std::mem::zeroed() },
        };
        let (op_t, op_n) = (1i32, 0i32); // CUBLAS_OP_T, CUBLAS_OP_N
        unsafe {
            set_desc(
                desc,
                D::CUBLASLT_MATMUL_DESC_TRANSA,
                if s.b_transposed { &op_t } else { &op_n },
            )?;
            set_desc(desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &op_n)?;
            let epilogue = match s.epilogue {
                Epilogue::None => None,
                Epilogue::Bias => Some(lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS),
                Epilogue::GeluBias => Some(lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS),
            };
            if let Some(e) = epilogue {
                set_desc(desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, &(e as u32))?;
                // The bias has D's type (the default would follow A/B's type otherwise).
                let bias_type = if s.bf16_output {
                    lt::cudaDataType_t::CUDA_R_16BF
                } else {
                    lt::cudaDataType_t::CUDA_R_32F
                } as u32;
                set_desc(desc, D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type)?;
            }
        }
        let bf16 = s.bf16_inputs;
        plan.layouts[0] = if s.b_transposed {
            layout(s.k, s.n, s.ldb, bf16)?
        } else {
            layout(s.n, s.k, s.ldb, bf16)?
        };
        plan.layouts[1] = layout(s.k, s.m, s.lda, bf16)?;
        plan.layouts[2] = layout(s.n, s.m, s.ldc, s.bf16_output)?;
        let mut pref = std::ptr::null_mut();
        check("cublasLtMatmulPreferenceCreate", unsafe {
            lt::cublasLtMatmulPreferenceCreate(&mut pref)
        })?;
        let chosen = unsafe {
            let [a, b, c] = key.align;
            let prefs = set_pref(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &WORKSPACE_BYTES,
            )
            .and_then(|_| set_pref(pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a))
            .and_then(|_| set_pref(pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b))
            .and_then(|_| set_pref(pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c))
            .and_then(|_| set_pref(pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c));
            let mut result: lt::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
            let mut count = 0;
            let found = prefs.and_then(|_| {
                check(
                    "cublasLtMatmulAlgoGetHeuristic",
                    lt::cublasLtMatmulAlgoGetHeuristic(
                        handle,
                        desc,
                        plan.layouts[0],
                        plan.layouts[1],
                        plan.layouts[2],
                        plan.layouts[2],
                        pref,
                        1,
                        &mut result,
                        &mut count,
                    ),
                )
            });
            lt::cublasLtMatmulPreferenceDestroy(pref);
            found.map(|_| (count, result))
        };
        let (count, result) = chosen?;
        if count < 1 || result.state != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(CudaError::Blas(format!("no algorithm for {s:?}")));
        }
        plan.algo = result.algo;
        Ok(plan)
    }

    /// Enqueues one GEMM on `stream`. Callers guarantee the pointers cover the shape.
    pub fn run(&mut self, stream: &CudaStream, shape: GemmShape, p: GemmPtrs) -> CudaResult<()> {
        if shape.m == 0 || shape.n == 0 {
            return Ok(());
        }
        if shape.k == 0 {
            return Err(CudaError::Unsupported("GEMM with K = 0".into()));
        }
        stream.context().bind_to_thread()?;
        let c_in = if p.residual != 0 { p.residual } else { p.c };
        let key = PlanKey {
            shape,
            align: [
                alignment(p.b),
                alignment(p.a),
                alignment(p.c).min(alignment(c_in)),
            ],
        };
        let plan = match self.plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let plan = Gemm::plan(self.handle, e.key(), self.tf32)?;
                e.insert(plan)
            }
        };
        let (ws, _guard) = self.workspace.device_ptr(stream);
        let reads_c = p.accumulate || p.residual != 0;
        let (alpha, beta) = (1.0f32, if reads_c { 1.0f32 } else { 0.0 });
        unsafe {
            if shape.epilogue.has_bias() {
                set_desc(
                    plan.desc,
                    lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &p.bias,
                )?;
            }
            check(
                "cublasLtMatmul",
                lt::cublasLtMatmul(
                    self.handle,
                    plan.desc,
                    (&alpha as *const f32).cast(),
                    p.b as *const c_void,
                    plan.layouts[0],
                    p.a as *const c_void,
                    plan.layouts[1],
                    (&beta as *const f32).cast(),
                    c_in as *const c_void,
                    plan.layouts[2],
                    p.c as *mut c_void,
                    plan.layouts[2],
                    &plan.algo,
                    ws as *mut c_void,
                    WORKSPACE_BYTES,
                    stream.cu_stream() as _,
                ),
            )
        }
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans.clear();
        let _ = self.workspace.stream().context().bind_to_thread();
        unsafe { lt::cublasLtDestroy(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::alignment;

    #[test]
    fn alignment_is_the_lowest_set_bit_capped_at_256() {
        assert_eq!(alignment(0x7f00_0000_0000), 256);
        assert_eq!(alignment(0x7f00_0000_0004), 4);
        assert_eq!(alignment(0x7f00_0000_0010), 16);
    }
}

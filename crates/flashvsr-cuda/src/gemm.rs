//! Row-major GEMM through cuBLASLt: `C[M,N] (+)= A[M,K] · B + bias[N]` (optionally through tanh
//! GELU), B given either as `[N,K]` (weights, `X·Wᵀ`) or as `[K,N]`. A and B are fp32 (compute
//! type `CUBLAS_COMPUTE_32F`, exact: the parity mode; or TF32 in fast mode) or both bf16 (fast
//! mode's weights); C, D and the bias are fp32 (or, with bf16 inputs, bf16) and accumulation is
//! fp32 in every case. C may be another matrix than D (a residual added by the GEMM).
//! Descriptors and the heuristic's algorithm are cached per shape, not rebuilt per call as
//! cudarc's safe `Matmul` would.
//!
//! With tuning on (fast mode, `FLASHVSR_CUDA_GEMM_TUNE=1`), the first call of a large bf16 shape also times the heuristic's
//! other candidates (none that splits K) on the call's own operands, writing the call's own
//! output, and keeps the fastest whose output has the same digest as the heuristic's first
//! choice's (a 64-bit digest of every output word, `digest_u32` in storage.cu): the choice changes
//! the speed, not the result, so outputs stay the same run to run whatever the timing.
//!
//! Row-major `C = A·op(B)` is column-major `Cᵀ = op(B)ᵀ·Aᵀ`, so cuBLASLt's "A" is our B and its
//! "B" is our A; cuBLASLt's BIAS epilogue adds per row of its column-major D, i.e. per column N.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::sys as lt;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr};

use crate::error::{CudaError, CudaResult};
use crate::launch::{grid_1d, launch, KernelArgs};

const WORKSPACE_BYTES: usize = 32 << 20;

/// Candidates asked of the heuristic when tuning a shape.
const TUNE_CANDIDATES: usize = 16;
/// Shapes of fewer multiply-adds than this keep the heuristic's choice: the DiT's per-chunk
/// GEMMs (M = 8,448 tokens at 1408×768, K and N ≥ 1,536: 2·10¹⁰) are tuned, one-off small ones
/// are not worth a tuning pass.
const TUNE_MIN_MACS: usize = 4 << 30;
/// Blocks of the digest kernel (a grid-stride loop).
const DIGEST_BLOCKS: u32 = 1024;
/// Timed launches per candidate, after one launch whose output is compared.
const TUNE_REPEATS: usize = 5;
/// Another algorithm replaces the heuristic's first only when it takes less than this share of
/// its time: closer results are timing noise.
const TUNE_MIN_GAIN: f32 = 0.97;

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
    /// The heuristic's other candidates, timed against `algo` at the shape's first call (tuning
    /// on, large shapes only); empty once tuned.
    untried: Vec<lt::cublasLtMatmulAlgo_t>,
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
    /// The output digest kernel when tuning (see the module notes): candidates are timed for
    /// large bf16 shapes only with it.
    digest: Option<CudaFunction>,
    /// Print each tuning's timings on stderr (`FLASHVSR_CUDA_GEMM_TUNE_LOG=1`).
    tune_log: bool,
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
    /// `digest`: the `digest_u32` kernel to tune with, or None for the heuristic's choice.
    pub fn new(
        stream: &Arc<CudaStream>,
        tf32: bool,
        digest: Option<CudaFunction>,
    ) -> CudaResult<Gemm> {
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
            digest,
            tune_log: std::env::var("FLASHVSR_CUDA_GEMM_TUNE_LOG").is_ok_and(|v| v == "1"),
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }

    /// Whether a shape's first call times the heuristic's candidates.
    fn tunes(&self, s: &GemmShape) -> bool {
        self.digest.is_some() && s.bf16_inputs && s.m * s.n * s.k >= TUNE_MIN_MACS
    }

    fn plan(
        handle: lt::cublasLtHandle_t,
        key: &PlanKey,
        tf32: bool,
        candidates: usize,
    ) -> CudaResult<Plan> {
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
            untried: Vec::new(),
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
            let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> =
                vec![std::mem::zeroed(); candidates.max(1)];
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
                        results.len() as i32,
                        results.as_mut_ptr(),
                        &mut count,
                    ),
                )
            });
            lt::cublasLtMatmulPreferenceDestroy(pref);
            found.map(|_| {
                results.truncate(count.max(0) as usize);
                results
            })
        };
        let usable: Vec<lt::cublasLtMatmulAlgo_t> = chosen?
            .into_iter()
            .filter(|r| r.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|r| r.algo)
            .collect();
        let Some((first, others)) = usable.split_first() else {
            return Err(CudaError::Blas(format!("no algorithm for {s:?}")));
        };
        plan.algo = *first;
        // Split-K sums partial products in another order (and some reductions in no fixed one).
        plan.untried = others
            .iter()
            .filter(|a| algo_config(a, CONFIG_SPLITK_NUM).is_some_and(|k| k <= 1))
            .copied()
            .collect();
        Ok(plan)
    }

    /// Enqueues one GEMM on `stream`. Callers guarantee the pointers cover the shape.
    pub fn run(
        &mut self,
        stream: &Arc<CudaStream>,
        shape: GemmShape,
        p: GemmPtrs,
    ) -> CudaResult<()> {
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
        let candidates = if self.tunes(&shape) {
            TUNE_CANDIDATES
        } else {
            1
        };
        let (handle, tf32, log) = (self.handle, self.tf32, self.tune_log);
        let plan = match self.plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let plan = Gemm::plan(handle, e.key(), tf32, candidates)?;
                e.insert(plan)
            }
        };
        let (ws, _guard) = self.workspace.device_ptr(stream);
        let call = Call {
            handle,
            stream,
            ws,
            has_bias: shape.epilogue.has_bias(),
            beta: if p.accumulate || p.residual != 0 {
                1.0
            } else {
                0.0
            },
            p,
            c_in,
        };
        // Candidates write the call's own output (rewritten below): not where D is also C.
        let in_place = p.accumulate && p.residual == 0;
        if let (false, false, Some(digest)) = (plan.untried.is_empty(), in_place, &self.digest) {
            let untried = std::mem::take(&mut plan.untried);
            tune(plan, &untried, &call, &shape, digest, log)?;
        }
        call.matmul(plan, &plan.algo, p.c)
    }
}

/// One GEMM call's operands, for running it with any algorithm and into any D.
struct Call<'a> {
    handle: lt::cublasLtHandle_t,
    stream: &'a Arc<CudaStream>,
    ws: u64,
    has_bias: bool,
    beta: f32,
    p: GemmPtrs,
    /// C as read: the residual, or the output itself.
    c_in: u64,
}

impl Call<'_> {
    fn matmul(&self, plan: &Plan, algo: &lt::cublasLtMatmulAlgo_t, d: u64) -> CudaResult<()> {
        let alpha = 1.0f32;
        unsafe {
            if self.has_bias {
                set_desc(
                    plan.desc,
                    lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &self.p.bias,
                )?;
            }
            let status = flashvsr_tensor::host_stalls::enqueue("cublasLtMatmul", || {
                lt::cublasLtMatmul(
                    self.handle,
                    plan.desc,
                    (&alpha as *const f32).cast(),
                    self.p.b as *const c_void,
                    plan.layouts[0],
                    self.p.a as *const c_void,
                    plan.layouts[1],
                    (&self.beta as *const f32).cast(),
                    self.c_in as *const c_void,
                    plan.layouts[2],
                    d as *mut c_void,
                    plan.layouts[2],
                    algo,
                    self.ws as *mut c_void,
                    WORKSPACE_BYTES,
                    self.stream.cu_stream() as _,
                )
            });
            check("cublasLtMatmul", status)
        }
    }
}

const CONFIG_ID: lt::cublasLtMatmulAlgoConfigAttributes_t =
    lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_ID;
const CONFIG_TILE_ID: lt::cublasLtMatmulAlgoConfigAttributes_t =
    lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_TILE_ID;
const CONFIG_STAGES_ID: lt::cublasLtMatmulAlgoConfigAttributes_t =
    lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_STAGES_ID;
const CONFIG_SPLITK_NUM: lt::cublasLtMatmulAlgoConfigAttributes_t =
    lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM;

/// An integer attribute of an algorithm's configuration (all the ones read here are 32-bit).
fn algo_config(
    algo: &lt::cublasLtMatmulAlgo_t,
    attr: lt::cublasLtMatmulAlgoConfigAttributes_t,
) -> Option<u32> {
    let mut value = 0u32;
    let mut written = 0usize;
    let status = unsafe {
        lt::cublasLtMatmulAlgoConfigGetAttribute(
            algo,
            attr,
            (&mut value as *mut u32).cast(),
            std::mem::size_of::<u32>(),
            &mut written,
        )
    };
    (status == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS).then_some(value)
}

fn describe(algo: &lt::cublasLtMatmulAlgo_t) -> String {
    let get = |a| algo_config(algo, a).map_or("?".to_string(), |v| v.to_string());
    format!(
        "id {} tile {} stages {}",
        get(CONFIG_ID),
        get(CONFIG_TILE_ID),
        get(CONFIG_STAGES_ID)
    )
}

/// The digest of `words` 32-bit words at `ptr` (waits for it).
fn digest_of(
    stream: &Arc<CudaStream>,
    kernel: &CudaFunction,
    out: &mut CudaSlice<u64>,
    ptr: u64,
    words: usize,
) -> CudaResult<u64> {
    stream.memset_zeros(out)?;
    let out_ptr = {
        let (p, _guard) = out.device_ptr(stream);
        p
    };
    let args = KernelArgs::new().push(ptr).push(words as u64).push(out_ptr);
    launch(stream, kernel, grid_1d(words as u64, DIGEST_BLOCKS), args)?;
    let host = stream.clone_dtoh(out)?;
    stream.synchronize()?;
    Ok(host[0])
}

/// Times `plan.algo` and `candidates` on the call's operands, writing the call's output (the
/// caller writes it again with the chosen algorithm), and makes the fastest candidate whose output
/// has `plan.algo`'s digest the plan's algorithm. Synchronises the stream.
fn tune(
    plan: &mut Plan,
    candidates: &[lt::cublasLtMatmulAlgo_t],
    call: &Call<'_>,
    shape: &GemmShape,
    kernel: &CudaFunction,
    log: bool,
) -> CudaResult<()> {
    let stream = call.stream;
    let d = call.p.c;
    let element = if shape.bf16_output { 2 } else { 4 };
    // Rows' gaps (ldc > n) are written by no candidate: they digest the same every time.
    let words = (shape.m * shape.ldc * element).div_ceil(4);
    let mut out = stream.alloc_zeros::<u64>(1)?;
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let ctx = stream.context();
    let time = |algo: &lt::cublasLtMatmulAlgo_t| -> CudaResult<f32> {
        let (start, end) = (ctx.new_event(flags)?, ctx.new_event(flags)?);
        start.record(stream)?;
        for _ in 0..TUNE_REPEATS {
            call.matmul(plan, algo, d)?;
        }
        end.record(stream)?;
        end.synchronize()?;
        Ok(start.elapsed_ms(&end)? / TUNE_REPEATS as f32)
    };
    call.matmul(plan, &plan.algo, d)?;
    let reference = digest_of(stream, kernel, &mut out, d, words)?;
    let base_ms = time(&plan.algo)?;
    let mut best: Option<(f32, lt::cublasLtMatmulAlgo_t)> = None;
    let mut lines = Vec::new();
    for algo in candidates {
        // A candidate the library turns down at run time is skipped, not an error.
        if call.matmul(plan, algo, d).is_err() {
            lines.push(format!("  {}: refused", describe(algo)));
            continue;
        }
        let same = digest_of(stream, kernel, &mut out, d, words)? == reference;
        let ms = time(algo)?;
        lines.push(format!(
            "  {}: {ms:.4} ms{}",
            describe(algo),
            if same { "" } else { ", other bits" }
        ));
        if same && best.is_none_or(|(b, _)| ms < b) {
            best = Some((ms, *algo));
        }
    }
    let chosen = best.filter(|(ms, _)| *ms < base_ms * TUNE_MIN_GAIN);
    if log {
        eprintln!(
            "flashvsr: GEMM tuning m {} n {} k {} {:?}{}{}: heuristic {} {base_ms:.4} ms → {}\n{}",
            shape.m,
            shape.n,
            shape.k,
            shape.epilogue,
            if shape.bf16_output { " bf16 out" } else { "" },
            if call.p.residual != 0 {
                " residual"
            } else {
                ""
            },
            describe(&plan.algo),
            chosen.map_or("kept".to_string(), |(ms, a)| format!(
                "{} {ms:.4} ms",
                describe(&a)
            )),
            lines.join("\n")
        );
    }
    if let Some((_, algo)) = chosen {
        plan.algo = algo;
    }
    Ok(())
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

//! Dense attention as two GEMMs and a row softmax, for head dims the flash kernel does not take
//! (the Wan VAE's single 384-wide head): per head and chunk of query rows, `S = q·kᵀ` (cuBLASLt,
//! fp32 out), `P = softmax(S / √d)` (softmax.cu), `o = P·v`. The one-warp-per-row fp32 kernel ran
//! these at ~4 TFLOP/s; on tensor cores the two GEMMs are almost all of the work. Query rows go in
//! chunks so that the scores stay within `CudaOptions::attention_scores_bytes` (256 MB: a
//! 16,896-token frame of the VAE's untiled attention has 1.1 GB of fp32 scores) whatever the key
//! count.
//!
//! Precision follows the backend's attention setting: fp32 operands and fp32 P (with TF32 off,
//! the parity mode), or bf16 q, k, v and P with fp32 accumulation, fp32 scores and softmax.

use flashvsr_tensor::Tensor;

use crate::backend::{AttentionPrecision, CudaBackend};
use crate::buffer::{CudaBuffer, Storage};
use crate::error::CudaResult;
use crate::gemm::{Epilogue, GemmPtrs, GemmShape};
use crate::launch::KernelArgs;

/// Threads per row of softmax.cu (SOFTMAX_THREADS).
const SOFTMAX_THREADS: u32 = 256;

/// Row stride of the scores: a multiple of 8 elements keeps every row 16-byte aligned for the
/// GEMMs' vector loads (bf16 P included).
fn scores_ld(lk: usize) -> usize {
    lk.next_multiple_of(8)
}

/// Query rows per chunk: as many as fit the budget at `bytes_per_score` (f32 scores, plus bf16
/// probabilities where they are separate), spread evenly over the chunks.
pub(crate) fn chunk_rows(lq: usize, lk: usize, bytes_per_score: usize, budget: usize) -> usize {
    let per_row = scores_ld(lk) * bytes_per_score;
    let most = (budget / per_row.max(1)).clamp(1, lq.max(1));
    let chunks = lq.div_ceil(most).max(1);
    lq.div_ceil(chunks)
}

impl CudaBackend {
    /// `q (lq, dim)`, `k, v (lk, dim)`, `heads` heads of `dim / heads`, into `out` (f32,
    /// `lq × dim`). A cuBLASLt error (no algorithm for a shape) leaves `out` to the caller's
    /// fallback, which writes all of it.
    pub(crate) fn attention_by_gemm(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        heads: usize,
        out: &CudaBuffer,
    ) -> CudaResult<()> {
        let (lq, dim, lk) = (q.dim(0), q.dim(1), k.dim(0));
        let hd = dim / heads;
        let bf16 = self.options().attention == AttentionPrecision::Bf16;
        let (qp, kp, vp) = if bf16 {
            (
                self.bf16_input(q)?,
                self.bf16_input(k)?,
                self.bf16_input(v)?,
            )
        } else {
            (self.ptr(q)?, self.ptr(k)?, self.ptr(v)?)
        };
        let esize = if bf16 { 2 } else { 4 } as u64;
        let ld = scores_ld(lk);
        let budget = self.options().attention_scores_bytes;
        let rows = chunk_rows(lq, lk, if bf16 { 6 } else { 4 }, budget);
        let scores = self.output(rows * ld)?;
        let probs = if bf16 {
            Some(self.output_as(rows * ld, Storage::Bf16)?)
        } else {
            None
        };
        let scores_shape = |m| GemmShape {
            m,
            n: lk,
            k: hd,
            lda: dim,
            ldb: dim,
            ldc: ld,
            b_transposed: true,
            epilogue: Epilogue::None,
            bf16_inputs: bf16,
            bf16_output: false,
        };
        let output_shape = |m| GemmShape {
            m,
            n: hd,
            k: lk,
            lda: ld,
            ldb: dim,
            ldc: dim,
            b_transposed: false,
            epilogue: Epilogue::None,
            bf16_inputs: bf16,
            bf16_output: false,
        };
        let scale_log2 = std::f32::consts::LOG2_E / (hd as f32).sqrt();
        let p_ptr = probs.as_ref().map_or(scores.ptr(), |p| p.ptr());
        let mut gemm = self.gemm();
        for h in 0..heads {
            for r0 in (0..lq).step_by(rows) {
                let m = rows.min(lq - r0);
                let q_at = qp + ((r0 * dim + h * hd) as u64) * esize;
                let head = (h * hd) as u64;
                gemm.run(
                    &self.gpu.stream,
                    scores_shape(m),
                    GemmPtrs {
                        a: q_at,
                        b: kp + head * esize,
                        c: scores.ptr(),
                        bias: 0,
                        accumulate: false,
                        residual: 0,
                    },
                )?;
                let (p_f32, p_bf16) = match &probs {
                    Some(p) => (0u64, p.ptr()),
                    None => (scores.ptr(), 0u64),
                };
                let args = KernelArgs::new()
                    .push(scores.ptr())
                    .push(p_f32)
                    .push(p_bf16)
                    .push(lk as i32)
                    .push(ld as u64)
                    .push(scale_log2);
                let cfg = cudarc::driver::LaunchConfig {
                    grid_dim: (m as u32, 1, 1),
                    block_dim: (SOFTMAX_THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                self.launch("softmax_rows_f32", cfg, args)?;
                gemm.run(
                    &self.gpu.stream,
                    output_shape(m),
                    GemmPtrs {
                        a: p_ptr,
                        b: vp + head * esize,
                        c: out.ptr() + ((r0 * dim + h * hd) as u64) * 4,
                        bias: 0,
                        accumulate: false,
                        residual: 0,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Whether an attention of this head_dim goes to [`Self::attention_by_gemm`]: the head dims
    /// wider than the flash kernel's, in either precision.
    pub(crate) fn attention_takes_gemm(&self, head_dim: usize, lk: usize) -> bool {
        head_dim > super::attention::FLASH_HD && lk > 0 && lk <= i32::MAX as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: usize = 256 << 20;

    #[test]
    fn chunks_keep_scores_within_the_budget() {
        // The VAE's untiled 1408×768 frame: 16,896 tokens, fp32 scores and bf16 P.
        let rows = chunk_rows(16_896, 16_896, 6, BUDGET);
        assert!(rows * scores_ld(16_896) * 6 <= BUDGET);
        assert_eq!(16_896usize.div_ceil(rows), 7, "seven even chunks");
        // Small problems take one chunk.
        assert_eq!(chunk_rows(300, 512, 4, BUDGET), 300);
        // A row larger than the budget still makes progress, a row at a time.
        assert_eq!(chunk_rows(5, 1 << 30, 4, BUDGET), 1);
        assert_eq!(scores_ld(4097), 4104);
    }
}

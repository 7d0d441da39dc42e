//! Dense attention over heads wider than the flash kernel's 128 (the Wan VAE's single 384-wide
//! head), which runs as two GEMMs and a row softmax (ops/attention_gemm.rs), against the CPU:
//! fp32 (TF32 off) within 1e-4 relative L2, bf16 operands within the bf16 attention's 2e-2, each
//! also with a scores budget of 1 MB, so that the query rows go in many chunks (the last one
//! shorter). Odd sizes: key counts that are not a multiple of 8 (padded score rows), several
//! heads, head dims whose rows are not 16-byte aligned.

use std::sync::Arc;

use flashvsr_cuda::{AttentionPrecision, CudaBackend, CudaOptions};
use flashvsr_tensor::Tensor;

use super::Suite;

const FP32_L2: f64 = 1e-4;
const BF16_L2: f64 = 2e-2;

/// (query rows, key rows, heads, head dim)
const CASES: [(usize, usize, usize, usize); 6] = [
    (3000, 3000, 1, 384),
    (1001, 777, 1, 384),
    (64, 4097, 1, 384),
    (257, 130, 2, 200),
    (33, 45, 3, 129),
    (5, 1, 1, 256),
];

fn name(case: (usize, usize, usize, usize), what: &str) -> String {
    let (lq, lk, heads, hd) = case;
    format!("wide attention q{lq} k{lk} {heads}x{hd} {what}")
}

pub fn run(s: &mut Suite, ordinal: usize, options: &CudaOptions) {
    let variants = ["fp32", "fp32 chunked", "bf16", "bf16 chunked"];
    let wanted = CASES
        .iter()
        .any(|&c| variants.iter().any(|v| !s.skip(&name(c, v))));
    if !wanted {
        return;
    }
    let make = |attention, bytes: usize| -> Arc<CudaBackend> {
        let o = CudaOptions {
            attention_scores_bytes: bytes,
            ..options.clone().with_attention(attention)
        };
        CudaBackend::create(ordinal, o).expect("attention backend")
    };
    let full = options.attention_scores_bytes;
    let backends = [
        (make(AttentionPrecision::Fp32, full), FP32_L2),
        (make(AttentionPrecision::Fp32, 1 << 20), FP32_L2),
        (make(AttentionPrecision::Bf16, full), BF16_L2),
        (make(AttentionPrecision::Bf16, 1 << 20), BF16_L2),
    ];
    for case in CASES {
        let (lq, lk, heads, hd) = case;
        let dim = heads * hd;
        let inputs = [
            s.normal_input(&[lq, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
        ];
        let op = |t: &[Tensor]| t[0].attention(&t[1], &t[2], heads);
        for ((backend, tol), what) in backends.iter().zip(variants) {
            s.conv_case(&name(case, what), backend, *tol, 0, &inputs, &op);
        }
    }
}

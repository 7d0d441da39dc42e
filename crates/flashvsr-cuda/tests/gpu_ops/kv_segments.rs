//! Block-sparse attention over K and V given as segments of rows (the KV cache's groups, which the
//! flash kernel reads in place) against the CPU on their concatenation: the exact fp32 kernel
//! (which joins the segments) and the bf16 flash kernel, with segments it reads in place
//! (multiples of its 64-key tile) and ones it must join first (a 96-row segment).

use flashvsr_tensor::{Result, Tensor};

use super::{mask_input, random_mask, Input, Suite, BF16_ATTENTION, GEMM};

/// Segment sizes and key blocks of the cases: read in place (multiples of the 64-key tile) and
/// joined first (a 96-row segment).
pub const SEGMENT_CASES: [(&[usize], usize); 3] = [
    (&[256, 128, 128], 128),
    (&[128, 64, 192, 64], 64),
    (&[96, 160], 128),
];

/// Inputs `[q, keys…, values…, mask]` of a segmented case with `lq` query rows.
pub fn segment_inputs(
    s: &mut Suite,
    lq: usize,
    heads: usize,
    sizes: &[usize],
    kb: usize,
) -> Vec<Input> {
    let dim = heads * 128;
    let lk: usize = sizes.iter().sum();
    let mut inputs: Vec<Input> = vec![s.normal_input(&[lq, dim], 1.0)];
    for _ in 0..2 {
        for &rows in sizes {
            inputs.push(s.normal_input(&[rows, dim], 1.0));
        }
    }
    let mask = random_mask(&mut s.rng, heads, lq / 128, lk / kb, kb, 0.5);
    inputs.push(mask_input(&mask));
    inputs
}

/// The attention over `n` segments laid out as [`segment_inputs`] makes them.
pub fn segment_attention(t: &[Tensor], n: usize, kb: usize) -> Result<Tensor> {
    let keys: Vec<&Tensor> = t[1..1 + n].iter().collect();
    let values: Vec<&Tensor> = t[1 + n..1 + 2 * n].iter().collect();
    t[0].block_sparse_attention_segments(&keys, &values, &t[1 + 2 * n], kb)
}

pub fn run(s: &mut Suite) {
    let cpu = s.cpu.clone();
    let (lq, heads) = (256, 2);
    for (sizes, kb) in SEGMENT_CASES {
        let n = sizes.len();
        let inputs = segment_inputs(s, lq, heads, sizes, kb);
        let op = |t: &[Tensor]| segment_attention(t, n, kb);
        let name = format!("kv segments {sizes:?} key block {kb}");
        s.case(&name, GEMM, &inputs, &op);
        s.bf16_case(
            &format!("{name} bf16"),
            BF16_ATTENTION,
            &cpu,
            &inputs,
            &op,
            &|_| None,
        );
    }
}

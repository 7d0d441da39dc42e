//! Block-sparse attention over key/value segments is the attention over their concatenation.

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, Tensor};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn tensor(cpu: &BackendRef, shape: &[usize], seed: u32) -> Tensor {
    Tensor::from_slice(cpu, &values(shape.iter().product(), seed), shape).unwrap()
}

#[test]
fn segments_attend_like_their_concatenation() {
    let cpu = CpuBackend::new_ref();
    let (lq, dim, heads, kb) = (8, 16, 2, 4);
    let sizes = [8, 4, 12];
    let q = tensor(&cpu, &[lq, dim], 1);
    let keys: Vec<Tensor> = (0..3)
        .map(|i| tensor(&cpu, &[sizes[i], dim], 10 + i as u32))
        .collect();
    let vals: Vec<Tensor> = (0..3)
        .map(|i| tensor(&cpu, &[sizes[i], dim], 20 + i as u32))
        .collect();
    let key_blocks = sizes.iter().sum::<usize>() / kb;
    let selected: Vec<f32> = (0..heads * 2 * key_blocks)
        .map(|i| (i % 3 != 0) as u8 as f32)
        .collect();
    let mask = Tensor::from_slice(&cpu, &selected, &[heads, 2, key_blocks]).unwrap();
    let (k, v): (Vec<&Tensor>, Vec<&Tensor>) = (keys.iter().collect(), vals.iter().collect());
    let got = q
        .block_sparse_attention_segments(&k, &v, &mask, kb)
        .unwrap()
        .to_vec()
        .unwrap();
    let (all_k, all_v) = (Tensor::cat(&k, 0).unwrap(), Tensor::cat(&v, 0).unwrap());
    let want = q
        .block_sparse_attention(&all_k, &all_v, &mask, kb)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn mismatched_segments_are_shape_errors() {
    let cpu = CpuBackend::new_ref();
    let q = tensor(&cpu, &[4, 8], 1);
    let k = tensor(&cpu, &[4, 8], 2);
    let short = tensor(&cpu, &[2, 8], 3);
    let mask = Tensor::from_slice(&cpu, &[1.0; 2], &[1, 1, 2]).unwrap();
    assert!(q
        .block_sparse_attention_segments(&[], &[], &mask, 4)
        .is_err());
    assert!(q
        .block_sparse_attention_segments(&[&k, &k], &[&k], &mask, 4)
        .is_err());
    assert!(q
        .block_sparse_attention_segments(&[&k, &k], &[&k, &short], &mask, 4)
        .is_err());
    assert!(q
        .block_sparse_attention_segments(&[&k, &short], &[&k, &short], &mask, 4)
        .is_err());
    assert!(q
        .block_sparse_attention_segments(&[&k, &k], &[&k, &k], &mask, 4)
        .is_ok());
}

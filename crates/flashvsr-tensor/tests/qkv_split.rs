//! The fused q/k/v split, norms and rope give the composed ops' values, bit for bit.

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, Tensor};

mod common;
use common::values;

struct Inputs {
    x: Tensor,
    norm_q: Tensor,
    norm_k: Tensor,
    cos: Tensor,
    sin: Tensor,
}

/// `rows` tokens of `heads` heads of 128 channels (the rope's head width in the DiT).
fn inputs(cpu: &BackendRef, rows: usize, heads: usize) -> Inputs {
    let dim = heads * 128;
    let half = 64;
    let angles: Vec<f32> = (0..rows * half)
        .map(|i| (i / half) as f32 * 0.37 / (1.0 + (i % half) as f32))
        .collect();
    let table = |f: fn(f32) -> f32| {
        let v: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
        Tensor::from_slice(cpu, &v, &[rows, half]).unwrap()
    };
    let x = values(rows * 3 * dim, 7, 0.25);
    Inputs {
        x: Tensor::from_slice(cpu, &x, &[rows, 3 * dim]).unwrap(),
        norm_q: Tensor::from_slice(cpu, &values(dim, 11, 1.0), &[dim]).unwrap(),
        norm_k: Tensor::from_slice(cpu, &values(dim, 13, 1.5), &[dim]).unwrap(),
        cos: table(f32::cos),
        sin: table(f32::sin),
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

const EPS: f32 = 1e-6;

#[test]
fn fused_split_equals_the_composed_ops() {
    let cpu = CpuBackend::new_ref();
    for (rows, heads, groups) in [(37, 2, 1), (5, 12, 1), (1, 1, 1), (36, 2, 3)] {
        let i = inputs(&cpu, rows, heads);
        let dim = heads * 128;
        let split =
            i.x.qkv_split_norm_rope(&i.norm_q, &i.norm_k, &i.cos, &i.sin, heads, EPS, groups)
                .unwrap();
        assert_eq!((split.k.len(), split.v.len()), (groups, groups));
        for g in split.k.iter().chain(&split.v) {
            assert_eq!(g.shape(), [rows / groups, dim]);
        }
        let joined = |parts: &[Tensor]| {
            let refs: Vec<&Tensor> = parts.iter().collect();
            Tensor::cat(&refs, 0).unwrap()
        };
        let (q, k, v) = (split.q, joined(&split.k), joined(&split.v));
        let want_q =
            i.x.narrow(1, 0, dim)
                .unwrap()
                .rms_norm(&i.norm_q, EPS)
                .unwrap()
                .rope(&i.cos, &i.sin, heads)
                .unwrap();
        let want_k =
            i.x.narrow(1, dim, dim)
                .unwrap()
                .rms_norm(&i.norm_k, EPS)
                .unwrap()
                .rope(&i.cos, &i.sin, heads)
                .unwrap()
                .compact()
                .unwrap();
        let want_v = i.x.narrow(1, 2 * dim, dim).unwrap().compact().unwrap();
        for (name, got, want) in [("q", &q, &want_q), ("k", &k, &want_k), ("v", &v, &want_v)] {
            assert_eq!(
                got.shape(),
                [rows, dim],
                "{name}, {rows} rows, {heads} heads"
            );
            assert!(
                bits(got) == bits(want),
                "{name} differs, {rows} rows, {heads} heads"
            );
        }
    }
}

#[test]
fn no_rows_give_empty_outputs() {
    let cpu = CpuBackend::new_ref();
    let i = inputs(&cpu, 2, 2);
    let x = Tensor::zeros(&cpu, &[0, 768]).unwrap();
    let none = Tensor::zeros(&cpu, &[0, 64]).unwrap();
    let split = x
        .qkv_split_norm_rope(&i.norm_q, &i.norm_k, &none, &none, 2, EPS, 1)
        .unwrap();
    for t in [split.q, split.k[0].clone(), split.v[0].clone()] {
        assert_eq!(t.shape(), [0, 256]);
    }
}

#[test]
fn mismatched_shapes_are_errors() {
    let cpu = CpuBackend::new_ref();
    let i = inputs(&cpu, 4, 2);
    let split = |x: &Tensor, nq: &Tensor, nk: &Tensor, cos: &Tensor, heads: usize| {
        x.qkv_split_norm_rope(nq, nk, cos, &i.sin, heads, EPS, 1)
    };
    assert!(split(&i.x, &i.norm_q, &i.norm_k, &i.cos, 2).is_ok());
    // Not three equal parts.
    let uneven = i.x.narrow(1, 0, 767).unwrap();
    assert!(split(&uneven, &i.norm_q, &i.norm_k, &i.cos, 2).is_err());
    // A gain of the wrong width.
    let short = i.norm_q.narrow(0, 0, 128).unwrap();
    assert!(split(&i.x, &short, &i.norm_k, &i.cos, 2).is_err());
    assert!(split(&i.x, &i.norm_q, &short, &i.cos, 2).is_err());
    // Angle tables of other rows or another head width.
    assert!(split(
        &i.x,
        &i.norm_q,
        &i.norm_k,
        &i.cos.narrow(0, 0, 3).unwrap(),
        2
    )
    .is_err());
    assert!(split(&i.x, &i.norm_q, &i.norm_k, &i.cos, 4).is_err());
    assert!(split(&i.x, &i.norm_q, &i.norm_k, &i.cos, 0).is_err());
    // Rows that do not make equal groups, or no groups.
    for groups in [3, 0] {
        assert!(i
            .x
            .qkv_split_norm_rope(&i.norm_q, &i.norm_k, &i.cos, &i.sin, 2, EPS, groups)
            .is_err());
    }
    // Not a matrix.
    let flat = i.x.reshape(&[4 * 768]).unwrap();
    assert!(split(&flat, &i.norm_q, &i.norm_k, &i.cos, 2).is_err());
}

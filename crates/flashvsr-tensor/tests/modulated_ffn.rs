//! The DiT's feed-forward net in row passes (`Tensor::modulated_ffn`): every pass's rows land
//! where they belong, whatever the pass size, and one pass is the ops it stands for.

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{BackendRef, ModulatedFfn, Tensor};

mod common;
use common::values;

const EPS: f32 = 1e-6;

struct Ffn {
    shift: Tensor,
    scale: Tensor,
    up: (Tensor, Tensor),
    down: (Tensor, Tensor),
}

impl Ffn {
    fn new(cpu: &BackendRef, dim: usize, hidden: usize) -> Ffn {
        let t = |n: usize, seed: u32, centre: f32, scale: f32, shape: &[usize]| {
            let v: Vec<f32> = values(n, seed, centre).iter().map(|x| x * scale).collect();
            Tensor::from_slice(cpu, &v, shape).unwrap()
        };
        Ffn {
            shift: t(dim, 3, 0.0, 0.5, &[dim]),
            scale: t(dim, 5, 0.0, 0.5, &[dim]),
            up: (
                t(hidden * dim, 7, 0.0, 0.2, &[hidden, dim]),
                t(hidden, 11, 0.0, 0.1, &[hidden]),
            ),
            down: (
                t(dim * hidden, 13, 0.0, 0.1, &[dim, hidden]),
                t(dim, 17, 0.0, 0.1, &[dim]),
            ),
        }
    }

    /// These weights with `up` as the up projection.
    fn weights<'a>(&'a self, up: (&'a Tensor, &'a Tensor)) -> ModulatedFfn<'a> {
        ModulatedFfn {
            shift: &self.shift,
            scale: &self.scale,
            eps: EPS,
            up,
            down: (&self.down.0, &self.down.1),
        }
    }

    fn run(&self, x: &Tensor, pass_rows: usize) -> flashvsr_tensor::Result<Tensor> {
        x.modulated_ffn(&self.weights((&self.up.0, &self.up.1)), pass_rows)
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn one_pass_is_the_ops_it_stands_for() {
    let cpu = CpuBackend::new_ref();
    let (rows, dim, hidden) = (9, 24, 40);
    let ffn = Ffn::new(&cpu, dim, hidden);
    let x = Tensor::from_slice(&cpu, &values(rows * dim, 19, 0.5), &[rows, dim]).unwrap();
    let want = x
        .modulate(&ffn.shift, &ffn.scale, EPS)
        .unwrap()
        .linear(&ffn.up.0, Some(&ffn.up.1))
        .unwrap()
        .gelu_tanh()
        .unwrap()
        .linear(&ffn.down.0, Some(&ffn.down.1))
        .unwrap()
        .add(&x)
        .unwrap();
    for pass_rows in [rows, rows + 5] {
        let got = ffn.run(&x, pass_rows).unwrap();
        assert_eq!(got.shape(), [rows, dim]);
        assert_eq!(bits(&got), bits(&want), "one pass of {pass_rows} rows");
    }
}

#[test]
fn passes_of_any_size_give_the_one_pass_values() {
    let cpu = CpuBackend::new_ref();
    let (rows, dim, hidden) = (23, 16, 48);
    let ffn = Ffn::new(&cpu, dim, hidden);
    let x = Tensor::from_slice(&cpu, &values(rows * dim, 23, -0.25), &[rows, dim]).unwrap();
    let whole = bits(&ffn.run(&x, rows).unwrap());
    // Equal passes, a short last pass, passes of one row.
    for pass_rows in [1, 5, 8, 22] {
        let got = ffn.run(&x, pass_rows).unwrap();
        assert_eq!(got.shape(), [rows, dim]);
        assert_eq!(bits(&got), whole, "passes of {pass_rows} rows");
    }
}

#[test]
fn mismatched_shapes_are_refused() {
    let cpu = CpuBackend::new_ref();
    let (dim, hidden) = (16, 32);
    let ffn = Ffn::new(&cpu, dim, hidden);
    let x = Tensor::from_slice(&cpu, &values(4 * dim, 29, 0.0), &[4, dim]).unwrap();
    assert!(ffn.run(&x, 0).is_err(), "passes of no rows");
    let narrow = Tensor::from_slice(&cpu, &values(4 * 8, 31, 0.0), &[4, 8]).unwrap();
    assert!(
        ffn.run(&narrow, 2).is_err(),
        "rows narrower than the weights"
    );
    let swapped = (&ffn.up.0, &ffn.up.1);
    let err = x.modulated_ffn(
        &ModulatedFfn {
            down: swapped,
            ..ffn.weights(swapped)
        },
        2,
    );
    assert!(
        err.is_err(),
        "a down projection of the up projection's shape"
    );
}

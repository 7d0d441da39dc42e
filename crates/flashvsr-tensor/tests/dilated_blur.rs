//! `Tensor::dilated_blur` on the CPU backend: each plane of the last two dims on its own, at any
//! rank ≥ 2, and bad arguments refused instead of panicking.

use flashvsr_tensor::cpu::blur::dilated_blur;
use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::Tensor;

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect()
}

#[test]
fn blurs_every_plane_of_the_last_two_dims() {
    let backend = CpuBackend::new_ref();
    let (h, w) = (5, 6);
    for shape in [vec![h, w], vec![3, h, w], vec![3, 2, h, w]] {
        let planes: usize = shape[..shape.len() - 2].iter().product();
        let x = values(planes * h * w);
        let t = Tensor::from_slice(&backend, &x, &shape).unwrap();
        for d in [1, 2, 16] {
            let y = t.dilated_blur(d).unwrap();
            assert_eq!(y.shape(), shape.as_slice());
            let got = y.to_vec().unwrap();
            for p in 0..planes {
                let plane = &x[p * h * w..(p + 1) * h * w];
                let want = dilated_blur(plane, h, w, d);
                assert_eq!(&got[p * h * w..(p + 1) * h * w], want, "{shape:?}, {d}");
            }
        }
    }
}

#[test]
fn a_vector_or_a_zero_dilation_is_an_error() {
    let backend = CpuBackend::new_ref();
    let v = Tensor::from_slice(&backend, &values(4), &[4]).unwrap();
    assert!(v.dilated_blur(1).is_err());
    let m = Tensor::from_slice(&backend, &values(4), &[2, 2]).unwrap();
    assert!(m.dilated_blur(0).is_err());
}

#[test]
fn empty_planes_give_an_empty_tensor() {
    let backend = CpuBackend::new_ref();
    let t = Tensor::zeros(&backend, &[3, 0, 4]).unwrap();
    assert_eq!(t.dilated_blur(2).unwrap().shape(), &[3, 0, 4]);
}

/// A strided matrix view: element (r, c) is `data[offset + r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    pub fn new(data: &'a [f32], offset: usize, rs: usize, cs: usize) -> Self {
        View {
            data,
            offset,
            rs,
            cs,
        }
    }

    fn last_index(&self, rows: usize, cols: usize) -> usize {
        self.offset + rows.saturating_sub(1) * self.rs + cols.saturating_sub(1) * self.cs
    }
}

/// `c[m×n] = alpha · a[m×k] · b[k×n] + beta · c`, every view bounds-checked before the unsafe call.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: View,
    b: View,
    beta: f32,
    c: &mut [f32],
    c_offset: usize,
    rsc: usize,
    csc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            for j in 0..n {
                c[c_offset + r * rsc + j * csc] *= beta;
            }
        }
        return;
    }
    assert!(a.last_index(m, k) < a.data.len(), "gemm: a out of bounds");
    assert!(b.last_index(k, n) < b.data.len(), "gemm: b out of bounds");
    assert!(
        c_offset + (m - 1) * rsc + (n - 1) * csc < c.len(),
        "gemm: c out of bounds"
    );
    // SAFETY: all three views were bounds-checked above for the full m×k, k×n and m×n extents.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr().add(a.offset),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(b.offset),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr().add(c_offset),
            rsc as isize,
            csc as isize,
        );
    }
}

/// `y (m, n) = x (m, k) · w (n, k)ᵀ + bias`
pub fn linear(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    let beta = match bias {
        Some(b) => {
            y.chunks_mut(n).for_each(|row| row.copy_from_slice(b));
            1.0
        }
        None => 0.0,
    };
    sgemm(
        m,
        k,
        n,
        1.0,
        View::new(x, 0, k, 1),
        View::new(w, 0, 1, k),
        beta,
        &mut y,
        0,
        n,
        1,
    );
    y
}

/// `s (heads, nq, nk)`: `s[h, i, j] = q[i, h·hd..(h+1)·hd] · k[j, h·hd..(h+1)·hd]`, `q (nq, dim)`,
/// `k (nk, dim)`, `hd = dim / heads`. One GEMM per head on strided views of the heads' columns:
/// matrixmultiply packs its operands first, so the sums are those of a GEMM on contiguous copies.
pub fn head_scores(q: &[f32], nq: usize, k: &[f32], nk: usize, heads: usize) -> Vec<f32> {
    let mut s = vec![0.0f32; heads * nq * nk];
    if heads == 0 || nq == 0 || nk == 0 {
        return s;
    }
    let dim = q.len() / nq;
    let hd = dim / heads;
    for h in 0..heads {
        sgemm(
            nq,
            hd,
            nk,
            1.0,
            View::new(q, h * hd, dim, 1),
            View::new(k, h * hd, 1, dim),
            0.0,
            &mut s,
            h * nq * nk,
            nk,
            1,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{head_scores, linear};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The columns `h·hd..(h+1)·hd` of every row, contiguous.
    fn head_columns(x: &[f32], dim: usize, h: usize, hd: usize) -> Vec<f32> {
        x.chunks(dim)
            .flat_map(|row| row[h * hd..(h + 1) * hd].to_vec())
            .collect()
    }

    #[test]
    fn head_scores_match_a_naive_dot_product() {
        let (nq, nk, heads, hd) = (5, 7, 3, 16);
        let dim = heads * hd;
        let (q, k) = (values(nq * dim, 1), values(nk * dim, 2));
        let s = head_scores(&q, nq, &k, nk, heads);
        for h in 0..heads {
            for i in 0..nq {
                for j in 0..nk {
                    let want: f64 = (0..hd)
                        .map(|d| q[i * dim + h * hd + d] as f64 * k[j * dim + h * hd + d] as f64)
                        .sum();
                    let got = s[(h * nq + i) * nk + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn head_scores_equal_one_linear_per_head_bit_for_bit() {
        let (nq, nk, heads, hd) = (9, 40, 4, 128);
        let dim = heads * hd;
        let (q, k) = (values(nq * dim, 3), values(nk * dim, 4));
        let s = head_scores(&q, nq, &k, nk, heads);
        for h in 0..heads {
            let want = linear(
                &head_columns(&q, dim, h, hd),
                nq,
                hd,
                &head_columns(&k, dim, h, hd),
                nk,
                None,
            );
            assert_eq!(&s[h * nq * nk..(h + 1) * nq * nk], &want[..]);
        }
    }

    #[test]
    fn head_scores_reject_mismatched_shapes() {
        use crate::{cpu::CpuBackend, Tensor};
        let cpu = CpuBackend::new_ref();
        let zeros = |shape: &[usize]| Tensor::zeros(&cpu, shape).unwrap();
        let q = zeros(&[2, 8]);
        assert!(q.head_scores(&zeros(&[3, 6]), 2).is_err());
        assert!(q.head_scores(&q, 3).is_err());
        assert!(q.head_scores(&q, 0).is_err());
        assert!(zeros(&[2, 2, 4]).head_scores(&q, 2).is_err());
        let s = q.head_scores(&zeros(&[3, 8]), 2).unwrap();
        assert_eq!(s.shape(), &[2, 2, 3]);
    }

    #[test]
    fn head_scores_of_nothing_are_empty() {
        assert!(head_scores(&[], 0, &[1.0; 8], 2, 2).is_empty());
        assert!(head_scores(&[1.0; 8], 2, &[], 0, 2).is_empty());
    }
}

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

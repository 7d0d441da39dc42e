//! Window layout (spec §5.1): tokens `(f, i, j)` regrouped into windows of 2 × 8 × 8 = 128 tokens,
//! windows ordered (temporal group, window row, window col), tokens inside a window (f%2, i%8, j%8).
//! The residual stream of a chunk lives in window order from patch embedding to the head, because
//! every op except attention is per token.

use flashvsr_tensor::Tensor;

use crate::Result;

pub const WINDOW_T: usize = 2;
pub const WINDOW_HW: usize = 8;
pub const WINDOW_TOKENS: usize = WINDOW_T * WINDOW_HW * WINDOW_HW;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrid {
    pub frames: usize,
    pub h: usize,
    pub w: usize,
}

impl TokenGrid {
    pub fn tokens(&self) -> usize {
        self.frames * self.h * self.w
    }

    pub fn groups(&self) -> usize {
        self.frames / WINDOW_T
    }

    pub fn windows_per_group(&self) -> usize {
        (self.h / WINDOW_HW) * (self.w / WINDOW_HW)
    }

    /// `(frame, row, col)` of each token in window order.
    pub fn window_order_positions(
        &self,
        first_frame: usize,
    ) -> impl Iterator<Item = (usize, usize, usize)> {
        let (hb, wb) = (self.h / WINDOW_HW, self.w / WINDOW_HW);
        let groups = self.groups();
        (0..groups).flat_map(move |g| {
            (0..hb).flat_map(move |r| {
                (0..wb).flat_map(move |u| {
                    (0..WINDOW_T).flat_map(move |df| {
                        (0..WINDOW_HW).flat_map(move |di| {
                            (0..WINDOW_HW).map(move |dj| {
                                (
                                    first_frame + g * WINDOW_T + df,
                                    r * WINDOW_HW + di,
                                    u * WINDOW_HW + dj,
                                )
                            })
                        })
                    })
                })
            })
        })
    }
}

/// `(f·h·w, D)` in raster order → window order.
pub fn to_windows(x: &Tensor, g: TokenGrid) -> Result<Tensor> {
    let d = x.dim(1);
    let shape = [
        g.groups(),
        WINDOW_T,
        g.h / WINDOW_HW,
        WINDOW_HW,
        g.w / WINDOW_HW,
        WINDOW_HW,
        d,
    ];
    Ok(x.reshape(&shape)?
        .permute(&[0, 2, 4, 1, 3, 5, 6])?
        .reshape(&[g.tokens(), d])?)
}

/// Window order → raster order.
pub fn from_windows(x: &Tensor, g: TokenGrid) -> Result<Tensor> {
    let d = x.dim(1);
    let shape = [
        g.groups(),
        g.h / WINDOW_HW,
        g.w / WINDOW_HW,
        WINDOW_T,
        WINDOW_HW,
        WINDOW_HW,
        d,
    ];
    Ok(x.reshape(&shape)?
        .permute(&[0, 3, 1, 4, 2, 5, 6])?
        .reshape(&[g.tokens(), d])?)
}

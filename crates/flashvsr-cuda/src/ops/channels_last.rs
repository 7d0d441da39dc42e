//! Channels-last bf16 activations (fast mode). A frame convolution on cuDNN writes its output in
//! cuDNN's own layout and dtype (conv_cudnn.rs), and the ops the TCDecoder applies between its
//! convolutions (ReLU, the residual add, the channel cat with the MemBlock's memory frame, frame
//! and channel slices, nearest upsampling, the temporal growth's reshape + permute) keep it that
//! way here, so the next convolution reads it in place. Every other op sees f32 row-major data
//! through `CudaBackend::ptr`, which converts a channels-last input for the op's duration: the model
//! and the CPU backend never know. Each `try_*` returns Ok(None), with nothing enqueued, where its
//! inputs are not channels-last in the geometry of their shapes.

use flashvsr_tensor::{Tensor, UnaryOp};

use crate::backend::CudaBackend;
use crate::buffer::{ChannelsLast, CudaBuffer, Storage};
use crate::error::CudaResult;
use crate::launch::KernelArgs;

/// Channels moved by one thread of the channels-last kernels (16 bytes).
const GROUP: usize = ChannelsLast::CHANNEL_GROUP;

/// One input of a channels-last cat: the tensor's own buffer, or a staged copy.
struct Piece {
    ptr: u64,
    geometry: ChannelsLast,
}

impl CudaBackend {
    /// x's device pointer and geometry when its buffer is channels-last in the geometry of x's
    /// shape (a reshaped view of such a buffer is not: it reads through `ptr`).
    pub(crate) fn channels_last_view(&self, x: &Tensor) -> CudaResult<Option<(u64, ChannelsLast)>> {
        let buf = self.input(x)?;
        Ok(buf
            .channels_last()
            .filter(|g| g.shape()[..] == *x.shape())
            .map(|g| (buf.ptr(), g)))
    }

    /// Whether `x` is stored channels-last (for tests and diagnostics).
    pub fn is_channels_last(&self, x: &Tensor) -> bool {
        self.input(x).is_ok_and(|b| b.channels_last().is_some())
    }

    /// A bf16 channels-last output of geometry `g` (poisoned when asked).
    pub(crate) fn output_channels_last(&self, g: ChannelsLast) -> CudaResult<CudaBuffer> {
        Ok(self
            .output_as(g.elems(), Storage::Bf16)?
            .into_channels_last(g))
    }

    /// The values of a channels-last buffer as a new f32 row-major buffer of its shape (which
    /// every reshape of the tensor reads in the same order).
    pub(crate) fn channels_last_to_f32(
        &self,
        buf: &CudaBuffer,
        g: ChannelsLast,
    ) -> CudaResult<CudaBuffer> {
        let out = self.output(g.elems())?;
        if g.elems() > 0 {
            self.unstage_from_channels_last(buf.ptr(), out.ptr(), g)?;
        }
        Ok(out)
    }

    /// `y = act(y + bias + residual)` in place on a convolution's channels-last output; `residual`
    /// (0: none) is channels-last in the same geometry. Adding the residual here saves the add's
    /// own pass: it reads y and the residual and writes the sum, 6 bytes an element in bf16, where
    /// this pass reads and writes y anyway.
    pub(crate) fn channels_last_epilogue(
        &self,
        y: u64,
        bias: u64,
        residual: u64,
        (has_bias, relu): (bool, bool),
        g: ChannelsLast,
    ) -> CudaResult<()> {
        let n8 = (g.elems() / GROUP) as u64;
        if !(has_bias || relu || residual != 0) || n8 == 0 {
            return Ok(());
        }
        let args = KernelArgs::new()
            .push(y)
            .push(bias)
            .push(residual)
            .push(n8)
            .push((g.c / GROUP) as u64)
            .push(has_bias as u64)
            .push(relu as u64);
        self.launch("channels_last_bias_act", self.grid(n8), args)
    }

    /// `groups` groups of 8 bf16 channels from `src` to `dst`, as they are.
    pub(crate) fn copy_channel_groups(&self, src: u64, dst: u64, groups: usize) -> CudaResult<()> {
        let moves = BlockCopy {
            outer: 1,
            block: groups,
            src: (0, 0),
            dst: (0, 0),
        };
        self.copy_groups(src, dst, moves)
    }

    /// A causal conv's input with the time folded into the channels, from the channels-last
    /// source `src` of geometry `g`: staged frame f (of `frames`), position p, holds source frames
    /// `first + f .. first + f + fold` side by side in its channels (`[f][p][fold][c]`, the
    /// staging kernel's folded layout for temporal stride 1). One copy per tap, each moving the
    /// group's positions in 16-byte pieces.
    pub(crate) fn stage_folded_channels_last(
        &self,
        src: u64,
        dst: u64,
        g: ChannelsLast,
        (first, frames, fold): (usize, usize, usize),
    ) -> CudaResult<()> {
        let c8 = g.c / GROUP;
        for tap in 0..fold {
            let moves = BlockCopy {
                outer: frames * g.plane(),
                block: c8,
                src: (c8, (first + tap) * g.plane() * c8),
                dst: (fold * c8, tap * c8),
            };
            self.copy_groups(src, dst, moves)?;
        }
        Ok(())
    }

    /// ReLU stays channels-last (exact in bf16); other unary ops read f32.
    pub(crate) fn try_unary_channels_last(
        &self,
        x: &Tensor,
        op: UnaryOp,
    ) -> CudaResult<Option<CudaBuffer>> {
        let Some((src, g)) = self.channels_last_view(x)?.filter(|_| op == UnaryOp::Relu) else {
            return Ok(None);
        };
        let out = self.output_channels_last(g)?;
        let n8 = (g.elems() / GROUP) as u64;
        if n8 > 0 {
            let args = KernelArgs::new().push(src).push(out.ptr()).push(n8);
            self.launch("channels_last_relu", self.grid(n8), args)?;
        }
        Ok(Some(out))
    }

    /// Two channels-last tensors of one geometry: computed in f32, stored channels-last.
    /// `code` as `binary_f32` reads it.
    pub(crate) fn try_binary_channels_last(
        &self,
        a: &Tensor,
        b: &Tensor,
        code: i32,
    ) -> CudaResult<Option<CudaBuffer>> {
        let (Some((pa, g)), Some((pb, gb))) =
            (self.channels_last_view(a)?, self.channels_last_view(b)?)
        else {
            return Ok(None);
        };
        if g != gb {
            return Ok(None);
        }
        let out = self.output_channels_last(g)?;
        let n8 = (g.elems() / GROUP) as u64;
        if n8 > 0 {
            let args = KernelArgs::new()
                .push(pa)
                .push(pb)
                .push(out.ptr())
                .push(n8)
                .push(code);
            self.launch("channels_last_binary", self.grid(n8), args)?;
        }
        Ok(Some(out))
    }

    /// Nearest 2× upsampling, channels-last in and out.
    pub(crate) fn try_upsample_channels_last(&self, x: &Tensor) -> CudaResult<Option<CudaBuffer>> {
        let Some((src, g)) = self.channels_last_view(x)? else {
            return Ok(None);
        };
        let up = ChannelsLast {
            h: 2 * g.h,
            w: 2 * g.w,
            ..g
        };
        let out = self.output_channels_last(up)?;
        let n8 = (up.elems() / GROUP) as u64;
        if n8 > 0 {
            let args = KernelArgs::new()
                .push(src)
                .push(out.ptr())
                .push(g.t as u64)
                .push(g.h as u64)
                .push(g.w as u64)
                .push((g.c / GROUP) as u64);
            self.launch("channels_last_upsample2x", self.grid(n8), args)?;
        }
        Ok(Some(out))
    }

    /// A frame range (dim 1) or a channel range in whole groups of 8 (dim 0).
    pub(crate) fn try_narrow_channels_last(
        &self,
        x: &Tensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> CudaResult<Option<CudaBuffer>> {
        let Some((src, g)) = self.channels_last_view(x)? else {
            return Ok(None);
        };
        let frame = g.plane() * g.c / GROUP;
        let (out_g, moves) = match dim {
            1 => (
                ChannelsLast { t: len, ..g },
                BlockCopy {
                    outer: 1,
                    block: len * frame,
                    src: (0, start * frame),
                    dst: (0, 0),
                },
            ),
            0 if start.is_multiple_of(GROUP) && len.is_multiple_of(GROUP) && len > 0 => (
                ChannelsLast { c: len, ..g },
                BlockCopy {
                    outer: g.t * g.plane(),
                    block: len / GROUP,
                    src: (g.c / GROUP, start / GROUP),
                    dst: (len / GROUP, 0),
                },
            ),
            _ => return Ok(None),
        };
        let out = self.output_channels_last(out_g)?;
        self.copy_groups(src, out.ptr(), moves)?;
        Ok(Some(out))
    }

    /// Channel (dim 0) or frame (dim 1) concatenation where at least one input is channels-last;
    /// the others are staged into channels-last copies (the MemBlock's zero first memory frame).
    pub(crate) fn try_cat_channels_last(
        &self,
        xs: &[&Tensor],
        dim: usize,
    ) -> CudaResult<Option<CudaBuffer>> {
        if dim > 1 || xs.is_empty() {
            return Ok(None);
        }
        let mut any = false;
        for x in xs {
            if ChannelsLast::of_shape(x.shape()).is_none() {
                return Ok(None);
            }
            any |= self.channels_last_view(x)?.is_some();
        }
        if !any {
            return Ok(None);
        }
        let pieces = xs
            .iter()
            .map(|x| self.channels_last_piece(x))
            .collect::<CudaResult<Vec<Piece>>>()?;
        let first = pieces[0].geometry;
        let total = |f: fn(&ChannelsLast) -> usize| pieces.iter().map(|p| f(&p.geometry)).sum();
        let out_g = if dim == 0 {
            ChannelsLast {
                c: total(|g| g.c),
                ..first
            }
        } else {
            ChannelsLast {
                t: total(|g| g.t),
                ..first
            }
        };
        let out = self.output_channels_last(out_g)?;
        let mut offset = 0;
        for p in &pieces {
            let g = p.geometry;
            let moves = if dim == 0 {
                BlockCopy {
                    outer: g.t * g.plane(),
                    block: g.c / GROUP,
                    src: (g.c / GROUP, 0),
                    dst: (out_g.c / GROUP, offset / GROUP),
                }
            } else {
                let frame = g.plane() * g.c / GROUP;
                BlockCopy {
                    outer: 1,
                    block: g.t * frame,
                    src: (0, 0),
                    dst: (0, offset * frame),
                }
            };
            self.copy_groups(p.ptr, out.ptr(), moves)?;
            offset += if dim == 0 { g.c } else { g.t };
        }
        Ok(Some(out))
    }

    /// The temporal growth `(s·C, T, H, W)` → reshape `(s, C, T, H, W)` → permute
    /// `[1, 2, 0, 3, 4]` (channel block j becomes sub-frame j): channels-last in, channels-last
    /// `(C, s·T, H, W)` out, which is the row-major order of the permuted shape and of its
    /// reshape to `(C, s·T, H, W)`.
    pub(crate) fn try_permute_channels_last(
        &self,
        x: &Tensor,
        dims: &[usize],
    ) -> CudaResult<Option<CudaBuffer>> {
        let buf = self.input(x)?;
        let (Some(g), &[s, c, t, h, w]) = (buf.channels_last(), x.shape()) else {
            return Ok(None);
        };
        let grows = dims == [1, 2, 0, 3, 4]
            && g.shape() == [s * c, t, h, w]
            && c.is_multiple_of(GROUP)
            && c > 0;
        if !grows {
            return Ok(None);
        }
        let out_g = ChannelsLast { c, t: s * t, h, w };
        let out = self.output_channels_last(out_g)?;
        let (groups, plane) = (c / GROUP, g.plane());
        for frame in 0..t {
            for part in 0..s {
                let moves = BlockCopy {
                    outer: plane,
                    block: groups,
                    src: (s * groups, frame * plane * s * groups + part * groups),
                    dst: (groups, (frame * s + part) * plane * groups),
                };
                self.copy_groups(buf.ptr(), out.ptr(), moves)?;
            }
        }
        Ok(Some(out))
    }

    /// `x` channels-last: its own buffer, or a staged copy kept for the op.
    fn channels_last_piece(&self, x: &Tensor) -> CudaResult<Piece> {
        if let Some((ptr, geometry)) = self.channels_last_view(x)? {
            return Ok(Piece { ptr, geometry });
        }
        let geometry = match ChannelsLast::of_shape(x.shape()) {
            Some(g) => g,
            None => {
                return Err(crate::error::CudaError::Input(format!(
                    "shape {:?} cannot be stored channels-last",
                    x.shape()
                )))
            }
        };
        let staged = self.output_channels_last(geometry)?;
        if geometry.elems() > 0 {
            self.stage_to_channels_last(self.ptr(x)?, staged.ptr(), geometry)?;
        }
        let ptr = self.keep_for_op(staged);
        Ok(Piece { ptr, geometry })
    }

    /// `m` in 16-byte units (8 bf16 channels, or 4 f32 values for `copy_blocks`).
    pub(crate) fn copy_groups(&self, src: u64, dst: u64, m: BlockCopy) -> CudaResult<()> {
        let n = (m.outer * m.block) as u64;
        if n == 0 {
            return Ok(());
        }
        if let Some(narrow) = m.narrow_index() {
            let args = KernelArgs::new()
                .push(src)
                .push(dst)
                .push(narrow.outer)
                .push(narrow.block)
                .push(narrow.src.0)
                .push(narrow.src.1)
                .push(narrow.dst.0)
                .push(narrow.dst.1);
            return self.launch("copy_blocks_u128_i32", self.grid(n), args);
        }
        let args = KernelArgs::new()
            .push(src)
            .push(dst)
            .push(m.outer as u64)
            .push(m.block as u64)
            .push(m.src.0 as u64)
            .push(m.src.1 as u64)
            .push(m.dst.0 as u64)
            .push(m.dst.1 as u64);
        self.launch("copy_blocks_u128", self.grid(n), args)
    }
}

/// `dst[o·dst.0 + dst.1 + r] = src[o·src.0 + src.1 + r]` for `o < outer`, `r < block`, in units
/// of 16 bytes (groups of 8 bf16 channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockCopy {
    pub outer: usize,
    pub block: usize,
    /// (stride, offset)
    pub src: (usize, usize),
    pub dst: (usize, usize),
}

/// A [`BlockCopy`] in the 32-bit arguments of `copy_blocks_u128_i32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NarrowBlockCopy {
    outer: u32,
    block: u32,
    src: (u32, u32),
    dst: (u32, u32),
}

/// Whether block copies take the faster kernels: 32-bit indices where they fit, and row-major
/// copies of whole 16-byte groups moved as such (`FLASHVSR_CUDA_FAST_COPIES=0`: the kernels of
/// before, one 64-bit-indexed element at a time, to compare; the same bytes).
pub(crate) fn fast_copies() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLASHVSR_CUDA_FAST_COPIES").map_or(true, |v| v != "0"))
}

impl BlockCopy {
    /// This copy for `copy_blocks_u128_i32`, when its element count, every index it reads or
    /// writes, and the grid-stride loop's index past the last element (one grid of
    /// `MAX_GRID_THREADS` at most: `grid` launches 16 blocks of 256 threads per SM) stay below
    /// 2^31; None otherwise (an empty copy too), or when switched off.
    fn narrow_index(&self) -> Option<NarrowBlockCopy> {
        const LIMIT: usize = 1 << 31;
        const MAX_GRID_THREADS: usize = 1 << 24;
        if !fast_copies() {
            return None;
        }
        let n = self.outer.checked_mul(self.block)?;
        let end = |(stride, offset): (usize, usize)| {
            self.outer
                .checked_sub(1)?
                .checked_mul(stride)?
                .checked_add(offset)?
                .checked_add(self.block)
        };
        let fits = n + MAX_GRID_THREADS < LIMIT
            && end(self.src).is_some_and(|e| e < LIMIT)
            && end(self.dst).is_some_and(|e| e < LIMIT);
        let narrow = |v: usize| v as u32;
        fits.then(|| NarrowBlockCopy {
            outer: narrow(self.outer),
            block: narrow(self.block),
            src: (narrow(self.src.0), narrow(self.src.1)),
            dst: (narrow(self.dst.0), narrow(self.dst.1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_needs_rank_four_and_whole_channel_groups() {
        assert_eq!(
            ChannelsLast::of_shape(&[16, 2, 3, 5]),
            Some(ChannelsLast {
                c: 16,
                t: 2,
                h: 3,
                w: 5
            })
        );
        assert_eq!(ChannelsLast::of_shape(&[12, 2, 3, 5]), None);
        assert_eq!(ChannelsLast::of_shape(&[16, 2, 15]), None);
        assert_eq!(ChannelsLast::of_shape(&[0, 2, 3, 5]), None);
        assert_eq!(
            ChannelsLast::of_shape(&[8, 1, 2, 2]).map(|g| g.elems()),
            Some(32)
        );
    }

    #[test]
    fn copies_take_32_bit_indices_only_where_every_index_fits() {
        // The MemBlock's cat at 1920×1152: [128, 1, 576, 960] into the first half of 256
        // channels (16-byte groups).
        let cat = BlockCopy {
            outer: 576 * 960,
            block: 16,
            src: (16, 0),
            dst: (32, 16),
        };
        assert_eq!(
            cat.narrow_index(),
            Some(NarrowBlockCopy {
                outer: 576 * 960,
                block: 16,
                src: (16, 0),
                dst: (32, 16),
            })
        );
        // The last destination index is (outer − 1)·stride + offset + block − 1.
        let edge = |dst_off| BlockCopy {
            outer: 2,
            block: 8,
            src: (8, 0),
            dst: ((1 << 30) - 8, dst_off),
        };
        assert!(edge(0).narrow_index().is_some());
        assert!(edge(1 << 30).narrow_index().is_none());
        let many = BlockCopy {
            outer: 1 << 27,
            block: 16,
            src: (16, 0),
            dst: (16, 0),
        };
        assert!(many.narrow_index().is_none(), "2^31 elements");
        let empty = BlockCopy {
            outer: 0,
            block: 16,
            src: (16, 0),
            dst: (16, 0),
        };
        assert!(empty.narrow_index().is_none());
    }
}

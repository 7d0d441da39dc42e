use cudarc::driver::DeviceRepr;
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::{CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;
use crate::ops::channels_last::{fast_copies, BlockCopy};

const MAX_RANK: usize = 8;

/// Mirrors `PermuteParams` in layout.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct PermuteParams {
    rank: u64,
    out_shape: [u64; MAX_RANK],
    src_stride: [u64; MAX_RANK],
}

// SAFETY: plain #[repr(C)] data with the field order and types of the CUDA struct.
unsafe impl DeviceRepr for PermuteParams {}

/// Mirrors `PermuteRowsParams` in layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct PermuteRowsParams {
    rank: u32,
    inner: u32,
    inner_stride: u32,
    rows: u32,
    out_shape: [u32; MAX_RANK],
    src_stride: [u32; MAX_RANK],
}

// SAFETY: plain #[repr(C)] data with the field order and types of the CUDA struct.
unsafe impl DeviceRepr for PermuteRowsParams {}

/// The output axes of `permute(shape, dims)` as (size, source stride), outermost first, with
/// axes of size 1 dropped and neighbours that stay neighbours in the source merged: fewer
/// divisions per row, and a longer inner row where the permutation keeps one.
fn permute_axes(shape: &[usize], dims: &[usize]) -> Vec<(usize, usize)> {
    let mut axes: Vec<(usize, usize)> = Vec::with_capacity(dims.len());
    for &d in dims {
        let axis = (shape[d], product(&shape[d + 1..]));
        if axis.0 == 1 {
            continue;
        }
        match axes.last_mut() {
            Some(last) if last.1 == axis.1 * axis.0 => *last = (last.0 * axis.0, axis.1),
            _ => axes.push(axis),
        }
    }
    axes
}

/// Output rows shorter than this go to the per-element kernel: a warp a row would leave most
/// lanes idle (the sub-pixel permute `[16, 2, 72, 2, 120, 2]` has rows of 2: 0.31 ms a call in
/// rows against 0.025 per element, H200).
const PERMUTE_MIN_ROW: usize = 32;

/// The row form's parameters, or None where an index would not fit in 31 bits, there are too
/// many axes, or the rows are short.
fn permute_rows_params(shape: &[usize], dims: &[usize]) -> Option<PermuteRowsParams> {
    let n = product(shape);
    if n == 0 || n > i32::MAX as usize {
        return None;
    }
    let axes = permute_axes(shape, dims);
    let (&(inner, inner_stride), outer) = axes.split_last().unwrap_or((&(1, 1), &[]));
    if outer.len() > MAX_RANK || (inner < PERMUTE_MIN_ROW && !outer.is_empty()) {
        return None;
    }
    let mut p = PermuteRowsParams {
        rank: outer.len() as u32,
        inner: inner as u32,
        inner_stride: inner_stride as u32,
        rows: (n / inner) as u32,
        out_shape: [1; MAX_RANK],
        src_stride: [0; MAX_RANK],
    };
    for (i, &(size, stride)) in outer.iter().enumerate() {
        p.out_shape[i] = size as u32;
        p.src_stride[i] = stride as u32;
    }
    Some(p)
}

fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

impl CudaBackend {
    pub(crate) fn op_permute(&self, x: &Tensor, dims: &[usize]) -> CudaResult<CudaBuffer> {
        if let Some(out) = self.try_permute_channels_last(x, dims)? {
            return Ok(out);
        }
        let shape = x.shape();
        if let Some(p) = permute_rows_params(shape, dims) {
            let out = self.output(x.elem_count())?;
            let warps_per_block = 8u32;
            let blocks = p.rows.div_ceil(warps_per_block).min(1 << 20);
            let cfg = cudarc::driver::LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (32 * warps_per_block, 1, 1),
                shared_mem_bytes: 0,
            };
            let args = KernelArgs::new().push(self.ptr(x)?).push(out.ptr()).push(p);
            self.launch("permute_rows_f32", cfg, args)?;
            return Ok(out);
        }
        let rank = shape.len();
        if rank > MAX_RANK {
            return Err(CudaError::Unsupported(format!(
                "permute of rank {rank} > {MAX_RANK}"
            )));
        }
        let mut p = PermuteParams {
            rank: rank as u64,
            out_shape: [1; MAX_RANK],
            src_stride: [0; MAX_RANK],
        };
        for (i, &d) in dims.iter().enumerate() {
            p.out_shape[i] = shape[d] as u64;
            p.src_stride[i] = product(&shape[d + 1..]) as u64;
        }
        let n = x.elem_count() as u64;
        let out = self.output(x.elem_count())?;
        if n > 0 {
            let args = KernelArgs::new()
                .push(self.ptr(x)?)
                .push(out.ptr())
                .push(n)
                .push(p);
            self.launch("permute_f32", self.grid(n), args)?;
        }
        Ok(out)
    }

    /// `dst[o·dst_stride + dst_off + r] = src[o·src_stride + src_off + r]`, `r < block`, in
    /// elements of `storage`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_blocks(
        &self,
        storage: Storage,
        src: u64,
        dst: u64,
        outer: usize,
        block: usize,
        (src_stride, src_off): (usize, usize),
        (dst_stride, dst_off): (usize, usize),
    ) -> CudaResult<()> {
        let n = (outer * block) as u64;
        if n == 0 {
            return Ok(());
        }
        // Whole 16-byte groups at 16-byte-aligned addresses (rows of the DiT's 1536 channels,
        // frames of a map): moved a group per thread, as channels-last copies move theirs.
        let per_group = 16 / storage.bytes();
        let strides = if outer > 1 {
            [src_stride, dst_stride]
        } else {
            [0, 0]
        };
        let grouped = [block, src_off, dst_off, strides[0], strides[1]]
            .iter()
            .all(|v| v.is_multiple_of(per_group))
            && src.is_multiple_of(16)
            && dst.is_multiple_of(16);
        if grouped && fast_copies() {
            let moves = BlockCopy {
                outer,
                block: block / per_group,
                src: (strides[0] / per_group, src_off / per_group),
                dst: (strides[1] / per_group, dst_off / per_group),
            };
            return self.copy_groups(src, dst, moves);
        }
        let args = KernelArgs::new()
            .push(src)
            .push(dst)
            .push(outer as u64)
            .push(block as u64)
            .push(src_stride as u64)
            .push(src_off as u64)
            .push(dst_stride as u64)
            .push(dst_off as u64);
        let kernel = match storage {
            Storage::F32 => "copy_blocks_f32",
            Storage::Bf16 => "copy_blocks_u16",
        };
        self.launch(kernel, self.grid(n), args)
    }

    pub(crate) fn op_narrow(
        &self,
        x: &Tensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> CudaResult<CudaBuffer> {
        if let Some(out) = self.try_narrow_channels_last(x, dim, start, len)? {
            return Ok(out);
        }
        let shape = x.shape();
        let outer = product(&shape[..dim]);
        let inner = product(&shape[dim + 1..]);
        // bf16 storage stays bf16 (slices of the KV cache).
        let (src, storage) = self.raw(x)?;
        let out = self.output_as(outer * len * inner, storage)?;
        self.copy_blocks(
            storage,
            src,
            out.ptr(),
            outer,
            len * inner,
            (shape[dim] * inner, start * inner),
            (len * inner, 0),
        )?;
        Ok(out)
    }

    pub(crate) fn op_cat(&self, xs: &[&Tensor], dim: usize) -> CudaResult<CudaBuffer> {
        if let Some(out) = self.try_cat_channels_last(xs, dim)? {
            return Ok(out);
        }
        let shape = xs[0].shape();
        let outer = product(&shape[..dim]);
        let inner = product(&shape[dim + 1..]);
        let total: usize = xs.iter().map(|x| x.dim(dim)).sum();
        // All bf16 (the KV cache's groups) stays bf16; any mix is widened to f32.
        let mut storage = if xs.is_empty() {
            Storage::F32
        } else {
            Storage::Bf16
        };
        for x in xs {
            if self.raw(x)?.1 == Storage::F32 {
                storage = Storage::F32;
            }
        }
        let out = self.output_as(outer * total * inner, storage)?;
        let mut offset = 0;
        for x in xs {
            let block = x.dim(dim) * inner;
            let src = match storage {
                Storage::F32 => self.ptr(x)?,
                Storage::Bf16 => self.raw(x)?.0,
            };
            self.copy_blocks(
                storage,
                src,
                out.ptr(),
                outer,
                block,
                (block, 0),
                (total * inner, offset * inner),
            )?;
            offset += x.dim(dim);
        }
        Ok(out)
    }

    pub(crate) fn op_upsample_nearest2x(&self, x: &Tensor) -> CudaResult<CudaBuffer> {
        if let Some(out) = self.try_upsample_channels_last(x)? {
            return Ok(out);
        }
        let s = x.shape();
        let (planes, h, w) = (s[0] * s[1], s[2], s[3]);
        let n = planes * 4 * h * w;
        let out = self.output(n)?;
        if n > 0 {
            let args = KernelArgs::new()
                .push(self.ptr(x)?)
                .push(out.ptr())
                .push(planes as u64)
                .push(h as u64)
                .push(w as u64);
            self.launch("upsample2x_f32", self.grid(n as u64), args)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_axes_drop_ones_and_merge_neighbours() {
        // The LQ projector's patch permute: (3, 4, 72, 16, 120, 16) by [0, 3, 5, 1, 2, 4]; the
        // frames and patch rows (source axes 1, 2) stay neighbours.
        assert_eq!(
            permute_axes(&[3, 4, 72, 16, 120, 16], &[0, 3, 5, 1, 2, 4]),
            vec![
                (3, 4 * 72 * 16 * 120 * 16),
                (16, 120 * 16),
                (16, 1),
                (4 * 72, 16 * 120 * 16),
                (120, 16)
            ]
        );
        // The identity is one row; a transpose keeps both axes.
        assert_eq!(permute_axes(&[2, 1, 5], &[0, 1, 2]), vec![(10, 1)]);
        assert_eq!(
            permute_axes(&[3072, 8640], &[1, 0]),
            vec![(8640, 1), (3072, 8640)]
        );
        // The windows' permute keeps its channel rows whole.
        assert_eq!(
            permute_axes(&[1, 2, 9, 8, 15, 8, 1536], &[0, 2, 4, 1, 3, 5, 6]),
            vec![
                (9, 8 * 15 * 8 * 1536),
                (15, 8 * 1536),
                (2, 9 * 8 * 15 * 8 * 1536),
                (8, 15 * 8 * 1536),
                (8 * 1536, 1)
            ]
        );
    }

    #[test]
    fn permute_rows_params_fit_in_31_bits_or_none() {
        let p = permute_rows_params(&[3072, 8640], &[1, 0]).expect("fits");
        assert_eq!(
            (p.rank, p.inner, p.inner_stride, p.rows),
            (1, 3072, 8640, 8640)
        );
        assert_eq!((p.out_shape[0], p.src_stride[0]), (8640, 1));
        assert!(permute_rows_params(&[1 << 16, 1 << 15], &[1, 0]).is_none());
        assert!(permute_rows_params(&[0, 4], &[1, 0]).is_none());
        // A scalar-like tensor: one row of one value.
        let one = permute_rows_params(&[1, 1], &[1, 0]).expect("fits");
        assert_eq!((one.rank, one.inner, one.rows), (0, 1, 1));
        // Rows of 2 stay with the per-element kernel.
        assert!(permute_rows_params(&[16, 2, 72, 2, 120, 2], &[1, 2, 4, 0, 3, 5]).is_none());
    }
}

use cudarc::driver::DeviceRepr;
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

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

fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

impl CudaBackend {
    pub(crate) fn op_permute(&self, x: &Tensor, dims: &[usize]) -> CudaResult<CudaBuffer> {
        let shape = x.shape();
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

    /// `dst[o·dst_stride + dst_off + r] = src[o·src_stride + src_off + r]`, `r < block`.
    #[allow(clippy::too_many_arguments)]
    fn copy_blocks(
        &self,
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
        let args = KernelArgs::new()
            .push(src)
            .push(dst)
            .push(outer as u64)
            .push(block as u64)
            .push(src_stride as u64)
            .push(src_off as u64)
            .push(dst_stride as u64)
            .push(dst_off as u64);
        self.launch("copy_blocks_f32", self.grid(n), args)
    }

    pub(crate) fn op_narrow(
        &self,
        x: &Tensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> CudaResult<CudaBuffer> {
        let shape = x.shape();
        let outer = product(&shape[..dim]);
        let inner = product(&shape[dim + 1..]);
        let out = self.output(outer * len * inner)?;
        self.copy_blocks(
            self.ptr(x)?,
            out.ptr(),
            outer,
            len * inner,
            (shape[dim] * inner, start * inner),
            (len * inner, 0),
        )?;
        Ok(out)
    }

    pub(crate) fn op_cat(&self, xs: &[&Tensor], dim: usize) -> CudaResult<CudaBuffer> {
        let shape = xs[0].shape();
        let outer = product(&shape[..dim]);
        let inner = product(&shape[dim + 1..]);
        let total: usize = xs.iter().map(|x| x.dim(dim)).sum();
        let out = self.output(outer * total * inner)?;
        let mut offset = 0;
        for x in xs {
            let block = x.dim(dim) * inner;
            self.copy_blocks(
                self.ptr(x)?,
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

//! conv3d as im2col + GEMM per output frame, like the CPU reference: `out[:, t] = W · col_t`,
//! `W (O, C·kt·kh·kw)`. The output plane is cut into column chunks so the im2col slab stays
//! within `im2col_budget`. A 1×1×1 kernel without padding skips im2col: the frame is the slab.
//! In the fast mode, convs go to cuDNN first (conv_cudnn.rs) and come here only where it is
//! missing or refuses the shape.

use cudarc::driver::DeviceRepr;
use flashvsr_tensor::{PadMode, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::gemm::{Epilogue, GemmPtrs, GemmShape};
use crate::launch::KernelArgs;

/// Mirrors `Im2col` in conv.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct Im2col {
    c: u64,
    t: u64,
    h: u64,
    w: u64,
    kt: u64,
    kh: u64,
    kw: u64,
    wo: u64,
    t0: u64,
    p0: u64,
    pc: u64,
    pad: i64,
    zero_pad: u64,
}

// SAFETY: plain #[repr(C)] data with the field order and types of the CUDA struct.
unsafe impl DeviceRepr for Im2col {}

const F32: u64 = 4;

impl CudaBackend {
    /// `geometry`: temporal stride, spatial padding and its mode.
    pub(crate) fn op_conv3d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        geometry: (usize, usize, PadMode),
        relu: bool,
    ) -> CudaResult<CudaBuffer> {
        let (stride_t, pad, mode) = geometry;
        if !relu {
            return self.conv3d_linear(x, w, b, stride_t, pad, mode);
        }
        if let Some(out) = self.try_conv3x3_to_three(x, w, b, geometry, true)? {
            return Ok(out);
        }
        if x.elem_count() > 0 && w.elem_count() > 0 {
            if let Some((out, _)) = self.try_conv3d_cudnn(x, w, b, geometry, (true, None))? {
                return Ok(out);
            }
        }
        let y = self.conv3d_linear(x, w, b, stride_t, pad, mode)?;
        let n = flashvsr_tensor::Buffer::len(&y);
        let out = self.output(n)?;
        if n > 0 {
            self.unary_raw(y.ptr(), out.ptr(), n, flashvsr_tensor::UnaryOp::Relu)?;
        }
        Ok(out)
    }

    /// `residual + conv3d(..)`, then ReLU when `relu`: in the channels-last epilogue of a cuDNN
    /// conv where the residual is channels-last too (the Wan VAE's ResBlocks and the TCDecoder's
    /// MemBlocks in the fast mode), else as further ops.
    pub(crate) fn op_conv3d_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        geometry: (usize, usize, PadMode),
        residual: &Tensor,
        relu: bool,
    ) -> CudaResult<CudaBuffer> {
        let fused = if x.elem_count() > 0 && w.elem_count() > 0 {
            self.try_conv3d_cudnn(x, w, b, geometry, (relu, Some(residual)))?
        } else {
            None
        };
        let y = match fused {
            Some((out, true)) => return Ok(out),
            Some((out, false)) => out,
            None => {
                let (stride_t, pad, mode) = geometry;
                self.conv3d_linear(x, w, b, stride_t, pad, mode)?
            }
        };
        let as_tensor = |buf: CudaBuffer| {
            Tensor::from_buffer(x.backend(), std::sync::Arc::new(buf), residual.shape())
                .map_err(|e| crate::error::CudaError::Input(e.to_string()))
        };
        let sum = self.op_binary(&as_tensor(y)?, residual, flashvsr_tensor::BinaryOp::Add)?;
        if !relu {
            return Ok(sum);
        }
        self.op_unary(&as_tensor(sum)?, flashvsr_tensor::UnaryOp::Relu)
    }

    fn conv3d_linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> CudaResult<CudaBuffer> {
        let (c, t, h, wd) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let (o, kt, kh, kw) = (w.dim(0), w.dim(2), w.dim(3), w.dim(4));
        let t_out = (t - kt) / stride_t + 1;
        let (ho, wo) = (h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1);
        let plane = ho * wo;
        let kdim = c * kt * kh * kw;
        if o * t_out * plane > 0 && kdim > 0 {
            let geometry = (stride_t, pad, mode);
            if let Some(out) = self.try_conv3x3_to_three(x, w, b, geometry, false)? {
                return Ok(out);
            }
            if let Some((out, _)) = self.try_conv3d_cudnn(x, w, b, geometry, (false, None))? {
                return Ok(out);
            }
        }
        let out = self.output(o * t_out * plane)?;
        if o * t_out * plane == 0 {
            return Ok(out);
        }
        let row = t_out * plane;
        match b {
            Some(b) => self.broadcast(self.ptr(b)?, out.ptr(), o * row, row, o)?,
            None if kdim == 0 => self.fill(out.ptr(), o * row, 0.0)?,
            None => {}
        }
        if kdim == 0 {
            return Ok(out);
        }
        let (xp, wp) = (self.ptr(x)?, self.ptr(w)?);
        let gemm_shape = |n, ldb| GemmShape {
            m: o,
            n,
            k: kdim,
            lda: kdim,
            ldb,
            ldc: row,
            b_transposed: false,
            epilogue: Epilogue::None,
            bf16_inputs: false,
            bf16_output: false,
        };
        let ptrs = |bp, cp| GemmPtrs {
            a: wp,
            b: bp,
            c: cp,
            bias: 0,
            accumulate: b.is_some(),
            residual: 0,
        };
        let frame = h * wd;
        if kt == 1 && kh == 1 && kw == 1 && pad == 0 {
            // x viewed as [C, T·frame]; with stride 1 all frames are one GEMM.
            let mut gemm = self.gemm();
            if stride_t == 1 {
                return gemm
                    .run(
                        &self.gpu.stream,
                        gemm_shape(row, t * frame),
                        ptrs(xp, out.ptr()),
                    )
                    .map(|_| out);
            }
            for to in 0..t_out {
                let src = xp + (to * stride_t * frame) as u64 * F32;
                let dst = out.ptr() + (to * plane) as u64 * F32;
                gemm.run(
                    &self.gpu.stream,
                    gemm_shape(plane, t * frame),
                    ptrs(src, dst),
                )?;
            }
            return Ok(out);
        }
        // Chunks of whole 64-column groups keep the slab's column offsets aligned.
        let chunk = (self.options().im2col_budget / kdim).max(1);
        let chunk = if chunk >= 64 { chunk / 64 * 64 } else { chunk }.min(plane);
        let (_guard, col) = self.scratch(kdim * chunk)?;
        let mut gemm = self.gemm();
        for to in 0..t_out {
            for p0 in (0..plane).step_by(chunk) {
                let pc = chunk.min(plane - p0);
                let g = Im2col {
                    c: c as u64,
                    t: t as u64,
                    h: h as u64,
                    w: wd as u64,
                    kt: kt as u64,
                    kh: kh as u64,
                    kw: kw as u64,
                    wo: wo as u64,
                    t0: (to * stride_t) as u64,
                    p0: p0 as u64,
                    pc: pc as u64,
                    pad: pad as i64,
                    zero_pad: (mode == PadMode::Zero) as u64,
                };
                let args = KernelArgs::new().push(xp).push(col).push(g);
                self.launch("im2col_f32", self.grid((kdim * pc) as u64), args)?;
                let dst = out.ptr() + (to * plane + p0) as u64 * F32;
                gemm.run(&self.gpu.stream, gemm_shape(pc, pc), ptrs(col, dst))?;
            }
        }
        Ok(out)
    }
}

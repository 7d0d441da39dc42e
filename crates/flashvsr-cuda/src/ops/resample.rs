use cudarc::driver::DevicePtr;
use flashvsr_tensor::{CanvasWindow, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

impl CudaBackend {
    /// Source levels onto a canvas window through fixed-point taps (resample.cu).
    pub(crate) fn op_resample_levels(
        &self,
        levels: &Tensor,
        taps_x: &Tensor,
        taps_y: &Tensor,
        window: CanvasWindow,
        bits: u32,
    ) -> CudaResult<CudaBuffer> {
        let s = levels.shape();
        let (frames, h, w, channels) = (s[0], s[1], s[2], s[3]);
        let (out_w, out_h) = window.size;
        let pixels = frames * out_h * out_w;
        let out = self.output(channels * pixels)?;
        if channels * pixels == 0 {
            return Ok(out);
        }
        // Both passes index in 32 bits, with room for the grid stride.
        let small = |what: &str, v: usize| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v <= i32::MAX as u32)
                .ok_or_else(|| CudaError::Unsupported(format!("resample_levels: {what} = {v}")))
        };
        small("source values", frames * h * w * channels)?;
        let row_pixels = small("resampled row values", frames * h * out_w * channels)?;
        small("output pixels", pixels)?;
        // SAFETY: resample_rows_u8 writes every (frame, row, column, channel) before the second
        // pass reads it.
        let rows_buf = unsafe { self.alloc_block::<u8>(row_pixels as usize) }?;
        let rows_ptr = {
            let (ptr, _guard) = rows_buf.device_ptr(rows_buf.stream());
            ptr
        };
        let (cols, rows) = (taps_x.dim(0), taps_y.dim(0));
        // An origin past the resampled frame reads its last column or row, as the frame's size
        // does; capping it keeps `x + ox` in the kernel far from overflow.
        let (ox, oy) = (window.origin.0.min(cols), window.origin.1.min(rows));
        let u = |v: usize| v as u32;
        let args = KernelArgs::new()
            .push(self.ptr(levels)?)
            .push(self.ptr(taps_x)?)
            .push(rows_ptr)
            .push(u(frames))
            .push(u(h))
            .push(u(w))
            .push(u(channels))
            .push(small("columns", cols)?)
            .push(small("column taps", taps_x.dim(1))?)
            .push(small("column origin", ox)?)
            .push(small("window width", out_w)?)
            .push(bits as i32);
        self.launch(
            "resample_rows_u8",
            self.grid((frames * h * out_w) as u64),
            args,
        )?;
        let args = KernelArgs::new()
            .push(rows_ptr)
            .push(self.ptr(taps_y)?)
            .push(out.ptr())
            .push(u(frames))
            .push(u(h))
            .push(u(channels))
            .push(small("rows", rows)?)
            .push(small("row taps", taps_y.dim(1))?)
            .push(small("row origin", oy)?)
            .push(u(out_w))
            .push(small("window height", out_h)?)
            .push(bits as i32);
        self.launch("resample_columns_f32", self.grid(pixels as u64), args)?;
        // The row levels are freed in stream order, after the second pass.
        drop(rows_buf);
        Ok(out)
    }
}

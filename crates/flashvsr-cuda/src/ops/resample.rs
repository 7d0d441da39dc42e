use flashvsr_tensor::{CanvasWindow, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
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
        let (cols, rows) = (taps_x.dim(0), taps_y.dim(0));
        // An origin past the resampled frame reads its last column or row, as the frame's size
        // does; capping it keeps `x + ox` in the kernel far from overflow.
        let (ox, oy) = (window.origin.0.min(cols), window.origin.1.min(rows));
        let args = KernelArgs::new()
            .push(self.ptr(levels)?)
            .push(self.ptr(taps_x)?)
            .push(self.ptr(taps_y)?)
            .push(out.ptr())
            .push(frames as u64)
            .push(h as u64)
            .push(w as u64)
            .push(channels as u64)
            .push(cols as u64)
            .push(taps_x.dim(1) as u64)
            .push(rows as u64)
            .push(taps_y.dim(1) as u64)
            .push(ox as u64)
            .push(oy as u64)
            .push(out_w as u64)
            .push(out_h as u64)
            .push(bits as i32);
        self.launch("resample_levels_f32", self.grid(pixels as u64), args)?;
        Ok(out)
    }
}

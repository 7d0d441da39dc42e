use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::launch::KernelArgs;

impl CudaBackend {
    /// Every plane of the last two dims blurred by the dilated binomial kernel (blur.cu).
    pub(crate) fn op_dilated_blur(&self, x: &Tensor, dilation: usize) -> CudaResult<CudaBuffer> {
        let s = x.shape();
        let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
        let n = x.elem_count();
        let out = self.output(n)?;
        if n == 0 {
            return Ok(out);
        }
        // A dilation past the plane reads only its borders, as the plane's size does; capping it
        // keeps the kernel's index arithmetic far from overflow.
        let dilation = dilation.min(h.max(w));
        let args = KernelArgs::new()
            .push(self.ptr(x)?)
            .push(out.ptr())
            .push((n / (h * w)) as u64)
            .push(h as u64)
            .push(w as u64)
            .push(dilation as u64);
        self.launch("dilated_blur_f32", self.grid(n as u64), args)?;
        Ok(out)
    }
}

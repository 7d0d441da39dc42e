//! 3×3 convolutions with at most four output channels over a channels-last bf16 input (the
//! decoders' last layer), on a memory-bound kernel of our own: see conv_few.cu.

use flashvsr_tensor::{PadMode, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::launch::KernelArgs;

/// Output channels the kernel handles (`FEW_MAX_OUT` in conv_few.cu).
const MAX_OUTPUTS: usize = 4;

impl CudaBackend {
    /// The convolution on the few-outputs kernel, or Ok(None) (nothing enqueued) when it does not
    /// apply: the input is not channels-last bf16, or the weight is not `(≤ 4, C, 1, 3, 3)` with
    /// zero padding 1 and no temporal stride.
    pub(crate) fn try_conv3d_few_outputs(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        (stride_t, pad, mode): (usize, usize, PadMode),
        relu: bool,
    ) -> CudaResult<Option<CudaBuffer>> {
        let [o, c, kt, kh, kw] = [w.dim(0), w.dim(1), w.dim(2), w.dim(3), w.dim(4)];
        let fits = o <= MAX_OUTPUTS
            && (kt, kh, kw) == (1, 3, 3)
            && pad == 1
            && mode == PadMode::Zero
            && stride_t == 1;
        if !fits {
            return Ok(None);
        }
        let Some((xp, g)) = self.channels_last_view(x)? else {
            return Ok(None);
        };
        if g.c != c || g.elems() == 0 || g.h > i32::MAX as usize || g.w > i32::MAX as usize {
            return Ok(None);
        }
        let out = self.output(o * g.t * g.plane())?;
        let mut cfg = self.grid((g.t * g.plane()) as u64);
        cfg.shared_mem_bytes = (o * c * 9 * 4) as u32;
        if cfg.shared_mem_bytes > 48 << 10 {
            return Ok(None);
        }
        let args = KernelArgs::new()
            .push(xp)
            .push(self.ptr(w)?)
            .push(self.opt_ptr(b)?)
            .push(out.ptr())
            .push(c as i32)
            .push(g.t as i32)
            .push(g.h as i32)
            .push(g.w as i32)
            .push(o as i32)
            .push(i32::from(relu));
        self.launch("conv3x3_few_out_cl_bf16", cfg, args)?;
        Ok(Some(out))
    }
}

use std::sync::Arc;

use flashvsr_tensor::{BufferRef, ModulatedFfn, Tensor};

use crate::backend::{shaped_name, CudaBackend};
use crate::buffer::Storage;

/// Whether the feed-forward net's passes run on the stream's rows in place
/// (`FLASHVSR_CUDA_FFN_IN_PLACE=0`: the composed ops, narrow and cat included, to compare; the
/// same bits).
fn ffn_in_place() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLASHVSR_CUDA_FFN_IN_PLACE").map_or(true, |v| v != "0"))
}

/// Alignment in bytes that cuBLASLt's plans are keyed by at most (see `gemm::alignment`), and
/// that the vectorised norm kernels need at least (16).
const ROW_OFFSET_ALIGN: usize = 256;

impl CudaBackend {
    /// Whether `modulated_ffn` of `x (tokens, dim)` through a hidden layer of `hidden` runs in
    /// place ([`Self::ffn_rows_in_place`]): `x` is f32 row-major, there are products to sum,
    /// and every pass starts `ROW_OFFSET_ALIGN`-aligned within `x`, so that its GEMMs see
    /// pointers of the alignment fresh buffers have and take the plans (the bits) the composed
    /// ops' GEMMs take.
    #[doc(hidden)]
    pub fn modulated_ffn_runs_in_place(&self, x: &Tensor, hidden: usize, pass_rows: usize) -> bool {
        let (tokens, dim) = (x.dim(0), x.dim(1));
        let f32_row_major = self
            .input(x)
            .is_ok_and(|b| b.storage() == Storage::F32 && b.channels_last().is_none());
        ffn_in_place()
            && f32_row_major
            && tokens * dim * hidden > 0
            && (pass_rows * dim * 4).is_multiple_of(ROW_OFFSET_ALIGN)
    }

    /// `Backend::modulated_ffn` without copies: each pass modulates its rows of `x` where they
    /// are, and its second GEMM reads those rows as its residual and writes the output's rows
    /// (the composition narrows `x` for each pass and joins the passes' outputs with `cat`).
    /// The passes run the composition's ops on the same values with the same GEMM shapes, each
    /// as its own op under its own name in the op profile. For [`Self::modulated_ffn_runs_in_place`]
    /// shapes only.
    pub(crate) fn ffn_rows_in_place(
        &self,
        x: &Tensor,
        ffn: &ModulatedFfn,
        pass_rows: usize,
    ) -> flashvsr_tensor::Result<BufferRef> {
        let ModulatedFfn {
            shift,
            scale,
            eps,
            up,
            down,
        } = *ffn;
        let (tokens, dim, hidden) = (x.dim(0), x.dim(1), up.0.dim(0));
        let (x_ptr, out) = self.finish_with("modulated_ffn", || {
            Ok((self.input(x)?.ptr(), self.output(tokens * dim)?))
        })?;
        let profiling = self.op_profile_on();
        let (up_name, down_name) = (
            shaped_name("linear_gelu", up.0, profiling),
            shaped_name("linear_add", down.0, profiling),
        );
        for start in (0..tokens).step_by(pass_rows) {
            let rows = pass_rows.min(tokens - start);
            // In bytes: rows of f32.
            let offset = (start * dim * 4) as u64;
            let modulated = self.finish_with("modulate", || {
                self.layer_norm_rows(
                    x_ptr + offset,
                    rows,
                    dim,
                    None,
                    None,
                    Some((shift, scale)),
                    eps,
                )
            })?;
            let modulated = Tensor::from_buffer(x.backend(), Arc::new(modulated), &[rows, dim])?;
            let hidden_rows = self.finish_with(up_name, || {
                self.op_linear(&modulated, up.0, Some(up.1), (true, false), None)
            })?;
            drop(modulated);
            let hidden_rows =
                Tensor::from_buffer(x.backend(), Arc::new(hidden_rows), &[rows, hidden])?;
            self.finish_with(down_name, || {
                self.linear_add_rows(
                    &hidden_rows,
                    down.0,
                    Some(down.1),
                    x_ptr + offset,
                    out.ptr() + offset,
                )
            })?;
        }
        Ok(Arc::new(out))
    }
}

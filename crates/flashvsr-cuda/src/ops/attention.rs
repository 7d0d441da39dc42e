//! Attention launchers. The kernel behind them is a simple exact one (attention.cu); a
//! tensor-core flash kernel can replace it here without touching the callers.

use cudarc::driver::LaunchConfig;
use flashvsr_tensor::{BlockMask, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::{CudaError, CudaResult};
use crate::kernels::ATTENTION_WIDTHS;
use crate::launch::KernelArgs;

/// Query rows per block (one warp each), as `ATT_WARPS` in attention.cu.
const ROWS_PER_BLOCK: usize = 4;

/// The kernel instance for `head_dim`: values per lane so that 32 lanes cover a head.
fn width_for(head_dim: usize) -> CudaResult<usize> {
    ATTENTION_WIDTHS
        .iter()
        .copied()
        .find(|&w| 32 * w >= head_dim)
        .ok_or_else(|| {
            CudaError::Unsupported(format!(
                "attention head_dim {head_dim} > {}",
                32 * ATTENTION_WIDTHS[ATTENTION_WIDTHS.len() - 1]
            ))
        })
}

fn int(what: &str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported(format!("{what} = {v} exceeds i32")))
}

fn config(rows: usize, heads: usize, head_dim: usize) -> CudaResult<LaunchConfig> {
    if heads > 65_535 {
        return Err(CudaError::Unsupported(format!("{heads} heads")));
    }
    Ok(LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, heads as u32, 1),
        block_dim: (32 * ROWS_PER_BLOCK as u32, 1, 1),
        shared_mem_bytes: (ROWS_PER_BLOCK * head_dim * 4) as u32,
    })
}

/// Per (head, query block): the selected key blocks, as offsets into one flat list.
fn compact_mask(mask: &BlockMask) -> (Vec<i32>, Vec<i32>) {
    let mut offsets = Vec::with_capacity(mask.heads * mask.query_blocks + 1);
    let mut blocks = Vec::new();
    offsets.push(0);
    for h in 0..mask.heads {
        for q in 0..mask.query_blocks {
            blocks.extend(
                (0..mask.key_blocks)
                    .filter(|&k| mask.get(h, q, k))
                    .map(|k| k as i32),
            );
            offsets.push(blocks.len() as i32);
        }
    }
    (offsets, blocks)
}

impl CudaBackend {
    pub(crate) fn op_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> CudaResult<CudaBuffer> {
        let (lq, dim, lk) = (q.dim(0), q.dim(1), k.dim(0));
        let hd = dim / heads;
        let out = self.output(lq * dim)?;
        if lq * dim == 0 {
            return Ok(out);
        }
        let name = format!("attention_dense_f32_n{}", width_for(hd)?);
        let args = KernelArgs::new()
            .push(self.ptr(q)?)
            .push(self.ptr(k)?)
            .push(self.ptr(v)?)
            .push(out.ptr())
            .push(int("query rows", lq)?)
            .push(int("key rows", lk)?)
            .push(int("dim", dim)?)
            .push(hd as i32)
            .push(1.0 / (hd as f32).sqrt());
        self.launch(&name, config(lq, heads, hd)?, args)?;
        Ok(out)
    }

    pub(crate) fn op_block_sparse_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &BlockMask,
    ) -> CudaResult<CudaBuffer> {
        let (lq, dim) = (q.dim(0), q.dim(1));
        let hd = dim / mask.heads;
        let out = self.output(lq * dim)?;
        if lq * dim == 0 {
            return Ok(out);
        }
        let (offsets, blocks) = compact_mask(mask);
        let n_off = offsets.len();
        let mut list = offsets;
        list.extend(blocks);
        // Freed in stream order after the kernel: the stream is the one it runs on.
        let list = self.gpu.stream.clone_htod(&list)?;
        let (list_ptr, _guard) = cudarc::driver::DevicePtr::device_ptr(&list, &self.gpu.stream);
        let name = format!("attention_sparse_f32_n{}", width_for(hd)?);
        let args = KernelArgs::new()
            .push(self.ptr(q)?)
            .push(self.ptr(k)?)
            .push(self.ptr(v)?)
            .push(out.ptr())
            .push(int("query rows", lq)?)
            .push(int("dim", dim)?)
            .push(hd as i32)
            .push(1.0 / (hd as f32).sqrt())
            .push(list_ptr)
            .push(list_ptr + 4 * n_off as u64)
            .push(int("query block", mask.query_block)?)
            .push(int("query blocks", mask.query_blocks)?)
            .push(int("key block", mask.key_block)?);
        self.launch(&name, config(lq, mask.heads, hd)?, args)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_cover_the_model_head_dims() {
        assert_eq!(width_for(16).unwrap(), 1);
        assert_eq!(width_for(128).unwrap(), 4);
        assert_eq!(width_for(384).unwrap(), 12);
        assert_eq!(width_for(1024).unwrap(), 32);
        assert!(width_for(1025).is_err());
    }

    #[test]
    fn mask_compacts_per_head_and_query_block() {
        let mask = BlockMask {
            heads: 2,
            query_blocks: 2,
            key_blocks: 3,
            query_block: 128,
            key_block: 64,
            selected: vec![1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1],
        };
        let (off, blocks) = compact_mask(&mask);
        assert_eq!(off, vec![0, 2, 2, 3, 6]);
        assert_eq!(blocks, vec![0, 2, 1, 0, 1, 2]);
    }
}

//! The host form of a block-sparse attention mask. The model computes and consumes masks as
//! device tensors `(heads, query_blocks, key_blocks)` of 0/1 values; this form is for what comes
//! from or goes to files and tests (golden masks, injected masks).

use crate::error::shape_err;
use crate::{BackendRef, Result, Tensor};

/// Which (query block, key block) pairs each head attends to. Query blocks are 128 rows; key blocks
/// are `key_block` rows (128 in block mode, 64 in sage mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMask {
    pub heads: usize,
    pub query_blocks: usize,
    pub key_blocks: usize,
    pub query_block: usize,
    pub key_block: usize,
    /// `[head][query_block][key_block]`, 1 = attend.
    pub selected: Vec<u8>,
}

impl BlockMask {
    pub fn get(&self, head: usize, q: usize, k: usize) -> bool {
        self.selected[(head * self.query_blocks + q) * self.key_blocks + k] != 0
    }

    /// The device form: `(heads, query_blocks, key_blocks)`, 1.0 = attend.
    pub fn to_tensor(&self, backend: &BackendRef) -> Result<Tensor> {
        let values: Vec<f32> = self.selected.iter().map(|&b| f32::from(b != 0)).collect();
        Tensor::from_slice(
            backend,
            &values,
            &[self.heads, self.query_blocks, self.key_blocks],
        )
    }

    /// Downloads a device mask `(heads, query_blocks, key_blocks)`; any non-zero value selects.
    pub fn from_tensor(mask: &Tensor, query_block: usize, key_block: usize) -> Result<BlockMask> {
        if mask.rank() != 3 {
            return shape_err(
                "BlockMask::from_tensor",
                format!(
                    "expected (heads, query blocks, key blocks), got {:?}",
                    mask.shape()
                ),
            );
        }
        Ok(BlockMask {
            heads: mask.dim(0),
            query_blocks: mask.dim(1),
            key_blocks: mask.dim(2),
            query_block,
            key_block,
            selected: mask.to_vec()?.iter().map(|&v| u8::from(v != 0.0)).collect(),
        })
    }
}

//! The op set the model needs. The model is written once against [`crate::Tensor`]; each device
//! implements this trait. Tensor methods validate shapes and compute output shapes, so a backend
//! receives well-formed, contiguous row-major inputs and only produces the output buffer.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Device memory holding `len` f32-equivalent elements.
pub trait Buffer: Any + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub type BufferRef = Arc<dyn Buffer>;
pub type BackendRef = Arc<dyn Backend>;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Silu,
    Relu,
    GeluTanh,
    Tanh,
    /// `x * mul + add`
    Affine {
        mul: f32,
        add: f32,
    },
    Clamp {
        min: f32,
        max: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
}

/// How a convolution fills the spatial border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Zero,
    Replicate,
}

pub trait Backend: Send + Sync + fmt::Debug {
    fn device(&self) -> Device;
    /// Waits for all queued work (for timing); a no-op where ops complete synchronously.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// Device memory this backend's device has in use, in bytes, where the device can tell.
    fn memory_in_use(&self) -> Option<u64> {
        None
    }
    fn upload(&self, data: &[f32]) -> Result<BufferRef>;
    fn download(&self, x: &Tensor) -> Result<Vec<f32>>;
    fn zeros(&self, len: usize) -> Result<BufferRef>;

    fn permute(&self, x: &Tensor, dims: &[usize]) -> Result<BufferRef>;
    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<BufferRef>;
    fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<BufferRef>;

    fn unary(&self, x: &Tensor, op: UnaryOp) -> Result<BufferRef>;
    fn binary(&self, a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<BufferRef>;
    /// `x + y ⊙ gate`, gate broadcast over the last dimension.
    fn add_gated(&self, x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<BufferRef>;
    /// `x[c, ...] * mul[c] + add[c]` over the first dimension.
    fn channel_affine(&self, x: &Tensor, mul: &Tensor, add: &Tensor) -> Result<BufferRef>;

    /// `x (M, K) · w (N, K)ᵀ + b`
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<BufferRef>;
    /// Layer norm over the last dimension, optional affine.
    fn layer_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<BufferRef>;
    /// `LN(x) ⊙ (1 + scale) + shift` (no-affine layer norm, DiT modulation).
    fn modulate(&self, x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f32) -> Result<BufferRef>;
    /// `x / sqrt(mean(x²) + eps) ⊙ weight` over the last dimension.
    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<BufferRef>;
    /// `x / max(‖x‖₂ over dim 0, 1e-12) · √C · gamma[c]` (the conv nets' channel RMS norm).
    fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor) -> Result<BufferRef>;
    /// Rotates pairs `(x[2m], x[2m+1])` of every head by the angle table `(rows, head_dim/2)`.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<BufferRef>;
    /// `(N, G, D) → (N, D)`: the mean of each group of G rows.
    fn group_mean(&self, x: &Tensor) -> Result<BufferRef>;

    /// `x (C, T, H, W) * w (O, C, kt, kh, kw)`, temporal stride `stride_t`, no temporal padding,
    /// spatial stride 1 with `pad` on each side.
    fn conv3d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> Result<BufferRef>;
    /// `(C, T, H, W) → (C, T, 2H, 2W)`, nearest.
    fn upsample_nearest2x(&self, x: &Tensor) -> Result<BufferRef>;

    /// Dense softmax attention, `q (Lq, D)`, `k, v (Lk, D)`, heads of `D / heads`.
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<BufferRef>;
    /// Exact softmax attention restricted to the selected blocks of `mask` `(heads, query blocks,
    /// key blocks)` (non-zero = attend), blocks of `query_block` query rows and `key_block` keys;
    /// rows of a query block with no selected key block are zero.
    fn block_sparse_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        query_block: usize,
        key_block: usize,
    ) -> Result<BufferRef>;
    /// The locality-constrained top-k block mask (FLASHVSR.md §5.3–5.4, §5.6) of `scores`
    /// `(heads, query blocks, key blocks)`, as 0/1 values of the same shape. `allowed` `(P, Q)`
    /// tiles the score matrix (entry (b_q, b_k) is eligible iff `allowed[b_q % P][b_k % Q] != 0`);
    /// the rows of one selection group are P consecutive query blocks. Per row: softmax in f64 of
    /// `score · scale` over the eligible entries (none eligible: all 0). Per (head, group) of
    /// n values: keep the entries strictly greater than the (K+1)-th largest, K = min(n − 1,
    /// topk); K ≤ 0 keeps nothing.
    fn sparse_topk_mask(
        &self,
        scores: &Tensor,
        allowed: &Tensor,
        topk: i64,
        scale: f64,
    ) -> Result<BufferRef>;
}

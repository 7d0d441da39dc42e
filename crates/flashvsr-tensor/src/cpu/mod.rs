//! The CPU backend: f32, matrixmultiply for GEMMs, rayon across rows, heads and channels.
//! It is the parity reference the device backends are tested against.

pub mod adain;
mod attention;
pub mod blur;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod norm;
mod qkv;
pub mod resample;
pub mod sparse_mask;

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

use crate::backend::{
    Backend, BackendRef, BinaryOp, Buffer, BufferRef, Device, PadMode, QkvBuffers, UnaryOp,
};
use crate::{CanvasWindow, MemoryMeter, Result, Tensor, TensorError};

pub struct CpuBuffer(pub Vec<f32>, Arc<MemoryMeter>);

impl Buffer for CpuBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        self.1.release(bytes(&self.0));
    }
}

fn bytes(v: &[f32]) -> u64 {
    std::mem::size_of_val(v) as u64
}

#[derive(Debug, Default)]
pub struct CpuBackend {
    meter: Arc<MemoryMeter>,
}

impl CpuBackend {
    pub fn new_ref() -> BackendRef {
        Arc::new(CpuBackend::default())
    }

    /// A CPU backend whose tensors may take at most `limit` bytes in all: going over it is an
    /// out-of-memory error, as on a device (`--max-vram` on the CPU, and its tests).
    pub fn with_memory_limit(limit: u64) -> BackendRef {
        Arc::new(CpuBackend {
            meter: Arc::new(MemoryMeter::with_limit(Some(limit))),
        })
    }

    fn out(&self, v: Vec<f32>) -> Result<BufferRef> {
        let n = bytes(&v);
        if let Err(before) = self.meter.try_add(n) {
            return Err(TensorError::OutOfMemory {
                backend: "cpu".into(),
                detail: format!(
                    "{} MiB more would exceed the limit of {} MiB ({} MiB in use)",
                    n >> 20,
                    self.meter.limit().unwrap_or(0) >> 20,
                    before >> 20
                ),
            });
        }
        Ok(Arc::new(CpuBuffer(v, self.meter.clone())))
    }
}

/// The values of row segments as one slice: borrowed for one segment, else concatenated.
fn joined<'a>(xs: &[&'a Tensor]) -> Result<Cow<'a, [f32]>> {
    if let [x] = xs {
        return Ok(Cow::Borrowed(data(x)?));
    }
    let mut all = Vec::with_capacity(xs.iter().map(|x| x.elem_count()).sum());
    for x in xs {
        all.extend_from_slice(data(x)?);
    }
    Ok(Cow::Owned(all))
}

/// `(H, W)`: the last two dims (the tensor validated rank ≥ 2).
fn plane_of(x: &Tensor) -> (usize, usize) {
    let s = x.shape();
    (s[s.len() - 2], s[s.len() - 1])
}

fn tap_table(t: &Tensor) -> Result<resample::TapTable<'_>> {
    Ok(resample::TapTable {
        values: data(t)?,
        columns: t.dim(1),
    })
}

fn data(x: &Tensor) -> Result<&[f32]> {
    x.buffer()
        .as_any()
        .downcast_ref::<CpuBuffer>()
        .map(|b| b.0.as_slice())
        .ok_or_else(|| TensorError::Backend {
            backend: "cpu".into(),
            detail: format!("tensor on {} given to the CPU backend", x.device()),
        })
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn memory_in_use(&self) -> Option<u64> {
        Some(self.meter.in_use())
    }

    fn tensor_memory(&self) -> Option<&MemoryMeter> {
        Some(&self.meter)
    }

    fn upload(&self, values: &[f32]) -> Result<BufferRef> {
        self.out(values.to_vec())
    }

    fn download(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(data(x)?.to_vec())
    }

    fn zeros(&self, len: usize) -> Result<BufferRef> {
        self.out(vec![0.0; len])
    }

    /// The host generator itself, written straight into the tensor's buffer (no copy).
    fn random_normal(&self, base: u64, std: f32, len: usize) -> Option<Result<BufferRef>> {
        let mut values = vec![0.0; len];
        crate::random::normal_fill(base, std, &mut values);
        Some(self.out(values))
    }

    fn permute(&self, x: &Tensor, dims: &[usize]) -> Result<BufferRef> {
        self.out(layout::permute(data(x)?, x.shape(), dims))
    }

    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<BufferRef> {
        self.out(layout::narrow(data(x)?, x.shape(), dim, start, len))
    }

    fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<BufferRef> {
        let parts = xs
            .iter()
            .map(|x| Ok((data(x)?, x.shape())))
            .collect::<Result<Vec<_>>>()?;
        self.out(layout::cat(&parts, dim))
    }

    fn unary(&self, x: &Tensor, op: UnaryOp) -> Result<BufferRef> {
        self.out(elementwise::unary(data(x)?, op))
    }

    fn binary(&self, a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<BufferRef> {
        self.out(elementwise::binary(data(a)?, data(b)?, op))
    }

    fn adain(&self, x: &Tensor, reference: &Tensor) -> Result<BufferRef> {
        let plane = x.shape()[x.rank() - 2..].iter().product();
        self.out(adain::adain(data(x)?, data(reference)?, plane))
    }

    fn add_gated(&self, x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<BufferRef> {
        self.out(elementwise::add_gated(data(x)?, data(y)?, data(gate)?))
    }

    fn channel_affine(&self, x: &Tensor, mul: &Tensor, add: &Tensor) -> Result<BufferRef> {
        self.out(elementwise::channel_affine(
            data(x)?,
            data(mul)?,
            data(add)?,
        ))
    }

    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<BufferRef> {
        let bias = b.map(data).transpose()?;
        self.out(gemm::linear(
            data(x)?,
            x.dim(0),
            x.dim(1),
            data(w)?,
            w.dim(0),
            bias,
        ))
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<BufferRef> {
        let weight = weight.map(data).transpose()?;
        let bias = bias.map(data).transpose()?;
        let dim = *x.shape().last().unwrap_or(&1);
        self.out(norm::layer_norm(data(x)?, dim, eps, |v, c| {
            let v = weight.map_or(v, |w| v * w[c]);
            bias.map_or(v, |b| v + b[c])
        }))
    }

    fn modulate(&self, x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f32) -> Result<BufferRef> {
        let (shift, scale) = (data(shift)?, data(scale)?);
        let dim = *x.shape().last().unwrap_or(&1);
        self.out(norm::layer_norm(data(x)?, dim, eps, |v, c| {
            v * (1.0 + scale[c]) + shift[c]
        }))
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<BufferRef> {
        let dim = *x.shape().last().unwrap_or(&1);
        self.out(norm::rms_norm(data(x)?, dim, data(weight)?, eps))
    }

    fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor) -> Result<BufferRef> {
        self.out(norm::channel_rms_norm(data(x)?, x.dim(0), data(gamma)?))
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<BufferRef> {
        self.out(elementwise::rope(
            data(x)?,
            x.dim(1),
            data(cos)?,
            data(sin)?,
            heads,
        ))
    }

    fn qkv_split_norm_rope(
        &self,
        x: &Tensor,
        norm_q: &Tensor,
        norm_k: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        heads: usize,
        eps: f32,
        groups: usize,
    ) -> Result<QkvBuffers> {
        let norms = qkv::QkNormRope {
            norm_q: data(norm_q)?,
            norm_k: data(norm_k)?,
            cos: data(cos)?,
            sin: data(sin)?,
            heads,
            eps,
        };
        let dim = x.dim(1) / 3;
        let (q, k, v) = qkv::qkv_split_norm_rope(data(x)?, dim, &norms);
        let group = k.len() / groups;
        let by_group = |all: Vec<f32>| -> Result<Vec<BufferRef>> {
            (0..groups)
                .map(|g| self.out(all[g * group..(g + 1) * group].to_vec()))
                .collect()
        };
        Ok((self.out(q)?, by_group(k)?, by_group(v)?))
    }

    fn group_mean(&self, x: &Tensor) -> Result<BufferRef> {
        self.out(norm::group_mean(data(x)?, x.dim(1), x.dim(2)))
    }

    fn head_scores(&self, q: &Tensor, k: &Tensor, heads: usize) -> Result<BufferRef> {
        self.out(gemm::head_scores(
            data(q)?,
            q.dim(0),
            data(k)?,
            k.dim(0),
            heads,
        ))
    }

    fn conv3d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> Result<BufferRef> {
        let bias = b.map(data).transpose()?;
        let geometry = conv::Conv3d::new(x.shape(), w.shape(), stride_t, pad, mode);
        self.out(geometry.run(data(x)?, data(w)?, bias))
    }

    fn upsample_nearest2x(&self, x: &Tensor) -> Result<BufferRef> {
        let s = x.shape();
        self.out(layout::upsample_nearest2x(
            data(x)?,
            s[0] * s[1],
            s[2],
            s[3],
        ))
    }

    fn dilated_blur(&self, x: &Tensor, dilation: usize) -> Result<BufferRef> {
        let (h, w) = plane_of(x);
        self.out(blur::dilated_blur(data(x)?, h, w, dilation))
    }

    fn resample_levels(
        &self,
        levels: &Tensor,
        taps_x: &Tensor,
        taps_y: &Tensor,
        window: CanvasWindow,
        bits: u32,
    ) -> Result<BufferRef> {
        let s = levels.shape();
        self.out(resample::resample_levels(
            data(levels)?,
            (s[0], s[1], s[2], s[3]),
            tap_table(taps_x)?,
            tap_table(taps_y)?,
            window,
            bits,
        ))
    }

    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<BufferRef> {
        self.out(attention::dense(
            data(q)?,
            data(k)?,
            data(v)?,
            q.dim(0),
            k.dim(0),
            q.dim(1),
            heads,
        ))
    }

    fn block_sparse_attention(
        &self,
        q: &Tensor,
        k: &[&Tensor],
        v: &[&Tensor],
        mask: &Tensor,
        query_block: usize,
        key_block: usize,
    ) -> Result<BufferRef> {
        let (k, v) = (joined(k)?, joined(v)?);
        let layout = attention::SparseLayout {
            selected: data(mask)?,
            heads: mask.dim(0),
            query_blocks: mask.dim(1),
            key_blocks: mask.dim(2),
            query_block,
            key_block,
        };
        self.out(attention::block_sparse(data(q)?, &k, &v, q.dim(1), &layout))
    }

    fn sparse_topk_mask(
        &self,
        scores: &Tensor,
        allowed: &Tensor,
        topk: i64,
        scale: f64,
    ) -> Result<BufferRef> {
        let s = scores.shape();
        let selected = sparse_mask::select_top_blocks(
            data(scores)?,
            [s[0], s[1], s[2]],
            data(allowed)?,
            [allowed.dim(0), allowed.dim(1)],
            topk,
            scale,
        );
        self.out(selected.into_iter().map(f32::from).collect())
    }
}

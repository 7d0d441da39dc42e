//! The op set the model needs. The model is written once against [`crate::Tensor`]; each device
//! implements this trait. Tensor methods validate shapes and compute output shapes, so a backend
//! receives well-formed, contiguous row-major inputs and only produces the output buffer.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::{CanvasWindow, Result, Tensor};

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

/// A tensor's values in host memory, in the storage the backend kept them in (bf16 stays bf16:
/// half the bytes of a round trip through f32, and exact).
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    /// bf16 bit patterns.
    Bf16(Vec<u16>),
}

impl HostData {
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (exact for both storages).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            HostData::F32(v) => v.clone(),
            HostData::Bf16(v) => v
                .iter()
                .map(|&b| f32::from_bits((b as u32) << 16))
                .collect(),
        }
    }
}

/// Downloaded values where the backend put them: a vector, or a pinned staging buffer that stays
/// lent until the last holder drops it (frames read their planes from it without a copy).
pub type HostValues = Arc<dyn AsRef<[f32]> + Send + Sync>;

/// A tensor's values on their way to host memory ([`Backend::download_later`]).
pub struct PendingDownload {
    values: Box<dyn FnOnce() -> Result<HostValues> + Send + Sync>,
}

impl PendingDownload {
    /// Values already in host memory.
    pub fn ready(values: Vec<f32>) -> PendingDownload {
        PendingDownload::waiting(move || Ok(values))
    }

    /// Values that `wait_for_copy` returns once the copy it waits for has completed.
    pub fn waiting(
        wait_for_copy: impl FnOnce() -> Result<Vec<f32>> + Send + Sync + 'static,
    ) -> PendingDownload {
        PendingDownload::waiting_shared(move || Ok(Arc::new(wait_for_copy()?) as HostValues))
    }

    /// Values that `wait_for_copy` hands over where they landed, once the copy has completed.
    pub fn waiting_shared(
        wait_for_copy: impl FnOnce() -> Result<HostValues> + Send + Sync + 'static,
    ) -> PendingDownload {
        PendingDownload {
            values: Box::new(wait_for_copy),
        }
    }

    /// The values, once the copy has completed; a failed copy is an error.
    pub fn wait(self) -> Result<Vec<f32>> {
        Ok(self.wait_shared()?.as_ref().as_ref().to_vec())
    }

    /// The values where they landed, once the copy has completed (no copy of them here).
    pub fn wait_shared(self) -> Result<HostValues> {
        (self.values)()
    }
}

impl fmt::Debug for PendingDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingDownload")
    }
}

/// A point in a backend's queue of work ([`Backend::queue_point`]).
pub trait QueuePoint: Send + Sync {
    /// Returns once the device has done the work queued before the point.
    fn wait(&self) -> Result<()>;
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
    /// The device's memory in bytes, where the device can tell.
    fn device_memory(&self) -> Option<u64> {
        None
    }
    /// The end of this backend's queue now, for another thread to wait on: where a tensor of
    /// this backend goes to another ([`Backend::copy_from_other`] needs its writes done) without
    /// this thread waiting. None where ops complete as they are called.
    fn queue_point(&self) -> Result<Option<Box<dyn QueuePoint>>> {
        Ok(None)
    }
    /// A second backend on this device with a queue of its own, whose ops may read this one's
    /// tensors as they are (weights shared, not copied); None where the backend has no queues.
    /// Tensors this backend may still write or free reach it as copies (`Tensor::to_backend`).
    fn sibling(&self) -> Option<Result<BackendRef>> {
        None
    }
    /// Hands memory that no tensor holds back to the device (an allocator's cached blocks), so
    /// that [`memory_in_use`](Backend::memory_in_use) counts what is live. Waits for queued work.
    fn release_cached_memory(&self) -> Result<()> {
        Ok(())
    }
    /// Device time per op since the start or the last reset, where the backend was asked to
    /// measure it.
    fn op_profile_report(&self) -> Option<String> {
        None
    }
    /// Forgets the op times measured so far (a bench's warm-up runs: first-call plan searches and
    /// pool growth), after waiting for them.
    fn op_profile_reset(&self) {}
    /// The bytes this backend's tensors take, and their peak.
    fn tensor_memory(&self) -> Option<&crate::MemoryMeter> {
        None
    }
    fn upload(&self, data: &[f32]) -> Result<BufferRef>;
    fn download(&self, x: &Tensor) -> Result<Vec<f32>>;
    /// `x`'s values, copied to host memory behind the work queued so far: the call does not wait
    /// for the device, [`PendingDownload::wait`] does. `x` may be dropped right after the call.
    fn download_later(&self, x: &Tensor) -> Result<PendingDownload> {
        Ok(PendingDownload::ready(self.download(x)?))
    }
    /// A buffer holding `data`, copied behind the work queued so far without waiting for the
    /// device to get there (data uploaded while kernels run: LQ frames, noise).
    fn upload_queued(&self, data: &[f32]) -> Result<BufferRef> {
        self.upload(data)
    }
    fn zeros(&self, len: usize) -> Result<BufferRef>;
    /// `len` values of [`random::normal_fill`](crate::random::normal_fill)`(base, std, ..)` made
    /// on the device, so that random weights need no host work and no upload. A device's math
    /// library may round a logarithm or sine differently in the last bit of an f64, so a rare
    /// value may differ from the host's in its last f32 bit. None where the backend has no such
    /// kernel: the caller then makes the values on the host.
    fn random_normal(&self, base: u64, std: f32, len: usize) -> Option<Result<BufferRef>> {
        let _ = (base, std, len);
        None
    }
    /// `x`'s values as stored (see [`HostData`]).
    fn download_stored(&self, x: &Tensor) -> Result<HostData> {
        Ok(HostData::F32(self.download(x)?))
    }
    /// A buffer holding `data` in its storage.
    fn upload_stored(&self, data: &HostData) -> Result<BufferRef> {
        match data {
            HostData::F32(v) => self.upload(v),
            HostData::Bf16(_) => self.upload(&data.to_f32()),
        }
    }
    /// `x`, a tensor of another backend instance, copied straight into this one as stored
    /// (device to device); None where there is no such path (the caller goes through the host).
    /// `x`'s backend must have been synchronized since it wrote `x`.
    fn copy_from_other(&self, x: &Tensor) -> Option<Result<BufferRef>> {
        let _ = x;
        None
    }

    fn permute(&self, x: &Tensor, dims: &[usize]) -> Result<BufferRef>;
    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<BufferRef>;
    fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<BufferRef>;

    fn unary(&self, x: &Tensor, op: UnaryOp) -> Result<BufferRef>;
    fn binary(&self, a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<BufferRef>;
    /// AdaIN per plane (the last two dimensions): each plane of `x` with the mean and standard
    /// deviation of the same plane of `reference` (f64 statistics, population variance + 1e-5),
    /// clamped to [-1, 1].
    fn adain(&self, x: &Tensor, reference: &Tensor) -> Result<BufferRef>;
    /// `x + y ⊙ gate`, gate broadcast over the last dimension.
    fn add_gated(&self, x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<BufferRef>;
    /// `x[c, ...] * mul[c] + add[c]` over the first dimension.
    fn channel_affine(&self, x: &Tensor, mul: &Tensor, add: &Tensor) -> Result<BufferRef>;

    /// `x (M, K) · w (N, K)ᵀ + b`
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<BufferRef>;
    /// `x · wᵀ + b` for a consumer that reads compact storage as it reads `compact`'s (the
    /// q/k/v split): backends with a narrower storage may store it there (rounded, as `compact`
    /// rounds); this default is `linear`.
    fn linear_compact(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<BufferRef> {
        self.linear(x, w, b)
    }
    /// `gelu_tanh(x · wᵀ + b)`; backends with a fused GEMM epilogue override this.
    fn linear_gelu(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<BufferRef> {
        let y = self.linear(x, w, b)?;
        let y = Tensor::from_buffer(x.backend(), y, &[x.dim(0), w.dim(0)])?;
        self.unary(&y, UnaryOp::GeluTanh)
    }
    /// `residual + x · wᵀ + b` (`residual` shaped like the product); backends whose GEMM reads
    /// an addend override this.
    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<BufferRef> {
        linear_then_add(self, x, w, b, residual)
    }
    /// `x + gelu_tanh(modulate(x, shift, scale, eps) · upᵀ + up_bias) · downᵀ + down_bias` for
    /// `x (M, D)` (the DiT's feed-forward net and its residual; the gate is folded into `down`),
    /// in passes over `pass_rows` rows of `x` at a time (the last pass may be shorter), so that
    /// the hidden layer (`up`'s width) exists for one pass's rows only. Shapes checked by
    /// [`Tensor::modulated_ffn`]. This default composes the ops of each pass
    /// ([`modulated_ffn_composed`]); a backend that runs the passes on rows of `x` in place and
    /// writes their results into rows of one output must give the same values in the same
    /// storage.
    fn modulated_ffn(&self, x: &Tensor, ffn: &ModulatedFfn, pass_rows: usize) -> Result<BufferRef> {
        modulated_ffn_composed(x, ffn, pass_rows)
    }
    /// `x` in a narrower storage for long-lived tensors (see [`Tensor::compact`]); `None` keeps
    /// `x` as it is.
    fn compact(&self, _x: &Tensor) -> Result<Option<BufferRef>> {
        Ok(None)
    }
    /// A stand-in for the conv weight `w` once this backend keeps its own converted copy of it
    /// (the copy its `conv3d` reads): a buffer holding none of `w`'s values that this backend's
    /// `conv3d` accepts in place of `w` and every other op refuses, so that the caller may drop
    /// `w` and free its memory. `None` where the backend keeps no copy of `w`.
    fn conv_weight_stand_in(&self, _w: &Tensor) -> Result<Option<BufferRef>> {
        Ok(None)
    }
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
    /// `cat([prefix, silu(channel_rms_norm(x, gamma))], dim 1)` (`x` of rank ≥ 2, `prefix` shaped
    /// like `x` but for dim 1): the Wan VAE's norm and activation with the causal conv's history
    /// in front, which a backend may write in one pass into the buffer the conv reads. This
    /// default composes the ops.
    fn channel_rms_norm_silu(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        prefix: Option<&Tensor>,
    ) -> Result<BufferRef> {
        let y = x.channel_rms_norm(gamma)?.silu()?;
        match prefix {
            Some(p) => Ok(Tensor::cat(&[p, &y], 1)?.buffer().clone()),
            None => Ok(y.buffer().clone()),
        }
    }
    /// Rotates pairs `(x[2m], x[2m+1])` of every head by the angle table `(rows, head_dim/2)`.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<BufferRef>;
    /// The self-attention's q, k and v from the fused projection `x (M, 3·D)` (shapes checked
    /// by [`Tensor::qkv_split_norm_rope`]): `q = rope(rms_norm(x[:, 0..D], norm_q))` in f32, `k`
    /// the same of `x[:, D..2D]` with `norm_k` and `v = x[:, 2D..3D]`, both in the storage of
    /// [`Backend::compact`] and cut into `groups` buffers of `M / groups` rows. This default
    /// composes those ops; a backend that fuses them into one pass over `x` must give the same
    /// values in the same storage.
    #[allow(clippy::too_many_arguments)]
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
        let dim = x.dim(1) / 3;
        let q = x
            .narrow(1, 0, dim)?
            .rms_norm(norm_q, eps)?
            .rope(cos, sin, heads)?;
        let k = x
            .narrow(1, dim, dim)?
            .rms_norm(norm_k, eps)?
            .rope(cos, sin, heads)?
            .compact()?;
        let v = x.narrow(1, 2 * dim, dim)?.compact()?;
        Ok((
            q.buffer().clone(),
            split_rows(&k, groups)?,
            split_rows(&v, groups)?,
        ))
    }

    /// `(N, G, D) → (N, D)`: the mean of each group of G rows.
    fn group_mean(&self, x: &Tensor) -> Result<BufferRef>;
    /// Per-head dot products of the rows of `q (Nq, heads·D)` and `k (Nk, heads·D)`:
    /// `(heads, Nq, Nk)`, entry `[h, i, j] = q[i, h·D..(h+1)·D] · k[j, h·D..(h+1)·D]`.
    fn head_scores(&self, q: &Tensor, k: &Tensor, heads: usize) -> Result<BufferRef>;

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
    /// `relu(conv3d(..))`; backends that fuse the activation override this.
    fn conv3d_relu(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> Result<BufferRef> {
        let y = self.conv3d(x, w, b, stride_t, pad, mode)?;
        let (c, t, h, wd) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let (o, kt, kh, kw) = (w.dim(0), w.dim(2), w.dim(3), w.dim(4));
        let shape = [
            o,
            (t - kt) / stride_t + 1,
            h + 2 * pad - kh + 1,
            wd + 2 * pad - kw + 1,
        ];
        debug_assert_eq!(c, w.dim(1));
        let y = Tensor::from_buffer(x.backend(), y, &shape)?;
        self.unary(&y, UnaryOp::Relu)
    }
    /// `residual + conv3d(..)` (`residual` shaped like the conv's output), then a ReLU when
    /// `relu`; backends whose conv epilogue reads an addend (and applies the ReLU after it)
    /// override this.
    #[allow(clippy::too_many_arguments)]
    fn conv3d_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
        residual: &Tensor,
        relu: bool,
    ) -> Result<BufferRef> {
        let y = self.conv3d(x, w, b, stride_t, pad, mode)?;
        let y = Tensor::from_buffer(x.backend(), y, residual.shape())?;
        let sum = self.binary(&y, residual, BinaryOp::Add)?;
        if !relu {
            return Ok(sum);
        }
        let sum = Tensor::from_buffer(x.backend(), sum, residual.shape())?;
        self.unary(&sum, UnaryOp::Relu)
    }
    /// `(C, T, H, W) → (C, T, 2H, 2W)`, nearest.
    fn upsample_nearest2x(&self, x: &Tensor) -> Result<BufferRef>;
    /// `conv3d(upsample_nearest2x(x), w, b, 1, 1, Zero)` for a frame kernel `w (O, C, 1, 3, 3)`
    /// (the Wan VAE's Resample); a backend may compute it on the small frames without making
    /// the upsampled one. This default composes the ops.
    fn upsample_nearest2x_conv(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<BufferRef> {
        let up = x.upsample_nearest2x()?;
        Ok(up.conv3d(w, b, 1, 1, PadMode::Zero)?.buffer().clone())
    }
    /// `relu(upsample_nearest2x_conv(..))` (the TCDecoder's first conv of a stage); this default
    /// composes the ops.
    fn upsample_nearest2x_conv_relu(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<BufferRef> {
        let y = self.upsample_nearest2x_conv(x, w, b)?;
        let shape = [w.dim(0), x.dim(1), 2 * x.dim(2), 2 * x.dim(3)];
        let y = Tensor::from_buffer(x.backend(), y, &shape)?;
        self.unary(&y, UnaryOp::Relu)
    }
    /// Every plane of the last two dims (rank ≥ 2) blurred by the 3×3 binomial kernel
    /// `[1 2 1]ᵀ[1 2 1] / 16` with taps `dilation` (≥ 1) apart and replicated borders: one level
    /// of the wavelet colour fix (FLASHVSR.md §8). Summed as
    /// [`cpu::blur::dilated_blur`](crate::cpu::blur::dilated_blur) does, so backends agree
    /// bit for bit.
    fn dilated_blur(&self, x: &Tensor, dilation: usize) -> Result<BufferRef>;

    /// Source levels `(n, h, w, c)` resampled by the separable fixed-point taps of the tables
    /// `taps_x`, `taps_y` onto `window`: `(c, n, H, W)` in [-1, 1], as
    /// [`cpu::resample::resample_levels`](crate::cpu::resample::resample_levels) computes them
    /// (integer arithmetic: backends agree bit for bit). Shapes checked by
    /// [`Tensor::resample_levels`].
    fn resample_levels(
        &self,
        levels: &Tensor,
        taps_x: &Tensor,
        taps_y: &Tensor,
        window: CanvasWindow,
        bits: u32,
    ) -> Result<BufferRef>;

    /// Dense softmax attention, `q (Lq, D)`, `k, v (Lk, D)`, heads of `D / heads`.
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<BufferRef>;
    /// Exact softmax attention restricted to the selected blocks of `mask` `(heads, query blocks,
    /// key blocks)` (non-zero = attend), blocks of `query_block` query rows and `key_block` keys;
    /// rows of a query block with no selected key block are zero. The keys and values come as
    /// segments of rows (the KV cache's groups, pairwise of equal shape): concatenated, they are
    /// `k, v (Lk, D)`.
    fn block_sparse_attention(
        &self,
        q: &Tensor,
        k: &[&Tensor],
        v: &[&Tensor],
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

/// [`Backend::linear_add`] as two ops: the product, then the sum.
pub fn linear_then_add<B: Backend + ?Sized>(
    backend: &B,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    residual: &Tensor,
) -> Result<BufferRef> {
    let y = backend.linear(x, w, b)?;
    let y = Tensor::from_buffer(x.backend(), y, &[x.dim(0), w.dim(0)])?;
    backend.binary(&y, residual, BinaryOp::Add)
}

/// [`Backend::modulated_ffn`] composed of tensor ops: each pass modulates its rows of `x` (cut
/// out by `narrow`; a single pass reads `x` itself), runs the two GEMMs on them, and the passes'
/// outputs are joined by `cat`.
pub fn modulated_ffn_composed(
    x: &Tensor,
    ffn: &ModulatedFfn,
    pass_rows: usize,
) -> Result<BufferRef> {
    let pass = |rows: &Tensor| -> Result<Tensor> {
        let hidden = rows
            .modulate(ffn.shift, ffn.scale, ffn.eps)?
            .linear_gelu(ffn.up.0, Some(ffn.up.1))?;
        hidden.linear_add(ffn.down.0, Some(ffn.down.1), rows)
    };
    let tokens = x.dim(0);
    if tokens <= pass_rows {
        return Ok(pass(x)?.buffer().clone());
    }
    let parts = (0..tokens)
        .step_by(pass_rows)
        .map(|start| pass(&x.narrow(0, start, pass_rows.min(tokens - start))?))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = parts.iter().collect();
    Ok(Tensor::cat(&refs, 0)?.buffer().clone())
}

/// The DiT's feed-forward net with the modulation of its input (see [`Tensor::modulated_ffn`]).
#[derive(Clone, Copy)]
pub struct ModulatedFfn<'a> {
    pub shift: &'a Tensor,
    pub scale: &'a Tensor,
    pub eps: f32,
    /// `(weight (H, D), bias (H))`.
    pub up: (&'a Tensor, &'a Tensor),
    /// `(weight (D, H), bias (D))`, the gate folded in.
    pub down: (&'a Tensor, &'a Tensor),
}

/// The buffers of [`Backend::qkv_split_norm_rope`]: q, and k and v by group.
pub type QkvBuffers = (BufferRef, Vec<BufferRef>, Vec<BufferRef>);

/// The buffers of `x`'s rows cut into `groups` equal parts.
pub fn split_rows(x: &Tensor, groups: usize) -> Result<Vec<BufferRef>> {
    let rows = x.dim(0) / groups;
    (0..groups)
        .map(|g| Ok(x.narrow(0, g * rows, rows)?.buffer().clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::HostData;

    #[test]
    fn bf16_host_data_widens_exactly() {
        let d = HostData::Bf16(vec![0x3f80, 0xc000, 0x7f80, 0x0001]);
        assert_eq!(d.len(), 4);
        let v = d.to_f32();
        assert_eq!(&v[..3], &[1.0, -2.0, f32::INFINITY]);
        assert_eq!(v[3].to_bits(), 0x0001_0000);
    }
}

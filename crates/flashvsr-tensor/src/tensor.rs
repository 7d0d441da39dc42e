use std::fmt;
use std::sync::Arc;

use crate::backend::{
    BackendRef, BinaryOp, BufferRef, Device, HostData, ModulatedFfn, PadMode, PendingDownload,
    UnaryOp,
};
use crate::error::shape_err;
use crate::Result;

/// A contiguous row-major f32-valued tensor on one backend. Clones share the buffer.
#[derive(Clone)]
pub struct Tensor {
    shape: Arc<[usize]>,
    buffer: BufferRef,
    backend: BackendRef,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?} on {})", self.shape, self.backend.device())
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn check_values(op: &'static str, data: &[f32], shape: &[usize]) -> Result<()> {
    if data.len() != numel(shape) {
        return shape_err(op, format!("{} values for shape {shape:?}", data.len()));
    }
    Ok(())
}

/// Checks the rope of `rows` rows of `dim` channels in `heads` heads: whole pairs per head, and
/// angle tables `(rows, head_dim / 2)`.
fn check_rope(
    op: &'static str,
    rows: usize,
    dim: usize,
    cos: &Tensor,
    sin: &Tensor,
    heads: usize,
) -> Result<()> {
    if heads == 0 || !dim.is_multiple_of(2 * heads) {
        return shape_err(op, format!("{dim} channels in {heads} heads"));
    }
    let half = dim / heads / 2;
    for t in [cos, sin] {
        if t.shape() != [rows, half] {
            return shape_err(op, format!("table {:?}, want [{rows}, {half}]", t.shape));
        }
    }
    Ok(())
}

impl Tensor {
    pub fn from_buffer(backend: &BackendRef, buffer: BufferRef, shape: &[usize]) -> Result<Tensor> {
        if buffer.len() != numel(shape) {
            return shape_err(
                "from_buffer",
                format!("buffer of {} elements for shape {shape:?}", buffer.len()),
            );
        }
        Ok(Tensor {
            shape: shape.into(),
            buffer,
            backend: backend.clone(),
        })
    }

    pub fn from_slice(backend: &BackendRef, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_values("from_slice", data, shape)?;
        let buffer = backend.upload(data)?;
        Tensor::from_buffer(backend, buffer, shape)
    }

    /// [`Tensor::from_slice`], the copy queued behind the device's work without waiting for it
    /// (see [`crate::Backend::upload_queued`]).
    pub fn from_slice_queued(
        backend: &BackendRef,
        data: &[f32],
        shape: &[usize],
    ) -> Result<Tensor> {
        check_values("from_slice_queued", data, shape)?;
        let buffer = backend.upload_queued(data)?;
        Tensor::from_buffer(backend, buffer, shape)
    }

    /// A tensor of the values in `data`, stored as `data` is where the backend can.
    pub fn from_host_data(
        backend: &BackendRef,
        data: &HostData,
        shape: &[usize],
    ) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return shape_err(
                "from_host_data",
                format!("{} values for shape {shape:?}", data.len()),
            );
        }
        let buffer = backend.upload_stored(data)?;
        Tensor::from_buffer(backend, buffer, shape)
    }

    pub fn zeros(backend: &BackendRef, shape: &[usize]) -> Result<Tensor> {
        let buffer = backend.zeros(numel(shape))?;
        Tensor::from_buffer(backend, buffer, shape)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }

    pub fn elem_count(&self) -> usize {
        numel(&self.shape)
    }

    pub fn buffer(&self) -> &BufferRef {
        &self.buffer
    }

    pub fn backend(&self) -> &BackendRef {
        &self.backend
    }

    pub fn device(&self) -> Device {
        self.backend.device()
    }

    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.backend.download(self)
    }

    /// The values, copied to host memory behind the device's queued work: the call does not wait
    /// for the device, [`PendingDownload::wait`] does.
    pub fn to_vec_later(&self) -> Result<PendingDownload> {
        self.backend.download_later(self)
    }

    /// The values in host memory as the backend stores them (bf16 stays bf16).
    pub fn to_host_data(&self) -> Result<HostData> {
        self.backend.download_stored(self)
    }

    /// This tensor on `target`, as stored (bf16 stays bf16): itself when it is there already,
    /// else copied device to device where the backends can (this tensor's backend synchronized
    /// since it wrote it), through host memory otherwise.
    pub fn to_backend(&self, target: &BackendRef) -> Result<Tensor> {
        if Arc::ptr_eq(&self.backend, target) {
            return Ok(self.clone());
        }
        match target.copy_from_other(self) {
            Some(buffer) => Tensor::from_buffer(target, buffer?, &self.shape),
            None => Tensor::from_host_data(target, &self.to_host_data()?, &self.shape),
        }
    }

    fn wrap(&self, buffer: BufferRef, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_buffer(&self.backend, buffer, shape)
    }

    fn same_shape(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.shape != other.shape {
            return shape_err(op, format!("{:?} vs {:?}", self.shape, other.shape));
        }
        Ok(())
    }

    fn expect_rank(&self, op: &'static str, rank: usize) -> Result<()> {
        if self.rank() != rank {
            return shape_err(op, format!("expected rank {rank}, got {:?}", self.shape));
        }
        Ok(())
    }

    fn expect_vector(&self, op: &'static str, len: usize) -> Result<()> {
        if self.elem_count() != len {
            return shape_err(
                op,
                format!("expected {len} values, got shape {:?}", self.shape),
            );
        }
        Ok(())
    }

    /// Same data, new shape (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.elem_count() {
            return shape_err("reshape", format!("{:?} to {shape:?}", self.shape));
        }
        Ok(Tensor {
            shape: shape.into(),
            buffer: self.buffer.clone(),
            backend: self.backend.clone(),
        })
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        if dims.len() != self.rank() || dims.iter().any(|&d| d >= seen.len()) {
            return shape_err("permute", format!("{dims:?} for {:?}", self.shape));
        }
        for &d in dims {
            if std::mem::replace(&mut seen[d], true) {
                return shape_err("permute", format!("repeated axis in {dims:?}"));
            }
        }
        if dims.iter().enumerate().all(|(i, &d)| i == d) {
            return Ok(self.clone());
        }
        let shape: Vec<usize> = dims.iter().map(|&d| self.shape[d]).collect();
        let buffer = self.backend.permute(self, dims)?;
        self.wrap(buffer, &shape)
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return shape_err(
                "narrow",
                format!("dim {dim} [{start}, {}) of {:?}", start + len, self.shape),
            );
        }
        if start == 0 && len == self.shape[dim] {
            return Ok(self.clone());
        }
        let mut shape = self.shape.to_vec();
        shape[dim] = len;
        let buffer = self.backend.narrow(self, dim, start, len)?;
        self.wrap(buffer, &shape)
    }

    pub fn cat(xs: &[&Tensor], dim: usize) -> Result<Tensor> {
        let Some(first) = xs.first() else {
            return shape_err("cat", "no tensors");
        };
        if xs.len() == 1 {
            return Ok((*first).clone());
        }
        let mut shape = first.shape.to_vec();
        if dim >= shape.len() {
            return shape_err("cat", format!("dim {dim} of {shape:?}"));
        }
        shape[dim] = 0;
        for x in xs {
            let compatible = x.rank() == first.rank()
                && (0..x.rank()).all(|i| i == dim || x.shape[i] == first.shape[i]);
            if !compatible {
                return shape_err("cat", format!("{:?} vs {:?}", first.shape, x.shape));
            }
            shape[dim] += x.shape[dim];
        }
        let buffer = first.backend.cat(xs, dim)?;
        first.wrap(buffer, &shape)
    }

    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let buffer = self.backend.unary(self, op)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }

    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }

    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluTanh)
    }

    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }

    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }

    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Clamp { min, max })
    }

    fn binary(&self, other: &Tensor, op: BinaryOp) -> Result<Tensor> {
        self.same_shape("binary", other)?;
        let buffer = self.backend.binary(self, other, op)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Add)
    }

    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Sub)
    }

    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Mul)
    }

    fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Each plane (the last two dimensions) with the mean and deviation of the same plane of
    /// `reference`, clamped to [-1, 1]: the AdaIN colour fix.
    pub fn adain(&self, reference: &Tensor) -> Result<Tensor> {
        self.same_shape("adain", reference)?;
        if self.rank() < 2 {
            return shape_err("adain", format!("{:?} has no planes", self.shape));
        }
        let buffer = self.backend.adain(self, reference)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn add_gated(&self, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
        self.same_shape("add_gated", y)?;
        gate.expect_vector("add_gated", self.last_dim())?;
        let buffer = self.backend.add_gated(self, y, gate)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn channel_affine(&self, mul: &Tensor, add: &Tensor) -> Result<Tensor> {
        mul.expect_vector("channel_affine", self.shape[0])?;
        add.expect_vector("channel_affine", self.shape[0])?;
        let buffer = self.backend.channel_affine(self, mul, add)?;
        self.wrap(buffer, &self.shape.clone())
    }

    /// `self (M, K) · w (N, K)ᵀ + b`; leading dimensions of self are flattened into M.
    pub fn linear(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(w, b, |x| self.backend.linear(x, w, b))
    }

    /// [`Tensor::linear`], possibly stored as [`Tensor::compact`] stores (bf16 on CUDA in fast
    /// mode, rounded there by the GEMM's epilogue): for outputs that only ops reading compact
    /// storage consume, so that neither the GEMM nor its reader moves f32 values.
    pub fn linear_compact(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(w, b, |x| self.backend.linear_compact(x, w, b))
    }

    /// `gelu_tanh(self · wᵀ + b)`: one pass where the backend fuses the activation into the GEMM.
    pub fn linear_gelu(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(w, b, |x| self.backend.linear_gelu(x, w, b))
    }

    /// `residual + self · wᵀ + b`: the residual connection added by the GEMM where the backend can.
    pub fn linear_add(&self, w: &Tensor, b: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
        let out_shape = {
            let mut shape = self.shape.to_vec();
            if let Some(last) = shape.last_mut() {
                *last = w.shape.first().copied().unwrap_or(0);
            }
            shape
        };
        if residual.shape() != out_shape.as_slice() {
            return shape_err(
                "linear_add",
                format!("{:?} · {:?}ᵀ + {:?}", self.shape, w.shape, residual.shape),
            );
        }
        self.linear_with(w, b, |x| {
            let rows = residual.reshape(&[x.dim(0), w.dim(0)])?;
            self.backend.linear_add(x, w, b, &rows)
        })
    }

    fn linear_with(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        run: impl FnOnce(&Tensor) -> Result<BufferRef>,
    ) -> Result<Tensor> {
        w.expect_rank("linear", 2)?;
        let (n, k) = (w.shape[0], w.shape[1]);
        if self.last_dim() != k {
            return shape_err("linear", format!("{:?} · {:?}ᵀ", self.shape, w.shape));
        }
        if let Some(b) = b {
            b.expect_vector("linear bias", n)?;
        }
        let m = self.elem_count() / k;
        let x = self.reshape(&[m, k])?;
        let buffer = run(&x)?;
        let mut shape = self.shape.to_vec();
        *shape.last_mut().expect("rank checked") = n;
        self.wrap(buffer, &shape)
    }

    /// The same values, possibly in a narrower storage the backend chooses for long-lived tensors
    /// read many times (weights, the KV cache): bf16 on CUDA in fast mode, where values are then
    /// rounded to bf16. Backends without such a format return the tensor itself.
    pub fn compact(&self) -> Result<Tensor> {
        match self.backend.compact(self)? {
            Some(buffer) => self.wrap(buffer, &self.shape.clone()),
            None => Ok(self.clone()),
        }
    }

    /// For a conv weight already used by a conv of this backend: a tensor of the same shape that
    /// the backend's `conv3d` reads like this one (from its own converted copy) and that holds
    /// none of the values, so that dropping this one frees its memory; every other op refuses the
    /// stand-in. `None` where the backend keeps no copy (the CPU backend, the exact mode).
    pub fn conv_weight_stand_in(&self) -> Result<Option<Tensor>> {
        match self.backend.conv_weight_stand_in(self)? {
            Some(buffer) => Ok(Some(self.wrap(buffer, &self.shape.clone())?)),
            None => Ok(None),
        }
    }

    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        for p in [weight, bias].into_iter().flatten() {
            p.expect_vector("layer_norm", self.last_dim())?;
        }
        let buffer = self.backend.layer_norm(self, weight, bias, eps)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn modulate(&self, shift: &Tensor, scale: &Tensor, eps: f32) -> Result<Tensor> {
        shift.expect_vector("modulate", self.last_dim())?;
        scale.expect_vector("modulate", self.last_dim())?;
        let buffer = self.backend.modulate(self, shift, scale, eps)?;
        self.wrap(buffer, &self.shape.clone())
    }

    /// `self + gelu_tanh(modulate(self, shift, scale, eps) · upᵀ + up_bias) · downᵀ + down_bias`
    /// for `self (M, D)`, `up = (weight (H, D), bias (H))`, `down = (weight (D, H), bias (D))`:
    /// the DiT's feed-forward net with its residual, in passes over at most `pass_rows` rows at
    /// a time so that the hidden layer `(·, H)` never exists for all M rows at once (see
    /// [`crate::Backend::modulated_ffn`]).
    pub fn modulated_ffn(&self, ffn: &ModulatedFfn, pass_rows: usize) -> Result<Tensor> {
        const OP: &str = "modulated_ffn";
        let ModulatedFfn {
            shift,
            scale,
            up,
            down,
            ..
        } = *ffn;
        self.expect_rank(OP, 2)?;
        up.0.expect_rank(OP, 2)?;
        down.0.expect_rank(OP, 2)?;
        let (dim, hidden) = (self.shape[1], up.0.shape[0]);
        if up.0.shape[1] != dim || *down.0.shape != [dim, hidden] {
            return shape_err(
                OP,
                format!(
                    "{:?} through {:?} and {:?}",
                    self.shape, up.0.shape, down.0.shape
                ),
            );
        }
        if pass_rows == 0 {
            return shape_err(OP, "passes of 0 rows");
        }
        shift.expect_vector(OP, dim)?;
        scale.expect_vector(OP, dim)?;
        up.1.expect_vector(OP, hidden)?;
        down.1.expect_vector(OP, dim)?;
        let buffer = self.backend.modulated_ffn(self, ffn, pass_rows)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn rms_norm(&self, weight: &Tensor, eps: f32) -> Result<Tensor> {
        weight.expect_vector("rms_norm", self.last_dim())?;
        let buffer = self.backend.rms_norm(self, weight, eps)?;
        self.wrap(buffer, &self.shape.clone())
    }

    pub fn channel_rms_norm(&self, gamma: &Tensor) -> Result<Tensor> {
        gamma.expect_vector("channel_rms_norm", self.shape[0])?;
        let buffer = self.backend.channel_rms_norm(self, gamma)?;
        self.wrap(buffer, &self.shape.clone())
    }

    /// `cat([prefix, silu(channel_rms_norm(self, gamma))], 1)`: the norm and activation in
    /// front of a causal conv, with the conv's history frames (`prefix`) in front, in one pass
    /// where the backend fuses them.
    pub fn channel_rms_norm_silu(&self, gamma: &Tensor, prefix: Option<&Tensor>) -> Result<Tensor> {
        if self.rank() < 2 {
            return shape_err("channel_rms_norm_silu", format!("{:?}", self.shape));
        }
        gamma.expect_vector("channel_rms_norm_silu", self.shape[0])?;
        let mut shape = self.shape.to_vec();
        if let Some(p) = prefix {
            let fits = p.rank() == self.rank()
                && (0..self.rank()).all(|i| i == 1 || p.shape[i] == self.shape[i]);
            if !fits {
                return shape_err(
                    "channel_rms_norm_silu",
                    format!("prefix {:?} for {:?}", p.shape, self.shape),
                );
            }
            shape[1] += p.shape[1];
        }
        let buffer = self.backend.channel_rms_norm_silu(self, gamma, prefix)?;
        self.wrap(buffer, &shape)
    }

    pub fn rope(&self, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<Tensor> {
        self.expect_rank("rope", 2)?;
        let (rows, dim) = (self.shape[0], self.shape[1]);
        check_rope("rope", rows, dim, cos, sin, heads)?;
        let buffer = self.backend.rope(self, cos, sin, heads)?;
        self.wrap(buffer, &self.shape.clone())
    }

    /// The self-attention's q, k and v from the output of the fused q/k/v projection
    /// `self (M, 3·D)`: `q (M, D)` is `rope(rms_norm(self[:, 0..D], norm_q))`, `k` the same of
    /// `self[:, D..2D]` with `norm_k`, `v` is `self[:, 2D..3D]`. `k` and `v` come in `groups`
    /// tensors of `M / groups` rows each, [`compact`]: they are the KV cache's groups, kept for
    /// several chunks, so a backend may keep them apart from short-lived tensors. One pass over
    /// `self` where the backend fuses it (see [`crate::Backend::qkv_split_norm_rope`]).
    ///
    /// [`compact`]: Tensor::compact
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_split_norm_rope(
        &self,
        norm_q: &Tensor,
        norm_k: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        heads: usize,
        eps: f32,
        groups: usize,
    ) -> Result<SplitQkv> {
        const OP: &str = "qkv_split_norm_rope";
        self.expect_rank(OP, 2)?;
        let (rows, width) = (self.shape[0], self.shape[1]);
        if !width.is_multiple_of(3) {
            return shape_err(
                OP,
                format!("{width} channels are not q, k and v of one width"),
            );
        }
        if groups == 0 || !rows.is_multiple_of(groups) {
            return shape_err(OP, format!("{rows} rows in {groups} groups"));
        }
        let dim = width / 3;
        check_rope(OP, rows, dim, cos, sin, heads)?;
        norm_q.expect_vector(OP, dim)?;
        norm_k.expect_vector(OP, dim)?;
        let (q, k, v) = self
            .backend
            .qkv_split_norm_rope(self, norm_q, norm_k, cos, sin, heads, eps, groups)?;
        let group = [rows / groups, dim];
        let wrap_all = |buffers: Vec<BufferRef>| -> Result<Vec<Tensor>> {
            buffers.into_iter().map(|b| self.wrap(b, &group)).collect()
        };
        Ok(SplitQkv {
            q: self.wrap(q, &[rows, dim])?,
            k: wrap_all(k)?,
            v: wrap_all(v)?,
        })
    }

    pub fn group_mean(&self) -> Result<Tensor> {
        self.expect_rank("group_mean", 3)?;
        let buffer = self.backend.group_mean(self)?;
        self.wrap(buffer, &[self.shape[0], self.shape[2]])
    }

    /// Per-head dot products of the rows of `self (Nq, heads·D)` and `keys (Nk, heads·D)`:
    /// `(heads, Nq, Nk)`, entry `[h, i, j] = self[i, h·D..(h+1)·D] · keys[j, h·D..(h+1)·D]`
    /// (one batched product instead of a GEMM per head).
    pub fn head_scores(&self, keys: &Tensor, heads: usize) -> Result<Tensor> {
        self.expect_rank("head_scores", 2)?;
        keys.expect_rank("head_scores", 2)?;
        let dim = self.shape[1];
        if heads == 0 || !dim.is_multiple_of(heads) || keys.shape[1] != dim {
            return shape_err(
                "head_scores",
                format!("{:?} and {:?} in {heads} heads", self.shape, keys.shape),
            );
        }
        let buffer = self.backend.head_scores(self, keys, heads)?;
        self.wrap(buffer, &[heads, self.shape[0], keys.shape[0]])
    }

    pub fn conv3d(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> Result<Tensor> {
        let shape = self.conv3d_shape(w, b, stride_t, pad)?;
        let buffer = self.backend.conv3d(self, w, b, stride_t, pad, mode)?;
        self.wrap(buffer, &shape)
    }

    /// `relu(conv3d(..))`, in one pass where the backend fuses it.
    pub fn conv3d_relu(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> Result<Tensor> {
        let shape = self.conv3d_shape(w, b, stride_t, pad)?;
        let buffer = self.backend.conv3d_relu(self, w, b, stride_t, pad, mode)?;
        self.wrap(buffer, &shape)
    }

    /// `residual + conv3d(..)`: the residual connection added by the conv's epilogue where the
    /// backend can.
    #[allow(clippy::too_many_arguments)]
    pub fn conv3d_add(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.conv3d_residual("conv3d_add", w, b, (stride_t, pad, mode), residual, false)
    }

    /// `relu(residual + conv3d(..))`: the TCDecoder MemBlock's output, the residual and the ReLU
    /// applied by the conv's epilogue where the backend can.
    #[allow(clippy::too_many_arguments)]
    pub fn conv3d_add_relu(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.conv3d_residual(
            "conv3d_add_relu",
            w,
            b,
            (stride_t, pad, mode),
            residual,
            true,
        )
    }

    fn conv3d_residual(
        &self,
        op: &'static str,
        w: &Tensor,
        b: Option<&Tensor>,
        (stride_t, pad, mode): (usize, usize, PadMode),
        residual: &Tensor,
        relu: bool,
    ) -> Result<Tensor> {
        let shape = self.conv3d_residual_shape(op, w, b, (stride_t, pad), residual)?;
        let buffer = self
            .backend
            .conv3d_add(self, w, b, stride_t, pad, mode, residual, relu)?;
        self.wrap(buffer, &shape)
    }

    /// The output shape of a conv whose epilogue adds `residual`, which must have that shape.
    fn conv3d_residual_shape(
        &self,
        op: &'static str,
        w: &Tensor,
        b: Option<&Tensor>,
        (stride_t, pad): (usize, usize),
        residual: &Tensor,
    ) -> Result<[usize; 4]> {
        let shape = self.conv3d_shape(w, b, stride_t, pad)?;
        if residual.shape() != shape {
            return shape_err(
                op,
                format!("output {shape:?}, residual {:?}", residual.shape),
            );
        }
        Ok(shape)
    }

    fn conv3d_shape(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
    ) -> Result<[usize; 4]> {
        self.expect_rank("conv3d", 4)?;
        w.expect_rank("conv3d", 5)?;
        let (c, t, h, wd) = (self.shape[0], self.shape[1], self.shape[2], self.shape[3]);
        let (o, ci, kt, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3], w.shape[4]);
        if ci != c || kt > t || kh > h + 2 * pad || kw > wd + 2 * pad || stride_t == 0 {
            return shape_err(
                "conv3d",
                format!("input {:?}, weight {:?}", self.shape, w.shape),
            );
        }
        if let Some(b) = b {
            b.expect_vector("conv3d bias", o)?;
        }
        let t_out = (t - kt) / stride_t + 1;
        Ok([o, t_out, h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1])
    }

    /// 2-D convolution of every frame: `self (C, T, H, W)`, `w (O, C, kh, kw)`.
    pub fn conv2d_frames(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        pad: usize,
        mode: PadMode,
    ) -> Result<Tensor> {
        w.expect_rank("conv2d", 4)?;
        let w5 = w.reshape(&[w.shape[0], w.shape[1], 1, w.shape[2], w.shape[3]])?;
        self.conv3d(&w5, b, 1, pad, mode)
    }

    pub fn upsample_nearest2x(&self) -> Result<Tensor> {
        self.expect_rank("upsample", 4)?;
        let buffer = self.backend.upsample_nearest2x(self)?;
        let s = &self.shape;
        self.wrap(buffer, &[s[0], s[1], 2 * s[2], 2 * s[3]])
    }

    /// `upsample_nearest2x()` then a 3×3 frame conv with zero padding 1, `w (O, C, 1, 3, 3)`:
    /// computed on the small frames where the backend can.
    pub fn upsample_nearest2x_conv(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let shape = self.upsample_conv_shape("upsample_nearest2x_conv", w, b)?;
        let buffer = self.backend.upsample_nearest2x_conv(self, w, b)?;
        self.wrap(buffer, &shape)
    }

    /// `relu(upsample_nearest2x_conv(..))`, the ReLU in the same pass where the backend can.
    pub fn upsample_nearest2x_conv_relu(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let shape = self.upsample_conv_shape("upsample_nearest2x_conv_relu", w, b)?;
        let buffer = self.backend.upsample_nearest2x_conv_relu(self, w, b)?;
        self.wrap(buffer, &shape)
    }

    fn upsample_conv_shape(
        &self,
        op: &'static str,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<[usize; 4]> {
        self.expect_rank(op, 4)?;
        w.expect_rank(op, 5)?;
        let s = &self.shape;
        if w.shape[1] != s[0] || w.shape[2..] != [1, 3, 3] {
            return shape_err(op, format!("input {:?}, weight {:?}", self.shape, w.shape));
        }
        if let Some(b) = b {
            b.expect_vector(op, w.shape[0])?;
        }
        Ok([w.shape[0], s[1], 2 * s[2], 2 * s[3]])
    }

    /// Every `(H, W)` plane of the last two dims blurred by the 3×3 binomial kernel
    /// `[1 2 1]ᵀ[1 2 1] / 16` with taps `dilation` apart, borders replicated (see
    /// [`crate::Backend::dilated_blur`]).
    pub fn dilated_blur(&self, dilation: usize) -> Result<Tensor> {
        if self.rank() < 2 || dilation == 0 {
            return shape_err(
                "dilated_blur",
                format!(
                    "{:?} with dilation {dilation} (want rank ≥ 2, dilation ≥ 1)",
                    self.shape
                ),
            );
        }
        let buffer = self.backend.dilated_blur(self, dilation)?;
        self.wrap(buffer, &self.shape.clone())
    }

    fn check_attention(
        op: &'static str,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<()> {
        q.expect_rank(op, 2)?;
        k.expect_rank(op, 2)?;
        k.same_shape(op, v)?;
        if q.shape[1] != k.shape[1] || heads == 0 || !q.shape[1].is_multiple_of(heads) {
            return shape_err(
                op,
                format!("q {:?}, k {:?}, {heads} heads", q.shape, k.shape),
            );
        }
        Ok(())
    }

    pub fn attention(&self, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
        Tensor::check_attention("attention", self, k, v, heads)?;
        let buffer = self.backend.attention(self, k, v, heads)?;
        self.wrap(buffer, &self.shape.clone())
    }

    /// Attention restricted to the key blocks `mask` `(heads, query blocks, key blocks)` selects
    /// (non-zero = attend): the query rows split evenly into the mask's query blocks, the keys
    /// into blocks of `key_block` rows. Query blocks with no selected key block give zeros.
    pub fn block_sparse_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        key_block: usize,
    ) -> Result<Tensor> {
        self.block_sparse_attention_segments(&[k], &[v], mask, key_block)
    }

    /// [`Tensor::block_sparse_attention`] over keys and values given as segments of rows (the KV
    /// cache's groups, `keys[i]` and `values[i]` of equal shape): the attention over their
    /// concatenation, without the copy where the backend reads the segments in place.
    pub fn block_sparse_attention_segments(
        &self,
        keys: &[&Tensor],
        values: &[&Tensor],
        mask: &Tensor,
        key_block: usize,
    ) -> Result<Tensor> {
        const OP: &str = "block_sparse_attention";
        mask.expect_rank(OP, 3)?;
        let (heads, query_blocks, key_blocks) = (mask.shape[0], mask.shape[1], mask.shape[2]);
        if keys.is_empty() || keys.len() != values.len() {
            return shape_err(
                OP,
                format!("{} key and {} value segments", keys.len(), values.len()),
            );
        }
        for (k, v) in keys.iter().zip(values) {
            Tensor::check_attention(OP, self, k, v, heads)?;
        }
        let key_rows: usize = keys.iter().map(|k| k.shape[0]).sum();
        let query_block = self.shape[0].checked_div(query_blocks).unwrap_or(0);
        let ok = query_block > 0
            && self.shape[0] == query_blocks * query_block
            && key_rows == key_blocks * key_block;
        if !ok {
            return shape_err(
                OP,
                format!(
                    "q {:?}, {key_rows} keys, mask {:?} with key blocks of {key_block}",
                    self.shape, mask.shape
                ),
            );
        }
        let buffer = self.backend.block_sparse_attention(
            self,
            keys,
            values,
            mask,
            query_block,
            key_block,
        )?;
        self.wrap(buffer, &self.shape.clone())
    }

    /// The locality-constrained top-k block mask of block scores `self` `(heads, query blocks,
    /// key blocks)`: 0/1 values of the same shape (see [`crate::Backend::sparse_topk_mask`]).
    /// `allowed` `(P, Q)` tiles the scores: P divides the query blocks (one selection group per P
    /// rows), Q the key blocks.
    pub fn sparse_topk_mask(&self, allowed: &Tensor, topk: i64, scale: f64) -> Result<Tensor> {
        self.expect_rank("sparse_topk_mask", 3)?;
        allowed.expect_rank("sparse_topk_mask", 2)?;
        let (p, q) = (allowed.shape[0], allowed.shape[1]);
        if p == 0 || q == 0 || !self.shape[1].is_multiple_of(p) || !self.shape[2].is_multiple_of(q)
        {
            return shape_err(
                "sparse_topk_mask",
                format!("scores {:?}, allowed {:?}", self.shape, allowed.shape),
            );
        }
        let buffer = self.backend.sparse_topk_mask(self, allowed, topk, scale)?;
        self.wrap(buffer, &self.shape.clone())
    }
}

/// [`Tensor::qkv_split_norm_rope`]'s result: the queries, and the keys and values by group.
pub struct SplitQkv {
    pub q: Tensor,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

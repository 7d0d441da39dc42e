use flashvsr_tensor::{BinaryOp, Tensor, UnaryOp};

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::CudaResult;
use crate::launch::KernelArgs;

/// `(op code, a, b)` as `unary_op` in elementwise.cu reads them.
fn unary_code(op: UnaryOp) -> (i32, f32, f32) {
    match op {
        UnaryOp::Silu => (0, 0.0, 0.0),
        UnaryOp::Relu => (1, 0.0, 0.0),
        UnaryOp::GeluTanh => (2, 0.0, 0.0),
        UnaryOp::Tanh => (3, 0.0, 0.0),
        UnaryOp::Affine { mul, add } => (4, mul, add),
        UnaryOp::Clamp { min, max } => (5, min, max),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
    }
}

impl CudaBackend {
    /// `y[i] = v[(i / div) % modulo]` for `i < n`.
    pub(crate) fn broadcast(
        &self,
        v: u64,
        y: u64,
        n: usize,
        div: usize,
        modulo: usize,
    ) -> CudaResult<()> {
        if n == 0 {
            return Ok(());
        }
        let args = KernelArgs::new()
            .push(v)
            .push(y)
            .push(n as u64)
            .push(div.max(1) as u64)
            .push(modulo.max(1) as u64);
        self.launch("broadcast_f32", self.grid(n as u64), args)
    }

    pub(crate) fn op_unary(&self, x: &Tensor, op: UnaryOp) -> CudaResult<CudaBuffer> {
        if let Some(out) = self.try_unary_channels_last(x, op)? {
            return Ok(out);
        }
        let n = x.elem_count();
        let out = self.output(n)?;
        if n > 0 {
            self.unary_raw(self.ptr(x)?, out.ptr(), n, op)?;
        }
        Ok(out)
    }

    /// `y[i] = op(x[i])` for `i < n` on raw f32 pointers.
    pub(crate) fn unary_raw(&self, x: u64, y: u64, n: usize, op: UnaryOp) -> CudaResult<()> {
        let (code, a, b) = unary_code(op);
        let args = KernelArgs::new()
            .push(x)
            .push(y)
            .push(n as u64)
            .push(code)
            .push(a)
            .push(b);
        self.launch("unary_f32", self.grid(n as u64), args)
    }

    pub(crate) fn op_binary(&self, a: &Tensor, b: &Tensor, op: BinaryOp) -> CudaResult<CudaBuffer> {
        if let Some(out) = self.try_binary_channels_last(a, b, binary_code(op))? {
            return Ok(out);
        }
        let n = a.elem_count();
        let out = self.output(n)?;
        if n > 0 {
            let args = KernelArgs::new()
                .push(self.ptr(a)?)
                .push(self.ptr(b)?)
                .push(out.ptr())
                .push(n as u64)
                .push(binary_code(op));
            self.launch("binary_f32", self.grid(n as u64), args)?;
        }
        Ok(out)
    }

    pub(crate) fn op_add_gated(
        &self,
        x: &Tensor,
        y: &Tensor,
        gate: &Tensor,
    ) -> CudaResult<CudaBuffer> {
        let n = x.elem_count();
        let out = self.output(n)?;
        if n > 0 {
            let args = KernelArgs::new()
                .push(self.ptr(x)?)
                .push(self.ptr(y)?)
                .push(self.ptr(gate)?)
                .push(out.ptr())
                .push(n as u64)
                .push(gate.elem_count() as u64);
            self.launch("add_gated_f32", self.grid(n as u64), args)?;
        }
        Ok(out)
    }

    pub(crate) fn op_channel_affine(
        &self,
        x: &Tensor,
        mul: &Tensor,
        add: &Tensor,
    ) -> CudaResult<CudaBuffer> {
        let n = x.elem_count();
        let out = self.output(n)?;
        if n > 0 {
            let args = KernelArgs::new()
                .push(self.ptr(x)?)
                .push(self.ptr(mul)?)
                .push(self.ptr(add)?)
                .push(out.ptr())
                .push(n as u64)
                .push((n / x.dim(0)) as u64);
            self.launch("channel_affine_f32", self.grid(n as u64), args)?;
        }
        Ok(out)
    }

    pub(crate) fn op_rope(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        heads: usize,
    ) -> CudaResult<CudaBuffer> {
        let (rows, dim) = (x.dim(0), x.dim(1));
        let out = self.output(rows * dim)?;
        let pairs = (rows * dim / 2) as u64;
        if pairs > 0 {
            let args = KernelArgs::new()
                .push(self.ptr(x)?)
                .push(self.ptr(cos)?)
                .push(self.ptr(sin)?)
                .push(out.ptr())
                .push(pairs)
                .push((dim / 2) as u64)
                .push((dim / heads / 2) as u64);
            self.launch("rope_f32", self.grid(pairs), args)?;
        }
        Ok(out)
    }
}

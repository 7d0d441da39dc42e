//! conv3d on cuDNN for the fast mode: stage x as bf16 channels-last (conv_bf16.cu), convolve with
//! fp32 accumulation, unstage to f32 (O, T, H, W) with the bias added. Zero-padded convolutions
//! instead write their output channels-last in bf16 (bias, ReLU and a residual applied in place),
//! and a channels-last input is read in place where cuDNN can (ops/channels_last.rs): the
//! TCDecoder's and the Wan VAE's activations go from conv to conv without conversions. The
//! converted weights are cached per weight buffer. Everything is enqueued on the backend's one
//! stream, with no host synchronisation.

use std::sync::atomic::Ordering;

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};
use flashvsr_tensor::{PadMode, Tensor};

use crate::backend::CudaBackend;
use crate::buffer::{raw_u16, ChannelsLast, CudaBuffer, DeviceBlock};
use crate::error::CudaResult;
use crate::launch::{KernelArgs, BLOCK};
use crate::ops::conv_stage::{FoldTime, Group, StagedConv, BF16_BYTES};

/// Mirrors `StageIn` in conv_bf16.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct StageIn {
    c: u64,
    t: u64,
    h: u64,
    w: u64,
    cp: u64,
    hs: u64,
    ws: u64,
    pad: u64,
    t_first: u64,
    t_step: u64,
    fold: u64,
}

/// Mirrors `StageWeight` in conv_bf16.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct StageWeight {
    o: u64,
    c: u64,
    taps: u64,
    op: u64,
    cp: u64,
    fold: u64,
}

/// Mirrors `UnstageOut` in conv_bf16.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnstageOut {
    o: u64,
    op: u64,
    plane: u64,
    t_out: u64,
    t_first: u64,
    has_bias: u64,
    relu: u64,
}

// SAFETY: plain #[repr(C)] data with the field order and types of the CUDA structs.
unsafe impl DeviceRepr for StageIn {}
unsafe impl DeviceRepr for StageWeight {}
unsafe impl DeviceRepr for UnstageOut {}

/// Where cuDNN reads a convolution's input from.
enum ConvInput {
    /// The tensor's own channels-last buffer (device pointer), read in place.
    ChannelsLast(u64),
    /// f32 row-major `source`, staged group by group into `staging`.
    Staged {
        source: u64,
        staging: DeviceBlock<u16>,
    },
    /// A channels-last `source` of geometry `g`, its frames copied side by side into the channels
    /// of `staging` group by group (the time folded).
    Folded {
        source: u64,
        g: ChannelsLast,
        staging: DeviceBlock<u16>,
    },
}

/// Tile of the staging kernels: 32 positions × 64 channels.
const TILE_POSITIONS: usize = 32;
const TILE_CHANNELS: usize = 64;

/// The grid of a tiled staging kernel over `positions × channels` per frame.
fn tile_grid(positions: usize, channels: usize, frames: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            positions.div_ceil(TILE_POSITIONS) as u32,
            channels.div_ceil(TILE_CHANNELS) as u32,
            frames as u32,
        ),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// conv3d on cuDNN, with ReLU when `relu`. `residual` (shaped like the output) is added by
    /// the epilogue where the output and the residual are both channels-last, before the ReLU;
    /// the flag says whether it was (if not, the caller adds it, and applies the ReLU after it:
    /// then none was applied here). Ok(None) when this backend does not use cuDNN or cuDNN
    /// cannot run the shape: nothing has been enqueued then and the caller takes the im2col path.
    pub(crate) fn try_conv3d_cudnn(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        (stride_t, pad, mode): (usize, usize, PadMode),
        (relu, residual): (bool, Option<&Tensor>),
    ) -> CudaResult<Option<(CudaBuffer, bool)>> {
        let Some(dnn) = &self.dnn else {
            return Ok(None);
        };
        let o = self.options();
        let fold = if !o.conv_fold_time
            || o.conv_fold_max_channels
                .is_some_and(|max| w.dim(1) * w.dim(2) > max)
        {
            FoldTime::Off
        } else if o.conv_fold_causal {
            FoldTime::Always
        } else {
            FoldTime::WhereCheap
        };
        let staged = StagedConv::new(
            [x.dim(0), x.dim(1), x.dim(2), x.dim(3)],
            [w.dim(0), w.dim(1), w.dim(2), w.dim(3), w.dim(4)],
            stride_t,
            pad,
            (mode == PadMode::Replicate, fold),
            o.conv_stage_bytes,
        );
        let Some(s) = staged else {
            return Ok(None);
        };
        let mut dnn = dnn.lock().unwrap_or_else(|e| e.into_inner());
        for g in s.groups() {
            if !dnn.prepare(s.shape(g.frames))? {
                return Ok(None);
            }
        }
        let input = match self.channels_last_view(x)? {
            Some((ptr, _)) if s.reads_channels_last_directly() => ConvInput::ChannelsLast(ptr),
            // SAFETY: fully written by the copies before cuDNN reads it.
            Some((source, g)) if s.folds_channels_last_by_copies() => ConvInput::Folded {
                source,
                g,
                staging: unsafe { self.alloc_block::<u16>(s.input_elems(s.group)) }?,
            },
            // SAFETY: fully written by the staging kernel before cuDNN reads it.
            _ => ConvInput::Staged {
                source: self.ptr(x)?,
                staging: unsafe { self.alloc_block::<u16>(s.input_elems(s.group)) }?,
            },
        };
        let bias = self.opt_ptr(b)?;
        let channels_last = s
            .channels_last_output()
            .filter(|_| self.options().conv_channels_last);
        let out = match channels_last {
            Some(g) => self.output_channels_last(g)?,
            None => self.output(s.o * s.t_out * s.ho * s.wo)?,
        };
        let mut cache = self.conv_weights.lock().unwrap_or_else(|e| e.into_inner());
        let dims = w.shape().to_vec();
        let owner = w.buffer().clone();
        let mut once = None;
        let filter = match cache.get(&owner, &dims) {
            Some(f) => raw_u16(f),
            None => {
                let f = self.stage_weight(w, &s)?;
                let bytes = f.len() * 2;
                match cache.insert(&owner, &dims, bytes, f) {
                    Ok(f) => raw_u16(f),
                    Err(f) => raw_u16(once.insert(f)),
                }
            }
        };
        // SAFETY: fully written by cuDNN before the unstaging kernel reads it.
        let ys = match out.channels_last() {
            None => Some(unsafe { self.alloc_block::<u16>(s.output_elems(s.group)) }?),
            Some(_) => None,
        };
        // The residual goes into the channels-last epilogue where its layout matches the output.
        let addend = match (out.channels_last(), residual) {
            (Some(g), Some(r)) => match self.channels_last_view(r)? {
                Some((ptr, rg)) if rg == g => ptr,
                _ => 0,
            },
            _ => 0,
        };
        let residual_added = addend != 0;
        // A residual the caller adds must come before the ReLU: the caller applies both.
        let epilogue = (b.is_some(), relu && (residual.is_none() || residual_added));
        for g in s.groups() {
            let x_group = match &input {
                ConvInput::Staged { source, staging } => {
                    self.stage_input(*source, raw_u16(staging), &s, &g)?;
                    raw_u16(staging)
                }
                ConvInput::ChannelsLast(x) => {
                    let first = s.source_frames(&g).0;
                    x + (first * s.h * s.w * s.c * BF16_BYTES) as u64
                }
                ConvInput::Folded {
                    source,
                    g: sg,
                    staging,
                } => {
                    let first = s.source_frames(&g).0;
                    let to = raw_u16(staging);
                    self.stage_folded_channels_last(*source, to, *sg, (first, g.frames, s.fold))?;
                    to
                }
            };
            let y_group = match &ys {
                Some(ys) => raw_u16(ys),
                None => out.ptr() + (g.first * s.ho * s.wo * s.op * BF16_BYTES) as u64,
            };
            dnn.forward(&s.shape(g.frames), x_group, filter, y_group)?;
            if ys.is_some() {
                self.unstage_output(y_group, bias, epilogue, out.ptr(), &s, &g)?;
            }
        }
        if let Some(g) = out.channels_last() {
            self.channels_last_epilogue(out.ptr(), bias, addend, epilogue, g)?;
        }
        drop(once);
        self.cudnn_convs.fetch_add(1, Ordering::Relaxed);
        Ok(Some((out, residual_added)))
    }

    fn stage_weight(&self, w: &Tensor, s: &StagedConv) -> CudaResult<CudaSlice<u16>> {
        // SAFETY: every element is written by the kernel below.
        let y = unsafe { self.alloc_kept::<u16>(s.weight_elems()) }?;
        let g = StageWeight {
            o: s.o as u64,
            c: s.c as u64,
            taps: s.taps() as u64,
            op: s.op as u64,
            cp: s.cp as u64,
            fold: s.fold as u64,
        };
        let args = KernelArgs::new()
            .push(self.ptr(w)?)
            .push(raw_u16(&y))
            .push(g);
        self.launch(
            "conv_stage_weight_bf16",
            self.grid(s.weight_elems() as u64),
            args,
        )?;
        Ok(y)
    }

    fn stage_input(&self, x: u64, xs: u64, s: &StagedConv, g: &Group) -> CudaResult<()> {
        let (t_first, t_step) = s.source_frames(g);
        let frames = s.input_frames(g.frames);
        let p = StageIn {
            c: s.c as u64,
            t: s.t as u64,
            h: s.h as u64,
            w: s.w as u64,
            cp: s.cp as u64,
            hs: s.hs as u64,
            ws: s.ws as u64,
            pad: if s.replicate { s.pad as u64 } else { 0 },
            t_first: t_first as u64,
            t_step: t_step as u64,
            fold: s.fold as u64,
        };
        let args = KernelArgs::new().push(x).push(xs).push(p);
        let grid = tile_grid(s.hs * s.ws, s.cp * s.fold, frames);
        self.launch("conv_stage_input_bf16", grid, args)
    }

    fn unstage_output(
        &self,
        ys: u64,
        bias: u64,
        (has_bias, relu): (bool, bool),
        out: u64,
        s: &StagedConv,
        g: &Group,
    ) -> CudaResult<()> {
        let plane = s.ho * s.wo;
        let p = UnstageOut {
            o: s.o as u64,
            op: s.op as u64,
            plane: plane as u64,
            t_out: s.t_out as u64,
            t_first: g.first as u64,
            has_bias: has_bias as u64,
            relu: relu as u64,
        };
        let args = KernelArgs::new().push(ys).push(bias).push(out).push(p);
        let grid = tile_grid(plane, s.op, g.frames);
        self.launch("conv_unstage_output_f32", grid, args)
    }
}

/// The staging kernels put frames on the grid's z axis.
const MAX_GRID_FRAMES: usize = 65_535;

impl CudaBackend {
    /// f32 row-major `(C, T, H, W)` at `x` into the channels-last bf16 buffer `y` of `g`.
    pub(crate) fn stage_to_channels_last(&self, x: u64, y: u64, g: ChannelsLast) -> CudaResult<()> {
        let frame_bytes = g.plane() * g.c * BF16_BYTES;
        for first in (0..g.t).step_by(MAX_GRID_FRAMES) {
            let frames = MAX_GRID_FRAMES.min(g.t - first);
            let p = StageIn {
                c: g.c as u64,
                t: g.t as u64,
                h: g.h as u64,
                w: g.w as u64,
                cp: g.c as u64,
                hs: g.h as u64,
                ws: g.w as u64,
                pad: 0,
                t_first: first as u64,
                t_step: 1,
                fold: 1,
            };
            let dst = y + (first * frame_bytes) as u64;
            let args = KernelArgs::new().push(x).push(dst).push(p);
            let grid = tile_grid(g.plane(), g.c, frames);
            self.launch("conv_stage_input_bf16", grid, args)?;
        }
        Ok(())
    }

    /// The channels-last bf16 buffer `y` of `g` into f32 row-major `(C, T, H, W)` at `out`.
    pub(crate) fn unstage_from_channels_last(
        &self,
        y: u64,
        out: u64,
        g: ChannelsLast,
    ) -> CudaResult<()> {
        let frame_bytes = g.plane() * g.c * BF16_BYTES;
        for first in (0..g.t).step_by(MAX_GRID_FRAMES) {
            let frames = MAX_GRID_FRAMES.min(g.t - first);
            let p = UnstageOut {
                o: g.c as u64,
                op: g.c as u64,
                plane: g.plane() as u64,
                t_out: g.t as u64,
                t_first: first as u64,
                has_bias: 0,
                relu: 0,
            };
            let src = y + (first * frame_bytes) as u64;
            let args = KernelArgs::new().push(src).push(0u64).push(out).push(p);
            let grid = tile_grid(g.plane(), g.c, frames);
            self.launch("conv_unstage_output_f32", grid, args)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_grid_covers_every_position_channel_and_frame() {
        let g = tile_grid(33, 8, 5);
        assert_eq!(g.grid_dim, (2, 1, 5));
        assert_eq!(tile_grid(64, 128, 1).grid_dim, (2, 2, 1));
        assert_eq!(g.block_dim.0, 256, "the kernels assume 8 warps");
    }
}

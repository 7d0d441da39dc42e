//! Nearest 2× upsampling and the 3×3 conv after it (the Wan VAE's Resample) as one cuDNN 2×2 conv
//! over the small frames with 4·O outputs, one per output phase, then a pixel shuffle that adds the
//! bias (subpixel.cu). Per output pixel that is 2·C·O·4 FLOPs instead of 2·C·O·9 (2.25× fewer),
//! and the 4× upsampled input is never written nor read: on the VAE's last Resample at 1408×768
//! (192 → 96 channels) that is 0.33 → 0.15 MFLOP per output pixel and 3 GB of bf16 traffic per
//! 4 frames. The shuffle replaces the conv's own bias pass (both read and write the output once).
//! Fast mode only (channels-last bf16 in and out); elsewhere the two ops run as they are.

use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::{raw_u16, ChannelsLast, CudaBuffer};
use crate::dnn::ConvShape;
use crate::error::CudaResult;
use crate::launch::KernelArgs;
use crate::ops::conv_stage::BF16_BYTES;

/// cuDNN's 32-bit element counts per tensor.
const MAX_ELEMS: usize = i32::MAX as usize;

impl CudaBackend {
    /// `conv3d(upsample_nearest2x(x), w, b, 1, 1, zero)` for `w (O, C, 1, 3, 3)`, then ReLU when
    /// `relu` (in the shuffle); None (nothing enqueued) where this path does not apply: the
    /// caller composes the ops.
    pub(crate) fn try_upsample_conv(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        relu: bool,
    ) -> CudaResult<Option<CudaBuffer>> {
        let Some(dnn) = &self.dnn else {
            return Ok(None);
        };
        let o = w.dim(0);
        let applies = self.options().conv_subpixel_upsample
            && self.options().conv_channels_last
            && w.shape()[2..] == [1, 3, 3]
            && o > 0
            && o.is_multiple_of(ChannelsLast::CHANNEL_GROUP);
        if !applies {
            return Ok(None);
        }
        let Some((src, g)) = self.channels_last_view(x)? else {
            return Ok(None);
        };
        let (c, k) = (g.c, 4 * o);
        let phases_per_frame = (g.h + 1) * (g.w + 1) * k;
        let per_frame = phases_per_frame.max(g.plane() * c);
        if g.t == 0 || per_frame > MAX_ELEMS {
            return Ok(None);
        }
        let budget = self.options().conv_stage_bytes / BF16_BYTES;
        let group = (budget / phases_per_frame)
            .clamp(1, g.t)
            .min(MAX_ELEMS / per_frame);
        // Even groups: one cuDNN shape for all calls where the frames divide.
        let group = g.t.div_ceil(g.t.div_ceil(group));
        let shape = |frames| ConvShape {
            n: frames,
            c,
            k,
            d: 1,
            h: g.h,
            w: g.w,
            kt: 1,
            kh: 2,
            kw: 2,
            stride_t: 1,
            pad: 1,
        };
        let mut dnn = dnn.lock().unwrap_or_else(|e| e.into_inner());
        let last = g.t - (g.t.div_ceil(group) - 1) * group;
        for frames in [group, last] {
            if !dnn.prepare(shape(frames))? {
                return Ok(None);
            }
        }
        let out = self.output_channels_last(ChannelsLast {
            c: o,
            t: g.t,
            h: 2 * g.h,
            w: 2 * g.w,
        })?;
        let filter = self.subpixel_filter(w, o, c)?;
        // SAFETY: fully written by cuDNN before the shuffle reads it.
        let phases = unsafe { self.alloc_block::<u16>(group * phases_per_frame) }?;
        let phases_ptr = raw_u16(&phases);
        let bias = self.opt_ptr(b)?;
        let out_frame = 4 * g.plane() * o;
        for first in (0..g.t).step_by(group) {
            let frames = group.min(g.t - first);
            let x_at = src + (first * g.plane() * c * BF16_BYTES) as u64;
            dnn.forward(&shape(frames), x_at, filter.ptr, phases_ptr)?;
            let n8 = (frames * out_frame / ChannelsLast::CHANNEL_GROUP) as u64;
            let out_at = out.ptr() + (first * out_frame * BF16_BYTES) as u64;
            let o8 = o / ChannelsLast::CHANNEL_GROUP;
            // 32-bit indices where the phases and the output both have fewer than 2^31 groups.
            let groups =
                (frames * phases_per_frame).max(frames * out_frame) / ChannelsLast::CHANNEL_GROUP;
            let args = if groups < (1 << 31) {
                let as_u32 = |v: usize| v as u32;
                KernelArgs::new()
                    .push(phases_ptr)
                    .push(bias)
                    .push(out_at)
                    .push(as_u32(frames))
                    .push(as_u32(g.h))
                    .push(as_u32(g.w))
                    .push(as_u32(o8))
                    .push(relu as u32)
            } else {
                KernelArgs::new()
                    .push(phases_ptr)
                    .push(bias)
                    .push(out_at)
                    .push(frames as u64)
                    .push(g.h as u64)
                    .push(g.w as u64)
                    .push(o8 as u64)
                    .push(relu as u64)
            };
            let kernel = if groups < (1 << 31) {
                "subpixel_shuffle_bf16_i32"
            } else {
                "subpixel_shuffle_bf16"
            };
            self.launch(kernel, self.grid(n8), args)?;
        }
        drop(filter);
        self.cudnn_convs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(out))
    }

    /// The four phases' 2×2 filters of `w` in bf16 KRSC, cached per weight buffer under their own
    /// shape key (the plain staging of the same weight is cached under the weight's shape).
    fn subpixel_filter(&self, w: &Tensor, o: usize, c: usize) -> CudaResult<Filter> {
        let dims = [4 * o, c, 2, 2];
        let owner = w.buffer().clone();
        let mut cache = self.conv_weights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(&owner, &dims) {
            return Ok(Filter {
                ptr: raw_u16(f),
                _once: None,
            });
        }
        let elems = 16 * o * c;
        // SAFETY: every element is written by the kernel below.
        let f = unsafe { self.alloc_kept::<u16>(elems) }?;
        let args = KernelArgs::new()
            .push(self.ptr(w)?)
            .push(raw_u16(&f))
            .push(o as u64)
            .push(c as u64);
        self.launch("subpixel_weight_bf16", self.grid(elems as u64), args)?;
        Ok(match cache.insert(&owner, &dims, elems * BF16_BYTES, f) {
            Ok(f) => Filter {
                ptr: raw_u16(f),
                _once: None,
            },
            Err(f) => Filter {
                ptr: raw_u16(&f),
                _once: Some(f),
            },
        })
    }
}

/// A filter's device pointer, and the filter itself where the cache had no room for it (freed
/// in stream order after the op).
struct Filter {
    ptr: u64,
    _once: Option<cudarc::driver::CudaSlice<u16>>,
}

//! From a decoded chunk to its output frames, and where the colour fix runs: on the decoder's
//! device when the chunk's LQ frames are there too (the host fix takes ~30 ms of CPU per
//! 1408×768 frame), else per frame on the host in `OutputFrame::finish`.

use std::sync::Arc;

use flashvsr_tensor::{PendingDownload, Tensor};

use crate::color_fix::{wavelet_on_device, ColorFix};
use crate::lq_frame::LqHost;
use crate::output_frame::{DecodedChunk, OutputFrame};
use crate::Result;

/// A chunk's decoded frames `(3, n, H, W)`: on the decoder's device, or in host memory (the tiled
/// VAE decode assembles its tiles there).
pub(super) enum DecodedFrames {
    Device(Tensor),
    Host { pixels: Vec<f32>, frames: usize },
}

impl DecodedFrames {
    pub(super) fn frames(&self) -> usize {
        match self {
            DecodedFrames::Device(y) => y.dim(1),
            DecodedFrames::Host { frames, .. } => *frames,
        }
    }
}

/// The output frames of a decoded chunk starting at frame `out0`. `references` are the host LQ
/// frames of the same indices; `device_references()` the same frames `(3, n, H, W)` on the
/// decoder's device, or None where they are not there (called only for a fix of a chunk on the
/// device). A fix done on the device leaves the frames finished; otherwise each frame
/// keeps its reference and `OutputFrame::finish` fixes it, off the engine's thread. The wait for
/// the pixels is left to the first frame that needs them.
pub(super) fn chunk_frames(
    out0: usize,
    decoded: DecodedFrames,
    references: Vec<Arc<LqHost>>,
    device_references: impl FnOnce() -> Result<Option<Tensor>>,
    canvas: (usize, usize),
    color_fix: ColorFix,
) -> Result<Vec<OutputFrame>> {
    let (pixels, host_fix) = match decoded {
        DecodedFrames::Host { pixels, .. } => (PendingDownload::ready(pixels), color_fix),
        DecodedFrames::Device(y) => {
            let fixed = match color_fix {
                ColorFix::Wavelet => device_references()?
                    .map(|x| wavelet_on_device(&y, &x))
                    .transpose()?,
                ColorFix::AdaIn => device_references()?.map(|x| y.adain(&x)).transpose()?,
                ColorFix::None => None,
            };
            match fixed {
                Some(fixed) => (fixed.to_vec_later()?, ColorFix::None),
                None => (y.to_vec_later()?, color_fix),
            }
        }
    };
    let pixels = DecodedChunk::new(pixels);
    let n = references.len();
    Ok(references
        .into_iter()
        .enumerate()
        .map(|(i, reference)| {
            OutputFrame::in_chunk(
                out0 + i,
                pixels.clone(),
                i,
                n,
                canvas,
                (host_fix, reference),
            )
        })
        .collect())
}

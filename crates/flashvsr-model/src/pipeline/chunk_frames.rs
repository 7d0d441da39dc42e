//! From a decoded chunk to its output frames, and where the colour fix runs: on the decoder's
//! device when the chunk's LQ frames are there too (the host fix takes ~30 ms of CPU per
//! 1408×768 frame), else per frame on the host in `OutputFrame::finish`.

use std::sync::Arc;

use flashvsr_tensor::{PendingDownload, Tensor};

use crate::color_fix::{wavelet_on_device, ColorFix};
use crate::lq_frame::LqHost;
use crate::output_frame::{DecodedChunk, OutputFrame};
use crate::Result;

/// A chunk's decoded frames `(3, n, H, W)`: on the decoder's device, in pieces along the frames
/// (the tiny decoder's, one per latent frame, each finished and downloaded on its own, so that
/// the colour fix never works on the whole chunk at once), or in host memory (the tiled VAE decode
/// assembles its tiles there).
pub(super) enum DecodedFrames {
    Device(Vec<Tensor>),
    Host { pixels: Vec<f32>, frames: usize },
}

impl DecodedFrames {
    pub(super) fn frames(&self) -> usize {
        match self {
            DecodedFrames::Device(pieces) => pieces.iter().map(|y| y.dim(1)).sum(),
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
    let canvas_frames = references.len();
    let pieces = match decoded {
        DecodedFrames::Host { pixels, .. } => {
            vec![(PendingDownload::ready(pixels), canvas_frames, color_fix)]
        }
        DecodedFrames::Device(ys) => {
            let mut device_references = Some(device_references);
            let mut whole_reference: Option<Option<Tensor>> = None;
            let mut offset = 0;
            let mut pieces = Vec::with_capacity(ys.len());
            for y in ys {
                let n = y.dim(1);
                let reference = match color_fix {
                    ColorFix::None => None,
                    ColorFix::Wavelet | ColorFix::AdaIn => {
                        if whole_reference.is_none() {
                            whole_reference = Some(match device_references.take() {
                                Some(get) => get()?,
                                None => None,
                            });
                        }
                        match whole_reference.as_ref().and_then(Option::as_ref) {
                            Some(x) => Some(x.narrow(1, offset, n)?),
                            None => None,
                        }
                    }
                };
                let fixed = match (color_fix, reference) {
                    (ColorFix::Wavelet, Some(x)) => Some(wavelet_on_device(&y, &x)?),
                    (ColorFix::AdaIn, Some(x)) => Some(y.adain(&x)?),
                    _ => None,
                };
                pieces.push(match fixed {
                    Some(fixed) => (fixed.to_vec_later()?, n, ColorFix::None),
                    None => (y.to_vec_later()?, n, color_fix),
                });
                offset += n;
            }
            pieces
        }
    };
    let mut references = references.into_iter();
    let mut frames = Vec::with_capacity(canvas_frames);
    for (pixels, n, host_fix) in pieces {
        let chunk = DecodedChunk::new(pixels);
        for (slot, reference) in references.by_ref().take(n).enumerate() {
            frames.push(OutputFrame::in_chunk(
                out0 + frames.len(),
                chunk.clone(),
                slot,
                n,
                canvas,
                (host_fix, reference),
            ));
        }
    }
    Ok(frames)
}

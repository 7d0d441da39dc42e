//! Frames leaving an engine. The engine only hands over the decoded chunk (shared) and the LQ
//! reference of each frame (shared): the per-frame work after the decoder — splitting the chunk
//! into frames and the colour fix — happens in [`OutputFrame::finish`], on whichever thread the
//! caller picks, so the engine's thread (which feeds the GPU) never waits for it. Nor does it wait
//! for the chunk's copy to host memory: the first frame that needs the pixels does. (A wavelet
//! fix runs on the device instead where the chunk's LQ frames are there: `pipeline/chunk_frames.rs`;
//! its frames come with no fix left to do.)

use std::sync::{Arc, Mutex, OnceLock};

use flashvsr_tensor::{HostValues, PendingDownload, TensorError};

use crate::color_fix::{self, ColorFix};
use crate::lq_frame::LqHost;
use crate::Result;

/// The decoded pixels `(3, n, H, W)` of a chunk, shared by its frames, fetched on first access.
pub(crate) struct DecodedChunk {
    download: Mutex<Option<PendingDownload>>,
    pixels: OnceLock<std::result::Result<HostValues, TensorError>>,
}

impl DecodedChunk {
    pub(crate) fn new(download: PendingDownload) -> Arc<DecodedChunk> {
        Arc::new(DecodedChunk {
            download: Mutex::new(Some(download)),
            pixels: OnceLock::new(),
        })
    }

    /// The pixels, waiting for the download the first time; its error for every frame.
    fn pixels(&self) -> Result<&[f32]> {
        let pixels = self.pixels.get_or_init(|| {
            let download = self
                .download
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            // Taken only here, and this runs once.
            download.map_or_else(
                || Ok(Arc::new(Vec::<f32>::new()) as HostValues),
                PendingDownload::wait_shared,
            )
        });
        match pixels {
            Ok(p) => Ok(p.as_ref().as_ref()),
            Err(e) => Err(e.clone().into()),
        }
    }
}

/// Decoded pixels of one frame: its own buffer, or its slot in a decoded chunk `(3, n, H, W)`.
enum Decoded {
    Own(Vec<f32>),
    InChunk {
        chunk: Arc<DecodedChunk>,
        slot: usize,
        frames: usize,
    },
}

/// The colour fix still due, with the LQ frame `(3, H, W)` it matches.
struct PendingFix {
    method: ColorFix,
    reference: Arc<LqHost>,
    height: usize,
    width: usize,
}

/// A frame `(3, H, W)` at model resolution, values in [-1, 1] once finished (unclamped with no
/// colour fix). Owns what finishing needs, so it can be sent to another thread.
pub struct OutputFrame {
    pub index: usize,
    decoded: Decoded,
    fix: Option<PendingFix>,
    plane: usize,
}

impl OutputFrame {
    /// Frame `slot` of a decoded chunk `(3, frames, H, W)`, colour-fixed against `reference` when
    /// finished.
    pub(crate) fn in_chunk(
        index: usize,
        chunk: Arc<DecodedChunk>,
        slot: usize,
        frames: usize,
        (height, width): (usize, usize),
        fix: (ColorFix, Arc<LqHost>),
    ) -> OutputFrame {
        OutputFrame {
            index,
            decoded: Decoded::InChunk {
                chunk,
                slot,
                frames,
            },
            fix: PendingFix::new(fix, height, width),
            plane: height * width,
        }
    }

    /// A whole frame `(3, H, W)`, colour-fixed against `reference` when finished.
    pub(crate) fn own(
        index: usize,
        pixels: Vec<f32>,
        (height, width): (usize, usize),
        fix: (ColorFix, Arc<LqHost>),
    ) -> OutputFrame {
        OutputFrame {
            index,
            decoded: Decoded::Own(pixels),
            fix: PendingFix::new(fix, height, width),
            plane: height * width,
        }
    }

    /// Channel `c` of the decoded frame, before any colour fix (`H · W` values); an error when
    /// the chunk's download failed.
    pub(crate) fn decoded_plane(&self, c: usize) -> Result<&[f32]> {
        let (pixels, offset) = match &self.decoded {
            Decoded::Own(p) => (p.as_slice(), c * self.plane),
            Decoded::InChunk {
                chunk,
                slot,
                frames,
            } => (chunk.pixels()?, (c * frames + slot) * self.plane),
        };
        pixels.get(offset..offset + self.plane).ok_or_else(|| {
            let detail = "the decoded chunk is too short".into();
            TensorError::Shape {
                op: "decoded_plane",
                detail,
            }
            .into()
        })
    }

    /// The finished frame as its three planes: read where the chunk was downloaded when no fix is
    /// left to do (no copy), else [`OutputFrame::finish`]'s.
    pub fn finish_planes(self) -> Result<FinishedFrame> {
        if self.fix.is_none() {
            if let Decoded::InChunk { .. } = &self.decoded {
                // Fetches the chunk (and reports its failure) before the frame is handed on.
                self.decoded_plane(0)?;
                return Ok(FinishedFrame::InChunk(self));
            }
        }
        let plane = self.plane;
        Ok(FinishedFrame::Own {
            pixels: self.finish()?,
            plane,
        })
    }

    /// The finished frame `(3, H, W)`: the decoded pixels with the colour fix applied. Costs a
    /// frame's worth of host time (the fix is per-frame statistics or a wavelet decomposition),
    /// and for the first frame of a chunk the wait for its download, whose failure is the error.
    pub fn finish(self) -> Result<Vec<f32>> {
        let mut frame = match self.decoded {
            Decoded::Own(p) => p,
            Decoded::InChunk { .. } => {
                let mut frame = Vec::with_capacity(3 * self.plane);
                for c in 0..3 {
                    frame.extend_from_slice(self.decoded_plane(c)?);
                }
                frame
            }
        };
        if let Some(fix) = &self.fix {
            color_fix::apply(
                fix.method,
                &mut frame,
                fix.reference.canvas(),
                fix.height,
                fix.width,
            );
        }
        Ok(frame)
    }
}

/// A finished frame's pixels in [-1, 1], plane by plane.
pub enum FinishedFrame {
    Own {
        pixels: Vec<f32>,
        plane: usize,
    },
    /// A frame with nothing left to do, read in its decoded chunk.
    InChunk(OutputFrame),
}

impl FinishedFrame {
    /// The R, G and B planes (`H · W` values each).
    pub fn planes(&self) -> Result<[&[f32]; 3]> {
        match self {
            FinishedFrame::Own { pixels, plane } => {
                let channel = |c: usize| -> Result<&[f32]> {
                    pixels.get(c * plane..(c + 1) * plane).ok_or_else(|| {
                        let detail = format!("{} values for 3 planes of {plane}", pixels.len());
                        TensorError::Shape {
                            op: "finished frame",
                            detail,
                        }
                        .into()
                    })
                };
                Ok([channel(0)?, channel(1)?, channel(2)?])
            }
            FinishedFrame::InChunk(f) => Ok([
                f.decoded_plane(0)?,
                f.decoded_plane(1)?,
                f.decoded_plane(2)?,
            ]),
        }
    }
}

impl PendingFix {
    fn new(
        (method, reference): (ColorFix, Arc<LqHost>),
        height: usize,
        width: usize,
    ) -> Option<PendingFix> {
        (method != ColorFix::None).then_some(PendingFix {
            method,
            reference,
            height,
            width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_chunk_slot_finishes_to_its_own_planes_without_a_fix() {
        // Chunk (3, 2, 1, 2): channel c, frame t, pixel x holds 100c + 10t + x.
        let chunk: Vec<f32> = (0..3)
            .flat_map(|c| {
                (0..2).flat_map(move |t| (0..2).map(move |x| (100 * c + 10 * t + x) as f32))
            })
            .collect();
        let reference = Arc::new(LqHost::from_canvas(vec![0.0; 6]));
        let f = OutputFrame::in_chunk(
            7,
            DecodedChunk::new(PendingDownload::ready(chunk)),
            1,
            2,
            (1, 2),
            (ColorFix::None, reference),
        );
        assert_eq!(f.index, 7);
        assert_eq!(
            f.finish().unwrap(),
            vec![10.0, 11.0, 110.0, 111.0, 210.0, 211.0]
        );
    }

    #[test]
    fn finished_planes_are_read_in_the_chunk_or_owned_after_a_fix() {
        let chunk: Vec<f32> = (0..3)
            .flat_map(|c| {
                (0..2).flat_map(move |t| (0..2).map(move |x| (100 * c + 10 * t + x) as f32))
            })
            .collect();
        let chunk = DecodedChunk::new(PendingDownload::ready(chunk));
        let frame = |slot, method| {
            let reference = Arc::new(LqHost::from_canvas(vec![0.5; 6]));
            OutputFrame::in_chunk(slot, chunk.clone(), slot, 2, (1, 2), (method, reference))
        };
        let plain = frame(1, ColorFix::None).finish_planes().unwrap();
        assert!(matches!(plain, FinishedFrame::InChunk(_)));
        assert_eq!(
            plain.planes().unwrap(),
            [&[10.0, 11.0][..], &[110.0, 111.0][..], &[210.0, 211.0][..]]
        );
        // A fix still due is applied on the host: the planes are the fixed frame's.
        let expected = frame(0, ColorFix::AdaIn).finish().unwrap();
        let fixed = frame(0, ColorFix::AdaIn).finish_planes().unwrap();
        assert!(matches!(fixed, FinishedFrame::Own { .. }));
        let planes = fixed.planes().unwrap();
        assert_eq!(planes.concat(), expected);
        assert_ne!(planes[0], &[0.0, 1.0][..]);
    }

    /// Frames of a chunk `(3, 2, 1, 1)` whose pixels come from `download`.
    fn frames_of(download: PendingDownload) -> Vec<OutputFrame> {
        let chunk = DecodedChunk::new(download);
        (0..2)
            .map(|slot| {
                let fix = (ColorFix::None, Arc::new(LqHost::from_canvas(vec![0.0; 3])));
                OutputFrame::in_chunk(slot, chunk.clone(), slot, 2, (1, 1), fix)
            })
            .collect()
    }

    #[test]
    fn a_pending_chunk_is_fetched_once_by_the_first_frame_that_needs_it() {
        let waits = Arc::new(AtomicUsize::new(0));
        let counter = waits.clone();
        let frames = frames_of(PendingDownload::waiting(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0])
        }));
        assert_eq!(
            waits.load(Ordering::SeqCst),
            0,
            "handed out without waiting"
        );
        let finished: Vec<Vec<f32>> = std::thread::scope(|s| {
            let jobs: Vec<_> = frames
                .into_iter()
                .map(|f| s.spawn(move || f.finish().unwrap()))
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert_eq!(finished, vec![vec![0.0, 10.0, 20.0], vec![1.0, 11.0, 21.0]]);
        assert_eq!(waits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_download_is_an_error_of_every_frame_of_its_chunk() {
        let mut frames = frames_of(PendingDownload::waiting(|| {
            Err(TensorError::Backend {
                backend: "cuda:0".into(),
                detail: "copy failed".into(),
            })
        }));
        assert!(frames[1].decoded_plane(0).is_err());
        let last = frames.pop().unwrap();
        for f in [frames.pop().unwrap(), last] {
            let e = f.finish().unwrap_err();
            assert!(e.to_string().contains("copy failed"), "{e}");
        }
    }

    #[test]
    fn finishing_applies_the_colour_fix_against_the_reference() {
        // AdaIN moves each channel to the reference's mean and spread.
        let decoded = vec![-0.5, 0.5, -0.5, 0.5, -0.5, 0.5];
        let reference = vec![0.2, 0.2, -0.4, 0.0, 0.1, 0.3];
        let mut expected = decoded.clone();
        color_fix::adain(&mut expected, &reference);
        let reference = Arc::new(LqHost::from_canvas(reference));
        let f = OutputFrame::own(0, decoded, (1, 2), (ColorFix::AdaIn, reference));
        let out = f.finish().unwrap();
        assert_eq!(out, expected);
        assert!((out[0] - 0.2).abs() < 1e-2 && (out[1] - 0.2).abs() < 1e-2);
        assert!((out[2] + 0.4).abs() < 1e-2 && (out[3] - 0.0).abs() < 1e-2);
    }
}

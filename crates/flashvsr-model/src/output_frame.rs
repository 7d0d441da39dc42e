//! Frames leaving an engine. The engine only hands over the decoded chunk (shared) and the LQ
//! reference of each frame (shared): the per-frame work after the decoder — splitting the chunk
//! into frames and the colour fix — happens in [`OutputFrame::finish`], on whichever thread the
//! caller picks, so the engine's thread (which feeds the GPU) never waits for it.

use std::sync::Arc;

use crate::color_fix::{self, ColorFix};

/// Decoded pixels of one frame: its own buffer, or its slot in a decoded chunk `(3, n, H, W)`.
enum Decoded {
    Own(Vec<f32>),
    InChunk {
        chunk: Arc<Vec<f32>>,
        slot: usize,
        frames: usize,
    },
}

/// The colour fix still due, with the LQ frame `(3, H, W)` it matches.
struct PendingFix {
    method: ColorFix,
    reference: Arc<Vec<f32>>,
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
        chunk: Arc<Vec<f32>>,
        slot: usize,
        frames: usize,
        (height, width): (usize, usize),
        fix: (ColorFix, Arc<Vec<f32>>),
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
        fix: (ColorFix, Arc<Vec<f32>>),
    ) -> OutputFrame {
        OutputFrame {
            index,
            decoded: Decoded::Own(pixels),
            fix: PendingFix::new(fix, height, width),
            plane: height * width,
        }
    }

    /// Channel `c` of the decoded frame, before any colour fix (`H · W` values).
    pub(crate) fn decoded_plane(&self, c: usize) -> &[f32] {
        match &self.decoded {
            Decoded::Own(p) => &p[c * self.plane..][..self.plane],
            Decoded::InChunk {
                chunk,
                slot,
                frames,
            } => &chunk[(c * frames + slot) * self.plane..][..self.plane],
        }
    }

    /// The finished frame `(3, H, W)`: the decoded pixels with the colour fix applied. Costs a
    /// frame's worth of host time (the fix is per-frame statistics or a wavelet decomposition).
    pub fn finish(self) -> Vec<f32> {
        let mut frame = match self.decoded {
            Decoded::Own(p) => p,
            Decoded::InChunk { .. } => {
                let mut frame = Vec::with_capacity(3 * self.plane);
                for c in 0..3 {
                    frame.extend_from_slice(self.decoded_plane(c));
                }
                frame
            }
        };
        if let Some(fix) = &self.fix {
            color_fix::apply(
                fix.method,
                &mut frame,
                &fix.reference,
                fix.height,
                fix.width,
            );
        }
        frame
    }
}

impl PendingFix {
    fn new(
        (method, reference): (ColorFix, Arc<Vec<f32>>),
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

    #[test]
    fn a_chunk_slot_finishes_to_its_own_planes_without_a_fix() {
        // Chunk (3, 2, 1, 2): channel c, frame t, pixel x holds 100c + 10t + x.
        let chunk: Vec<f32> = (0..3)
            .flat_map(|c| {
                (0..2).flat_map(move |t| (0..2).map(move |x| (100 * c + 10 * t + x) as f32))
            })
            .collect();
        let reference = Arc::new(vec![0.0; 6]);
        let f = OutputFrame::in_chunk(
            7,
            Arc::new(chunk),
            1,
            2,
            (1, 2),
            (ColorFix::None, reference),
        );
        assert_eq!(f.index, 7);
        assert_eq!(f.finish(), vec![10.0, 11.0, 110.0, 111.0, 210.0, 211.0]);
    }

    #[test]
    fn finishing_applies_the_colour_fix_against_the_reference() {
        // AdaIN moves each channel to the reference's mean and spread.
        let decoded = vec![-0.5, 0.5, -0.5, 0.5, -0.5, 0.5];
        let reference = Arc::new(vec![0.2, 0.2, -0.4, 0.0, 0.1, 0.3]);
        let mut expected = decoded.clone();
        color_fix::adain(&mut expected, &reference);
        let f = OutputFrame::own(0, decoded, (1, 2), (ColorFix::AdaIn, reference));
        let out = f.finish();
        assert_eq!(out, expected);
        assert!((out[0] - 0.2).abs() < 1e-2 && (out[1] - 0.2).abs() < 1e-2);
        assert!((out[2] + 0.4).abs() < 1e-2 && (out[3] - 0.0).abs() < 1e-2);
    }
}

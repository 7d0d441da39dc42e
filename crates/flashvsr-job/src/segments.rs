//! Parallel segments (SCALEOUT.md §2): each segment owns `[own_from, own_to)`, starts a cold
//! stream at `read_from` (W warm-up frames before its range, discarded) and emits
//! `[emit_from, own_to)`: X pre-roll frames that are cross-faded with the previous segment.

use serde::{Deserialize, Serialize};

/// One row of the segment table in `plan.json`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRange {
    pub k: usize,
    pub read_from: usize,
    pub emit_from: usize,
    pub own_from: usize,
    pub own_to: usize,
}

impl SegmentRange {
    /// Frames the segment emits (pre-roll plus its own).
    pub fn emitted(&self) -> usize {
        self.own_to - self.emit_from
    }

    /// Pre-roll frames (cross-faded with the previous segment).
    pub fn pre_roll(&self) -> usize {
        self.own_from - self.emit_from
    }
}

/// The planner's segment length: `max(8·W, 8·⌊T / (32·workers)⌋)`, at least 8.
pub fn default_segment_frames(total: usize, workers: usize, warmup: usize) -> usize {
    (8 * warmup).max(8 * (total / (32 * workers.max(1)))).max(8)
}

/// The segment table of `total` frames in segments of `segment` frames, with `warmup` warm-up
/// frames and `crossfade` cross-faded frames at each join.
pub fn plan_segments(
    total: usize,
    segment: usize,
    warmup: usize,
    crossfade: usize,
) -> Vec<SegmentRange> {
    let segment = segment.max(1);
    (0..total.div_ceil(segment))
        .map(|k| {
            let a = k * segment;
            SegmentRange {
                k,
                read_from: a.saturating_sub(warmup),
                emit_from: a.saturating_sub(crossfade),
                own_from: a,
                own_to: (a + segment).min(total),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_every_frame_once() {
        let s = plan_segments(150, 48, 24, 8);
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            SegmentRange {
                k: 0,
                read_from: 0,
                emit_from: 0,
                own_from: 0,
                own_to: 48
            }
        );
        assert_eq!(
            s[1],
            SegmentRange {
                k: 1,
                read_from: 24,
                emit_from: 40,
                own_from: 48,
                own_to: 96
            }
        );
        assert_eq!(s[3].own_to, 150);
        for w in s.windows(2) {
            assert_eq!(w[0].own_to, w[1].own_from);
        }
        assert_eq!(default_segment_frames(100_000, 4, 24), 8 * (100_000 / 128));
        assert_eq!(default_segment_frames(150, 2, 24), 192);
    }
}

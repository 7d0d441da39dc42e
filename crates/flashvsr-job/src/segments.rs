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

/// Segments of about `longest` frames at most for `workers` parallel workers, as many as a
/// multiple of `workers`, with equal work: every segment but the first computes `warmup` frames
/// it discards, so the first owns `warmup` frames more. Boundaries fall on multiples of 8.
/// Short clips get fewer segments (each owns at least 8 frames and at least `crossfade`); the last
/// segment takes the rounding.
pub fn plan_balanced(
    total: usize,
    workers: usize,
    warmup: usize,
    crossfade: usize,
    longest: usize,
) -> Vec<SegmentRange> {
    let workers = workers.max(1);
    let work = total.saturating_sub(warmup);
    let rounds = work.div_ceil(workers * longest.max(8)).max(1);
    let smallest = crossfade.max(8);
    let mut count = workers * rounds;
    while count > 1 && work / count / 8 * 8 < smallest {
        count -= 1;
    }
    let own = work / count / 8 * 8;
    if count < 2 || own == 0 {
        return plan_segments(total, total.max(1), warmup, crossfade);
    }
    let starts = (0..count).map(|k| if k == 0 { 0 } else { warmup + k * own });
    let ends = (1..count).map(|k| warmup + k * own).chain([total]);
    starts
        .zip(ends)
        .enumerate()
        .map(|(k, (a, b))| SegmentRange {
            k,
            read_from: a.saturating_sub(warmup),
            emit_from: a.saturating_sub(crossfade),
            own_from: a,
            own_to: b,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_segments_cost_the_same() {
        // 1200 frames on 2 workers, W = 56: 624 own frames, then 576 + 56 warm-up.
        let s = plan_balanced(1200, 2, 56, 8, 1024);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].read_from, s[0].own_from, s[0].own_to), (0, 0, 624));
        assert_eq!(
            (s[1].read_from, s[1].emit_from, s[1].own_from, s[1].own_to),
            (568, 616, 624, 1200)
        );
        let work = |r: &SegmentRange| r.own_to - r.read_from;
        assert!(work(&s[1]).abs_diff(work(&s[0])) <= 8);
        // Long clips: a multiple of the workers, none longer than about `longest`.
        let s = plan_balanced(20_000, 3, 56, 8, 1024);
        assert_eq!(s.len() % 3, 0);
        let (last, rest) = s.split_last().unwrap();
        assert!(rest.iter().all(|r| r.own_to - r.read_from <= 1024 + 56));
        // The last one takes the rounding to multiples of 8: under 8 frames per segment.
        assert!(last.own_to - last.read_from < 1024 + 56 + 8 * s.len());
        for w in s.windows(2) {
            assert_eq!(w[0].own_to, w[1].own_from);
            assert_eq!(w[1].own_from % 8, 0);
        }
        assert_eq!(s.last().unwrap().own_to, 20_000);
        // Too short to split: one segment.
        assert_eq!(plan_balanced(60, 2, 56, 8, 1024).len(), 1);
        assert_eq!(plan_balanced(80, 2, 56, 8, 1024).len(), 2);
    }

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
    }
}

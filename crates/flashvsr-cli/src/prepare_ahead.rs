//! Input frames prepared ahead of the engine: each frame read is handed to the host workers for
//! its bicubic upscale at once, several frames at a time, so the engine's thread finds its LQ
//! frames ready instead of computing them between chunks. Frames the engine upscales itself (see
//! lq_levels.rs) only have their bytes widened there.

use std::collections::VecDeque;
use std::sync::Arc;

use flashvsr_media::prepare::{PrepareGeometry, Resampler};
use flashvsr_media::{FrameSource, MediaError, Timestamp};
use flashvsr_model::lq_frame::LqInput;

use crate::failure::{Failure, Outcome};
use crate::host_pool::InOrder;
use crate::interrupt;
use crate::lq_levels::{lq_input, GeometryCache};
use crate::stage_clock::{job_timed, timed, StageClock};

/// Frames in preparation at once: a chunk's worth (8 frames), so the frames of the next chunk
/// are prepared while the engine runs this one.
pub const PREPARE_AHEAD: usize = 8;

/// How frames are prepared, and where the time goes.
#[derive(Clone)]
pub struct Preparation {
    pub geometry: PrepareGeometry,
    pub resampler: Resampler,
    /// Hand 8-bit frames to the engine as levels where it can upscale them (lq_levels.rs).
    pub levels: bool,
    /// Carry each frame's timestamp (off: every frame gets `None`).
    pub keep_timestamps: bool,
    /// Prepare on the host workers, overlapping the engine (else on the reading thread).
    pub overlap: bool,
    pub clock: Arc<StageClock>,
}

/// An LQ frame for the engine and its input frame's presentation time.
pub struct PreparedFrame {
    pub lq: LqInput,
    pub at: Option<Timestamp>,
}

pub struct PreparedInput<'s> {
    source: &'s mut dyn FrameSource,
    how: Preparation,
    /// Input frames to read at most (`--max-frames`).
    limit: Option<usize>,
    read: usize,
    /// No more frames will be read: the source ended, hit the limit or failed.
    ended: bool,
    /// A read error, reported after the frames read before it.
    failure: Option<MediaError>,
    ahead: InOrder<LqInput>,
    timestamps: VecDeque<Option<Timestamp>>,
    geometry: GeometryCache,
}

impl<'s> PreparedInput<'s> {
    pub fn new(
        source: &'s mut dyn FrameSource,
        how: Preparation,
        limit: Option<usize>,
    ) -> PreparedInput<'s> {
        PreparedInput {
            ahead: InOrder::new(how.overlap),
            source,
            how,
            limit,
            read: 0,
            ended: false,
            failure: None,
            timestamps: VecDeque::new(),
            geometry: GeometryCache::default(),
        }
    }

    /// Passes over the next frame without preparing it (frames a resumed stream already has);
    /// `None` at the end of the input, else the frame's presentation time.
    pub fn skip(&mut self) -> Outcome<Option<Option<Timestamp>>> {
        interrupt::check()?;
        if !self.ahead.is_empty() {
            return Ok(self.take()?.map(|f| f.at));
        }
        Ok(self.read_one()?.map(|(_, at)| at))
    }

    /// The next prepared frame, `None` at the end of the input (or after `limit` frames).
    /// Stops with [`Failure::Interrupted`] once Ctrl-C was pressed.
    pub fn next(&mut self) -> Outcome<Option<PreparedFrame>> {
        interrupt::check()?;
        // Without overlap, frames are prepared as they are taken: nothing to gain by holding more.
        let depth = if self.how.overlap { PREPARE_AHEAD } else { 1 };
        while !self.ended && self.ahead.len() < depth {
            match self.read_one() {
                Ok(Some((frame, at))) => {
                    let how = self.how.clone();
                    let levels = how
                        .levels
                        .then(|| {
                            self.geometry
                                .for_frame(&frame, &how.geometry, how.resampler)
                        })
                        .flatten();
                    self.ahead.submit(move || {
                        job_timed(&how.clock.prepare, || {
                            lq_input(&frame, levels, &how.geometry, how.resampler)
                        })
                    });
                    self.timestamps.push_back(at);
                }
                Ok(None) => {}
                Err(e) => {
                    self.ended = true;
                    self.failure = Some(e);
                }
            }
        }
        match self.take()? {
            Some(f) => Ok(Some(f)),
            None => match self.failure.take() {
                Some(e) => Err(e.into()),
                None => Ok(None),
            },
        }
    }

    /// The oldest frame in preparation, waiting for it.
    fn take(&mut self) -> Outcome<Option<PreparedFrame>> {
        match self.ahead.next() {
            None => Ok(None),
            Some(Ok(lq)) => Ok(Some(PreparedFrame {
                lq,
                at: self.timestamps.pop_front().flatten(),
            })),
            Some(Err(why)) => Err(Failure::failed(format!(
                "preparing an input frame failed: {why}"
            ))),
        }
    }

    /// The next input frame and its time, unless the input ended or the limit is reached.
    fn read_one(
        &mut self,
    ) -> Result<Option<(flashvsr_media::Frame, Option<Timestamp>)>, MediaError> {
        if self.ended || self.limit.is_some_and(|m| self.read >= m) {
            self.ended = true;
            return Ok(None);
        }
        let frame = timed(&self.how.clock.read, || self.source.next_frame())?;
        let Some(frame) = frame else {
            self.ended = true;
            return Ok(None);
        };
        self.read += 1;
        let at = if self.how.keep_timestamps {
            self.source.timestamp()
        } else {
            None
        };
        Ok(Some((frame, at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashvsr_media::{Frame, SourceInfo};
    use flashvsr_model::lq_frame::LqHost;

    /// Frames 1×1 whose red value is their index; the error `fail_at` is returned at that index.
    struct Counting {
        info: SourceInfo,
        next: usize,
        count: usize,
        fail_at: Option<usize>,
    }

    impl Counting {
        fn new(count: usize, fail_at: Option<usize>) -> Counting {
            Counting {
                info: SourceInfo::synthetic("test.y4m", 1, 1, count),
                next: 0,
                count,
                fail_at,
            }
        }
    }

    impl FrameSource for Counting {
        fn info(&self) -> &SourceInfo {
            &self.info
        }
        fn next_frame(&mut self) -> Result<Option<Frame>, MediaError> {
            if self.fail_at == Some(self.next) {
                return Err(MediaError::BadOutput {
                    path: "test.y4m".into(),
                    detail: "broken".into(),
                });
            }
            if self.next == self.count {
                return Ok(None);
            }
            self.next += 1;
            Ok(Some(Frame::from_u8(
                1,
                1,
                vec![(self.next - 1) as u8, 0, 255],
            )))
        }
        fn timestamp(&self) -> Option<Timestamp> {
            Some(Timestamp {
                pts: self.next as i64 - 1,
                time_base: (1, 25),
            })
        }
    }

    fn how(keep_timestamps: bool, overlap: bool) -> Preparation {
        Preparation {
            geometry: PrepareGeometry {
                scaled: (1, 1),
                model: (1, 1),
                crop_offset: (0, 0),
            },
            resampler: Resampler::Pil,
            levels: overlap,
            keep_timestamps,
            overlap,
            clock: Arc::new(StageClock::default()),
        }
    }

    /// The frame's canvas `(3, 1, 1)`, however it came.
    fn canvas(lq: LqInput) -> Vec<f32> {
        LqHost::new(lq, (1, 1)).unwrap().canvas().to_vec()
    }

    fn red(lq: LqInput) -> u8 {
        ((canvas(lq)[0] + 1.0) / 2.0 * 255.0).round() as u8
    }

    #[test]
    fn frames_come_prepared_in_order_with_their_times() {
        let mut source = Counting::new(20, None);
        let mut input = PreparedInput::new(&mut source, how(true, true), None);
        assert_eq!(input.skip().unwrap().unwrap().unwrap().pts, 0);
        for i in 1..20 {
            let f = input.next().unwrap().unwrap();
            // With `levels` on (as here), 8-bit frames go as their levels.
            assert!(matches!(f.lq, LqInput::Levels(_)));
            let lq = canvas(f.lq);
            assert_eq!(lq.len(), 3);
            assert_eq!(lq[2], 1.0);
            let red = ((lq[0] + 1.0) / 2.0 * 255.0).round() as u8;
            assert_eq!((red, f.at.unwrap().pts), (i as u8, i as i64));
        }
        assert!(input.next().unwrap().is_none());
        assert!(input.next().unwrap().is_none());
    }

    #[test]
    fn the_limit_stops_reading_and_times_can_be_dropped() {
        let mut source = Counting::new(20, None);
        let mut input = PreparedInput::new(&mut source, how(false, false), Some(3));
        let got: Vec<(u8, bool)> = std::iter::from_fn(|| input.next().unwrap())
            .map(|f| {
                assert!(matches!(f.lq, LqInput::Canvas(_)), "levels off");
                (red(f.lq), f.at.is_some())
            })
            .collect();
        assert_eq!(got, vec![(0, false), (1, false), (2, false)]);
        assert_eq!(source.next, 3, "no frame read past the limit");
    }

    #[test]
    fn a_read_error_comes_after_the_frames_before_it() {
        for overlap in [true, false] {
            let mut source = Counting::new(20, Some(5));
            let mut input = PreparedInput::new(&mut source, how(false, overlap), None);
            for i in 0..5 {
                assert_eq!(red(input.next().unwrap().unwrap().lq), i);
            }
            assert!(input.next().is_err());
        }
    }
}

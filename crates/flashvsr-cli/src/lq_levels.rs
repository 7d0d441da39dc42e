//! Input frames go to the engine as their source levels wherever the engine's device can upscale
//! them to the host's exact bytes: 8-bit frames with Pillow's resampler. The host then only widens
//! the bytes to f32, and the device does the ×s bicubic, the canvas placement and the mapping to
//! [-1, 1] (flashvsr_model::lq_frame): 1/s² of the canvas to upload, and none of the upscale
//! keeps the device waiting at the start of a stream. Other frames (16-bit, torch resampler) are
//! prepared on the host as before. `FLASHVSR_RESAMPLE_ON_HOST=1` prepares every frame on the host
//! (comparisons, experiments).

use std::sync::Arc;

use flashvsr_media::prepare::{
    frame_levels, pil_levels_plan, prepare_frame, PrepareGeometry, Resampler,
};
use flashvsr_media::resize::PilTaps;
use flashvsr_media::Frame;
use flashvsr_model::lq_frame::{LevelsGeometry, LqInput, ResampleTaps, SourceLevels};
use flashvsr_tensor::{CanvasWindow, FixedTaps};

pub const ENV_ON_HOST: &str = "FLASHVSR_RESAMPLE_ON_HOST";

/// Whether frames may go to the engine as levels (unless `FLASHVSR_RESAMPLE_ON_HOST=1`).
pub fn levels_allowed() -> bool {
    std::env::var(ENV_ON_HOST).map_or(true, |v| v != "1")
}

fn fixed(t: PilTaps) -> Option<FixedTaps> {
    FixedTaps::new(t.ksize, t.start, t.count, t.coeffs).ok()
}

/// The engine's geometry for 8-bit frames of `source` `(width, height)`, where resampling their
/// levels gives [`prepare_frame`]'s values; None where it would not (see `pil_levels_plan`).
pub fn levels_geometry(
    source: (usize, usize),
    g: &PrepareGeometry,
    resampler: Resampler,
) -> Option<LevelsGeometry> {
    let plan = pil_levels_plan(source, g, resampler)?;
    let taps = ResampleTaps::new(
        plan.source,
        fixed(plan.x)?,
        fixed(plan.y)?,
        plan.precision_bits,
    )
    .ok()?;
    Some(LevelsGeometry {
        taps: Arc::new(taps),
        window: CanvasWindow {
            origin: g.crop_offset,
            size: g.model,
        },
    })
}

/// The geometry of the frames read so far, made again only when the frame size changes, so that
/// a stream's frames share one (the engine resamples frames of one geometry together, and
/// uploads its tables once).
#[derive(Default)]
pub struct GeometryCache {
    last: Option<((usize, usize), Option<LevelsGeometry>)>,
}

impl GeometryCache {
    /// The geometry for `frame` under `g` and `resampler`, or None for the host path.
    pub fn for_frame(
        &mut self,
        frame: &Frame,
        g: &PrepareGeometry,
        resampler: Resampler,
    ) -> Option<LevelsGeometry> {
        let size = (frame.width, frame.height);
        match &self.last {
            Some((s, geometry)) if *s == size => geometry.clone(),
            _ => {
                let geometry = levels_geometry(size, g, resampler);
                self.last = Some((size, geometry.clone()));
                geometry
            }
        }
    }
}

/// `frame` as the engine takes it: its levels where `levels` is given and the frame is 8-bit,
/// else prepared on the host.
pub fn lq_input(
    frame: &Frame,
    levels: Option<LevelsGeometry>,
    g: &PrepareGeometry,
    resampler: Resampler,
) -> LqInput {
    match (levels, frame_levels(frame)) {
        (Some(geometry), Some(levels)) => LqInput::Levels(SourceLevels {
            levels: Arc::new(levels),
            geometry,
        }),
        _ => LqInput::Canvas(prepare_frame(frame, g, resampler)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashvsr_media::prepare::pil_levels_plan;
    use flashvsr_model::lq_frame::LqHost;
    use flashvsr_tensor::cpu::CpuBackend;
    use flashvsr_tensor::Tensor;

    fn random_frame(width: usize, height: usize, seed: u64) -> Frame {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let data = (0..width * height * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 56) as u8
            })
            .collect();
        Frame::from_u8(width, height, data)
    }

    /// `(source, scale, crop)`: the canvas is the scaled frame padded up to multiples of 128, or
    /// cropped down to them about the centre (`--crop-to-128`), as SizePlan makes it.
    fn geometry((w, h): (usize, usize), scale: usize, crop: bool) -> PrepareGeometry {
        let scaled = (w * scale, h * scale);
        let round = |v: usize| match crop {
            true => v / 128 * 128,
            false => v.div_ceil(128) * 128,
        };
        let model = (round(scaled.0), round(scaled.1));
        let crop_offset = match crop {
            true => ((scaled.0 - model.0) / 2, (scaled.1 - model.1) / 2),
            false => (0, 0),
        };
        PrepareGeometry {
            scaled,
            model,
            crop_offset,
        }
    }

    const CASES: [((usize, usize), usize, bool); 9] = [
        ((1, 1), 4, false),
        ((5, 3), 2, false),
        ((37, 23), 4, false),
        ((33, 40), 4, false),
        ((45, 37), 4, true),
        ((71, 33), 2, false),
        ((131, 67), 2, true),
        ((43, 45), 3, false),
        ((32, 32), 4, false),
    ];

    /// The CPU backend's op on the plan's tables, every frame at once.
    fn on_cpu_backend(frames: &[Frame], g: &PrepareGeometry) -> Vec<f32> {
        let (w, h) = (frames[0].width, frames[0].height);
        let plan = pil_levels_plan((w, h), g, Resampler::Pil).unwrap();
        let backend = CpuBackend::new_ref();
        let table = |t: PilTaps| {
            let t = fixed(t).unwrap();
            Tensor::from_slice(&backend, &t.table(), &t.table_shape()).unwrap()
        };
        let levels: Vec<f32> = frames
            .iter()
            .flat_map(|f| frame_levels(f).unwrap())
            .collect();
        let levels = Tensor::from_slice(&backend, &levels, &[frames.len(), h, w, 3]).unwrap();
        let window = CanvasWindow {
            origin: g.crop_offset,
            size: g.model,
        };
        let y = levels
            .resample_levels(&table(plan.x), &table(plan.y), window, plan.precision_bits)
            .unwrap();
        assert_eq!(y.shape(), &[3, frames.len(), g.model.1, g.model.0]);
        y.to_vec().unwrap()
    }

    /// `(3, n, H, W)` of host-prepared `(3, H, W)` frames.
    fn chunk_of(frames: &[Vec<f32>]) -> Vec<f32> {
        let plane = frames[0].len() / 3;
        (0..3)
            .flat_map(|c| {
                frames
                    .iter()
                    .flat_map(move |f| f[c * plane..][..plane].to_vec())
            })
            .collect()
    }

    #[test]
    fn resampled_levels_are_the_host_prepared_frames_bit_for_bit() {
        for (i, &(source, scale, crop)) in CASES.iter().enumerate() {
            let g = geometry(source, scale, crop);
            let frames: Vec<Frame> = (0..3)
                .map(|t| random_frame(source.0, source.1, (i * 10 + t) as u64))
                .collect();
            let want: Vec<Vec<f32>> = frames
                .iter()
                .map(|f| prepare_frame(f, &g, Resampler::Pil))
                .collect();
            let case = format!("{source:?} ×{scale} crop {crop}: {g:?}");
            let got = on_cpu_backend(&frames, &g);
            assert!(got == chunk_of(&want), "CPU backend op, {case}");
            // The engine's host copy of a frame of levels (colour fix, checkpoints).
            let geometry = levels_geometry(source, &g, Resampler::Pil).unwrap();
            let input = lq_input(&frames[1], Some(geometry), &g, Resampler::Pil);
            assert!(matches!(input, LqInput::Levels(_)), "{case}");
            let host = LqHost::new(input, (g.model.1, g.model.0)).unwrap();
            assert!(host.canvas() == want[1].as_slice(), "host copy, {case}");
        }
    }

    #[test]
    fn frames_the_device_cannot_match_are_prepared_on_the_host() {
        let g = geometry((37, 23), 4, false);
        assert!(levels_geometry((37, 23), &g, Resampler::Torch).is_none());
        // A Pillow resize that shrinks the height runs its vertical pass first.
        let shrink = PrepareGeometry {
            scaled: (74, 20),
            model: (74, 20),
            crop_offset: (0, 0),
        };
        assert!(levels_geometry((37, 23), &shrink, Resampler::Pil).is_none());
        let deep = Frame {
            width: 37,
            height: 23,
            bit_depth: 16,
            data: flashvsr_media::FrameData::U16(vec![1000; 37 * 23 * 3]),
        };
        let geometry = levels_geometry((37, 23), &g, Resampler::Pil);
        let input = lq_input(&deep, geometry, &g, Resampler::Pil);
        match input {
            LqInput::Canvas(c) => assert_eq!(c, prepare_frame(&deep, &g, Resampler::Pil)),
            LqInput::Levels(_) => panic!("a 16-bit frame went as levels"),
        }
    }

    #[test]
    fn frames_of_one_size_share_one_geometry() {
        let g = geometry((37, 23), 4, false);
        let mut cache = GeometryCache::default();
        let a = cache.for_frame(&random_frame(37, 23, 1), &g, Resampler::Pil);
        let b = cache.for_frame(&random_frame(37, 23, 2), &g, Resampler::Pil);
        assert!(Arc::ptr_eq(&a.unwrap().taps, &b.unwrap().taps));
        let other = cache.for_frame(&random_frame(36, 23, 3), &g, Resampler::Pil);
        assert_eq!(other.unwrap().taps.source(), (36, 23));
    }
}

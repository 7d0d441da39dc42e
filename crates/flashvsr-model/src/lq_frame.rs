//! LQ frames as the engine takes and keeps them: prepared on the host (the canvas `(3, H, W)` in
//! [-1, 1]), or as their source frame's 8-bit levels, which the engine's device resamples onto
//! the canvas when a chunk reads them ([`Tensor::resample_levels`]). A 352×192 source is 1/16 of
//! its 1408×768 canvas: that much less to prepare on the host, upload and keep on the device.
//!
//! Whatever needs a frame's canvas in host memory (the host colour fix, checkpoints, which hold
//! canvases so that they read the same however frames came) computes it from the levels on first
//! use, with the CPU backend's code, which gives the device's values bit for bit.

use std::sync::{Arc, Mutex, OnceLock};

use flashvsr_tensor::cpu::resample::{resample_levels, TapTable};
use flashvsr_tensor::{BackendRef, CanvasWindow, FixedTaps, Tensor, MAX_FIXED_POINT_BITS};

use crate::{ModelError, Result};

/// RGB.
const CHANNELS: usize = 3;

/// The resampling of source frames of one size: fixed-point taps from the source width and
/// height to the resampled frame's, applied as [`Tensor::resample_levels`] does.
pub struct ResampleTaps {
    source: (usize, usize),
    resampled: (usize, usize),
    x: (Vec<f32>, [usize; 2]),
    y: (Vec<f32>, [usize; 2]),
    bits: u32,
    /// The tables on each device that used them: uploaded once, not per chunk.
    on_device: Mutex<Vec<(BackendRef, Tensor, Tensor)>>,
}

impl std::fmt::Debug for ResampleTaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ResampleTaps({}×{} → {}×{}, {} bits)",
            self.source.0, self.source.1, self.resampled.0, self.resampled.1, self.bits
        )
    }
}

/// Equal taps resample alike, whichever object holds them (a stream's frames may come from
/// several readers: segments of a job).
impl PartialEq for ResampleTaps {
    fn eq(&self, other: &ResampleTaps) -> bool {
        self.source == other.source
            && self.bits == other.bits
            && self.x == other.x
            && self.y == other.y
    }
}

impl ResampleTaps {
    /// Taps `x` over the source width `source.0` and `y` over its height, in `bits` of fixed
    /// point; an error where they read past the source or `bits` is out of range.
    pub fn new(source: (usize, usize), x: FixedTaps, y: FixedTaps, bits: u32) -> Result<Self> {
        let fits = x.input_span() <= source.0 && y.input_span() <= source.1;
        if !fits || x.is_empty() || y.is_empty() || !(1..=MAX_FIXED_POINT_BITS).contains(&bits) {
            return Err(ModelError::Settings(format!(
                "resampling taps to {}×{} ({bits} bits) do not fit a {}×{} source",
                x.len(),
                y.len(),
                source.0,
                source.1
            )));
        }
        Ok(ResampleTaps {
            source,
            resampled: (x.len(), y.len()),
            x: (x.table(), x.table_shape()),
            y: (y.table(), y.table_shape()),
            bits,
            on_device: Mutex::new(Vec::new()),
        })
    }

    /// `(width, height)` of the source frames.
    pub fn source(&self) -> (usize, usize) {
        self.source
    }

    /// `(width, height)` of the resampled frame.
    pub fn resampled(&self) -> (usize, usize) {
        self.resampled
    }

    fn table(t: &(Vec<f32>, [usize; 2])) -> TapTable<'_> {
        TapTable {
            values: &t.0,
            columns: t.1[1],
        }
    }

    /// The two tables on `backend`, uploaded on first use.
    fn tables(&self, backend: &BackendRef) -> Result<(Tensor, Tensor)> {
        let mut cached = self.on_device.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, x, y)) = cached.iter().find(|(b, ..)| Arc::ptr_eq(b, backend)) {
            return Ok((x.clone(), y.clone()));
        }
        let x = Tensor::from_slice(backend, &self.x.0, &self.x.1)?;
        let y = Tensor::from_slice(backend, &self.y.0, &self.y.1)?;
        cached.push((backend.clone(), x.clone(), y.clone()));
        Ok((x, y))
    }
}

/// Source frames resampled by `taps`, and the window of the resampled frame that is the canvas
/// (its size the engine's canvas; past the resampled frame's right or bottom edge it repeats
/// the last column or row).
#[derive(Clone, Debug)]
pub struct LevelsGeometry {
    pub taps: Arc<ResampleTaps>,
    pub window: CanvasWindow,
}

impl LevelsGeometry {
    /// The part `(x0, y0)`, `(width, height)` of this canvas: a tile's canvas.
    pub fn part(&self, (x0, y0): (usize, usize), size: (usize, usize)) -> LevelsGeometry {
        let origin = self.window.origin;
        LevelsGeometry {
            taps: self.taps.clone(),
            window: CanvasWindow {
                origin: (origin.0 + x0, origin.1 + y0),
                size,
            },
        }
    }

    fn same_as(&self, other: &LevelsGeometry) -> bool {
        self.window == other.window
            && (Arc::ptr_eq(&self.taps, &other.taps) || self.taps == other.taps)
    }
}

/// A source frame's levels: `(height, width, 3)` interleaved RGB, integers 0 … 255 as f32.
#[derive(Clone)]
pub struct SourceLevels {
    pub levels: Arc<Vec<f32>>,
    pub geometry: LevelsGeometry,
}

impl std::fmt::Debug for SourceLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SourceLevels({} values, {:?})",
            self.levels.len(),
            self.geometry
        )
    }
}

/// An input frame as the engine takes it.
#[derive(Clone)]
pub enum LqInput {
    /// Prepared on the host: `(3, H, W)` in [-1, 1] on the canvas.
    Canvas(Vec<f32>),
    /// Resampled onto the canvas by the engine.
    Levels(SourceLevels),
}

impl std::fmt::Debug for LqInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LqInput::Canvas(c) => write!(f, "Canvas({} values)", c.len()),
            LqInput::Levels(l) => l.fmt(f),
        }
    }
}

impl From<Vec<f32>> for LqInput {
    fn from(canvas: Vec<f32>) -> LqInput {
        LqInput::Canvas(canvas)
    }
}

/// An LQ frame in host memory, shared by the engine and the output frame whose colour fix reads
/// it.
pub struct LqHost {
    levels: Option<SourceLevels>,
    canvas: OnceLock<Vec<f32>>,
}

impl std::fmt::Debug for LqHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.levels, self.canvas.get()) {
            (Some(l), _) => write!(f, "LqHost({l:?})"),
            (None, c) => write!(f, "LqHost(canvas of {} values)", c.map_or(0, Vec::len)),
        }
    }
}

impl LqHost {
    pub fn from_canvas(canvas: Vec<f32>) -> LqHost {
        LqHost {
            levels: None,
            canvas: OnceLock::from(canvas),
        }
    }

    /// `input` for a canvas of `(height, width)`; an error where it does not fit.
    pub fn new(input: LqInput, (height, width): (usize, usize)) -> Result<LqHost> {
        let levels = match input {
            LqInput::Canvas(c) if c.len() == CHANNELS * height * width => {
                return Ok(LqHost::from_canvas(c))
            }
            LqInput::Canvas(c) => {
                return Err(ModelError::Settings(format!(
                    "frame of {} values pushed into a {width}×{height} engine",
                    c.len()
                )))
            }
            LqInput::Levels(l) => l,
        };
        let (w, h) = levels.geometry.taps.source;
        if levels.levels.len() != CHANNELS * w * h || levels.geometry.window.size != (width, height)
        {
            return Err(ModelError::Settings(format!(
                "{} levels for a {w}×{h} source onto a {:?} window, pushed into a {width}×{height} \
                 engine",
                levels.levels.len(),
                levels.geometry.window.size
            )));
        }
        Ok(LqHost {
            levels: Some(levels),
            canvas: OnceLock::new(),
        })
    }

    /// The source levels, for a frame that came as levels.
    pub fn levels(&self) -> Option<&SourceLevels> {
        self.levels.as_ref()
    }

    /// The canvas `(3, H, W)`, resampled from the levels on first use.
    pub fn canvas(&self) -> &[f32] {
        self.canvas.get_or_init(|| match &self.levels {
            Some(l) => {
                let taps = &l.geometry.taps;
                let (w, h) = taps.source;
                resample_levels(
                    &l.levels,
                    (1, h, w, CHANNELS),
                    ResampleTaps::table(&taps.x),
                    ResampleTaps::table(&taps.y),
                    l.geometry.window,
                    taps.bits,
                )
            }
            None => Vec::new(),
        })
    }

    /// The frame's data on `backend`: its levels `(1, h, w, 3)`, or its canvas `(3, 1, H, W)`
    /// of `(height, width)`.
    fn upload(&self, backend: &BackendRef, (height, width): (usize, usize)) -> Result<Tensor> {
        Ok(match &self.levels {
            Some(l) => {
                let (w, h) = l.geometry.taps.source;
                Tensor::from_slice_queued(backend, &l.levels, &[1, h, w, CHANNELS])?
            }
            None => {
                Tensor::from_slice_queued(backend, self.canvas(), &[CHANNELS, 1, height, width])?
            }
        })
    }
}

/// An LQ frame the engine keeps: in host memory, and on the device unless the engine parks its
/// state there (then uploaded when a chunk reads it). The device copy is the levels `(1, h, w,
/// 3)` or the canvas `(3, 1, H, W)`, as the host frame is.
#[derive(Clone, Debug)]
pub(crate) struct LqFrame {
    pub host: Arc<LqHost>,
    pub device: Option<Tensor>,
}

impl LqFrame {
    /// `host` on a canvas of `(height, width)`, with a copy on `device` if given.
    pub fn new(
        host: LqHost,
        device: Option<&BackendRef>,
        canvas: (usize, usize),
    ) -> Result<LqFrame> {
        let device = device.map(|b| host.upload(b, canvas)).transpose()?;
        Ok(LqFrame {
            host: Arc::new(host),
            device,
        })
    }

    /// The frame's own data on `backend`: its device copy, moved there where it is elsewhere,
    /// else uploaded.
    fn data_on(&self, backend: &BackendRef, canvas: (usize, usize)) -> Result<Tensor> {
        match &self.device {
            Some(t) => Ok(t.to_backend(backend)?),
            None => self.host.upload(backend, canvas),
        }
    }
}

/// `frames` on the canvas `(height, width)` as `(3, n, H, W)` on `backend`: frames of levels
/// resampled there (all at once where they share a geometry), prepared frames copied.
pub(crate) fn canvas_on(
    backend: &BackendRef,
    frames: &[&LqFrame],
    canvas: (usize, usize),
) -> Result<Tensor> {
    let (height, width) = canvas;
    let geometry = |f: &LqFrame| f.host.levels.as_ref().map(|l| l.geometry.clone());
    let shared = match frames.first().and_then(|f| geometry(f)) {
        Some(g)
            if frames
                .iter()
                .all(|f| geometry(f).is_some_and(|o| o.same_as(&g))) =>
        {
            Some(g)
        }
        _ => None,
    };
    if let Some(g) = shared {
        let levels = frames
            .iter()
            .map(|f| f.data_on(backend, canvas))
            .collect::<Result<Vec<_>>>()?;
        return resample(backend, &joined(levels, 0)?, &g);
    }
    let parts = frames
        .iter()
        .map(|f| {
            let data = f.data_on(backend, canvas)?;
            match &f.host.levels {
                Some(l) => resample(backend, &data, &l.geometry),
                None => Ok(data.reshape(&[CHANNELS, 1, height, width])?),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    joined(parts, 1)
}

/// `parts` concatenated along `dim`; one part is itself (no copy).
fn joined(mut parts: Vec<Tensor>, dim: usize) -> Result<Tensor> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Ok(Tensor::cat(&refs, dim)?)
}

fn resample(backend: &BackendRef, levels: &Tensor, g: &LevelsGeometry) -> Result<Tensor> {
    let (x, y) = g.taps.tables(backend)?;
    Ok(levels.resample_levels(&x, &y, g.window, g.taps.bits)?)
}

/// [`canvas_on`] where every frame has a device copy; None otherwise (a parking engine keeps
/// none, and then fixes colours on the host rather than hold a chunk of canvases).
pub(crate) fn device_canvas(
    backend: &BackendRef,
    frames: &[&LqFrame],
    canvas: (usize, usize),
) -> Result<Option<Tensor>> {
    if frames.is_empty() || frames.iter().any(|f| f.device.is_none()) {
        return Ok(None);
    }
    canvas_on(backend, frames, canvas).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashvsr_media::prepare::{
        frame_levels, pil_levels_plan, prepare_frame, PrepareGeometry, Resampler,
    };
    use flashvsr_media::Frame;
    use flashvsr_tensor::cpu::CpuBackend;

    /// 13×7 sources ×4 (52×28) on a 64×32 canvas, padded right and bottom.
    const SOURCE: (usize, usize) = (13, 7);
    const PREPARE: PrepareGeometry = PrepareGeometry {
        scaled: (52, 28),
        model: (64, 32),
        crop_offset: (0, 0),
    };
    const CANVAS: (usize, usize) = (32, 64);

    fn frame(seed: usize) -> Frame {
        let (w, h) = SOURCE;
        let data = (0..w * h * 3).map(|i| ((i * 131 + seed * 71) % 256) as u8);
        Frame::from_u8(w, h, data.collect())
    }

    fn taps() -> Arc<ResampleTaps> {
        let plan = pil_levels_plan(SOURCE, &PREPARE, Resampler::Pil).unwrap();
        let fixed = |t: flashvsr_media::resize::PilTaps| {
            FixedTaps::new(t.ksize, t.start, t.count, t.coeffs)
        };
        let (x, y) = (fixed(plan.x).unwrap(), fixed(plan.y).unwrap());
        Arc::new(ResampleTaps::new(SOURCE, x, y, plan.precision_bits).unwrap())
    }

    fn levels_input(f: &Frame, taps: &Arc<ResampleTaps>) -> LqInput {
        LqInput::Levels(SourceLevels {
            levels: Arc::new(frame_levels(f).unwrap()),
            geometry: LevelsGeometry {
                taps: taps.clone(),
                window: CanvasWindow {
                    origin: (0, 0),
                    size: PREPARE.model,
                },
            },
        })
    }

    fn kept(input: LqInput, backend: &BackendRef, on_device: bool) -> LqFrame {
        let host = LqHost::new(input, CANVAS).unwrap();
        LqFrame::new(host, on_device.then_some(backend), CANVAS).unwrap()
    }

    /// `(3, n, H, W)` of prepared `(3, H, W)` frames.
    fn chunk(frames: &[Vec<f32>]) -> Vec<f32> {
        let plane = CANVAS.0 * CANVAS.1;
        (0..3)
            .flat_map(|c| {
                frames
                    .iter()
                    .flat_map(move |f| f[c * plane..][..plane].to_vec())
            })
            .collect()
    }

    #[test]
    fn frames_of_levels_and_prepared_frames_give_the_same_canvases() {
        let backend = CpuBackend::new_ref();
        let taps = taps();
        let sources: Vec<Frame> = (0..4).map(frame).collect();
        let prepared: Vec<Vec<f32>> = sources
            .iter()
            .map(|f| prepare_frame(f, &PREPARE, Resampler::Pil))
            .collect();
        let want = chunk(&prepared);
        let levels: Vec<LqFrame> = sources
            .iter()
            .map(|f| kept(levels_input(f, &taps), &backend, true))
            .collect();
        // Mixed: prepared frames, and one of levels with equal taps held by another object.
        let other_taps = self::taps();
        let mixed: Vec<LqFrame> = (0..4)
            .map(|i| match i {
                2 => kept(levels_input(&sources[i], &other_taps), &backend, false),
                _ => kept(LqInput::Canvas(prepared[i].clone()), &backend, i != 1),
            })
            .collect();
        for (name, frames) in [("levels", &levels), ("mixed", &mixed)] {
            let refs: Vec<&LqFrame> = frames.iter().collect();
            let got = canvas_on(&backend, &refs, CANVAS).unwrap();
            assert_eq!(got.shape(), &[3, 4, CANVAS.0, CANVAS.1]);
            assert!(got.to_vec().unwrap() == want, "{name}");
        }
        for (f, p) in levels.iter().zip(&prepared) {
            assert!(f.host.canvas() == p.as_slice(), "host copy");
        }
        // Equal taps in two objects still resample together.
        let together = [&levels[0], &mixed[2]];
        let got = canvas_on(&backend, &together, CANVAS).unwrap().to_vec();
        assert!(got.unwrap() == chunk(&[prepared[0].clone(), prepared[2].clone()]));
    }

    #[test]
    fn a_part_of_the_canvas_is_the_canvas_cropped() {
        let backend = CpuBackend::new_ref();
        let source = frame(5);
        let full = prepare_frame(&source, &PREPARE, Resampler::Pil);
        // A 24×16 tile from (40, 16): past the scaled frame's right and bottom edges.
        let (x0, y0, w, h) = (40, 16, 24, 16);
        let LqInput::Levels(mut l) = levels_input(&source, &taps()) else {
            unreachable!()
        };
        l.geometry = l.geometry.part((x0, y0), (w, h));
        let host = LqHost::new(LqInput::Levels(l), (h, w)).unwrap();
        let frame = LqFrame::new(host, Some(&backend), (h, w)).unwrap();
        let got = canvas_on(&backend, &[&frame], (h, w))
            .unwrap()
            .to_vec()
            .unwrap();
        let plane = CANVAS.0 * CANVAS.1;
        let want: Vec<f32> = (0..3)
            .flat_map(|c| (y0..y0 + h).map(move |y| (c, y)))
            .flat_map(|(c, y)| full[c * plane + y * CANVAS.1 + x0..][..w].to_vec())
            .collect();
        assert!(got == want);
        assert!(frame.host.canvas() == want.as_slice());
    }

    #[test]
    fn tables_go_to_a_device_once_and_frames_without_a_copy_make_no_device_canvas() {
        let backend = CpuBackend::new_ref();
        let taps = taps();
        let (x1, _) = taps.tables(&backend).unwrap();
        let (x2, _) = taps.tables(&backend).unwrap();
        assert!(Arc::ptr_eq(x1.buffer(), x2.buffer()));
        let parked = kept(levels_input(&frame(1), &taps), &backend, false);
        let on_device = kept(levels_input(&frame(2), &taps), &backend, true);
        assert!(device_canvas(&backend, &[&on_device, &parked], CANVAS)
            .unwrap()
            .is_none());
        assert!(device_canvas(&backend, &[&on_device], CANVAS)
            .unwrap()
            .is_some());
    }

    #[test]
    fn frames_that_do_not_fit_the_canvas_are_errors() {
        let taps = taps();
        assert!(LqHost::new(LqInput::Canvas(vec![0.0; 5]), CANVAS).is_err());
        assert!(LqHost::new(levels_input(&frame(0), &taps), (32, 32)).is_err());
        let LqInput::Levels(mut l) = levels_input(&frame(0), &taps) else {
            unreachable!()
        };
        l.levels = Arc::new(vec![0.0; 10]);
        assert!(LqHost::new(LqInput::Levels(l), CANVAS).is_err());
        // Taps that read past the source.
        let wide = FixedTaps::new(1, vec![13], vec![1], vec![1]).unwrap();
        let one = FixedTaps::new(1, vec![0], vec![1], vec![1]).unwrap();
        assert!(ResampleTaps::new(SOURCE, wide, one, 22).is_err());
    }
}

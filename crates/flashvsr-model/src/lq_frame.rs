//! LQ frames as the engine takes and keeps them: prepared on the host (the canvas `(3, H, W)` in
//! [-1, 1]), or as their source frame's 8-bit levels, which the engine's device resamples onto
//! the canvas when a chunk reads them ([`Tensor::resample_levels`]). A 352×192 source is 1/16 of
//! its 1408×768 canvas: that much less to prepare on the host, upload and keep on the device.
//!
//! Whatever needs a frame's canvas in host memory (the host colour fix, checkpoints, chunks
//! between the devices of a split stream) computes it from the levels on first use, with the
//! CPU backend's code, which gives the device's values bit for bit.

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
        Arc::ptr_eq(&self.taps, &other.taps) && self.window == other.window
    }
}

/// A source frame's levels: `(height, width, 3)` interleaved RGB, integers 0 … 255 as f32.
#[derive(Clone, Debug)]
pub struct SourceLevels {
    pub levels: Arc<Vec<f32>>,
    pub geometry: LevelsGeometry,
}

/// An input frame as the engine takes it.
#[derive(Clone, Debug)]
pub enum LqInput {
    /// Prepared on the host: `(3, H, W)` in [-1, 1] on the canvas.
    Canvas(Vec<f32>),
    /// Resampled onto the canvas by the engine.
    Levels(SourceLevels),
}

impl From<Vec<f32>> for LqInput {
    fn from(canvas: Vec<f32>) -> LqInput {
        LqInput::Canvas(canvas)
    }
}

/// An LQ frame in host memory, shared by the engine and the output frame whose colour fix reads
/// it.
#[derive(Debug)]
pub struct LqHost {
    levels: Option<SourceLevels>,
    canvas: OnceLock<Vec<f32>>,
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
        let refs: Vec<&Tensor> = levels.iter().collect();
        return resample(backend, &Tensor::cat(&refs, 0)?, &g);
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
    let refs: Vec<&Tensor> = parts.iter().collect();
    Ok(Tensor::cat(&refs, 1)?)
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

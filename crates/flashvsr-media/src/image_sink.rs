//! Image-sequence sink: one file per frame (`000000.<ext>` upwards, or names mirroring the
//! input) in a directory that appears whole at finish. PNG (8/16-bit), TIFF (16-bit RGB,
//! uncompressed), EXR (half-float RGB, ZIP compression) and DPX (10-bit RGB, method A,
//! big-endian). Frames are encoded on a few threads of their own (compression is the slow part
//! of writing; one thread could not keep up with the model), at most a bounded number in flight.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread::JoinHandle;

use crate::dpx::{self, DpxWriteOptions};
use crate::frame::{Frame, FrameData, FrameSink};
use crate::output::PendingOutput;
use crate::sink::{OutputFormat, SinkOptions};
use crate::{png_sink, MediaError};

pub(crate) struct ImageSink {
    jobs: VecDeque<JoinHandle<Result<(), MediaError>>>,
    max_jobs: usize,
    // After `jobs` only matters for `finish`; `Drop` joins the jobs before this is dropped.
    pending: Option<PendingOutput>,
    format: OutputFormat,
    ext: &'static str,
    names: Option<Vec<String>>,
    dpx: DpxWriteOptions,
    next_index: usize,
    size: Option<(usize, usize)>,
}

/// Checks names that mirror the input: plain, visible, unique file names once the extension is
/// added (unique ignoring case too, so a case-insensitive filesystem cannot merge two frames).
fn check_names(dir: &Path, names: &[String], ext: &str) -> Result<(), MediaError> {
    let mut seen = HashSet::new();
    for name in names {
        let bad = name.is_empty()
            || name.starts_with('.')
            || name.contains(['/', '\\', '\0'])
            || name.len() + 1 + ext.len() > 255;
        if bad {
            return Err(MediaError::bad_output(
                dir,
                format!("{name:?} cannot be used as an output file name"),
            ));
        }
        if !seen.insert(name.to_lowercase()) {
            return Err(MediaError::bad_output(
                dir,
                format!(
                    "two input frames are named {name:?} (ignoring case and extension); output \
                     names cannot mirror them, use numbered names"
                ),
            ));
        }
    }
    Ok(())
}

/// `v / 65535` as half floats, for every 16-bit code.
fn half_lut16() -> &'static [exr::prelude::f16] {
    static LUT: OnceLock<Vec<exr::prelude::f16>> = OnceLock::new();
    LUT.get_or_init(|| {
        (0..=65535u32)
            .map(|v| exr::prelude::f16::from_f32(v as f32 / 65535.0))
            .collect()
    })
}

fn encode_exr(
    frame: &Frame,
    out: &mut BufWriter<File>,
    shown: &Path,
    pixel_aspect: Option<(u32, u32)>,
) -> Result<(), MediaError> {
    use exr::prelude::{f16, Image, Layer, LayerAttributes, SpecificChannels, Vec2, WritableImage};
    let samples: Vec<f16> = match &frame.data {
        FrameData::U8(d) => d.iter().map(|&v| f16::from_f32(v as f32 / 255.0)).collect(),
        FrameData::U16(d) => {
            let lut = half_lut16();
            d.iter().map(|&v| lut[v as usize]).collect()
        }
    };
    let w = frame.width;
    let channels = SpecificChannels::rgb(|Vec2(x, y): Vec2<usize>| {
        let i = (y * w + x) * 3;
        (samples[i], samples[i + 1], samples[i + 2])
    });
    let layer = Layer::new(
        (frame.width, frame.height),
        LayerAttributes::default(),
        exr::prelude::Encoding::SMALL_LOSSLESS, // ZIP, 16 scan lines per block
        channels,
    );
    let mut image = Image::from_layer(layer);
    if let Some((h, v)) = pixel_aspect.filter(|&(h, v)| h > 0 && v > 0) {
        image.attributes.pixel_aspect = h as f32 / v as f32;
    }
    image.write().to_buffered(out).map_err(|e| match e {
        exr::error::Error::Io(io) => MediaError::write(shown, io),
        other => MediaError::bad_output(shown, format!("EXR encoding failed: {other}")),
    })
}

fn encode_tiff16(frame: &Frame, out: &mut BufWriter<File>, shown: &Path) -> Result<(), MediaError> {
    use image::ImageEncoder;
    let bytes: Vec<u8> = frame
        .to_u16_samples()
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    image::codecs::tiff::TiffEncoder::new(out)
        .write_image(
            &bytes,
            frame.width as u32,
            frame.height as u32,
            image::ExtendedColorType::Rgb16,
        )
        .map_err(|e| match e {
            image::ImageError::IoError(io) => MediaError::write(shown, io),
            other => MediaError::bad_output(shown, format!("TIFF encoding failed: {other}")),
        })
}

/// Encodes one frame into `temp` (shown as `shown` in messages) and syncs it.
fn encode(
    format: OutputFormat,
    frame: &Frame,
    dpx_opts: &DpxWriteOptions,
    temp: &Path,
    shown: &Path,
) -> Result<(), MediaError> {
    match format {
        OutputFormat::Png => return png_sink::encode(frame, false, temp, shown),
        OutputFormat::Png16 => return png_sink::encode(frame, true, temp, shown),
        _ => {}
    }
    let werr = |e: std::io::Error| MediaError::write(shown, e);
    let file = File::create(temp).map_err(werr)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    match format {
        OutputFormat::Tiff16 => encode_tiff16(frame, &mut out, shown)?,
        OutputFormat::Exr => encode_exr(frame, &mut out, shown, dpx_opts.pixel_aspect)?,
        OutputFormat::Dpx10 => {
            let bytes =
                dpx::encode(frame, dpx_opts).map_err(|e| MediaError::bad_output(shown, e))?;
            out.write_all(&bytes).map_err(werr)?;
        }
        other => unreachable!("{other:?} is not an image sequence format"),
    }
    out.flush().map_err(werr)?;
    // Durable before the directory is renamed into place: a crash must not publish empty files.
    out.get_ref().sync_all().map_err(werr)
}

impl ImageSink {
    pub(crate) fn create(
        dir: &Path,
        format: OutputFormat,
        options: &SinkOptions,
    ) -> Result<Self, MediaError> {
        let ext = format
            .extension()
            .filter(|_| format != OutputFormat::Y4m)
            .expect("an image sequence format");
        if let Some(names) = &options.names {
            check_names(dir, names, ext)?;
        }
        let pending = PendingOutput::create(dir, true, options.overwrite)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(ImageSink {
            jobs: VecDeque::new(),
            max_jobs: threads.clamp(2, 8),
            pending: Some(pending),
            format,
            ext,
            names: options.names.clone(),
            dpx: DpxWriteOptions {
                color: options.dpx,
                fps: options.fps,
                pixel_aspect: options.pixel_aspect,
                file_name: String::new(),
            },
            next_index: 0,
            size: None,
        })
    }

    fn join_one(&mut self) -> Result<(), MediaError> {
        match self.jobs.pop_front() {
            None => Ok(()),
            Some(job) => job.join().unwrap_or_else(|_| {
                Err(MediaError::bad_output(
                    &self.final_dir(),
                    "image encoder thread panicked",
                ))
            }),
        }
    }

    fn final_dir(&self) -> PathBuf {
        self.pending
            .as_ref()
            .map(|p| p.final_path().to_path_buf())
            .unwrap_or_default()
    }
}

impl ImageSink {
    /// The file name of the next frame: numbered, or the input's name it mirrors.
    fn next_name(&self) -> Result<String, MediaError> {
        match &self.names {
            None => Ok(format!("{:06}.{}", self.next_index, self.ext)),
            Some(names) => match names.get(self.next_index) {
                Some(stem) => Ok(format!("{stem}.{}", self.ext)),
                None => Err(MediaError::bad_output(
                    &self.final_dir(),
                    format!(
                        "frame {} has no output name: {} names were given",
                        self.next_index + 1,
                        names.len()
                    ),
                )),
            },
        }
    }
}

impl FrameSink for ImageSink {
    /// PNG frames only (the format of a job's segments): a hard link costs no bytes and no
    /// encoding; a copy where the segment is on another filesystem.
    fn adopt_file(&mut self, file: &Path) -> Result<bool, MediaError> {
        if !matches!(self.format, OutputFormat::Png | OutputFormat::Png16) {
            return Ok(false);
        }
        let name = self.next_name()?;
        let dir = self.final_dir();
        let temp = self
            .pending
            .as_ref()
            .map(|p| p.temp_path().join(&name))
            .unwrap_or_default();
        if std::fs::hard_link(file, &temp).is_err() {
            std::fs::copy(file, &temp)
                .and_then(|_| File::open(&temp)?.sync_all())
                .map_err(|e| MediaError::write(&dir.join(&name), e))?;
        }
        self.next_index += 1;
        Ok(true)
    }

    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
        let dir = self.final_dir();
        if !frame.is_consistent() || frame.width == 0 || frame.height == 0 {
            return Err(MediaError::bad_output(
                &dir,
                "frame data does not match its size and bit depth",
            ));
        }
        if frame.width > u32::MAX as usize || frame.height > u32::MAX as usize {
            return Err(MediaError::bad_output(&dir, "frame too large"));
        }
        match self.size {
            None => self.size = Some((frame.width, frame.height)),
            Some(s) if s != (frame.width, frame.height) => {
                return Err(MediaError::bad_output(
                    &dir,
                    format!(
                        "frame is {}x{} but the sequence is {}x{}",
                        frame.width, frame.height, s.0, s.1
                    ),
                ))
            }
            Some(_) => {}
        }
        let name = self.next_name()?;
        while self.jobs.len() >= self.max_jobs {
            self.join_one()?;
        }
        let temp = self
            .pending
            .as_ref()
            .map(|p| p.temp_path().join(&name))
            .unwrap_or_default();
        let shown = dir.join(&name);
        let frame = frame.clone();
        let format = self.format;
        let dpx_opts = DpxWriteOptions {
            file_name: name,
            ..self.dpx.clone()
        };
        self.jobs.push_back(std::thread::spawn(move || {
            encode(format, &frame, &dpx_opts, &temp, &shown)
        }));
        self.next_index += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), MediaError> {
        while !self.jobs.is_empty() {
            self.join_one()?;
        }
        match self.pending.take() {
            Some(pending) => pending.publish(),
            None => Ok(()),
        }
    }
}

impl Drop for ImageSink {
    fn drop(&mut self) {
        // The encoders write into the temporary directory: let them end before it is removed.
        for job in self.jobs.drain(..) {
            let _ = job.join();
        }
    }
}

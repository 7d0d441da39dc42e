//! PNG sequence sink: `000000.png`, `000001.png`, … in a directory that appears whole at finish.
//! Frames are encoded on a few threads of their own (PNG deflate is the slow part of writing;
//! one thread could not keep up with the model), at most a bounded number in flight.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::frame::{Frame, FrameSink};
use crate::output::PendingOutput;
use crate::MediaError;

pub(crate) struct PngSink {
    jobs: VecDeque<JoinHandle<Result<(), MediaError>>>,
    max_jobs: usize,
    // After `jobs` only matters for `finish`; `Drop` joins the jobs before this is dropped.
    pending: Option<PendingOutput>,
    sixteen: bool,
    next_index: usize,
    size: Option<(usize, usize)>,
}

fn encode(frame: &Frame, sixteen: bool, temp: &Path, shown: &Path) -> Result<(), MediaError> {
    let werr = |e: std::io::Error| MediaError::write(shown, e);
    let file = File::create(temp).map_err(werr)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut encoder = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    // Fast = fdeflate: several times quicker than the default at a few per cent more bytes.
    encoder.set_compression(png::Compression::Fast);
    let bytes: Vec<u8> = if sixteen {
        encoder.set_depth(png::BitDepth::Sixteen);
        frame
            .to_u16_samples()
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    } else {
        encoder.set_depth(png::BitDepth::Eight);
        frame.to_u8_samples()
    };
    let png_err = |e: png::EncodingError| match e {
        png::EncodingError::IoError(io) => werr(io),
        other => MediaError::bad_output(shown, format!("PNG encoding failed: {other}")),
    };
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&bytes).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    out.flush().map_err(werr)?;
    // Durable before the directory is renamed into place: a crash must not publish empty files.
    out.get_ref().sync_all().map_err(werr)
}

impl PngSink {
    pub(crate) fn create(dir: &Path, sixteen: bool, overwrite: bool) -> Result<Self, MediaError> {
        let pending = PendingOutput::create(dir, true, overwrite)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(PngSink {
            jobs: VecDeque::new(),
            max_jobs: threads.clamp(2, 8),
            pending: Some(pending),
            sixteen,
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
                    "PNG encoder thread panicked",
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

impl FrameSink for PngSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), MediaError> {
        let dir = self.final_dir();
        if !frame.is_consistent() || frame.width == 0 || frame.height == 0 {
            return Err(MediaError::bad_output(
                &dir,
                "frame data does not match its size and bit depth",
            ));
        }
        if frame.width > u32::MAX as usize || frame.height > u32::MAX as usize {
            return Err(MediaError::bad_output(&dir, "frame too large for PNG"));
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
        while self.jobs.len() >= self.max_jobs {
            self.join_one()?;
        }
        let name = format!("{:06}.png", self.next_index);
        let temp = self
            .pending
            .as_ref()
            .map(|p| p.temp_path().join(&name))
            .unwrap_or_default();
        let shown = dir.join(&name);
        let frame = frame.clone();
        let sixteen = self.sixteen;
        self.jobs.push_back(std::thread::spawn(move || {
            encode(&frame, sixteen, &temp, &shown)
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

impl Drop for PngSink {
    fn drop(&mut self) {
        // The encoders write into the temporary directory: let them end before it is removed.
        for job in self.jobs.drain(..) {
            let _ = job.join();
        }
    }
}

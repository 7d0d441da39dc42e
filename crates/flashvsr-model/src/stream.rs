//! What the CLI drives: one engine, or several tile engines blended into one frame.

use std::path::Path;

use crate::lq_frame::LqInput;
use crate::pipeline::{Engine, EngineStats, OutputFrame};
use crate::state_io::StateWriter;
use crate::Result;

pub trait FrameStream {
    /// Adds the next LQ frame, prepared or as source levels; returns frames finished by it, in
    /// order.
    fn push_lq(&mut self, frame: LqInput) -> Result<Vec<OutputFrame>>;
    /// Adds the next prepared LQ frame `(3, H, W)`.
    fn push(&mut self, frame: Vec<f32>) -> Result<Vec<OutputFrame>> {
        self.push_lq(LqInput::Canvas(frame))
    }
    /// Ends the stream after `real_frames` frames; returns the remaining frames.
    fn finish(&mut self, real_frames: usize) -> Result<Vec<OutputFrame>>;
    fn frames_received(&self) -> usize;
    /// The whole stream state in host memory, to write with [`StateWriter::write`] (possibly
    /// while the stream goes on).
    fn checkpoint(&self) -> Result<StateWriter>;
    fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.checkpoint()?.write(path)
    }
    fn restore_checkpoint(&mut self, path: &Path) -> Result<()>;
    fn stats(&self) -> EngineStats;
}

impl FrameStream for Engine<'_> {
    fn push_lq(&mut self, frame: LqInput) -> Result<Vec<OutputFrame>> {
        Engine::push_lq(self, frame)
    }
    fn finish(&mut self, real_frames: usize) -> Result<Vec<OutputFrame>> {
        Engine::finish(self, real_frames)
    }
    fn frames_received(&self) -> usize {
        Engine::frames_received(self)
    }
    fn checkpoint(&self) -> Result<StateWriter> {
        Engine::checkpoint(self)
    }
    fn restore_checkpoint(&mut self, path: &Path) -> Result<()> {
        Engine::restore_checkpoint(self, path)
    }
    fn stats(&self) -> EngineStats {
        self.stats.clone()
    }
}

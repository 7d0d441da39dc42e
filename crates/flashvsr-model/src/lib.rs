//! FlashVSR: weight loading and validation, the model modules and the streaming pipeline, written
//! once against the `flashvsr-tensor` op set.

pub mod color_fix;
pub mod dit;
mod error;
pub mod geometry;
pub mod identify;
pub mod lq_frame;
pub mod lq_proj;
pub mod memory;
pub mod noise;
mod output_frame;
mod params;
pub mod pipeline;
pub mod random_weights;
pub mod state_io;
pub mod stream;
pub mod tcdecoder;
pub mod tiled;
pub mod vae;
pub mod vae_tiling;
pub mod weights;

pub use error::{ModelError, Result};
pub use params::Params;

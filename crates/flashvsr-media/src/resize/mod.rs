//! The two bicubic upscalers of the references (spec §2.2): Pillow's, used by the official
//! scripts on uint8 frames, and torch's `interpolate(mode="bicubic")`, used by the Ultra_Fast
//! forks on floats. They sample the same positions but differ in kernel (a = −0.5 vs −0.75),
//! border handling (renormalised vs edge-replicated taps) and quantisation.
//!
//! All functions take and return interleaved images: `src.len() == width * height * channels`
//! (they panic otherwise: the sizes come from decoded frames, never straight from user input).

mod pil;
mod torch;

pub use pil::{
    pil_bicubic_taps, pil_bicubic_u16_to_f32, pil_bicubic_u8, pil_horizontal_first, PilTaps,
    PIL_PRECISION_BITS,
};
pub use torch::torch_bicubic_f32;

fn check_len(len: usize, width: usize, height: usize, channels: usize) {
    assert_eq!(
        len,
        width * height * channels,
        "image of {width}x{height}x{channels}"
    );
}

//! `--decoder-stream`: the DiT's head and the decoder on a second stream of the GPU, chunk c
//! decoded while chunk c + 1 runs through the DiT (pipeline.rs `Engine::with_decoder_stream`;
//! the same frames, bit for bit). It costs device memory: the decoder's working set then lives
//! beside the DiT's, and the second stream has allocators and library workspaces of its own.
//! Measured on an H200 (BENCHMARKS.md, 2026-11-27 session 14): 1920×1152 canvas +1.6 % fps for
//! 18.6 → 22.8 GiB; 1408×768 +1.2 % for 10.9 → 13.1 GiB. `auto` takes it where the gain is the
//! larger and the memory the smaller share of the run's own: model canvases of 1.5 Mpx and more,
//! on cards of 40 GiB or more. Smaller canvases keep one stream's footprint; `on` trades it for
//! the speed.

use flashvsr_tensor::{BackendRef, Device};

use crate::args::{DecoderStream, UpscaleArgs};
use crate::failure::{Failure, Outcome};

/// Model canvases smaller than this keep one stream under `auto`.
const AUTO_MIN_PIXELS: usize = 1_500_000;
/// Cards with less memory keep one stream under `auto`.
const AUTO_MIN_DEVICE_BYTES: u64 = 40 << 30;

/// Why a stream cannot use a second one whatever the choice: it is tiled, split over devices,
/// profiled stage by stage, or under a memory cap.
pub struct Exclusions {
    pub tiled: bool,
    pub split: bool,
    pub profile: bool,
    pub memory_cap: bool,
}

impl Exclusions {
    /// An `upscale` run's: one untiled, unsplit stream unless the caller says otherwise.
    pub fn of(args: &UpscaleArgs, profile: bool) -> Exclusions {
        Exclusions {
            tiled: false,
            split: false,
            profile,
            memory_cap: args.max_vram.is_some(),
        }
    }
}

/// The backend the decoder runs on beside `backend`, or None for one stream. `on` where it
/// cannot be had (the CPU, or an exclusion) is an error naming why.
pub fn decoder_backend(
    choice: DecoderStream,
    backend: &BackendRef,
    canvas: (usize, usize),
    excluded: Exclusions,
) -> Outcome<Option<BackendRef>> {
    if choice == DecoderStream::Off {
        return Ok(None);
    }
    let cuda = matches!(backend.device(), Device::Cuda(_));
    let why_not = match (cuda, &excluded) {
        (false, _) => Some("it needs a CUDA device"),
        (_, e) if e.tiled => Some("a tiled stream keeps one"),
        (_, e) if e.split => Some("a stream split over --devices keeps one"),
        (_, e) if e.profile => Some("--profile times the stages one after the other"),
        (_, e) if e.memory_cap => Some("--max-vram caps one stream's memory"),
        _ => None,
    };
    if let Some(why_not) = why_not {
        return match choice {
            DecoderStream::On => Err(Failure::bad(format!("--decoder-stream on: {why_not}"))),
            _ => Ok(None),
        };
    };
    if choice == DecoderStream::Auto && !auto_pays(backend, canvas) {
        return Ok(None);
    }
    match backend.sibling() {
        Some(Ok(sibling)) => Ok(Some(sibling)),
        Some(Err(e)) if choice == DecoderStream::On => Err(Failure::failed(format!(
            "--decoder-stream on: no second CUDA stream: {e}"
        ))),
        Some(Err(e)) => {
            eprintln!("flashvsr: one stream: no second CUDA stream for the decoder ({e})");
            Ok(None)
        }
        None => Ok(None),
    }
}

fn auto_pays(backend: &BackendRef, (height, width): (usize, usize)) -> bool {
    height * width >= AUTO_MIN_PIXELS
        && backend
            .device_memory()
            .is_some_and(|b| b >= AUTO_MIN_DEVICE_BYTES)
}

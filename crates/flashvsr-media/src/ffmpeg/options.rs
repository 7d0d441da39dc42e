//! Settings of video outputs, part of [`crate::SinkOptions`] (exists in every build).

use std::path::PathBuf;

use super::meta::VideoColour;

/// How a video output (`.mp4 .mkv .mov .webm .avi`) is encoded and what it carries besides the
/// frames. The default is right for the CLI once `input` (and, from the source, `colour`) is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoOptions {
    /// The input video. Its audio and subtitle streams are copied packet for packet (timestamps
    /// rescaled, same codecs, languages and dispositions), and its colour description is used
    /// when `colour` is `None`. Not a video (an image sequence, y4m): nothing to copy.
    pub input: Option<PathBuf>,
    /// Drop the input's audio streams (`--no-audio`).
    pub no_audio: bool,
    /// Drop the input's subtitle streams (`--no-subtitles`).
    pub no_subtitles: bool,
    /// Encoder (`libx264`, `libx265`, `ffv1`, `libsvtav1`, `prores_ks`, …) or codec name (`h264`,
    /// `hevc`, …; libav's preferred encoder). Default: `libx264` for 8-bit SDR frames, `libx265`
    /// for 16-bit frames or an HDR transfer (PQ/HLG); `libvpx-vp9` in `.webm`.
    pub codec: Option<String>,
    /// Constant rate factor (`--crf`). Default 18 for libx264, libx265 and libvpx-vp9; other
    /// encoders keep their own rate control unless it is given (an error where the encoder has
    /// no `crf` option).
    pub crf: Option<u8>,
    /// Encoder preset (`--preset`). Default `slow` for libx264 and libx265.
    pub preset: Option<String>,
    /// Pixel format of the encoded video (`--pix-fmt`, libav names: `yuv420p`, `yuv420p10le`,
    /// `yuv444p`, …). Default `yuv420p` for 8-bit SDR frames, `yuv420p10le` for 16-bit frames or
    /// HDR; encoders that support neither get their closest format.
    pub pix_fmt: Option<String>,
    /// Further encoder options (`-e key=value`): private options of the encoder (`tune`,
    /// `x264-params`, `x265-params`, `qp`, …) and generic codec options (`g`, `bf`, `b`, …). An
    /// option the encoder does not know is an error.
    pub encoder_options: Vec<(String, String)>,
    /// Colour tags and HDR10 metadata to write, which also pick the RGB→YUV matrix and range.
    /// Pass the source's (`SourceInfo::colour`); `None` reads them from `input` when that is a
    /// video, else writes limited range with the BT.709 matrix from 720 rows up, BT.601 below
    /// (tagged), primaries and transfer unspecified.
    pub colour: Option<VideoColour>,
}

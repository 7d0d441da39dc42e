//! Command-line definitions. Flag names and defaults are an interface other tools drive: keep them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "flashvsr",
    version,
    about = "One-step diffusion video super-resolution (FlashVSR)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Upscale a video, an image sequence or an image, or every video in a folder.
    Upscale(Box<UpscaleArgs>),
    /// Measure speed on a synthetic clip (random full-size weights need no download).
    Bench(Box<BenchArgs>),
    /// Segments done, and whether a job is resumable, for an output being written.
    Status {
        /// The OUTPUT given to `upscale`.
        output: PathBuf,
    },
    /// Inspect model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Say what each file of a model folder is, its version where it can be told, and any problem.
    Verify {
        /// Folder with the model files.
        dir: PathBuf,
        /// Projector semantics to check the folder against.
        #[arg(long, value_enum, default_value = "1.1")]
        model_ver: ModelVersion,
    },
    /// Download the official model files into the Hugging Face cache (resumes, checks checksums;
    /// honours HF_ENDPOINT, HF_HUB_CACHE, HF_HOME and HF_HUB_OFFLINE).
    Fetch {
        /// Which release: 1.1 (JunhaoZhuang/FlashVSR-v1.1) or 1.0 (JunhaoZhuang/FlashVSR).
        #[arg(long, value_enum, default_value = "1.1")]
        model_ver: ModelVersion,
        /// Also fetch Wan2.1_VAE.pth, which only --mode full needs.
        #[arg(long)]
        full: bool,
        /// Errors only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print where each model file resolves (per-file flag, --models, then the cache) or "missing".
    Path {
        #[command(flatten)]
        files: ModelFileArgs,
    },
    /// List both releases and which of their files are in the cache.
    List,
}

#[derive(Args, Debug, Clone)]
pub struct ModelFileArgs {
    /// Folder with the model files (the ComfyUI models/FlashVSR[-v1.1] layout).
    #[arg(long, env = "FLASHVSR_MODELS", value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// DiT weights (diffusion_pytorch_model_streaming_dmd.safetensors); wins over --models.
    #[arg(long, value_name = "FILE")]
    pub dit: Option<PathBuf>,
    /// LQ projector (LQ_proj_in.ckpt).
    #[arg(long, value_name = "FILE")]
    pub lq_proj: Option<PathBuf>,
    /// Tiny decoder (TCDecoder.ckpt).
    #[arg(long, value_name = "FILE")]
    pub tcdecoder: Option<PathBuf>,
    /// Wan2.1 VAE (Wan2.1_VAE.pth), full mode only.
    #[arg(long, value_name = "FILE")]
    pub vae: Option<PathBuf>,
    /// Prompt embedding (posi_prompt.pth).
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,
    /// Projector version. A v1.0 and a v1.1 LQ_proj_in.ckpt have the same keys and cannot be told
    /// apart: this flag decides which semantics run.
    #[arg(long, value_enum, default_value = "1.1", alias = "model_ver")]
    pub model_ver: ModelVersion,
}

#[derive(Args, Debug, Clone)]
pub struct UpscaleArgs {
    /// A video file, a y4m file (or - for stdin), a folder of image frames, one image, or a folder
    /// of videos (batch: OUTPUT is then a folder).
    #[arg(value_name = "INPUT", required_unless_present = "input_flag")]
    input_positional: Option<PathBuf>,
    /// The same as INPUT (the seed CLI's spelling).
    #[arg(
        short = 'i',
        long = "input",
        value_name = "INPUT",
        conflicts_with = "input_positional"
    )]
    input_flag: Option<PathBuf>,
    /// INPUT, from either spelling (set by [`UpscaleArgs::resolve`]).
    #[arg(skip)]
    pub input: PathBuf,
    /// Output: a video file (.mp4 .mkv .mov .webm), a .y4m file, a folder of frames, - for y4m on
    /// stdout, or a folder when INPUT is a folder of videos.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub files: ModelFileArgs,
    #[arg(long, value_enum, default_value = "tiny")]
    pub mode: Mode,
    /// Upscaling factor (output = scale × input exactly).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub scale: u32,
    /// Sparse attention semantics: official 128×128 blocks, or Ultra_Fast's 128×64.
    #[arg(
        long,
        value_enum,
        default_value = "block",
        alias = "attention_mode",
        ignore_case = true
    )]
    pub attention: Attention,
    /// Attention budget: about 60 × this many key blocks per query block.
    #[arg(long, default_value_t = 2.0, alias = "sparse_ratio")]
    pub sparse_ratio: f64,
    /// KV cache length in temporal groups (the integer part counts; values below 3 act like 2).
    #[arg(long, default_value_t = 3.0, alias = "kv_ratio")]
    pub kv_ratio: f64,
    /// Local attention window, in 128-pixel windows.
    #[arg(long, default_value_t = 11, alias = "local_range")]
    pub local_range: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(
        long,
        value_enum,
        default_value = "adain",
        alias = "color_fix",
        ignore_case = true
    )]
    pub color_fix: ColorFixArg,
    /// Bicubic upscaler for the LR input: Pillow's (official) or torch's (Ultra_Fast).
    #[arg(long, value_enum, default_value = "pil")]
    pub resize: ResizeArg,
    /// Reproduce the official tiny script: centre-crop the scaled frame to multiples of 128.
    #[arg(long)]
    pub crop_to_128: bool,
    /// Tiled VAE decode in full mode. auto: untiled up to 1,081,344 output pixels (1408×768,
    /// 1280×768 and smaller), tiled in 480×832-pixel tiles above; by frame size only, so the same
    /// input gives the same output on every card (tiled output differs slightly: blended tiles).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        alias = "tiled_vae",
        ignore_case = true
    )]
    pub tiled_vae: TiledVae,
    /// Initial latent from a safetensors file with a tensor `noise` (1, 16, T, H/8, W/8).
    #[arg(long, value_name = "FILE")]
    pub noise: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    /// Decode on a second stream of the GPU while the DiT runs the next chunk (the same frames,
    /// ~2–3 GiB more device memory). auto: on CUDA cards of 40 GiB or more for model canvases of
    /// 1.5 Mpx and more, where it was measured to pay; never for tiled, split or profiled runs
    /// or under --max-vram.
    #[arg(long, value_enum, default_value = "auto")]
    pub decoder_stream: DecoderStream,
    /// png (8-bit), png16, tiff16, exr, dpx10 or y4m; default from the output path.
    #[arg(long, value_enum, alias = "output_format", ignore_case = true)]
    pub output_format: Option<OutputFormatArg>,
    /// Process at most this many input frames.
    #[arg(long, alias = "max_frames")]
    pub max_frames: Option<usize>,
    /// Replace an existing output (a batch redoes finished videos instead of skipping them).
    #[arg(short = 'y', long)]
    pub overwrite: bool,
    /// Errors only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Progress report on stderr: auto (an updating line on a terminal, a plain line every few
    /// seconds otherwise), plain, json (JSON lines: progress, end and error events) or none.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// Write the --progress json lines to FILE instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub progress_file: Option<PathBuf>,
    /// Time the LQ projector, DiT, decode and colour fix separately in the end summary. This
    /// synchronises the device between stages (a few per cent slower on a GPU); always on for the
    /// CPU.
    #[arg(long)]
    pub profile: bool,
    /// Video encoder (libx264, libx265, ffv1, libsvtav1, prores_ks, …); default from the source.
    #[arg(long)]
    pub codec: Option<String>,
    /// Constant rate factor of the video encoder (default 18).
    #[arg(long)]
    pub crf: Option<u8>,
    /// Encoder preset (default slow for x264/x265).
    #[arg(long)]
    pub preset: Option<String>,
    /// Encoded pixel format (yuv420p, yuv420p10le, …); default from the source's bit depth.
    #[arg(long)]
    pub pix_fmt: Option<String>,
    /// Encoder option KEY=VALUE (repeatable), e.g. -e tune=film -e x265-params=aq-mode=3.
    #[arg(short = 'e', long = "encoder-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub encoder_options: Vec<(String, String)>,
    /// Do not copy the input's audio streams.
    #[arg(long)]
    pub no_audio: bool,
    /// Do not copy the input's subtitle streams.
    #[arg(long)]
    pub no_subtitles: bool,
    /// Frame rate for image-sequence inputs, or to force a constant rate (e.g. 24, 30000/1001).
    #[arg(long, value_parser = parse_fps, aliases = ["input_fps", "output_fps"])]
    pub fps: Option<(u32, u32)>,
    /// Name output image files after the input image files (frame_0042.png → frame_0042.tif)
    /// instead of 000000 upwards.
    #[arg(long)]
    pub keep_names: bool,
    /// Tiled DiT: tile size in input pixels (0 = no tiling). Tiles are rounded up to 128 output
    /// pixels, run as separate streams and blended with ramps on interior edges.
    #[arg(long, default_value_t = 0, alias = "tile_size")]
    pub tile_size: usize,
    /// Overlap of neighbouring tiles, in input pixels.
    #[arg(long, default_value_t = 24, alias = "tile_overlap")]
    pub tile_overlap: usize,
    /// Device memory the whole run may use, e.g. 8G or 12GiB (K, M, G, T count in 1024s; a plain
    /// number is bytes). Picks tiles that fit when --tile-size is 0, keeps the tiles' stream state
    /// in host memory between their turns, and retries with smaller tiles if the device runs out
    /// anyway.
    #[arg(long, value_parser = parse_size, alias = "max_vram", value_name = "SIZE")]
    pub max_vram: Option<u64>,
    /// Random weights of the released (or the small test) model's shapes instead of model files:
    /// for benchmarks and device runs without downloads. The picture is noise.
    #[arg(long, hide = true, value_enum, value_name = "SIZE")]
    pub random_weights: Option<BenchModelSize>,
    /// The seed CLI's `--tiled_dit True|False`: True tiles with --tile-size (256 when not given),
    /// False turns tiling off.
    #[arg(long = "tiled_dit", hide = true, value_name = "BOOL", value_parser = parse_seed_bool)]
    tiled_dit: Option<bool>,
    /// Discard an existing job store (`OUTPUT.flashvsr/`) instead of resuming from it.
    #[arg(long, aliases = ["clean-checkpoint", "clean_checkpoint"])]
    pub restart: bool,
    /// Keep the job store after success.
    #[arg(long)]
    pub keep_job: bool,
    /// Output frames per segment: the spacing of stream checkpoints (resume granularity).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_frames: u64,
    /// Several workers, one process per device: `all` (every GPU), `0,2`, `0-3`, or `cpu:N` for N
    /// CPU worker processes. More than one device runs a parallel job (cold segments with warm-up
    /// and cross-faded joins, docs/SEGMENTS.md); the default is one device and one stream.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<String>,
    /// How several --devices share a video. `layers`: the model's blocks are split over the
    /// devices of this host and one stream runs through all of them, chunks in flight on each
    /// (the one-device output exactly, no warm-up). `segments`: one worker process per device on
    /// its own segments (cold starts, cross-faded joins). `auto`: segments (the faster of the two
    /// as measured so far: a split stream is bound by one process's host work).
    #[arg(long, value_enum, default_value_t = ParallelMode::Auto)]
    pub parallel: ParallelMode,
    /// Parallel jobs: frames run before each segment to warm up its cold stream, then discarded
    /// (a multiple of 8).
    #[arg(long, default_value_t = crate::parallel::DEFAULT_WARMUP_FRAMES)]
    pub warmup_frames: usize,
    /// Parallel jobs: frames cross-faded at each join between segments (at most --warmup-frames;
    /// 0 = hard join).
    #[arg(long, default_value_t = crate::parallel::DEFAULT_CROSSFADE_FRAMES)]
    pub crossfade_frames: usize,
    /// Internal: run as a worker of the parallel job store DIR.
    #[arg(long, hide = true, value_name = "DIR")]
    pub worker_job: Option<PathBuf>,
    /// Whether --segment-frames was given (set from the command line's matches).
    #[arg(skip)]
    pub segment_frames_given: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParallelMode {
    Auto,
    Layers,
    Segments,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelVersion {
    #[value(name = "1.0")]
    V1_0,
    #[value(name = "1.1")]
    V1_1,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tiny,
    /// Same output as tiny: every mode decodes chunk by chunk.
    TinyLong,
    Full,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    #[value(alias = "block_sparse_attention")]
    Block,
    #[value(alias = "sparse_sage_attention")]
    Sage,
}

/// The seed's boolean spellings (`--color_fix True`) are accepted as hidden values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorFixArg {
    #[value(aliases = ["true", "yes", "t", "y", "1"])]
    Adain,
    Wavelet,
    #[value(aliases = ["false", "no", "f", "n", "0"])]
    None,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeArg {
    Pil,
    Torch,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TiledVae {
    Auto,
    #[value(aliases = ["true", "yes", "t", "y", "1"])]
    On,
    #[value(aliases = ["false", "no", "f", "n", "0"])]
    Off,
}

/// `--decoder-stream` (decoder_stream.rs).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderStream {
    Auto,
    On,
    Off,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Auto,
    Fp32,
    Fp16,
    Bf16,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormatArg {
    Png,
    Png16,
    Tiff16,
    Exr,
    /// 10-bit DPX (the seed's `dpx` is accepted for it).
    #[value(alias = "dpx")]
    Dpx10,
    Y4m,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressArg {
    Auto,
    Plain,
    Json,
    None,
}

impl UpscaleArgs {
    /// Fills [`UpscaleArgs::input`] from INPUT or `-i/--input` (clap makes exactly one present)
    /// and applies the seed's `--tiled_dit` to `tile_size`.
    pub fn resolve(&mut self) {
        match self.tiled_dit {
            Some(true) if self.tile_size == 0 => self.tile_size = 256,
            Some(false) => self.tile_size = 0,
            _ => {}
        }
        if let Some(p) = self
            .input_flag
            .take()
            .or_else(|| self.input_positional.take())
        {
            self.input = p;
        }
    }
}

/// Seed-CLI spellings accepted as hidden aliases, and the flashvsr spelling each stands for.
pub const SEED_ALIASES: &[(&str, &str)] = &[
    ("--model_ver", "--model-ver"),
    ("--attention_mode", "--attention"),
    ("--sparse_ratio", "--sparse-ratio"),
    ("--kv_ratio", "--kv-ratio"),
    ("--local_range", "--local-range"),
    ("--color_fix", "--color-fix"),
    ("--tiled_vae", "--tiled-vae"),
    ("--tiled_dit", "--tile-size N (0: no tiling)"),
    ("--tile_size", "--tile-size"),
    ("--tile_overlap", "--tile-overlap"),
    ("--output_format", "--output-format"),
    ("--max_frames", "--max-frames"),
    ("--input_fps", "--fps"),
    ("--output_fps", "--fps"),
    ("--clean-checkpoint", "--restart"),
    ("--clean_checkpoint", "--restart"),
];

/// One line per seed spelling used in `argv` (up to a `--`), naming the flashvsr spelling.
pub fn seed_alias_notes(argv: &[std::ffi::OsString]) -> Vec<String> {
    let mut notes = Vec::new();
    for arg in argv.iter().skip(1) {
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        let name = arg.split_once('=').map_or(arg, |(n, _)| n);
        if let Some((old, new)) = SEED_ALIASES.iter().find(|(old, _)| *old == name) {
            let note = format!("note: {old} is the seed CLI's spelling; use {new}");
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    notes
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Output size WxH (the input is this divided by --scale).
    #[arg(long, default_value = "1408x768")]
    pub resolution: String,
    #[arg(long, default_value_t = 77)]
    pub frames: usize,
    #[arg(long, value_enum, default_value = "tiny")]
    pub mode: Mode,
    #[arg(long, value_enum, default_value = "sage")]
    pub attention: Attention,
    #[arg(long, default_value_t = 4)]
    pub scale: usize,
    /// Build random weights in memory instead of reading model files.
    #[arg(long, conflicts_with = "models")]
    pub random_weights: bool,
    /// Size of the random weights: the released model or the small test model.
    #[arg(long, value_enum, default_value = "release")]
    pub model_size: BenchModelSize,
    #[command(flatten)]
    pub files: ModelFileArgs,
    #[arg(long, default_value_t = 2.0)]
    pub sparse_ratio: f64,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    /// Decode on a second stream of the GPU while the DiT runs the next chunk (the same frames,
    /// ~2–3 GiB more device memory). auto: on CUDA cards of 40 GiB or more for model canvases of
    /// 1.5 Mpx and more, where it was measured to pay; never for tiled, split or profiled runs
    /// or under --max-vram.
    #[arg(long, value_enum, default_value = "auto")]
    pub decoder_stream: DecoderStream,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Untimed runs first (module loads, algorithm searches, memory pool growth).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs; fps is their median (min and max reported beside it). One more run, with a
    /// synchronisation at every stage boundary, gives the stage times and mask statistics.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchModelSize {
    Release,
    Small,
}

/// The seed's `str_to_bool`: yes/true/t/y/1 and no/false/f/n/0, any case.
fn parse_seed_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "t" | "y" | "1" => Ok(true),
        "no" | "false" | "f" | "n" | "0" => Ok(false),
        _ => Err(format!("`{s}`: expected True or False")),
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE")),
    }
}

/// `8G`, `8GiB`, `8gb`, `512M`, `1.5G` or a plain number of bytes; units count in 1024s.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}`: expected a size such as 8G, 12GiB or 512M");
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (number, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let v: f64 = number.trim().parse().map_err(|_| bad())?;
    let bytes = v * (1u64 << shift) as f64;
    if !(1.0..1e18).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `24`, `23.976` or `24000/1001` as a rational.
fn parse_fps(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}`: expected a frame rate such as 24, 29.97 or 30000/1001");
    if let Some((n, d)) = s.split_once('/') {
        let (n, d) = (
            n.trim().parse::<u32>().map_err(|_| bad())?,
            d.trim().parse::<u32>().map_err(|_| bad())?,
        );
        return if n > 0 && d > 0 {
            Ok((n, d))
        } else {
            Err(bad())
        };
    }
    let v: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(v.is_finite() && v > 0.0 && v < 1e6) {
        return Err(bad());
    }
    Ok(((v * 1000.0).round() as u32, 1000))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_count_in_1024s() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8 gb"), Ok(8 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in ["", "G", "-1G", "8X", "0", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}

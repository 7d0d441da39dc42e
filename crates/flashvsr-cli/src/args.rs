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
    /// Upscale a video (y4m, or a folder of PNG frames) or an image.
    Upscale(Box<UpscaleArgs>),
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
    #[arg(long, value_enum, default_value = "1.1")]
    pub model_ver: ModelVersion,
}

#[derive(Args, Debug)]
pub struct UpscaleArgs {
    /// A y4m file (or - for stdin), a folder of PNG frames, or one PNG image.
    pub input: PathBuf,
    /// Output: a folder of PNG frames, a .y4m file, or - for y4m on stdout.
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
    #[arg(long, value_enum, default_value = "block")]
    pub attention: Attention,
    /// Attention budget: about 60 × this many key blocks per query block.
    #[arg(long, default_value_t = 2.0)]
    pub sparse_ratio: f64,
    /// KV cache length in temporal groups (the integer part counts; values below 3 act like 2).
    #[arg(long, default_value_t = 3.0)]
    pub kv_ratio: f64,
    /// Local attention window, in 128-pixel windows.
    #[arg(long, default_value_t = 11)]
    pub local_range: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "adain")]
    pub color_fix: ColorFixArg,
    /// Bicubic upscaler for the LR input: Pillow's (official) or torch's (Ultra_Fast).
    #[arg(long, value_enum, default_value = "pil")]
    pub resize: ResizeArg,
    /// Reproduce the official tiny script: centre-crop the scaled frame to multiples of 128.
    #[arg(long)]
    pub crop_to_128: bool,
    /// Tiled VAE decode in full mode (auto: tile when the frame exceeds one tile).
    #[arg(long, value_enum, default_value = "auto")]
    pub tiled_vae: TiledVae,
    /// Initial latent from a safetensors file with a tensor `noise` (1, 16, T, H/8, W/8).
    #[arg(long, value_name = "FILE")]
    pub noise: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    /// png (8-bit), png16, or y4m; default from the output path.
    #[arg(long, value_enum)]
    pub output_format: Option<OutputFormatArg>,
    /// Process at most this many input frames.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Replace an existing output.
    #[arg(short = 'y', long)]
    pub overwrite: bool,
    /// Errors only.
    #[arg(short, long)]
    pub quiet: bool,
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
    Block,
    Sage,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorFixArg {
    Adain,
    Wavelet,
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
    Y4m,
}

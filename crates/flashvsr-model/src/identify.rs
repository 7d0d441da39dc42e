//! Tells which FlashVSR file a weight file is, from its keys and shapes, so that a file passed
//! in the wrong place gets an error that says what it is and where it belongs.

use std::fmt;

use crate::weights::WeightSource;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dit,
    LqProjector,
    TcDecoder,
    WanVae,
    Prompt,
    Unknown,
}

impl FileKind {
    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Dit => "diffusion_pytorch_model_streaming_dmd.safetensors",
            FileKind::LqProjector => "LQ_proj_in.ckpt",
            FileKind::TcDecoder => "TCDecoder.ckpt",
            FileKind::WanVae => "Wan2.1_VAE.pth",
            FileKind::Prompt => "posi_prompt.pth",
            FileKind::Unknown => "an unknown file",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            FileKind::Dit => "--dit",
            FileKind::LqProjector => "--lq-proj",
            FileKind::TcDecoder => "--tcdecoder",
            FileKind::WanVae => "--vae",
            FileKind::Prompt => "--prompt",
            FileKind::Unknown => "",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Dit => "a FlashVSR DiT",
            FileKind::LqProjector => "an LQ projector",
            FileKind::TcDecoder => "a TCDecoder",
            FileKind::WanVae => "a Wan2.1 VAE",
            FileKind::Prompt => "a prompt tensor",
            FileKind::Unknown => "not a FlashVSR model file",
        })
    }
}

pub fn identify(file: &dyn WeightSource) -> FileKind {
    let has_suffix = |s: &str| {
        file.names()
            .iter()
            .any(|k| *k == s || k.ends_with(&format!(".{s}")))
    };
    if file.is_bare_tensor()
        || (file.names().len() == 1 && file.shape(file.names()[0]).is_some_and(|s| s.len() == 3))
    {
        FileKind::Prompt
    } else if file.contains("patch_embedding.weight")
        && file.contains("blocks.0.self_attn.q.weight")
    {
        FileKind::Dit
    } else if file.contains("conv1.weight") && file.contains("linear_layers.0.weight") {
        FileKind::LqProjector
    } else if file.contains("decoder.1.weight")
        && file.names().iter().any(|k| k.starts_with("decoder.5.conv"))
    {
        FileKind::TcDecoder
    } else if has_suffix("decoder.conv1.weight") {
        FileKind::WanVae
    } else {
        FileKind::Unknown
    }
}

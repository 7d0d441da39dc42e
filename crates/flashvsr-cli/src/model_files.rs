//! Finding and loading the five model files: per-file flags win over the folder; every file is
//! identified before use, so a file in the wrong place gets an error that says where it belongs.

use std::path::{Path, PathBuf};

use flashvsr_model::dit::Dit;
use flashvsr_model::identify::{identify, FileKind};
use flashvsr_model::lq_proj::{LqProjector, ProjectorVersion};
use flashvsr_model::pipeline::{Decoder, Models};
use flashvsr_model::random_weights::{ModelSize, RandomWeights};
use flashvsr_model::tcdecoder::TcDecoder;
use flashvsr_model::vae::WanVaeDecoder;
use flashvsr_model::weights::WeightFile;
use flashvsr_tensor::BackendRef;

use crate::args::{ModelFileArgs, ModelVersion};
use crate::failure::{Failure, Outcome};

pub fn projector_version(v: ModelVersion) -> ProjectorVersion {
    match v {
        ModelVersion::V1_0 => ProjectorVersion::V1_0,
        ModelVersion::V1_1 => ProjectorVersion::V1_1,
    }
}

/// Where the file for `kind` is taken from: per-file flag > `--models DIR` > the Hugging Face
/// cache (crate::models). Never downloads; an error names `flashvsr models fetch`.
pub fn resolved_path(args: &ModelFileArgs, kind: FileKind) -> Outcome<PathBuf> {
    crate::models::resolve(args, kind)
        .map(|(p, _)| p)
        .ok_or_else(|| Failure::bad(crate::models::missing_message(args, kind)))
}

/// Downloads the files `upscale` will need (`full`: with the VAE) that are found nowhere, before
/// any work starts, unless `--models` was given or `HF_HUB_OFFLINE` is set (crate::models::ensure).
pub fn ensure_files(args: &ModelFileArgs, full: bool, quiet: bool) -> Outcome<()> {
    crate::models::ensure(args, full, quiet)
}

/// Opens the file for `kind` and checks that it is that kind of file.
pub fn open_checked(path: &Path, kind: FileKind) -> Outcome<WeightFile> {
    if !path.exists() {
        return Err(Failure::bad(format!(
            "{}: no such file (expected {} here; pass {} FILE to point elsewhere)",
            path.display(),
            kind.file_name(),
            kind.flag()
        )));
    }
    let file = WeightFile::open(path)?;
    let found = identify(&file);
    if found != kind {
        let hint = if found == FileKind::Unknown {
            String::new()
        } else {
            format!("; it belongs with {} FILE", found.flag())
        };
        return Err(Failure::bad(format!(
            "{}: expected {} ({}), but this is {found}{hint}",
            path.display(),
            kind,
            kind.file_name()
        )));
    }
    Ok(file)
}

pub fn open(args: &ModelFileArgs, kind: FileKind) -> Outcome<WeightFile> {
    // Resolves like resolved_path, downloading a missing file first where allowed.
    open_checked(&crate::models::path_for(args, kind)?, kind)
}

pub fn load_dit(backend: &BackendRef, args: &ModelFileArgs) -> Outcome<Dit> {
    let dit = open(args, FileKind::Dit)?;
    let prompt = open(args, FileKind::Prompt)?;
    Ok(Dit::load(backend, &dit, &prompt)?)
}

pub fn load_projector(
    backend: &BackendRef,
    args: &ModelFileArgs,
    dim: usize,
) -> Outcome<LqProjector> {
    let file = open(args, FileKind::LqProjector)?;
    let proj = LqProjector::load(backend, &file, projector_version(args.model_ver))?;
    if proj.out_dim != dim {
        return Err(Failure::bad(format!(
            "{}: the projector outputs {} channels but the DiT is {dim} wide (files from different models?)",
            file.path().display(),
            proj.out_dim
        )));
    }
    Ok(proj)
}

pub fn load_tcdecoder(backend: &BackendRef, args: &ModelFileArgs) -> Outcome<TcDecoder> {
    Ok(TcDecoder::load(backend, &open(args, FileKind::TcDecoder)?)?)
}

pub fn load_vae(backend: &BackendRef, args: &ModelFileArgs) -> Outcome<WanVaeDecoder> {
    Ok(WanVaeDecoder::load(
        backend,
        &open(args, FileKind::WanVae)?,
    )?)
}

/// Random weights of the released (or the small test) model's shapes, built in memory: for
/// benchmarks and device runs without model downloads. Full mode gets the Wan VAE, untiled.
pub fn random_models(
    backend: &BackendRef,
    size: ModelSize,
    version: ProjectorVersion,
    full: bool,
) -> Outcome<Models> {
    const SEED: u64 = 0;
    let dit = Dit::load(
        backend,
        &RandomWeights::dit(size, SEED),
        &RandomWeights::prompt(size, SEED),
    )?;
    let projector = LqProjector::load(backend, &RandomWeights::projector(size, SEED), version)?;
    let decoder = if full {
        Decoder::Full {
            vae: Box::new(WanVaeDecoder::load(
                backend,
                &RandomWeights::vae(size, SEED),
            )?),
            tiling: None,
        }
    } else {
        Decoder::Tiny(TcDecoder::load(
            backend,
            &RandomWeights::tcdecoder(size, SEED),
        )?)
    };
    Ok(Models {
        dit,
        projector,
        decoder,
    })
}

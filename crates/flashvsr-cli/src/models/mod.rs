//! Model files: where each one resolves from, and fetching the official files into the Hugging
//! Face cache (PRODUCT.md §5 "Models, cache and directories").
//!
//! Resolution, per file: its per-file flag (`--dit` …) > `--models DIR` (env `FLASHVSR_MODELS`)
//! when the file is there > the cache ([`cache`]). A file found nowhere is downloaded first when
//! no `--models` folder was given and `HF_HUB_OFFLINE` is not set; otherwise it is a usage error
//! (exit 2) that names `flashvsr models fetch`.

pub mod cache;
mod commands;
pub mod fetch;
mod progress;

use std::path::PathBuf;

use flashvsr_model::identify::FileKind;

use crate::args::ModelFileArgs;
use crate::failure::{Failure, Outcome};

pub use commands::{run_fetch, run_list, run_path};

/// Where a file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Folder,
    Cache,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Folder => "--models folder",
            Source::Cache => "cache",
        }
    }
}

fn explicit(args: &ModelFileArgs, kind: FileKind) -> Option<&PathBuf> {
    match kind {
        FileKind::Dit => args.dit.as_ref(),
        FileKind::LqProjector => args.lq_proj.as_ref(),
        FileKind::TcDecoder => args.tcdecoder.as_ref(),
        FileKind::WanVae => args.vae.as_ref(),
        FileKind::Prompt => args.prompt.as_ref(),
        FileKind::Unknown => None,
    }
}

/// Where `kind` resolves without downloading anything. A per-file flag is returned even when
/// its file does not exist (opening it then says so).
pub fn resolve(args: &ModelFileArgs, kind: FileKind) -> Option<(PathBuf, Source)> {
    if let Some(p) = explicit(args, kind) {
        return Some((p.clone(), Source::Flag));
    }
    if let Some(dir) = &args.models {
        let p = dir.join(kind.file_name());
        if p.is_file() {
            return Some((p, Source::Folder));
        }
    }
    cache::cached(args.model_ver, kind).map(|p| (p, Source::Cache))
}

/// The command that downloads `kind` for this version.
pub fn fetch_command(args: &ModelFileArgs, kind: FileKind) -> String {
    format!(
        "flashvsr models fetch --model-ver {}{}",
        cache::version_arg(args.model_ver),
        if kind == FileKind::WanVae {
            " --full"
        } else {
            ""
        }
    )
}

/// Where `kind` would be cached.
pub fn cache_location(args: &ModelFileArgs, kind: FileKind) -> PathBuf {
    if kind == FileKind::Prompt {
        cache::prompt_path()
    } else {
        cache::repo_dir(args.model_ver)
    }
}

/// The error for a file found nowhere: where we looked and how to get it.
pub fn missing_message(args: &ModelFileArgs, kind: FileKind) -> String {
    let name = kind.file_name();
    let folder = match &args.models {
        Some(dir) => format!("{}: no such file, and ", dir.join(name).display()),
        None => format!("{name}: "),
    };
    let offline = if cache::offline() {
        " (HF_HUB_OFFLINE is set, so nothing is downloaded)"
    } else {
        ""
    };
    format!(
        "{folder}not in the model cache ({}){offline}. Run `{}` to download it, or pass --models DIR \
         (env FLASHVSR_MODELS) with {name}, or {} FILE",
        cache_location(args, kind).display(),
        fetch_command(args, kind),
        kind.flag()
    )
}

/// Downloads every file of the set `upscale` needs (`full`: with the VAE) that resolves nowhere,
/// unless a `--models` folder was given (then the folder is what the user wants, and a missing
/// file is an error) or `HF_HUB_OFFLINE` is set (an error naming `flashvsr models fetch`).
pub fn ensure(args: &ModelFileArgs, full: bool, quiet: bool) -> Outcome<()> {
    let mut kinds = cache::TINY_SET.to_vec();
    if full {
        kinds.push(FileKind::WanVae);
    }
    let missing: Vec<FileKind> = kinds
        .into_iter()
        .filter(|&k| resolve(args, k).is_none())
        .collect();
    let Some(&first) = missing.first() else {
        return Ok(());
    };
    if args.models.is_some() || cache::offline() {
        return Err(Failure::bad(missing_message(args, first)));
    }
    if !quiet {
        eprintln!(
            "flashvsr: {} model file(s) of FlashVSR v{} not found; downloading them first \
             (set HF_HUB_OFFLINE=1 to never download)",
            missing.len(),
            cache::version_arg(args.model_ver)
        );
    }
    fetch::fetch(args.model_ver, &missing, quiet)?;
    Ok(())
}

/// The path `kind` resolves to, downloading the missing files first where [`ensure`] allows.
pub fn path_for(args: &ModelFileArgs, kind: FileKind) -> Outcome<PathBuf> {
    if let Some((p, _)) = resolve(args, kind) {
        return Ok(p);
    }
    ensure(args, kind == FileKind::WanVae, false)?;
    resolve(args, kind)
        .map(|(p, _)| p)
        .ok_or_else(|| Failure::bad(missing_message(args, kind)))
}

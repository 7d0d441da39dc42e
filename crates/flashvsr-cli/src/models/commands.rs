//! `flashvsr models fetch | path | list`.

use flashvsr_model::identify::FileKind;

use super::cache::{self, ALL, TINY_SET};
use super::fetch;
use super::progress::bytes;
use crate::args::{ModelFileArgs, ModelVersion};
use crate::failure::{Failure, Outcome};

/// `models fetch`: downloads the files of `version` that are not in the cache yet (tiny-mode
/// files; `full` adds Wan2.1_VAE.pth). Status goes to stderr.
pub fn run_fetch(version: ModelVersion, full: bool, quiet: bool) -> Outcome<()> {
    let mut kinds = TINY_SET.to_vec();
    if full {
        kinds.push(FileKind::WanVae);
    }
    let mut missing = Vec::new();
    for kind in kinds {
        match cache::cached(version, kind) {
            Some(p) => {
                if !quiet {
                    eprintln!(
                        "flashvsr: {}: already in the cache: {}",
                        kind.file_name(),
                        p.display()
                    );
                }
            }
            None => missing.push(kind),
        }
    }
    if cache::offline() {
        if missing.is_empty() {
            if !quiet {
                eprintln!(
                    "flashvsr: HF_HUB_OFFLINE is set: using the cache only; every file is there"
                );
            }
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|k| k.file_name()).collect();
        return Err(Failure::bad(format!(
            "HF_HUB_OFFLINE is set: using the cache only, and {} not in it (hub cache {}); \
             unset HF_HUB_OFFLINE to download",
            names.join(", "),
            cache::hub_dir().display()
        )));
    }
    if missing.is_empty() {
        if !quiet {
            eprintln!(
                "flashvsr: FlashVSR v{}: every file is in the cache",
                cache::version_arg(version)
            );
        }
        return Ok(());
    }
    fetch::fetch(version, &missing, quiet)?;
    if !quiet {
        eprintln!(
            "flashvsr: FlashVSR v{}: {} file(s) downloaded; the hub cache is {}",
            cache::version_arg(version),
            missing.len(),
            cache::hub_dir().display()
        );
    }
    Ok(())
}

/// `models path`: one line per file on stdout, `<file>\t<path>\t<where from>` or
/// `<file>\tmissing\t<how to get it>`.
pub fn run_path(args: &ModelFileArgs) -> Outcome<()> {
    for kind in ALL {
        let name = kind.file_name();
        match super::resolve(args, kind) {
            Some((p, source)) => {
                let note = if source == super::Source::Flag && !p.is_file() {
                    " (no such file)"
                } else {
                    ""
                };
                println!("{name}\t{}\t{}{note}", p.display(), source.describe());
            }
            None => {
                let only = if kind == FileKind::WanVae {
                    "full mode only; "
                } else {
                    ""
                };
                println!(
                    "{name}\tmissing\t{only}run `{}`",
                    super::fetch_command(args, kind)
                );
            }
        }
    }
    Ok(())
}

/// `models list`: the versions, their hub repositories, and which files the cache has.
pub fn run_list() -> Outcome<()> {
    println!("hub cache: {}", cache::hub_dir().display());
    println!("hub endpoint: {}", fetch::hub_endpoint());
    for version in [ModelVersion::V1_0, ModelVersion::V1_1] {
        println!(
            "FlashVSR v{} ({}): {}",
            cache::version_arg(version),
            cache::repo_id(version),
            cache::repo_dir(version).display()
        );
        for kind in ALL.into_iter().filter(|&k| cache::on_hub(k)) {
            println!("  {}\t{}", kind.file_name(), state(version, kind));
        }
    }
    println!(
        "prompt ({}): {}",
        fetch::prompt_url(),
        state(ModelVersion::V1_1, FileKind::Prompt)
    );
    Ok(())
}

fn state(version: ModelVersion, kind: FileKind) -> String {
    match cache::cached(version, kind) {
        Some(p) => {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            format!("cached ({}) {}", bytes(size), p.display())
        }
        None => String::from("missing"),
    }
}

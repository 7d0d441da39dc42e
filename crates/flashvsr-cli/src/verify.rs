//! `flashvsr models verify DIR`: what each file is, its version, and any problem.

use std::path::Path;

use flashvsr_model::identify::{identify, FileKind};
use flashvsr_model::weights::WeightFile;
use flashvsr_tensor::cpu::CpuBackend;

use crate::args::{ModelFileArgs, ModelVersion};
use crate::failure::{Failure, Outcome};
use crate::model_files;

const KINDS: [FileKind; 5] = [
    FileKind::Dit,
    FileKind::LqProjector,
    FileKind::TcDecoder,
    FileKind::WanVae,
    FileKind::Prompt,
];

pub fn run(dir: &Path, version: ModelVersion) -> Outcome<()> {
    if !dir.is_dir() {
        return Err(Failure::bad(format!("{}: not a directory", dir.display())));
    }
    let mut problems = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Failure::bad(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match WeightFile::open(path) {
            Ok(file) => {
                let kind = identify(&file);
                let expected_here = KINDS.iter().find(|k| k.file_name() == name);
                let note = match expected_here {
                    Some(k) if *k != kind => {
                        problems += 1;
                        format!(
                            "  PROBLEM: named like {} but contains {kind}",
                            k.file_name()
                        )
                    }
                    _ => String::new(),
                };
                let version = if kind == FileKind::LqProjector {
                    " (v1.0 and v1.1 projectors cannot be told apart by their keys; --model-ver decides)"
                } else {
                    ""
                };
                println!(
                    "{name}: {kind}, {} tensors{version}{note}",
                    file.names().len()
                );
            }
            Err(e) => println!("{name}: not a weight file ({e})"),
        }
    }
    let args = ModelFileArgs {
        models: Some(dir.to_path_buf()),
        dit: None,
        lq_proj: None,
        tcdecoder: None,
        vae: None,
        prompt: None,
        model_ver: version,
    };
    let backend = CpuBackend::new_ref();
    let mut check = |what: &str, result: Outcome<()>| match result {
        Ok(()) => println!("ok: {what}"),
        Err(e) => {
            problems += 1;
            println!("PROBLEM: {what}: {e}");
        }
    };
    let dit = model_files::load_dit(&backend, &args);
    let dim = dit.as_ref().map(|d| d.config.dim).ok();
    check(
        "DiT and prompt load and agree",
        dit.map(|d| {
            println!(
                "DiT: width {}, {} heads, {} layers, FFN {}, text width {}",
                d.config.dim, d.config.heads, d.config.layers, d.config.ffn_dim, d.config.text_dim
            );
        }),
    );
    if let Some(dim) = dim {
        check(
            "LQ projector loads and fits the DiT",
            model_files::load_projector(&backend, &args, dim).map(|_| ()),
        );
    }
    check(
        "TCDecoder loads (tiny modes)",
        model_files::load_tcdecoder(&backend, &args).map(|_| ()),
    );
    if dir.join(FileKind::WanVae.file_name()).exists() {
        check(
            "Wan VAE loads (full mode)",
            model_files::load_vae(&backend, &args).map(|_| ()),
        );
    } else {
        println!(
            "note: no {} (only needed for --mode full)",
            FileKind::WanVae.file_name()
        );
    }
    if problems > 0 {
        return Err(Failure::bad(format!(
            "{}: {problems} problem(s) found",
            dir.display()
        )));
    }
    Ok(())
}

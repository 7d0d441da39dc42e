//! Where model files are looked for and stored (PRODUCT.md §5 "Models, cache and directories").
//!
//! The four weight files live in the Hugging Face hub cache, in the layout that `huggingface_hub`
//! (Python) and `hf-hub` (Rust) share, so files either of them fetched are reused:
//! `<hub>/models--JunhaoZhuang--FlashVSR-v1.1/{blobs/<etag>, refs/main, snapshots/<rev>/<file>}`
//! (`models--JunhaoZhuang--FlashVSR` for v1.0), where `<hub>` is `$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
//!
//! `posi_prompt.pth` is not on the hub. It is kept in the hub's *assets* cache, the place
//! `huggingface_hub.cached_assets_path()` gives libraries for files of their own:
//! `<assets>/flashvsr/OpenImagingLab--FlashVSR/prompt_tensor/posi_prompt.pth`, where `<assets>` is
//! `$HF_ASSETS_CACHE`, else `$HF_HOME/assets` (so `~/.cache/huggingface/assets` by default). The
//! file is the same for v1.0 and v1.1.

use std::path::{Path, PathBuf};

use flashvsr_model::identify::FileKind;

use crate::args::ModelVersion;

/// Files `upscale --mode tiny|tiny-long` needs; `--mode full` also needs [`FileKind::WanVae`].
pub const TINY_SET: [FileKind; 4] = [
    FileKind::Dit,
    FileKind::LqProjector,
    FileKind::TcDecoder,
    FileKind::Prompt,
];

/// All five files, in the order they are listed.
pub const ALL: [FileKind; 5] = [
    FileKind::Dit,
    FileKind::LqProjector,
    FileKind::TcDecoder,
    FileKind::WanVae,
    FileKind::Prompt,
];

/// The Hugging Face repository holding `version`'s weights.
pub fn repo_id(version: ModelVersion) -> &'static str {
    match version {
        ModelVersion::V1_0 => "JunhaoZhuang/FlashVSR",
        ModelVersion::V1_1 => "JunhaoZhuang/FlashVSR-v1.1",
    }
}

/// `1.0` or `1.1`, as typed on the command line.
pub fn version_arg(version: ModelVersion) -> &'static str {
    match version {
        ModelVersion::V1_0 => "1.0",
        ModelVersion::V1_1 => "1.1",
    }
}

/// Whether `kind` is downloaded from the Hugging Face hub (all but the prompt).
pub fn on_hub(kind: FileKind) -> bool {
    !matches!(kind, FileKind::Prompt | FileKind::Unknown)
}

fn env_path(name: &str) -> Option<PathBuf> {
    let value = std::env::var_os(name)?;
    if value.is_empty() {
        return None;
    }
    let text = value.to_string_lossy();
    if let (Some(rest), Some(home)) = (text.strip_prefix("~/"), home_dir()) {
        return Some(home.join(rest));
    }
    if text == "~" {
        return home_dir();
    }
    Some(PathBuf::from(value))
}

fn home_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf())
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (as Python does).
pub fn hf_home() -> PathBuf {
    if let Some(p) = env_path("HF_HOME") {
        return p;
    }
    let cache = env_path("XDG_CACHE_HOME")
        .or_else(|| home_dir().map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("huggingface")
}

/// The hub cache: `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`), else `<HF_HOME>/hub`.
pub fn hub_dir() -> PathBuf {
    env_path("HF_HUB_CACHE")
        .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
        .unwrap_or_else(|| hf_home().join("hub"))
}

/// The assets cache: `$HF_ASSETS_CACHE`, else `<HF_HOME>/assets`.
pub fn assets_dir() -> PathBuf {
    env_path("HF_ASSETS_CACHE").unwrap_or_else(|| hf_home().join("assets"))
}

/// `HF_HUB_OFFLINE` set to 1/on/yes/true (case-insensitive), as `huggingface_hub` reads it.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// `models--JunhaoZhuang--FlashVSR-v1.1` inside the hub cache.
pub fn repo_dir(version: ModelVersion) -> PathBuf {
    hub_dir().join(format!("models--{}", repo_id(version).replace('/', "--")))
}

/// Where the prompt tensor is kept (see the module comment).
pub fn prompt_path() -> PathBuf {
    assets_dir()
        .join("flashvsr")
        .join("OpenImagingLab--FlashVSR")
        .join("prompt_tensor")
        .join(FileKind::Prompt.file_name())
}

/// The cached copy of `kind` for `version`, if there is one.
pub fn cached(version: ModelVersion, kind: FileKind) -> Option<PathBuf> {
    match kind {
        FileKind::Unknown => None,
        FileKind::Prompt => Some(prompt_path()).filter(|p| p.is_file()),
        _ => cached_hub_file(&repo_dir(version), kind.file_name()),
    }
}

/// `snapshots/<refs/main>/<name>`, else the newest other snapshot that has `name` (Python may
/// have fetched an older revision). Dangling links do not count.
pub fn cached_hub_file(repo: &Path, name: &str) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let p = snapshots.join(rev.trim()).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(name))
        .filter(|p| p.is_file())
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

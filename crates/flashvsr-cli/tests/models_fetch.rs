//! `flashvsr models fetch` and the model cache, against a loopback server that answers like the
//! Hugging Face hub (tests/hub_server.rs): files land in the hub cache layout, an interrupted
//! download resumes with a Range request, a checksum mismatch is refused, and HF_HUB_OFFLINE uses
//! the cache without touching the network.

mod cli_support;
mod hub_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cli_support::{golden_models, stderr, write_png_rgb8};
use hub_server::{HubServer, COMMIT};
use sha1::{Digest, Sha1};

const REPO: &str = "JunhaoZhuang/FlashVSR-v1.1";
const DIT: &str = "diffusion_pytorch_model_streaming_dmd.safetensors";
const HUB_TINY: [&str; 3] = [DIT, "LQ_proj_in.ckpt", "TCDecoder.ckpt"];
const VAE: &str = "Wan2.1_VAE.pth";
const PROMPT: &str = "posi_prompt.pth";

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(golden_models().join(name)).unwrap()
}

fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A server with the golden small v1.1 files, and a temporary HF_HOME.
struct Setup {
    server: HubServer,
    home: tempfile::TempDir,
    shas: std::collections::HashMap<&'static str, String>,
}

impl Setup {
    fn new() -> Setup {
        let server = HubServer::start();
        let mut shas = std::collections::HashMap::new();
        for name in HUB_TINY.into_iter().chain([VAE]) {
            shas.insert(name, server.add_hub_file(REPO, name, golden(name)));
        }
        server.add_prompt(PROMPT, golden(PROMPT));
        Setup {
            server,
            home: tempfile::tempdir().unwrap(),
            shas,
        }
    }

    fn hf_home(&self) -> PathBuf {
        self.home.path().join("hf")
    }

    fn repo_dir(&self) -> PathBuf {
        self.hf_home()
            .join("hub")
            .join("models--JunhaoZhuang--FlashVSR-v1.1")
    }

    fn prompt_path(&self) -> PathBuf {
        self.hf_home()
            .join("assets/flashvsr/OpenImagingLab--FlashVSR/prompt_tensor")
            .join(PROMPT)
    }

    /// The binary with the environment pointed at the server and the temporary cache only.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flashvsr"));
        c.args(args)
            .env("HF_HOME", self.hf_home())
            .env("HF_ENDPOINT", self.server.endpoint())
            .env("FLASHVSR_PROMPT_ENDPOINT", self.server.prompt_endpoint())
            .env("FLASHVSR_PROMPT_SHA1", git_blob_sha1(&golden(PROMPT)));
        for var in [
            "FLASHVSR_MODELS",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_ASSETS_CACHE",
            "HF_HUB_OFFLINE",
            "HF_TOKEN",
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            c.env_remove(var);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run flashvsr")
    }

    fn run_offline(&self, args: &[&str]) -> Output {
        self.command(args)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run flashvsr")
    }

    fn snapshot(&self, name: &str) -> PathBuf {
        self.repo_dir().join("snapshots").join(COMMIT).join(name)
    }

    fn blob(&self, name: &str) -> PathBuf {
        self.repo_dir().join("blobs").join(&self.shas[name])
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        stderr(out)
    );
}

fn one_frame(dir: &Path) -> PathBuf {
    let input = dir.join("in.png");
    write_png_rgb8(&input, 16, 16, &[128; 16 * 16 * 3]);
    input
}

#[test]
fn fetch_fills_the_hub_cache_layout() {
    let s = Setup::new();
    let out = s.run(&["models", "fetch", "--model-ver", "1.1"]);
    assert_ok(&out);
    assert_eq!(
        std::fs::read_to_string(s.repo_dir().join("refs/main")).unwrap(),
        COMMIT
    );
    for name in HUB_TINY {
        let link = s.snapshot(name);
        // snapshots/<rev>/<file> is a relative link to blobs/<sha256>, as Python writes it.
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.is_relative(), "{}", target.display());
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(s.blob(name)).unwrap()
        );
        assert_eq!(std::fs::read(&link).unwrap(), golden(name), "{name}");
    }
    assert!(
        !s.snapshot(VAE).exists(),
        "the VAE is fetched with --full only"
    );
    assert_eq!(std::fs::read(s.prompt_path()).unwrap(), golden(PROMPT));

    // `models path` resolves every tiny-mode file from the cache; the VAE is missing.
    let out = s.run(&["models", "path"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in HUB_TINY {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line.contains(s.snapshot(name).to_str().unwrap()), "{text}");
    }
    let vae = text.lines().find(|l| l.starts_with(VAE)).unwrap();
    assert!(
        vae.contains("missing") && vae.contains("flashvsr models fetch --model-ver 1.1 --full"),
        "{text}"
    );

    // Fetching again downloads nothing; --full adds only the VAE.
    s.server.clear_log();
    assert_ok(&s.run(&["models", "fetch"]));
    assert!(s.server.log().is_empty(), "{:?}", s.server.log());
    assert_ok(&s.run(&["models", "fetch", "--full"]));
    assert_eq!(std::fs::read(s.snapshot(VAE)).unwrap(), golden(VAE));
    assert!(
        s.server.log().iter().all(|r| !r.path.contains(DIT)),
        "{:?}",
        s.server.log()
    );
}

/// A `Range: bytes=N-` request with N > 0 for a path containing `needle`.
fn resumed_at(s: &Setup, needle: &str) -> Option<usize> {
    s.server.log().iter().find_map(|r| {
        let start: usize = r
            .range
            .as_deref()?
            .strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse()
            .ok()?;
        (r.path.contains(needle) && start > 0).then_some(start)
    })
}

#[test]
fn a_cut_download_resumes_with_a_range_request() {
    let s = Setup::new();
    let dit_sha = s.shas[DIT].clone();
    s.server.cut_next(&dit_sha);
    s.server.cut_next(PROMPT);
    let out = s.run(&["models", "fetch"]);
    assert_ok(&out);
    let half = golden(DIT).len() / 2;
    assert_eq!(
        resumed_at(&s, &dit_sha),
        Some(half),
        "{:?}\n{}",
        s.server.log(),
        stderr(&out)
    );
    assert_eq!(resumed_at(&s, PROMPT), Some(golden(PROMPT).len() / 2));
    assert_eq!(std::fs::read(s.snapshot(DIT)).unwrap(), golden(DIT));
    assert_eq!(std::fs::read(s.prompt_path()).unwrap(), golden(PROMPT));
}

#[test]
fn a_partial_file_from_an_earlier_run_is_continued() {
    let s = Setup::new();
    // What a killed run leaves behind: the first part of each file, next to where it goes.
    let dit = golden(DIT);
    let part = s
        .repo_dir()
        .join("blobs")
        .join(format!("{}.part", s.shas[DIT]));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &dit[..1000]).unwrap();
    let prompt = golden(PROMPT);
    let prompt_part = s.prompt_path().with_extension("pth.part");
    std::fs::create_dir_all(prompt_part.parent().unwrap()).unwrap();
    std::fs::write(&prompt_part, &prompt[..777]).unwrap();

    let out = s.run(&["models", "fetch"]);
    assert_ok(&out);
    assert_eq!(
        resumed_at(&s, &s.shas[DIT]),
        Some(1000),
        "{:?}",
        s.server.log()
    );
    assert_eq!(resumed_at(&s, PROMPT), Some(777));
    assert_eq!(std::fs::read(s.snapshot(DIT)).unwrap(), dit);
    assert_eq!(std::fs::read(s.prompt_path()).unwrap(), prompt);
    assert!(!part.exists() && !prompt_part.exists());
}

#[test]
fn a_checksum_mismatch_is_refused() {
    let s = Setup::new();
    s.server.corrupt(&s.shas[DIT], true);
    let out = s.run(&["models", "fetch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains("checksum mismatch") && msg.contains(DIT),
        "{msg}"
    );
    assert!(!s.snapshot(DIT).exists(), "no file left in snapshots");
    assert!(!s.blob(DIT).exists(), "no blob left");

    // The prompt is checked against its git blob SHA-1.
    s.server.corrupt(&s.shas[DIT], false);
    let out = s
        .command(&["models", "fetch"])
        .env(
            "FLASHVSR_PROMPT_SHA1",
            "95c840b20b8d6aa0d16504ee04e49f1c01a7f209",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    assert!(!s.prompt_path().exists());
    assert!(!s.prompt_path().with_extension("pth.part").exists());
    // The hub files that passed their check stay.
    assert_eq!(std::fs::read(s.snapshot(DIT)).unwrap(), golden(DIT));
}

#[test]
fn offline_uses_the_cache_and_never_the_network() {
    let s = Setup::new();
    let tmp = tempfile::tempdir().unwrap();
    let input = one_frame(tmp.path());

    // Empty cache, offline: a usage error naming the fetch command, and no request.
    let out = s.run_offline(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o1").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("flashvsr models fetch --model-ver 1.1"),
        "{}",
        stderr(&out)
    );
    let out = s.run_offline(&["models", "fetch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("HF_HUB_OFFLINE"), "{}", stderr(&out));
    assert!(s.server.log().is_empty(), "{:?}", s.server.log());

    // Populated cache, offline: upscale runs from the cache alone.
    assert_ok(&s.run(&["models", "fetch"]));
    s.server.clear_log();
    let out = s.run_offline(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o2").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_ok(&out);
    assert!(tmp.path().join("o2").exists());
    let out = s.run_offline(&["models", "fetch"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("HF_HUB_OFFLINE"), "{}", stderr(&out));
    assert!(s.server.log().is_empty(), "{:?}", s.server.log());
}

#[test]
fn upscale_fetches_missing_files_first() {
    let s = Setup::new();
    let tmp = tempfile::tempdir().unwrap();
    let input = one_frame(tmp.path());
    let out = s.run(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_ok(&out);
    let msg = stderr(&out);
    assert!(msg.contains("downloading") && msg.contains(DIT), "{msg}");
    for name in HUB_TINY {
        assert_eq!(std::fs::read(s.snapshot(name)).unwrap(), golden(name));
    }
    assert!(
        !s.snapshot(VAE).exists(),
        "tiny mode does not fetch the VAE"
    );

    // A --models folder is taken as given: nothing is fetched for it.
    s.server.clear_log();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = s.run(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o3").to_str().unwrap(),
        "--device",
        "cpu",
        "--mode",
        "full",
        "--models",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("flashvsr models fetch --model-ver 1.1 --full"),
        "{}",
        stderr(&out)
    );
    assert!(s.server.log().is_empty(), "{:?}", s.server.log());
}

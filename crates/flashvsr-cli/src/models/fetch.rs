//! Downloading the official files: the four weight files from the Hugging Face hub with `hf-hub`
//! (into the shared hub cache), `posi_prompt.pth` from the official code repository with `ureq`.
//!
//! Both resume: an interrupted download leaves `<file>.part` (hub: `blobs/<etag>.part`), which the
//! next attempt — a retry in the same run, or the next run — continues with an HTTP `Range`
//! request. Both are checked before use: `hf-hub` 0.5 verifies nothing itself, so a hub file is
//! checked against its ETag (the LFS SHA-256 for LFS files, the git blob SHA-1 otherwise) and the
//! prompt against its git blob SHA-1. A file that fails the check is deleted and the run fails
//! (exit 1).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flashvsr_model::identify::FileKind;
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::cache;
use super::progress::{bytes, Meter};
use crate::args::ModelVersion;
use crate::failure::{Failure, Outcome};

/// Git blob id of the official `posi_prompt.pth` (spec FLASHVSR_WEIGHTS.md §1): SHA-1 of
/// `"blob <len>\0" + bytes`, the same in all three reference repositories.
pub const PROMPT_GIT_BLOB_SHA1: &str = "95c840b20b8d6aa0d16504ee04e49f1c01a7f209";

/// Where `posi_prompt.pth` is fetched from; `FLASHVSR_PROMPT_ENDPOINT` overrides it.
pub const DEFAULT_PROMPT_ENDPOINT: &str =
    "https://raw.githubusercontent.com/OpenImagingLab/FlashVSR/main/examples/WanVSR/prompt_tensor/";

const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";

/// Retries after a failed attempt, within one run (each resumes where the last one stopped).
const RETRIES: usize = 3;

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `$HF_ENDPOINT` (a mirror such as https://hf-mirror.com), else https://huggingface.co.
pub fn hub_endpoint() -> String {
    env_nonempty("HF_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.to_string())
}

/// The URL `posi_prompt.pth` is fetched from.
pub fn prompt_url() -> String {
    let base = env_nonempty("FLASHVSR_PROMPT_ENDPOINT")
        .unwrap_or_else(|| DEFAULT_PROMPT_ENDPOINT.to_string());
    let sep = if base.ends_with('/') { "" } else { "/" };
    format!("{base}{sep}{}", FileKind::Prompt.file_name())
}

/// The expected git blob SHA-1 of the prompt; `FLASHVSR_PROMPT_SHA1` overrides it (tests).
fn expected_prompt_sha1() -> String {
    env_nonempty("FLASHVSR_PROMPT_SHA1")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| PROMPT_GIT_BLOB_SHA1.to_string())
}

/// Downloads `kinds` of `version` into the cache; returns where each one landed.
pub fn fetch(version: ModelVersion, kinds: &[FileKind], quiet: bool) -> Outcome<Vec<PathBuf>> {
    if cache::offline() {
        let names: Vec<&str> = kinds.iter().map(|k| k.file_name()).collect();
        return Err(Failure::bad(format!(
            "HF_HUB_OFFLINE is set: using the cache only, and {} not in it; unset HF_HUB_OFFLINE \
             and run `flashvsr models fetch --model-ver {}` to download",
            names.join(", "),
            cache::version_arg(version)
        )));
    }
    let mut api = None;
    let mut paths = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let path = if kind == FileKind::Prompt {
            fetch_prompt(quiet)?
        } else {
            if api.is_none() {
                api = Some(hub_api()?);
            }
            fetch_hub(api.as_ref().expect("built above"), version, kind, quiet)?
        };
        paths.push(path);
    }
    Ok(paths)
}

fn hub_api() -> Outcome<Api> {
    let mut builder = ApiBuilder::from_cache(Cache::new(cache::hub_dir()))
        .with_endpoint(hub_endpoint())
        .with_progress(false)
        .with_retries(RETRIES)
        .with_user_agent("flashvsr", env!("CARGO_PKG_VERSION"));
    if let Some(token) = env_nonempty("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    builder
        .build()
        .map_err(|e| Failure::failed(format!("cannot set up the Hugging Face client: {e}")))
}

fn hub_error(name: &str, url: &str, e: ApiError) -> Failure {
    let hint = match &e {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::StatusCode(401 | 403) => {
                " (access denied: set HF_TOKEN if the repository needs a login)"
            }
            ureq::Error::StatusCode(404) => " (not found: check HF_ENDPOINT and --model-ver)",
            _ => "",
        },
        ApiError::MissingHeader(_) | ApiError::InvalidHeader(_) => {
            " (is HF_ENDPOINT a Hugging Face hub or mirror?)"
        }
        ApiError::LockAcquisition(_) => " (another process is downloading this file)",
        _ => "",
    };
    Failure::failed(format!(
        "{name}: download from {url} failed: {e}{hint}. Run the same command again (a partial \
         download resumes where it stopped)"
    ))
}

/// What a hub ETag lets us check.
enum Expected {
    Sha256(String),
    GitBlobSha1(String),
    Nothing,
}

fn expected_from_etag(etag: &str) -> Expected {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    let hex = etag.chars().all(|c| c.is_ascii_hexdigit());
    match etag.len() {
        64 if hex => Expected::Sha256(etag.to_ascii_lowercase()),
        40 if hex => Expected::GitBlobSha1(etag.to_ascii_lowercase()),
        _ => Expected::Nothing,
    }
}

fn fetch_hub(api: &Api, version: ModelVersion, kind: FileKind, quiet: bool) -> Outcome<PathBuf> {
    let name = kind.file_name();
    let repo = Repo::model(cache::repo_id(version).to_string());
    let api_repo = api.repo(repo.clone());
    let url = api_repo.url(name);
    let meta = api.metadata(&url).map_err(|e| hub_error(name, &url, e))?;
    let etag = meta.etag().to_string();
    let blob = Cache::new(cache::hub_dir()).repo(repo).blob_path(&etag);
    let part = blob.with_extension("part");
    if !quiet {
        let resume = match std::fs::metadata(&part) {
            Ok(m) if m.len() > 0 => format!(", resuming at {}", bytes(m.len())),
            _ => String::new(),
        };
        eprintln!(
            "flashvsr: downloading {name} ({}{resume}) from {url}",
            bytes(meta.size() as u64)
        );
    }
    let path = api_repo
        .download_with_progress(name, Meter::new(name, quiet))
        .map_err(|e| hub_error(name, &url, e))?;
    let check = match expected_from_etag(&etag) {
        Expected::Sha256(want) => Some(("SHA-256", want, sha256_file(&path)?)),
        Expected::GitBlobSha1(want) => Some(("git blob SHA-1", want, git_blob_sha1(&path)?)),
        Expected::Nothing => None,
    };
    match check {
        Some((what, want, got)) if want != got => {
            // Neither the snapshot link nor the blob may stay: the next run would use them.
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&blob);
            Err(Failure::failed(format!(
                "{name}: checksum mismatch: the hub says {what} {want}, the download has {got}. \
                 The file was deleted; run the command again (check HF_ENDPOINT if it keeps \
                 failing)"
            )))
        }
        Some((what, _, _)) => {
            if !quiet {
                eprintln!("flashvsr: {name}: {what} ok, saved as {}", path.display());
            }
            Ok(path)
        }
        None => {
            eprintln!(
                "flashvsr: warning: {name}: the server sent no checksum (ETag {etag:?}); the \
                 file was not verified"
            );
            Ok(path)
        }
    }
}

/// Outcome of one download attempt of the prompt.
enum Attempt {
    Retry(String),
    Fatal(String),
}

fn fetch_prompt(quiet: bool) -> Outcome<PathBuf> {
    let name = FileKind::Prompt.file_name();
    let dest = cache::prompt_path();
    let dir = dest.parent().expect("prompt path has a folder");
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::failed(format!("cannot create {}: {e}", dir.display())))?;
    let part = dir.join(format!("{name}.part"));
    let url = prompt_url();
    if !quiet {
        let resume = match std::fs::metadata(&part) {
            Ok(m) if m.len() > 0 => format!(" (resuming at {})", bytes(m.len())),
            _ => String::new(),
        };
        eprintln!("flashvsr: downloading {name}{resume} from {url}");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(format!("flashvsr/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut meter = Meter::new(name, quiet);
    let mut attempt = 0;
    loop {
        match download_resuming(&agent, &url, &part, &mut meter) {
            Ok(()) => break,
            Err(Attempt::Fatal(msg)) => return Err(Failure::failed(format!("{name}: {msg}"))),
            Err(Attempt::Retry(msg)) => {
                attempt += 1;
                if attempt > RETRIES {
                    return Err(Failure::failed(format!(
                        "{name}: {msg}. Run the same command again: the download resumes where \
                         it stopped"
                    )));
                }
                meter.end();
                if !quiet {
                    eprintln!("flashvsr: {name}: {msg}; retrying");
                }
                std::thread::sleep(Duration::from_millis(300 * attempt as u64));
            }
        }
    }
    meter.end();
    let want = expected_prompt_sha1();
    let got = git_blob_sha1(&part)?;
    if got != want {
        let _ = std::fs::remove_file(&part);
        return Err(Failure::failed(format!(
            "{name}: checksum mismatch: expected git blob SHA-1 {want}, the download from {url} \
             has {got}. The file was deleted"
        )));
    }
    std::fs::rename(&part, &dest)
        .map_err(|e| Failure::failed(format!("cannot move into {}: {e}", dest.display())))?;
    if !quiet {
        eprintln!(
            "flashvsr: {name}: git blob SHA-1 ok, saved as {}",
            dest.display()
        );
    }
    Ok(dest)
}

fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `Content-Range: bytes <start>-<end>/<total>` → (start, total).
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// One attempt: continues `part` with a `Range` request when it has bytes already.
fn download_resuming(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    meter: &mut Meter,
) -> Result<(), Attempt> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request
        .call()
        .map_err(|e| Attempt::Retry(format!("{url}: {e}")))?;
    let status = response.status().as_u16();
    let length: Option<u64> = header(&response, "content-length").and_then(|v| v.parse().ok());
    let io = |e: std::io::Error| Attempt::Fatal(format!("{}: {e}", part.display()));
    let (mut file, start, total) = match status {
        206 if have > 0 => {
            let range = header(&response, "content-range").and_then(content_range);
            match range {
                Some((start, total)) if start == have => {
                    let file = OpenOptions::new().append(true).open(part).map_err(io)?;
                    (file, have, total.or(length.map(|l| l + have)))
                }
                _ => {
                    // The server answered another range than asked: start over.
                    let _ = std::fs::remove_file(part);
                    return Err(Attempt::Retry(format!(
                        "{url}: unexpected Content-Range {:?}",
                        header(&response, "content-range")
                    )));
                }
            }
        }
        // A full answer (the server ignored Range, or we asked for no range): start over.
        200 => (File::create(part).map_err(io)?, 0, length),
        // Nothing left to fetch: the part file is complete (the checksum tells).
        416 if have > 0 => return Ok(()),
        408 | 429 | 500..=599 => return Err(Attempt::Retry(format!("{url}: HTTP {status}"))),
        _ => {
            return Err(Attempt::Fatal(format!(
                "{url}: HTTP {status} (FLASHVSR_PROMPT_ENDPOINT sets the base URL)"
            )))
        }
    };
    meter.start(total.unwrap_or(0), start);
    let mut reader = response.into_body().into_reader();
    let mut written = start;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(Attempt::Retry(format!(
                    "connection lost after {}: {e}",
                    bytes(written)
                )));
            }
        };
        file.write_all(&buf[..n]).map_err(io)?;
        written += n as u64;
        meter.advance(n as u64);
    }
    file.flush().map_err(io)?;
    match total {
        Some(t) if written < t => Err(Attempt::Retry(format!(
            "connection lost after {} of {}",
            bytes(written),
            bytes(t)
        ))),
        _ => Ok(()),
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_file(path: &Path, mut update: impl FnMut(&[u8])) -> Outcome<()> {
    let fail = |e: std::io::Error| Failure::failed(format!("{}: cannot read: {e}", path.display()));
    let mut file = File::open(path).map_err(fail)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            return Ok(());
        }
        update(&buf[..n]);
    }
}

/// SHA-256 of a file: what the hub lists as an LFS file's oid and sends as its ETag.
pub fn sha256_file(path: &Path) -> Outcome<String> {
    let mut h = Sha256::new();
    hash_file(path, |b| h.update(b))?;
    Ok(hex(&h.finalize()))
}

/// Git blob id of a file: SHA-1 of `"blob <len>\0"` followed by the bytes.
pub fn git_blob_sha1(path: &Path) -> Outcome<String> {
    let len = std::fs::metadata(path)
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?
        .len();
    let mut h = Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    hash_file(path, |b| h.update(b))?;
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_tell_what_to_check() {
        let sha = "a".repeat(64);
        assert!(
            matches!(expected_from_etag(&format!("\"{sha}\"")), Expected::Sha256(s) if s == sha)
        );
        let sha1 = "b".repeat(40);
        assert!(
            matches!(expected_from_etag(&format!("W/\"{sha1}\"")), Expected::GitBlobSha1(s) if s == sha1)
        );
        assert!(matches!(expected_from_etag("xyz"), Expected::Nothing));
    }

    #[test]
    fn git_blob_id_matches_git() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `echo hello | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1(&p).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            sha256_file(&p).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(content_range("bytes 10-99/100"), Some((10, Some(100))));
        assert_eq!(content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(content_range("nonsense"), None);
    }
}

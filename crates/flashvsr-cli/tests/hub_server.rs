//! A loopback HTTP server (127.0.0.1 only) that answers like the Hugging Face hub for a few files,
//! and serves the prompt tensor like the code repository, for the `models fetch` tests.
//!
//! Hub layout: `GET /{repo}/resolve/{revision}/{file}` answers `302` to `/cdn/{sha256}` with the
//! headers `hf-hub` reads (`x-repo-commit`, `x-linked-etag`, `x-linked-size`, `etag`), as the real
//! hub does for LFS files; `/cdn/{sha256}` and `/prompt/{file}` serve the bytes with `Range`
//! support (`206` + `Content-Range`). Every request is logged. A file can be set to have its next
//! body cut half-way (the connection is closed), or to be served corrupted under its true ETag.
//! The server stops when dropped, and on its own after two minutes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The commit id the fake hub reports for every repository.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
}

struct Entry {
    bytes: Vec<u8>,
    sha256: String,
    cut_next: bool,
    corrupt: bool,
}

#[derive(Default)]
struct State {
    /// `/{repo}/resolve/main/{file}` → sha256; the bytes are in `blobs`.
    hub: HashMap<String, String>,
    /// sha256 or prompt file name → entry.
    blobs: HashMap<String, Entry>,
    log: Vec<Logged>,
}

pub struct HubServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl HubServer {
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, addr, state, stop))
        };
        HubServer {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `HF_ENDPOINT` for this server.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `FLASHVSR_PROMPT_ENDPOINT` for this server.
    pub fn prompt_endpoint(&self) -> String {
        format!("http://{}/prompt/", self.addr)
    }

    /// Serves `bytes` as `file` of hub repository `repo` (e.g. `JunhaoZhuang/FlashVSR-v1.1`).
    pub fn add_hub_file(&self, repo: &str, file: &str, bytes: Vec<u8>) -> String {
        let sha = sha256_hex(&bytes);
        let mut s = self.state.lock().unwrap();
        s.hub
            .insert(format!("/{repo}/resolve/main/{file}"), sha.clone());
        s.blobs.insert(
            sha.clone(),
            Entry {
                bytes,
                sha256: sha.clone(),
                cut_next: false,
                corrupt: false,
            },
        );
        sha
    }

    /// Serves `bytes` at `/prompt/{file}`.
    pub fn add_prompt(&self, file: &str, bytes: Vec<u8>) {
        let sha = sha256_hex(&bytes);
        self.state.lock().unwrap().blobs.insert(
            file.to_string(),
            Entry {
                bytes,
                sha256: sha,
                cut_next: false,
                corrupt: false,
            },
        );
    }

    /// The next response with more than one byte of `key` (a sha256 or the prompt file name)
    /// stops half-way through the body and closes the connection.
    pub fn cut_next(&self, key: &str) {
        self.state
            .lock()
            .unwrap()
            .blobs
            .get_mut(key)
            .unwrap()
            .cut_next = true;
    }

    /// Serve `key` with one byte flipped, under its true ETag.
    pub fn corrupt(&self, key: &str, on: bool) {
        self.state
            .lock()
            .unwrap()
            .blobs
            .get_mut(key)
            .unwrap()
            .corrupt = on;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, addr: SocketAddr, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                // One request per connection, handled here: the clients are sequential.
                let _ = handle(stream, addr, &state);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
}

fn handle(stream: TcpStream, addr: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let mut out = stream;
    let mut s = state.lock().unwrap();
    s.log.push(Logged {
        path: path.clone(),
        range: range.clone(),
    });
    if method != "GET" {
        return respond(&mut out, "405 Method Not Allowed", &[], b"");
    }
    if let Some(sha) = s.hub.get(&path).cloned() {
        let size = s.blobs[&sha].bytes.len();
        let location = format!("http://{addr}/cdn/{sha}");
        return respond(
            &mut out,
            "302 Found",
            &[
                ("Location", location),
                ("x-repo-commit", COMMIT.to_string()),
                ("x-linked-etag", format!("\"{sha}\"")),
                ("x-linked-size", size.to_string()),
                (
                    "etag",
                    "\"0000000000000000000000000000000000000000\"".to_string(),
                ),
            ],
            b"",
        );
    }
    let key = path
        .strip_prefix("/cdn/")
        .or_else(|| path.strip_prefix("/prompt/"))
        .unwrap_or("");
    let Some(entry) = s.blobs.get_mut(key) else {
        return respond(&mut out, "404 Not Found", &[], b"not found");
    };
    let mut bytes = entry.bytes.clone();
    if entry.corrupt {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
    let total = bytes.len();
    let (start, end) = match range.as_deref().and_then(parse_range) {
        Some((a, _)) if a >= total => {
            return respond(
                &mut out,
                "416 Range Not Satisfiable",
                &[("Content-Range", format!("bytes */{total}"))],
                b"",
            );
        }
        Some((a, b)) => (a, b.unwrap_or(total - 1).min(total - 1)),
        None => (0, total - 1),
    };
    let body = &bytes[start..=end];
    let cut = entry.cut_next && body.len() > 1;
    if cut {
        entry.cut_next = false;
    }
    let etag = format!("\"{}\"", entry.sha256);
    drop(s);
    let mut headers = vec![("etag", etag), ("Accept-Ranges", "bytes".to_string())];
    let status = if range.is_some() {
        headers.push(("Content-Range", format!("bytes {start}-{end}/{total}")));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    if cut {
        // Promise the whole body, send half, hang up.
        write_head(&mut out, status, &headers, body.len())?;
        out.write_all(&body[..body.len() / 2])?;
        out.flush()?;
        return out.shutdown(std::net::Shutdown::Both);
    }
    respond(&mut out, status, &headers, body)
}

fn parse_range(value: &str) -> Option<(usize, Option<usize>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((a, b))
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    out.write_all(body)?;
    out.flush()
}

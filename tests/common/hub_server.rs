//! A Hugging Face Hub stand-in on 127.0.0.1 for the download tests, speaking
//! the parts of the resolve protocol hf-hub relies on, as the Hub does for an
//! LFS file:
//! - `GET /{org}/{name}/resolve/{revision}/{file}` answers 302 with an absolute
//!   `Location` on the "CDN", `x-repo-commit`, `x-linked-etag` (the SHA-256)
//!   and `x-linked-size`; unknown repos/files are 404.
//! - `GET /cdn/{sha256}` serves the bytes, honouring `Range: bytes=a-` and
//!   `bytes=a-b` with 206 and `Content-Range`.
//!
//! - With `Faults::small`, files are served as the Hub serves small files in
//!   git: straight from the resolve URL (200/206), `ETag` = the git blob SHA-1.
//!
//! Faults for the tests: drop the connection after some bytes of a body, stall
//! mid-body, serve bytes that do not match the etag, ignore `Range`, and the
//! hostile answers of `Faults` (headers naming paths, longer or encoded
//! bodies, redirect loops and redirects elsewhere, Hub error codes).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
pub struct Faults {
    /// The first this-many body responses close the connection halfway.
    pub drop_bodies: AtomicUsize,
    /// Body responses stop sending after half the bytes and hold the socket.
    pub stall: AtomicBool,
    /// Serve other bytes than the etag promises (same length).
    pub corrupt: AtomicBool,
    /// Answer range requests with 200 and the whole file.
    pub ignore_range: AtomicBool,
    /// Pause between 64 KB chunks of a body, in milliseconds.
    pub throttle_ms: AtomicUsize,
    /// Serve files as small git files (no LFS headers, git SHA-1 etag).
    pub small: AtomicBool,
    /// Replace a resolve answer's header value: (header, value).
    pub header: Mutex<Option<(String, String)>>,
    /// Bodies: 1 = announce (Content-Length) 1000 bytes more than the file and
    /// send them; 2 = no Content-Length, send 1000 bytes more, then close.
    pub longer_body: AtomicUsize,
    /// Bodies: `Content-Encoding: gzip`, the bytes a gzip bomb would send.
    pub gzip: AtomicBool,
    /// Resolve answers redirect in a loop: 1 = absolute URLs, 2 = relative.
    pub redirect_loop: AtomicUsize,
    /// Resolve answers first redirect (307, no metadata) to this relative
    /// Location, which is then served as the file's resolve URL.
    pub renamed_to: Mutex<Option<String>>,
    /// The Location of the resolve answer's redirect to the CDN.
    pub cdn_location: Mutex<Option<String>>,
    /// Unknown repos/files: 401 with `X-Error-Code: RepoNotFound` (as the Hub
    /// answers anonymous clients) instead of 404.
    pub hub_401: AtomicBool,
    /// Every resolve request: 401 with `X-Error-Code: GatedRepo`.
    pub gated: AtomicBool,
}

/// One request as the server saw it: path and `Range` header.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub host: Option<String>,
    pub accept_encoding: Option<String>,
    pub at: Instant,
}

pub struct HubServer {
    pub endpoint: String,
    pub faults: Arc<Faults>,
    log: Arc<Mutex<Vec<Seen>>>,
    files: Arc<HashMap<String, Vec<u8>>>,
}

impl HubServer {
    /// Serves `files` (path inside `repo` → bytes) for `repo` at `main`.
    pub fn start(repo: &str, files: &[(&str, Vec<u8>)]) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let files: HashMap<String, Vec<u8>> =
            files.iter().map(|(name, bytes)| (format!("/{repo}/resolve/main/{name}"), bytes.clone())).collect();
        let server = HubServer {
            endpoint: endpoint.clone(),
            faults: Arc::new(Faults::default()),
            log: Arc::new(Mutex::new(Vec::new())),
            files: Arc::new(files),
        };
        let (faults, log, files) = (server.faults.clone(), server.log.clone(), server.files.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (faults, log, files, endpoint) = (faults.clone(), log.clone(), files.clone(), endpoint.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &faults, &log, &files, &endpoint);
                });
            }
        });
        server
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The `Range` starts of the CDN (body) requests, in order.
    pub fn body_range_starts(&self) -> Vec<u64> {
        self.requests()
            .iter()
            .filter(|s| s.path.starts_with("/cdn/"))
            .filter_map(|s| s.range.as_deref().and_then(|r| r.strip_prefix("bytes=")).map(str::to_string))
            .filter(|r| r != "0-0")
            .map(|r| r.split('-').next().unwrap().parse().unwrap())
            .collect()
    }
}

/// The git blob SHA-1: the Hub's etag for a small (non-LFS) file.
pub fn git_sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    format!("{:x}", h.finalize())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn serve(
    stream: TcpStream,
    faults: &Faults,
    log: &Mutex<Vec<Seen>>,
    files: &HashMap<String, Vec<u8>>,
    endpoint: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    // Keep-alive: ureq reuses connections.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        let (mut authorization, mut host, mut accept_encoding) = (None, None, None);
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let v = Some(v.trim().to_string());
                match k.to_ascii_lowercase().as_str() {
                    "range" => range = v,
                    "authorization" => authorization = v,
                    "host" => host = v,
                    "accept-encoding" => accept_encoding = v,
                    _ => {}
                }
            }
        }
        log.lock().unwrap().push(Seen {
            path: path.clone(),
            range: range.clone(),
            authorization,
            host,
            accept_encoding,
            at: Instant::now(),
        });

        let resolve = path.contains("/resolve/");
        if resolve && faults.gated.load(Ordering::SeqCst) {
            write!(out, "HTTP/1.1 401 Unauthorized\r\nX-Error-Code: GatedRepo\r\nContent-Length: 5\r\n\r\ngated")?;
            continue;
        }
        let looping = faults.redirect_loop.load(Ordering::SeqCst);
        if looping > 0 && (resolve || path.starts_with("/loop/")) {
            let n: u64 = path.strip_prefix("/loop/").and_then(|n| n.parse().ok()).unwrap_or(0) + 1;
            let location = if looping == 1 { format!("{endpoint}/loop/{n}") } else { format!("/loop/{n}") };
            write!(out, "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let renamed = faults.renamed_to.lock().unwrap().clone();
        if let Some(to) = renamed.as_deref() {
            if resolve && !path.starts_with("/renamed/") {
                write!(out, "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            }
        }
        // A renamed repo's resolve path serves the one file there is.
        let file = if path.starts_with("/renamed/") { files.values().next() } else { files.get(&path) };
        if let Some(bytes) = file.filter(|_| resolve) {
            if faults.small.load(Ordering::SeqCst) {
                let etag = faults.header.lock().unwrap().clone().filter(|(k, _)| k == "etag").map(|(_, v)| v);
                let etag = etag.unwrap_or_else(|| format!("\"{}\"", git_sha1_hex(bytes)));
                let commit =
                    faults.header.lock().unwrap().clone().filter(|(k, _)| k == "x-repo-commit").map(|(_, v)| v);
                let commit = commit.unwrap_or_else(|| COMMIT.to_string());
                let body = serve_body(
                    &mut out,
                    faults,
                    bytes,
                    range.as_deref(),
                    &format!("ETag: {etag}\r\nx-repo-commit: {commit}\r\n"),
                )?;
                if !body {
                    return Ok(());
                }
                continue;
            }
            let sha = sha256_hex(bytes);
            let mut headers = vec![
                ("Location".to_string(), format!("{endpoint}/cdn/{sha}")),
                ("x-repo-commit".to_string(), COMMIT.to_string()),
                ("x-linked-etag".to_string(), format!("\"{sha}\"")),
                ("x-linked-size".to_string(), bytes.len().to_string()),
                ("ETag".to_string(), format!("\"{COMMIT}\"")),
            ];
            if let Some(location) = faults.cdn_location.lock().unwrap().clone() {
                headers[0].1 = location.replace("{sha}", &sha);
            }
            if let Some((k, v)) = faults.header.lock().unwrap().clone() {
                headers.retain(|(name, _)| !name.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
            let mut head = "HTTP/1.1 302 Found\r\n".to_string();
            for (k, v) in headers {
                head += &format!("{k}: {v}\r\n");
            }
            write!(out, "{head}Content-Length: 0\r\n\r\n")?;
            continue;
        }
        let blob = path.strip_prefix("/cdn/").and_then(|sha| files.values().find(|b| sha256_hex(b) == sha));
        let Some(blob) = blob else {
            if faults.hub_401.load(Ordering::SeqCst) {
                write!(
                    out,
                    "HTTP/1.1 401 Unauthorized\r\nX-Error-Code: RepoNotFound\r\nContent-Length: 9\r\n\r\nnot found"
                )?;
            } else {
                write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")?;
            }
            continue;
        };
        if !serve_body(&mut out, faults, blob, range.as_deref(), "")? {
            return Ok(());
        }
    }
}

/// Writes a body response honouring `range` and the faults; false when the
/// connection was closed (dropped or stalled).
fn serve_body(
    out: &mut TcpStream,
    faults: &Faults,
    blob: &[u8],
    range: Option<&str>,
    extra_headers: &str,
) -> std::io::Result<bool> {
    {
        let mut body = blob.to_vec();
        if faults.corrupt.load(Ordering::SeqCst) {
            for b in body.iter_mut().step_by(997) {
                *b ^= 0x5a;
            }
        }
        let total = body.len();
        // The metadata probe (Range 0-0) is never faulted.
        let probe = range == Some("bytes=0-0");
        let parsed = range.and_then(parse_range).filter(|_| probe || !faults.ignore_range.load(Ordering::SeqCst));
        let (status, start, end) = match parsed {
            Some((a, b)) if a < total => ("206 Partial Content", a, b.unwrap_or(total - 1).min(total - 1)),
            Some(_) => {
                write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\n\r\n"
                )?;
                return Ok(true);
            }
            None => ("200 OK", 0, total - 1),
        };
        let mut slice = body[start..=end].to_vec();
        let longer = if probe { 0 } else { faults.longer_body.load(Ordering::SeqCst) };
        if longer > 0 {
            slice.extend(std::iter::repeat_n(0x41u8, 1000));
        }
        let gzip = !probe && faults.gzip.load(Ordering::SeqCst);
        if gzip {
            // What a gzip bomb starts with; a client inflating it would write far more.
            slice = [&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3][..], &vec![0u8; slice.len() / 1000 + 16]].concat();
        }
        let mut head = format!("HTTP/1.1 {status}\r\n{extra_headers}");
        if longer == 2 {
            head += "Connection: close\r\n";
        } else {
            head += &format!("Content-Length: {}\r\n", slice.len());
        }
        if gzip {
            head += "Content-Encoding: gzip\r\n";
        }
        if status.starts_with("206") {
            head += &format!("Content-Range: bytes {start}-{end}/{total}\r\n");
        }
        out.write_all(head.as_bytes())?;
        out.write_all(b"\r\n")?;
        let drop_now =
            !probe && faults.drop_bodies.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if drop_now {
            out.write_all(&slice[..slice.len() / 2])?;
            out.flush()?;
            return Ok(false); // closes the socket mid-body
        }
        if !probe && faults.stall.load(Ordering::SeqCst) {
            out.write_all(&slice[..slice.len() / 2])?;
            out.flush()?;
            std::thread::sleep(Duration::from_secs(60));
            return Ok(false);
        }
        for chunk in slice.chunks(64 << 10) {
            out.write_all(chunk)?;
            let ms = faults.throttle_ms.load(Ordering::SeqCst);
            if ms > 0 && !probe {
                out.flush()?;
                std::thread::sleep(Duration::from_millis(ms as u64));
            }
        }
        out.flush()?;
        Ok(longer != 2)
    }
}

fn parse_range(r: &str) -> Option<(usize, Option<usize>)> {
    let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, if b.is_empty() { None } else { Some(b.parse().ok()?) }))
}

/// Every file (not directory) under `dir`, recursively; symlinks count as files.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ty = entry.file_type().unwrap();
            if ty.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// A download directory inside a temp parent, so a test can check that
/// nothing was written beside it.
pub struct Sandbox {
    pub parent: tempfile::TempDir,
    pub dir: std::path::PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("models");
        Sandbox { parent, dir }
    }

    pub fn dir_string(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// No file anywhere in the parent outside the download directory.
    pub fn assert_nothing_outside(&self) {
        let outside: Vec<_> =
            files_under(self.parent.path()).into_iter().filter(|p| !p.starts_with(&self.dir)).collect();
        assert!(outside.is_empty(), "written outside the directory: {outside:?}");
    }

    /// Nothing at all was written: no file outside or inside (empty
    /// directories are allowed).
    pub fn assert_nothing_written(&self) {
        let files = files_under(self.parent.path());
        assert!(files.is_empty(), "files were written: {files:?}");
    }
}

//! A Hugging Face Hub stand-in on 127.0.0.1 for the download tests, speaking
//! the parts of the resolve protocol hf-hub relies on, as the Hub does for an
//! LFS file:
//! - `GET /{org}/{name}/resolve/{revision}/{file}` answers 302 with an absolute
//!   `Location` on the "CDN", `x-repo-commit`, `x-linked-etag` (the SHA-256)
//!   and `x-linked-size`; unknown repos/files are 404.
//! - `GET /cdn/{sha256}` serves the bytes, honouring `Range: bytes=a-` and
//!   `bytes=a-b` with 206 and `Content-Range`.
//!
//! Faults for the tests: drop the connection after some bytes of a body, stall
//! mid-body, serve bytes that do not match the etag, and ignore `Range`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

/// One request as the server saw it: path and `Range` header.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
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
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_string());
                }
            }
        }
        log.lock().unwrap().push(Seen { path: path.clone(), range: range.clone() });

        if let Some(bytes) = files.get(&path) {
            let sha = sha256_hex(bytes);
            write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: {endpoint}/cdn/{sha}\r\nx-repo-commit: {COMMIT}\r\n\
                 x-linked-etag: \"{sha}\"\r\nx-linked-size: {}\r\nETag: \"{COMMIT}\"\r\nContent-Length: 0\r\n\r\n",
                bytes.len()
            )?;
            continue;
        }
        let blob = path.strip_prefix("/cdn/").and_then(|sha| files.values().find(|b| sha256_hex(b) == sha));
        let Some(blob) = blob else {
            write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")?;
            continue;
        };
        let mut body = blob.clone();
        if faults.corrupt.load(Ordering::SeqCst) {
            for b in body.iter_mut().step_by(997) {
                *b ^= 0x5a;
            }
        }
        let total = body.len();
        // hf-hub's metadata probe (Range 0-0) is never faulted.
        let probe = range.as_deref() == Some("bytes=0-0");
        let parsed =
            range.as_deref().and_then(parse_range).filter(|_| probe || !faults.ignore_range.load(Ordering::SeqCst));
        let (status, start, end) = match parsed {
            Some((a, b)) if a < total => ("206 Partial Content", a, b.unwrap_or(total - 1).min(total - 1)),
            Some(_) => {
                write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\n\r\n"
                )?;
                continue;
            }
            None => ("200 OK", 0, total - 1),
        };
        let slice = &body[start..=end];
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", slice.len());
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
            return Ok(()); // closes the socket mid-body
        }
        if !probe && faults.stall.load(Ordering::SeqCst) {
            out.write_all(&slice[..slice.len() / 2])?;
            out.flush()?;
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
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
    }
}

fn parse_range(r: &str) -> Option<(usize, Option<usize>)> {
    let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, if b.is_empty() { None } else { Some(b.parse().ok()?) }))
}

//! Downloading a model file from a Hugging Face repo (or a mirror speaking the
//! Hub's resolve protocol) into an app-chosen directory. Network code lives
//! here, outside the engine, behind the `download` cargo feature.
//!
//! The server is not trusted: every name it sends is checked before it
//! touches the disk (`names`), no more bytes are written than it announced,
//! the content is checked against the etag, redirects are bounded and the
//! token stays with the caller's origin (`net`). The transfer runs on the
//! caller's thread over a socket that looks at the cancel flag every 20 ms,
//! so a cancel or a timeout ends it at once, releasing the lock on the
//! partial file (`store`).

mod names;
mod net;
mod store;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Error, Result};
use net::{header, Client, Failure, Timeouts};
use store::{Partial, RepoDir};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds for configured timeouts: above zero, at most ten minutes.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// In-call retries after a dropped connection, each resuming where the last
/// one stopped, after 0.25, 0.5, 1 s.
const RETRIES: usize = 3;
/// How often progress is reported at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct DownloadSpec {
    /// `org/name` on the Hub.
    pub repo_id: String,
    /// The file's path inside the repo, e.g. `Phi-3-mini-4k-instruct-q4.gguf`.
    pub filename: String,
    /// Branch, tag or commit; `None` = `main`.
    pub revision: Option<String>,
    /// Base URL of the Hub or a mirror; `None` = huggingface.co.
    pub endpoint: Option<String>,
    /// Access token for gated or private repos; sent only to `endpoint`'s origin.
    pub token: Option<String>,
    /// Where the file goes (the Hub's cache layout inside it).
    pub directory: PathBuf,
    /// `None` = [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Option<Duration>,
    /// Longest wait for the next byte; `None` = [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Option<Duration>,
}

/// A downloaded (or already cached) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// `directory/models--org--name/snapshots/<commit>/<filename>`.
    pub path: PathBuf,
    pub size: u64,
    /// The commit the revision resolved to.
    pub commit: String,
    /// The content's SHA-256, when the etag was one (LFS files: all weights).
    pub sha256: Option<String>,
    /// Whether the content was checked against the etag (SHA-256, or the git
    /// blob SHA-1 of a small file) rather than by size only.
    pub verified: bool,
}

impl DownloadSpec {
    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }

    /// "org/name/file at revision main": how errors name the file.
    fn what(&self) -> String {
        format!("{}/{} at revision {}", self.repo_id, self.filename, self.revision())
    }

    fn validate(&self) -> Result<(url::Url, Timeouts)> {
        names::check_repo_id(&self.repo_id)?;
        names::check_filename(&self.filename)?;
        names::check_revision(self.revision())?;
        let endpoint = names::check_endpoint(self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT))?;
        if let Some(token) = &self.token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::param("token", "must be non-empty printable ASCII without spaces"));
            }
        }
        let timeout = |name: &'static str, t: Option<Duration>, default: Duration| match t {
            None => Ok(default),
            Some(t) if !t.is_zero() && t <= MAX_TIMEOUT => Ok(t),
            Some(t) => Err(Error::param(
                name,
                format!("{} ms is not between 1 and {} ms", t.as_millis(), MAX_TIMEOUT.as_millis()),
            )),
        };
        let timeouts = Timeouts {
            connect: timeout("connect_timeout_ms", self.connect_timeout, DEFAULT_CONNECT_TIMEOUT)?,
            read: timeout("read_timeout_ms", self.read_timeout, DEFAULT_READ_TIMEOUT)?,
        };
        Ok((endpoint, timeouts))
    }
}

/// What the server said about the file before its bytes are fetched.
struct Remote {
    commit: String,
    etag: String,
    size: u64,
    /// Where the bytes come from (the CDN for LFS files).
    url: url::Url,
}

/// Downloads `spec.filename`, or returns it at once if an earlier call already
/// did (no network then). `progress(done, total)` runs on this thread, at most
/// every 50 ms; `Ok(false)` from it, or `cancel` set from any thread, stops
/// the download with `Error::Cancelled` and keeps the partial file for the
/// next call to resume.
pub fn download(
    spec: &DownloadSpec,
    progress: &mut dyn FnMut(u64, u64) -> Result<bool>,
    cancel: Arc<AtomicBool>,
) -> Result<Downloaded> {
    let (endpoint, timeouts) = spec.validate()?;
    std::fs::create_dir_all(&spec.directory).map_err(|e| Error::storage(&spec.directory, e))?;
    let directory = std::fs::canonicalize(&spec.directory).map_err(|e| Error::storage(&spec.directory, e))?;
    let repo = RepoDir::new(&directory, &spec.repo_id);
    if let Some(found) = cached(&repo, spec) {
        return Ok(found);
    }
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }

    let client = Client::new(endpoint.clone(), spec.token.clone(), timeouts, cancel.clone());
    let remote = resolve(&client, spec, &endpoint)?;
    let link = repo.snapshot(&remote.commit, &spec.filename);
    if link.is_file() {
        return finish(&repo, spec, &remote, progress);
    }
    let blob = repo.blob(&remote.etag);
    // Another revision may already have brought these bytes (checked then).
    if std::fs::metadata(&blob).is_ok_and(|m| m.len() == remote.size) {
        return finish(&repo, spec, &remote, progress);
    }

    let partial = Partial::open(repo.partial(&remote.etag), &spec.what())?;
    transfer(&client, &partial, &remote, progress)?;
    if !store::matches_etag(&partial.path, &remote.etag, remote.size, &cancel)? {
        partial.discard();
        return Err(Error::Network(format!(
            "the downloaded file is corrupt (its content does not match etag {}); it was deleted, try again",
            remote.etag
        )));
    }
    std::fs::rename(&partial.path, &blob).map_err(|e| Error::storage(&blob, e))?;
    drop(partial);
    finish(&repo, spec, &remote, progress)
}

fn finish(
    repo: &RepoDir,
    spec: &DownloadSpec,
    remote: &Remote,
    progress: &mut dyn FnMut(u64, u64) -> Result<bool>,
) -> Result<Downloaded> {
    let path = repo.publish(spec.revision(), &remote.commit, &spec.filename, &remote.etag)?;
    if remote.size > 0 {
        progress(remote.size, remote.size)?;
    }
    Ok(described(path, remote.size, remote.commit.clone(), &remote.etag))
}

fn described(path: PathBuf, size: u64, commit: String, etag: &str) -> Downloaded {
    let check = store::Check::for_etag(etag);
    Downloaded {
        path,
        size,
        commit,
        sha256: (check == store::Check::Sha256).then(|| etag.to_string()),
        verified: check != store::Check::None,
    }
}

/// A file an earlier call completed: only complete, checked files are ever
/// linked into a snapshot.
fn cached(repo: &RepoDir, spec: &DownloadSpec) -> Option<Downloaded> {
    let commit = repo.commit_of(spec.revision())?;
    let path = repo.snapshot(&commit, &spec.filename);
    let size = std::fs::metadata(&path).ok().filter(|m| m.is_file())?.len();
    let etag = store::linked_etag(&path).unwrap_or_default();
    Some(described(path, size, commit, &etag))
}

/// Asks the resolve URL for the file's commit, etag and size (a one-byte
/// range request, as the Hub's own clients do). The Hub answers an LFS file
/// with a redirect to its CDN carrying `x-linked-etag`/`x-linked-size`; a
/// small file with 206 and its git etag.
fn resolve(client: &Client, spec: &DownloadSpec, endpoint: &url::Url) -> Result<Remote> {
    let what = spec.what();
    let url = names::resolve_url(endpoint, &spec.repo_id, spec.revision(), &spec.filename)?;
    let (at, response) =
        client.get(&url, Some("bytes=0-0"), |r| header(r, "x-repo-commit").is_some()).map_err(Failure::into_error)?;
    let status = response.status();
    if !(status.is_success() || status.is_redirection()) {
        return Err(net::status_error(&response, &what, spec.token.is_some()));
    }
    let not_hub = |why: String| {
        Error::Network(format!("{} is not a usable Hub endpoint for {what}: {why}", at.origin().ascii_serialization()))
    };
    let commit = header(&response, "x-repo-commit").unwrap_or("");
    let commit =
        names::commit_hash(commit).ok_or_else(|| not_hub(format!("x-repo-commit '{commit}' is not a commit hash")))?;
    let lfs = header(&response, "x-linked-etag").is_some() || header(&response, "x-linked-size").is_some();
    let etag_header = if lfs { header(&response, "x-linked-etag") } else { header(&response, "etag") }.unwrap_or("");
    let etag =
        names::etag_digest(etag_header).ok_or_else(|| not_hub(format!("etag '{etag_header}' is not a hex digest")))?;
    if lfs && etag.len() != 64 {
        return Err(not_hub(format!("the LFS file's etag {etag} is not a SHA-256, so it cannot be verified")));
    }
    let number = |name: &str| {
        header(&response, name).map(|v| v.parse::<u64>().map_err(|_| not_hub(format!("{name} '{v}' is not a size"))))
    };
    // "bytes 0-0/1234" → 1234.
    let range_total =
        header(&response, "content-range").and_then(|r| r.rsplit_once('/')).map(|(_, t)| t.parse::<u64>());
    let range_total = range_total.transpose().map_err(|_| not_hub("a malformed Content-Range".into()))?;
    let size = match (number("x-linked-size").transpose()?, range_total) {
        (Some(linked), Some(total)) if status.is_success() && linked != total => {
            return Err(not_hub(format!("x-linked-size {linked} and Content-Range size {total} disagree")))
        }
        (Some(linked), _) => linked,
        (None, Some(total)) if status == 206 => total,
        (None, _) if status == 200 => {
            number("content-length").transpose()?.ok_or_else(|| not_hub("no size announced".into()))?
        }
        _ => return Err(not_hub("no size announced".into())),
    };
    let url = if status.is_redirection() {
        let location = header(&response, "location").ok_or_else(|| not_hub("a redirect without Location".into()))?;
        names::redirect_target(&at, location)?
    } else {
        at
    };
    Ok(Remote { commit, etag, size, url })
}

/// Fills the partial file up to `remote.size`, resuming with `Range` where it
/// stands and retrying dropped connections.
fn transfer(
    client: &Client,
    partial: &Partial,
    remote: &Remote,
    progress: &mut dyn FnMut(u64, u64) -> Result<bool>,
) -> Result<()> {
    let mut reporter = Reporter { progress, last: None, total: remote.size };
    for attempt in 0..=RETRIES {
        if partial.len()? > remote.size {
            // Left by some other writer: it cannot be the start of this file.
            partial.truncate()?;
        }
        if partial.len()? == remote.size {
            return Ok(());
        }
        match fetch(client, partial, remote, &mut reporter) {
            Ok(()) => return Ok(()),
            Err(Failure::Transient(_)) if attempt < RETRIES => {
                let until = Instant::now() + Duration::from_millis(250 << attempt);
                while Instant::now() < until {
                    if client.cancelled() {
                        return Err(Error::Cancelled);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Err(failure) => return Err(failure.into_error()),
        }
    }
    Err(Error::Network("the download did not complete".into()))
}

fn fetch(client: &Client, partial: &Partial, remote: &Remote, reporter: &mut Reporter<'_>) -> Result<(), Failure> {
    let mut have = partial.len()?;
    let range = format!("bytes={have}-");
    let (at, mut response) = client.get(&remote.url, Some(&range), |_| false)?;
    let fatal = |why: String| Failure::Fatal(Error::Network(format!("{why}; the download was stopped")));
    let status = response.status().as_u16();
    match status {
        206 => {
            let expected = format!("bytes {have}-{}/{}", remote.size - 1, remote.size);
            if header(&response, "content-range") != Some(expected.as_str()) {
                return Err(fatal(format!(
                    "the server answered range {have}- with Content-Range {:?}, expected '{expected}'",
                    header(&response, "content-range")
                )));
            }
        }
        // The server ignored Range: start over from its first byte.
        200 => {
            partial.truncate()?;
            have = 0;
        }
        _ => return Err(Failure::Fatal(net::status_error(&response, "the file's content", false))),
    }
    if let Some(encoding) = header(&response, "content-encoding").filter(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(fatal(format!("the server sent the file {encoding}-encoded, which was not asked for")));
    }
    let left = remote.size - have;
    if let Some(length) = header(&response, "content-length") {
        if length.parse::<u64>().ok() != Some(left) {
            return Err(fatal(format!("the server announced {length} bytes where {left} remain of {}", remote.size)));
        }
    }
    let mut file = &partial.file;
    file.seek(SeekFrom::Start(have)).map_err(|e| Error::storage(&partial.path, e))?;
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 256 << 10];
    let mut written = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Transient(client.body_error(&at, e))),
        };
        if written + n as u64 > left {
            partial.discard();
            return Err(fatal(format!("the server sent more than the {} bytes it announced", remote.size)));
        }
        file.write_all(&buf[..n]).map_err(|e| Error::storage(&partial.path, e))?;
        written += n as u64;
        reporter.report(have + written)?;
    }
    if written < left {
        return Err(Failure::Transient(Error::Network(format!(
            "the connection closed after {} of {} bytes",
            have + written,
            remote.size
        ))));
    }
    file.flush().map_err(|e| Error::storage(&partial.path, e))?;
    Ok(())
}

/// Rate-limited progress on the caller's thread.
struct Reporter<'a> {
    progress: &'a mut dyn FnMut(u64, u64) -> Result<bool>,
    last: Option<Instant>,
    total: u64,
}

impl Reporter<'_> {
    fn report(&mut self, done: u64) -> Result<(), Failure> {
        if done >= self.total || self.last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        match (self.progress)(done, self.total) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Fatal(Error::Cancelled)),
            Err(e) => Err(Failure::Fatal(e)),
        }
    }
}

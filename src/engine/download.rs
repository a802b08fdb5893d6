//! Downloading a model file from a Hugging Face repo (or a mirror speaking the
//! Hub's resolve protocol) into an app-chosen directory.
//!
//! hf-hub does the protocol: the `resolve` URL, redirects, `etag` /
//! `x-repo-commit`, `Range` resumes of its `.part` file (also across calls),
//! and its cache layout (`models--org--name/{blobs,snapshots,refs}`), so a file
//! is only ever visible at its final path once complete. Around it this module
//! adds what an app needs and hf-hub's blocking API lacks:
//! - cancellation that returns promptly even when the network stalls: the
//!   transfer runs on a worker thread while the caller's thread polls the
//!   cancel flag and reports progress (so callbacks run on the caller's thread,
//!   as generation's do, at a bounded rate);
//! - verification: the size the server announced and, for LFS files (whose
//!   etag is the SHA-256 of the content), the hash; a file that fails is
//!   deleted, never returned;
//! - typed errors instead of hf-hub's panics and error strings.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use super::error::{panic_message, Error, Result};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";

/// In-call retries after a dropped connection, each resuming where the last
/// one stopped (hf-hub backs off 0.3–10 s between them).
const RETRIES: usize = 3;
/// How often the caller's thread looks at the cancel flag and reports progress.
const POLL: Duration = Duration::from_millis(50);
/// After a cancel, how long to let the worker stop cleanly (it stops at its
/// next received chunk) before returning anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

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
    /// Access token for gated or private repos.
    pub token: Option<String>,
    /// Where the file goes (hf-hub's cache layout inside it).
    pub directory: PathBuf,
}

impl DownloadSpec {
    fn validate(&self) -> Result<()> {
        let repo_ok = |s: &str| {
            !s.is_empty()
                && s.split('/').count() <= 2
                && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        if !repo_ok(&self.repo_id) {
            return Err(Error::param("repo_id", format!("'{}' is not a Hub repo id like 'org/name'", self.repo_id)));
        }
        // The filename becomes a path under `directory`: no way out of it.
        let relative = Path::new(&self.filename).components().all(|c| matches!(c, Component::Normal(_)));
        if self.filename.is_empty() || !relative || self.filename.contains('\\') {
            return Err(Error::param("filename", format!("'{}' is not a file path inside the repo", self.filename)));
        }
        if let Some(rev) = &self.revision {
            if rev.is_empty() || rev.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
                return Err(Error::param("revision", format!("'{rev}' is not a branch, tag or commit")));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                return Err(Error::param("endpoint", format!("'{endpoint}' is not an http(s) URL")));
            }
        }
        Ok(())
    }

    fn repo(&self) -> Repo {
        let revision = self.revision.clone().unwrap_or_else(|| DEFAULT_REVISION.to_string());
        Repo::with_revision(self.repo_id.clone(), RepoType::Model, revision)
    }
}

/// Downloads `spec.filename`, or returns it at once if an earlier call already
/// did (no network then). `progress(done, total)` runs on this thread; `Ok(false)`
/// from it, or `cancel` set from any thread, stops the download with
/// `Error::Cancelled` and keeps the partial file for the next call to resume.
pub fn download(
    spec: &DownloadSpec,
    progress: &mut dyn FnMut(u64, u64) -> Result<bool>,
    cancel: &AtomicBool,
) -> Result<PathBuf> {
    spec.validate()?;
    std::fs::create_dir_all(&spec.directory).map_err(|e| Error::storage(&spec.directory, e))?;
    // hf-hub relates its symlinks by comparing absolute paths.
    let directory = std::fs::canonicalize(&spec.directory).map_err(|e| Error::storage(&spec.directory, e))?;
    let cache = Cache::new(directory.clone());
    if let Some(path) = cache.repo(spec.repo()).get(&spec.filename) {
        if path.is_file() {
            return Ok(path);
        }
    }

    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }

    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel();
    let worker = {
        let shared = shared.clone();
        let spec = spec.clone();
        std::thread::Builder::new()
            .name("phi-mobile-download".into())
            .spawn(move || {
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| transfer(&spec, &directory, &shared)));
                // The receiver may be gone after a cancel; nothing to do then.
                let _ = tx.send(result);
            })
            .map_err(|e| Error::Network(format!("cannot start the download thread: {e}")))?
    };

    let mut reported = (u64::MAX, u64::MAX);
    let mut stop: Option<Error> = None;
    let mut cancelled_at: Option<Instant> = None;
    let outcome = loop {
        match rx.recv_timeout(POLL) {
            Ok(result) => break Some(result),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if stop.is_none() {
            let now = (shared.done.load(Ordering::Relaxed), shared.total.load(Ordering::Relaxed));
            if cancel.load(Ordering::SeqCst) {
                stop = Some(Error::Cancelled);
            } else if now != reported && now.1 > 0 {
                reported = now;
                match progress(now.0, now.1) {
                    Ok(true) => {}
                    Ok(false) => stop = Some(Error::Cancelled),
                    Err(e) => stop = Some(e),
                }
            }
            if stop.is_some() {
                shared.cancel.store(true, Ordering::SeqCst);
                cancelled_at = Some(Instant::now());
            }
        }
        if cancelled_at.is_some_and(|t| t.elapsed() > CANCEL_GRACE) {
            // A stalled connection never reaches the worker's next cancel
            // check; leave it behind (it ends with the socket) rather than
            // block the app.
            break None;
        }
    };
    if let Some(e) = stop {
        if outcome.is_some() {
            let _ = worker.join();
        }
        return Err(e);
    }
    let _ = worker.join();
    let path = match outcome {
        Some(Ok(result)) => result?,
        Some(Err(payload)) if payload.is::<CancelledByCaller>() => return Err(Error::Cancelled),
        Some(Err(payload)) => return Err(Error::Network(format!("the download failed: {}", panic_message(&*payload)))),
        None => return Err(Error::Network("the download thread ended without a result".into())),
    };

    let total = shared.total.load(Ordering::Relaxed);
    if let Err(e) = verify(&path, total, cancel) {
        discard(&path);
        return Err(e);
    }
    if total > 0 && reported != (total, total) {
        progress(total, total)?;
    }
    Ok(path)
}

/// Progress and cancellation shared between the caller's thread and the worker.
#[derive(Default)]
struct Shared {
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

/// The unwind payload that stops hf-hub's blocking copy loop from inside its
/// progress callback, the only hook it offers. Raised with `resume_unwind`,
/// so no panic hook runs and nothing is printed; hf-hub's lock guard and file
/// handles are dropped on the way out and its `.part` file stays for a resume.
struct CancelledByCaller;

struct WorkerProgress<'a>(&'a Shared);

impl Progress for WorkerProgress<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        // hf-hub calls init again on each resume, then update(offset).
        self.0.total.store(size as u64, Ordering::Relaxed);
        self.0.done.store(0, Ordering::Relaxed);
    }

    fn update(&mut self, size: usize) {
        if self.0.cancel.load(Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new(CancelledByCaller));
        }
        self.0.done.fetch_add(size as u64, Ordering::Relaxed);
    }

    fn finish(&mut self) {}
}

fn transfer(spec: &DownloadSpec, directory: &Path, shared: &Shared) -> Result<PathBuf> {
    let endpoint = spec.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/').to_string();
    let api = ApiBuilder::from_cache(Cache::new(directory.to_path_buf()))
        .with_endpoint(endpoint.clone())
        .with_token(spec.token.clone())
        .with_progress(false)
        .with_retries(RETRIES)
        .with_user_agent("phi-mobile", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| map_api_error(e, spec, &endpoint))?;
    let repo = api.repo(spec.repo());
    match repo.download_with_progress(&spec.filename, WorkerProgress(shared)) {
        Ok(path) => Ok(path),
        // A `.part` longer than the file (left by some other writer) cannot
        // be resumed: drop it and start over once.
        Err(ApiError::InvalidResume) => {
            remove_part_files(directory, spec);
            repo.download_with_progress(&spec.filename, WorkerProgress(shared))
                .map_err(|e| map_api_error(e, spec, &endpoint))
        }
        Err(e) => Err(map_api_error(e, spec, &endpoint)),
    }
}

fn remove_part_files(directory: &Path, spec: &DownloadSpec) {
    let blobs = directory.join(spec.repo().folder_name()).join("blobs");
    if let Ok(entries) = std::fs::read_dir(blobs) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn map_api_error(e: ApiError, spec: &DownloadSpec, endpoint: &str) -> Error {
    let what = format!("{}/{} ({})", spec.repo_id, spec.filename, spec.revision.as_deref().unwrap_or(DEFAULT_REVISION));
    match e {
        ApiError::RequestError(inner) => match *inner {
            ureq::Error::Status(404, _) => Error::NotFound(PathBuf::from(format!("{endpoint}/{what}"))),
            ureq::Error::Status(code @ (401 | 403), _) => Error::Network(format!(
                "{endpoint} refused access to {what} (HTTP {code}); a gated or private repo needs a token"
            )),
            ureq::Error::Status(code, _) => Error::Network(format!("{endpoint} answered HTTP {code} for {what}")),
            ureq::Error::Transport(t) => Error::Network(format!("cannot reach {endpoint}: {t}")),
        },
        ApiError::TooManyRetries(inner) => match map_api_error(*inner, spec, endpoint) {
            Error::Network(m) => Error::Network(format!("{m} (gave up after {RETRIES} retries)")),
            other => other,
        },
        // hf-hub's copy loop reports a broken connection and a full disk
        // alike as io errors; only the kind tells them apart.
        ApiError::IoError(io) if is_local_io_failure(&io) => Error::storage(&spec.directory, io),
        ApiError::IoError(io) => Error::Network(format!("the connection to {endpoint} failed: {io}")),
        ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => {
            Error::Network(format!("{endpoint} is not a Hugging Face Hub endpoint (header {h} missing or invalid)"))
        }
        ApiError::LockAcquisition(_) => Error::Network(format!("another download of {what} is still running")),
        other => Error::Network(other.to_string()),
    }
}

fn is_local_io_failure(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::PermissionDenied
            | K::StorageFull
            | K::QuotaExceeded
            | K::ReadOnlyFilesystem
            | K::FileTooLarge
            | K::NotADirectory
            | K::IsADirectory
            | K::AlreadyExists
            | K::NotFound
    )
}

/// Size against what the server announced; SHA-256 when the etag is one
/// (the Hub's etag for LFS files, which all model weights are).
fn verify(path: &Path, expected_size: u64, cancel: &AtomicBool) -> Result<()> {
    let blob = std::fs::canonicalize(path).map_err(|e| Error::storage(path, e))?;
    let size = std::fs::metadata(&blob).map_err(|e| Error::storage(&blob, e))?.len();
    if expected_size > 0 && size != expected_size {
        return Err(Error::Network(format!("the download is {size} bytes but the server announced {expected_size}")));
    }
    let etag = blob.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    if etag.len() != 64 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let mut file = File::open(&blob).map_err(|e| Error::storage(&blob, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut since_check = 0usize;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::storage(&blob, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        since_check += n;
        // Hashing gigabytes takes seconds on a phone: stay cancellable.
        if since_check >= 64 << 20 {
            since_check = 0;
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
        }
    }
    let actual = format!("{:x}", hasher.finalize());
    if actual != etag {
        return Err(Error::Network(format!(
            "the downloaded file is corrupt (SHA-256 {actual}, expected {etag}); it was deleted, try again"
        )));
    }
    Ok(())
}

/// Removes a failed download: the snapshot link and the blob it points to.
fn discard(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(repo: &str, file: &str) -> DownloadSpec {
        DownloadSpec {
            repo_id: repo.into(),
            filename: file.into(),
            revision: None,
            endpoint: None,
            token: None,
            directory: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn rejects_paths_that_leave_the_directory() {
        for (repo, file) in [
            ("", "a.gguf"),
            ("a/b/c", "a.gguf"),
            ("../x", "a.gguf"),
            ("org/name", ""),
            ("org/name", "../a.gguf"),
            ("org/name", "/etc/passwd"),
            ("org/name", "dir/../../a.gguf"),
            ("org/name", "a\\..\\b.gguf"),
            ("org name", "a.gguf"),
        ] {
            assert!(
                matches!(spec(repo, file).validate(), Err(Error::InvalidParameter { .. })),
                "{repo:?} {file:?} was accepted"
            );
        }
        assert!(spec("microsoft/Phi-3-mini-4k-instruct-gguf", "Phi-3-mini-4k-instruct-q4.gguf").validate().is_ok());
        assert!(spec("gpt2", "onnx/model.onnx").validate().is_ok());
    }
}

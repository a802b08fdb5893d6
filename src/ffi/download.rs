//! `download_model` and its records: convert, call `crate::download`, map.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::{call_progress, guard, long, CancellationToken, LlmError, Result};
use crate::download;
use crate::engine;

/// A model file to download from a Hugging Face repo (or a mirror).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DownloadRequest {
    /// `org/name`, e.g. `microsoft/Phi-3-mini-4k-instruct-gguf`.
    pub repo_id: String,
    /// The file inside the repo, e.g. `Phi-3-mini-4k-instruct-q4.gguf`.
    pub filename: String,
    /// Branch, tag or commit; default `main`.
    #[uniffi(default = None)]
    pub revision: Option<String>,
    /// Base URL of the Hub or a mirror; default `https://huggingface.co`.
    #[uniffi(default = None)]
    pub endpoint: Option<String>,
    /// Access token for gated or private repos; sent only to `endpoint`'s
    /// scheme, host and port, never to a host it redirects to.
    #[uniffi(default = None)]
    pub token: Option<String>,
    /// Longest wait for a connection, 1..=600000 ms; default 15000.
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<i64>,
    /// Longest wait for the next byte, 1..=600000 ms; default 30000.
    #[uniffi(default = None)]
    pub read_timeout_ms: Option<i64>,
}

impl DownloadRequest {
    pub fn new(repo_id: impl Into<String>, filename: impl Into<String>) -> Self {
        Self {
            repo_id: repo_id.into(),
            filename: filename.into(),
            revision: None,
            endpoint: None,
            token: None,
            connect_timeout_ms: None,
            read_timeout_ms: None,
        }
    }
}

/// A downloaded (or already present) model file.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DownloadedModel {
    /// Where the file is: `directory/models--org--name/snapshots/<commit>/<filename>`.
    pub path: String,
    pub size_bytes: i64,
    /// The commit the revision resolved to.
    pub commit: String,
    /// The content's SHA-256 when the Hub gave one (LFS files: all weights).
    pub sha256: Option<String>,
    /// Whether the content was checked against the Hub's hash (SHA-256, or the
    /// git blob SHA-1 of a small file); false means checked by size only.
    pub verified: bool,
}

/// Receives download progress on the thread that called `download_model`,
/// at most about 20 times a second.
#[uniffi::export(foreign)]
pub trait DownloadProgress: Send + Sync {
    /// Return `false` to cancel (the download then fails with
    /// `LlmError.Cancelled`); throwing cancels it with `LlmError.Callback`.
    fn on_progress(&self, bytes_done: i64, bytes_total: i64) -> Result<bool, LlmError>;
}

/// Downloads a model file into `directory`; blocking (call it off the UI
/// thread). The transfer runs on the calling thread.
///
/// If an earlier call already downloaded it, returns at once without network.
/// An interrupted download (dropped connection, app killed, cancelled) resumes
/// where it stopped, in this call or the next. The file appears at the
/// returned path only once complete and checked (see `DownloadedModel`).
/// `cancel` stops it from any thread within about 20 ms
/// (`LlmError.Cancelled`); the partial file is kept for the next call. The
/// layout inside `directory` is the Hub cache's (`models--org--name/...`), so
/// an app can share it with other tools. A second call for a file that is
/// still downloading fails at once with `LlmError.Busy` (it does not wait).
/// The server is not trusted: see the README for what is checked.
#[uniffi::export(default(progress = None, cancel = None))]
pub fn download_model(
    request: DownloadRequest,
    directory: String,
    progress: Option<Arc<dyn DownloadProgress>>,
    cancel: Option<Arc<CancellationToken>>,
) -> Result<DownloadedModel> {
    guard(|reason| LlmError::Network { reason }, || download_inner(request, directory, progress, cancel))
}

fn millis(name: &'static str, ms: Option<i64>) -> Result<Option<Duration>, engine::Error> {
    match ms {
        None => Ok(None),
        Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
        Some(ms) => Err(engine::Error::param(name, format!("{ms} ms is not a positive number of milliseconds"))),
    }
}

fn download_inner(
    request: DownloadRequest,
    directory: String,
    progress: Option<Arc<dyn DownloadProgress>>,
    cancel: Option<Arc<CancellationToken>>,
) -> Result<DownloadedModel> {
    let spec = download::DownloadSpec {
        connect_timeout: millis("connect_timeout_ms", request.connect_timeout_ms)?,
        read_timeout: millis("read_timeout_ms", request.read_timeout_ms)?,
        repo_id: request.repo_id,
        filename: request.filename,
        revision: request.revision,
        endpoint: request.endpoint,
        token: request.token,
        directory: PathBuf::from(directory),
    };
    let flag = cancel.map_or_else(|| Arc::new(AtomicBool::new(false)), |c| c.flag.clone());
    let mut report = |done: u64, total: u64| match &progress {
        Some(p) => call_progress(|| p.on_progress(long(done), long(total))),
        None => Ok(true),
    };
    let done = download::download(&spec, &mut report, flag)?;
    Ok(DownloadedModel {
        path: done.path.to_string_lossy().into_owned(),
        size_bytes: long(done.size),
        commit: done.commit,
        sha256: done.sha256,
        verified: done.verified,
    })
}

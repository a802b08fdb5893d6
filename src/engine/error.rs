//! The engine's internal error: detailed, with `From` conversions so `?` works
//! on candle, tokenizers and io calls. The FFI layer maps it to the small
//! public `LlmError`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("file not found: {}", .0.display())]
    NotFound(PathBuf),

    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{0}")]
    InvalidModel(String),

    #[error("unsupported architecture '{0}'")]
    UnsupportedArchitecture(String),

    #[error("{0}")]
    Tokenizer(String),

    #[error("{name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },

    #[error("the request needs {needed} tokens of context but the model has {available}")]
    ContextOverflow { needed: usize, available: usize },

    #[error("{0}")]
    Callback(String),

    #[error("{0}")]
    Inference(String),

    /// A download failed on the network side (unreachable, HTTP error,
    /// corrupt transfer); retrying later may work.
    #[error("{0}")]
    Network(String),

    /// The Hub has no such repo, file or revision (what, in words).
    #[error("{0}")]
    RemoteNotFound(String),

    /// A gated or private repo, without a token that has access.
    #[error("{0}")]
    AccessDenied(String),

    /// Another operation on the same resource is running (e.g. a download of
    /// the same file in this process).
    #[error("{0}")]
    Busy(String),

    /// A file could not be written (disk full, no permission).
    #[error("cannot write {}: {source}", path.display())]
    Storage { path: PathBuf, source: std::io::Error },

    /// A saved chat that cannot be restored: another model's, another
    /// format version, truncated or corrupt.
    #[error("{0}")]
    SavedChat(String),

    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Candle errors seen at run time are inference failures; load-time code maps
/// them to `InvalidModel` explicitly (see `model.rs`), because there a failure
/// means the file is bad.
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Inference(e.to_string())
    }
}

impl From<tokenizers::Error> for Error {
    fn from(e: tokenizers::Error) -> Self {
        Error::Tokenizer(e.to_string())
    }
}

impl Error {
    pub(crate) fn param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { name, reason: reason.into() }
    }

    #[cfg_attr(not(feature = "download"), allow(dead_code))]
    pub(crate) fn storage(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Storage { path: path.to_path_buf(), source }
    }

    pub(crate) fn invalid_model(reason: impl std::fmt::Display) -> Self {
        Error::InvalidModel(reason.to_string())
    }
}

/// Runs `f`, turning a panic inside candle or tokenizers into `on_panic(msg)`,
/// so malformed input can never unwind into the host app.
pub(crate) fn catch_panic<T>(on_panic: impl FnOnce(String) -> Error, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(on_panic(panic_message(&*payload))),
    }
}

/// The text a panic was raised with (`panic!` payloads are `&str` or `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

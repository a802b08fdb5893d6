//! `LlmError`, the one error callers see, its mapping from the engine's
//! errors, and `guard`, which every fallible export runs inside.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::records::StopReason;
use crate::engine::{self, panic_message};

/// The one error type callers see. Each variant is something an app can act on.
/// Its sentence (`Display`) is exported: Kotlin's `message`/`toString()` and Swift's
/// `description`/`localizedDescription` are these words, written once here.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum LlmError {
    /// A model file that is not there, or a repo, file or revision the Hub
    /// does not have (`what` says which, in words).
    #[error("Model not found: {what}.")]
    ModelNotFound { what: String },
    #[error("The file is not a usable model: {reason}.")]
    InvalidModel { reason: String },
    #[error("Model architecture '{architecture}' is not supported (supported: phi3, llama).")]
    UnsupportedArchitecture { architecture: String },
    #[error("Tokenizer problem: {reason}.")]
    Tokenizer { reason: String },
    #[error("Invalid parameter {name}: {reason}.")]
    InvalidParameter { name: String, reason: String },
    #[error("The input needs {needed} tokens but the context holds {available}: shorten it, or start a new chat.")]
    ContextOverflow { needed: i32, available: i32 },
    #[error("A callback failed: {reason}.")]
    Callback { reason: String },
    #[error("Inference failed: {reason}.")]
    Inference { reason: String },
    #[error("Download failed: {reason}. Try again later; it resumes where it stopped.")]
    Network { reason: String },
    #[error("A file could not be read or written: {reason}.")]
    Storage { reason: String },
    /// A gated or private repo: a Hugging Face token with access is needed.
    #[error("Access denied: {reason}.")]
    AccessDenied { reason: String },
    /// The same work is already running (e.g. a download of the same file);
    /// try again when it ends.
    #[error("Busy: {reason}.")]
    Busy { reason: String },
    /// A saved chat that cannot be restored (saved by another model or
    /// version of the library, truncated or corrupt): start a new chat.
    #[error("The saved chat cannot be restored: {reason}.")]
    InvalidSavedChat { reason: String },
    #[error("The operation was cancelled.")]
    Cancelled,
    /// `ChatSession.answer` (and `respond` in Kotlin and Swift): the answer was cut short before it was
    /// complete (`partial` is what there is; also in the history).
    #[error("The answer was cut short ({stop_reason:?}) before it was complete: raise maxTokens, or start a new chat if the context is full.")]
    IncompleteAnswer { stop_reason: StopReason, partial: String },
}

/// A Kotlin/Swift exception thrown inside a `TokenSink` arrives here.
impl From<uniffi::UnexpectedUniFFICallbackError> for LlmError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        LlmError::Callback { reason: e.reason }
    }
}

impl From<engine::Error> for LlmError {
    fn from(e: engine::Error) -> Self {
        use engine::Error as E;
        match e {
            E::NotFound(p) => LlmError::ModelNotFound { what: p.display().to_string() },
            E::RemoteNotFound(what) => LlmError::ModelNotFound { what },
            E::AccessDenied(reason) => LlmError::AccessDenied { reason },
            E::Busy(reason) => LlmError::Busy { reason },
            // The file system refused (permission, I/O error): not the file's
            // content, so not InvalidModel.
            e @ E::Io { .. } => LlmError::Storage { reason: e.to_string() },
            E::InvalidModel(reason) => LlmError::InvalidModel { reason },
            E::UnsupportedArchitecture(architecture) => LlmError::UnsupportedArchitecture { architecture },
            E::Tokenizer(reason) => LlmError::Tokenizer { reason },
            E::InvalidParameter { name, reason } => LlmError::InvalidParameter { name: name.to_string(), reason },
            E::ContextOverflow { needed, available } => {
                LlmError::ContextOverflow { needed: super::int(needed), available: super::int(available) }
            }
            E::Callback(reason) => LlmError::Callback { reason },
            E::Inference(reason) => LlmError::Inference { reason },
            E::Network(reason) => LlmError::Network { reason },
            e @ E::Storage { .. } => LlmError::Storage { reason: e.to_string() },
            E::SavedChat(reason) => LlmError::InvalidSavedChat { reason },
            E::Cancelled => LlmError::Cancelled,
        }
    }
}

pub(crate) type Result<T, E = LlmError> = std::result::Result<T, E>;

/// Every exported call that can fail runs inside this: a panic that got past
/// the engine's own guards becomes a typed error here instead of UniFFI's
/// internal error (or an abort) in the host app. `tests/ffi_boundary.rs`
/// checks that each such export uses it.
pub(crate) fn guard<T>(on_panic: fn(String) -> LlmError, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(on_panic(format!("internal error: {}", panic_message(&*p)))))
}

pub(crate) fn invalid_model(reason: String) -> LlmError {
    LlmError::InvalidModel { reason }
}

pub(crate) fn tokenizer_error(reason: String) -> LlmError {
    LlmError::Tokenizer { reason }
}

pub(crate) fn inference_error(reason: String) -> LlmError {
    LlmError::Inference { reason }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_refused_read_is_storage_not_invalid_model() {
        let e = engine::Error::Io {
            path: PathBuf::from("/data/model.gguf"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        match LlmError::from(e) {
            LlmError::Storage { reason } => {
                assert!(reason.contains("/data/model.gguf") && reason.contains("ermission denied"), "{reason}")
            }
            other => panic!("expected Storage, got {other:?}"),
        }
    }
}

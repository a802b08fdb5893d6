//! The traits Kotlin, Swift or Rust implement: token sinks and load progress.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;
use crate::engine::{self, panic_message};

/// Receives generated text, piece by piece, on the thread that called
/// `generate`/`send`. Implemented in Kotlin, Swift or Rust.
#[uniffi::export(foreign)]
pub trait TokenSink: Send + Sync {
    /// `piece` is the text added since the previous call (whole characters
    /// only). Return `false` to stop generating; throwing stops it with
    /// `LlmError.Callback`.
    fn on_text(&self, piece: String) -> Result<bool, LlmError>;
}

/// Receives model-loading progress on the loading thread, as
/// `DownloadProgress` receives a download's.
#[uniffi::export(foreign)]
pub trait LoadProgress: Send + Sync {
    /// `bytes_done` of the file's `bytes_total` read (or, when the file is
    /// mapped, its tensors checked). Return `false` to cancel (the load then
    /// fails with `LlmError.Cancelled`); throwing cancels it with
    /// `LlmError.Callback`.
    fn on_progress(&self, bytes_done: i64, bytes_total: i64) -> Result<bool, LlmError>;
}

/// A progress callback's answer (load or download) as the engine takes it:
/// its error, or a panic, stops the work with a `Callback` error.
pub(crate) fn call_progress(report: impl FnOnce() -> Result<bool, LlmError>) -> engine::Result<bool> {
    catch_unwind(AssertUnwindSafe(report))
        .map_err(|e| engine::Error::Callback(format!("the progress callback panicked: {}", panic_message(&*e))))?
        .map_err(callback_error)
}

/// A foreign callback's failure, without wrapping its message twice.
pub(crate) fn callback_error(e: LlmError) -> engine::Error {
    match e {
        LlmError::Callback { reason } => engine::Error::Callback(reason),
        other => engine::Error::Callback(other.to_string()),
    }
}

pub(crate) fn call_sink<'a>(sink: &'a dyn TokenSink) -> impl FnMut(&str) -> engine::Result<bool> + 'a {
    move |piece| {
        catch_unwind(AssertUnwindSafe(|| sink.on_text(piece.to_string())))
            .map_err(|p| engine::Error::Callback(format!("the sink panicked: {}", panic_message(&*p))))?
            .map_err(callback_error)
    }
}

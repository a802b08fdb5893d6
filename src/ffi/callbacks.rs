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

/// Receives model-loading progress.
#[uniffi::export(foreign)]
pub trait LoadProgress: Send + Sync {
    fn on_progress(&self, bytes_read: u64, total_bytes: u64);
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

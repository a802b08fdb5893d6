//! The UniFFI surface, one file per exported object: thin wrappers that
//! convert records to engine types, call the engine, and map its errors to
//! `LlmError`. No logic lives here.
//!
//! - `error`: `LlmError` and `guard` (every fallible export runs inside it)
//! - `ints`: the signed integers Kotlin and Swift see, checked on the way in
//! - `records`: `ModelConfig`, `GenerationParams`, `GenerationResult`, `ModelInfo`, `ChatMessage`, …
//! - `callbacks`: `TokenSink`, `LoadProgress` (implemented in Kotlin, Swift or Rust)
//! - `cancel`: `CancellationToken`
//! - `language_model`: `LanguageModel`, `estimate_model_memory`
//! - `session`: `ChatSession`
//! - `tokenizer`: `ModelTokenizer`, and the text calls `LanguageModel` shares with it
//! - `download`: `download_model` and its records (feature `download`)

mod callbacks;
mod cancel;
#[cfg(feature = "download")]
mod download;
mod error;
mod ints;
mod language_model;
mod records;
mod session;
mod tokenizer;

pub use callbacks::{LoadProgress, TokenSink};
pub use cancel::CancellationToken;
#[cfg(feature = "download")]
pub use download::{download_model, DownloadProgress, DownloadRequest, DownloadedModel};
pub use error::LlmError;
pub use language_model::{estimate_model_memory, LanguageModel};
pub use records::{
    ChatMessage, GenerationParams, GenerationResult, ModelConfig, ModelInfo, ResponseFormat, Role, StopReason, Tool,
    ToolCall, ToolChoice,
};
pub use session::ChatSession;
pub use tokenizer::ModelTokenizer;

use callbacks::{call_progress, call_sink};
use error::{guard, inference_error, invalid_model, tokenizer_error, Result};
use ints::{count, ids_in, ids_out, int, long};

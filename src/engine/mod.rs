//! The inference engine: plain Rust, no FFI concerns. The `ffi` module wraps
//! it for UniFFI.

mod arch;
mod chat;
mod constraint;
mod error;
mod generate;
mod gguf;
pub(crate) mod kernels;
mod kv_cache;
mod layers;
mod model;
mod sampler;
mod text;
mod threads;
mod tokenizer;
mod tools;
mod weights;

pub use chat::{phi3_prompt, render_untrusted_template, Message, Role, ToolCall};
pub use constraint::ResponseFormat;
pub(crate) use error::panic_message;
pub use error::{Error, Result};
pub use generate::{
    Conversation, GenerateOptions, Outcome, Sequence, Sink, Stop, StopReason, Timings, MAX_STOP_STRINGS,
};
pub use kv_cache::KvPrecision;
pub use model::{memory_estimate_of_file, LoadConfig, LoadedModel, ModelInfo, Progress};
pub use sampler::SamplingConfig;
pub use text::Text;
pub use tools::{Tool, ToolChoice, Toolset};

/// A fixture from scripts/fetch-fixtures.sh (in `$PHI_MOBILE_CACHE`, default
/// `~/.cache/phi-mobile`).
#[cfg(test)]
pub(crate) fn test_fixture(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("PHI_MOBILE_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/phi-mobile")
    });
    let p = dir.join(name);
    assert!(p.is_file(), "{} is missing: run scripts/fetch-fixtures.sh", p.display());
    p
}

//! The inference engine: plain Rust, no FFI concerns. The `ffi` module wraps
//! it for UniFFI.

mod chat;
mod error;
mod generate;
mod gguf_tokenizer;
mod model;
mod sampler;
mod stream;
mod template;
mod threads;

pub use chat::{phi3_prompt, Message, Role};
pub use error::{Error, Result};
pub use generate::{Conversation, GenerateOptions, Outcome, Sequence, Sink, StopReason, Timings, MAX_STOP_STRINGS};
pub use model::{LoadConfig, LoadedModel, ModelInfo};
pub use sampler::SamplingConfig;

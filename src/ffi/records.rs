//! The records and enums that cross the boundary, with their conversions
//! to and from the engine's types.

use super::*;
use crate::engine::{self};

/// How to load a model.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ModelConfig {
    /// Path to a `.gguf` file.
    pub model_path: String,
    /// Path to a Hugging Face `tokenizer.json`; without it the tokenizer is
    /// built from the GGUF's metadata, as llama.cpp does.
    #[uniffi(default = None)]
    pub tokenizer_path: Option<String>,
    /// Caps the context window (and so the KV-cache memory) below the model's.
    /// A LongRoPE model (Phi-3.5-mini, Phi-4-mini) capped at its original
    /// context (4096) never switches to its long-context factors, nor pays
    /// the one-time recompute of the conversation that switch takes.
    #[uniffi(default = None)]
    pub context_length: Option<i32>,
    /// Compute threads; default one per performance core (all but the slowest
    /// cluster of a phone's cores, pinned there). Process-wide: the first
    /// model loaded fixes it.
    #[uniffi(default = None)]
    pub threads: Option<i32>,
    /// Off (the default): control tokens typed in chat messages (e.g.
    /// `<|system|>`, `<|im_start|>`) are encoded as plain text, so a user
    /// cannot forge a turn; only the chat template writes control tokens.
    /// On: they become control tokens, as before. Raw prompts
    /// (`generate`, `tokenize`) always parse them: the app wrote those.
    #[uniffi(default = false)]
    pub parse_special_in_messages: bool,
    /// On (the default): the weights are the model file's memory-mapped
    /// pages, which the OS can reclaim under pressure instead of ending the
    /// app; the file must not be modified or truncated while loaded. Off:
    /// they are read into the app's heap (a copy the size of the file).
    #[uniffi(default = true)]
    pub map_weights: bool,
    /// Off (the default): the KV cache keeps keys and values in f16, half
    /// the memory per token (as llama.cpp does). On: f32, exact, twice the
    /// memory.
    #[uniffi(default = false)]
    pub kv_cache_f32: bool,
}

impl ModelConfig {
    pub fn new(model_path: impl Into<String>) -> Self {
        Self {
            model_path: model_path.into(),
            tokenizer_path: None,
            context_length: None,
            threads: None,
            parse_special_in_messages: false,
            map_weights: true,
            kv_cache_f32: false,
        }
    }
}

/// Sampling and stopping. `GenerationParams::default()` (Rust) and the
/// generated constructors' defaults (Kotlin/Swift) are the same values. A
/// negative count is `InvalidParameter` naming it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerationParams {
    #[uniffi(default = 512)]
    pub max_tokens: i32,
    /// 0 = greedy.
    #[uniffi(default = 0.8)]
    pub temperature: f32,
    /// 0 = off.
    #[uniffi(default = 40)]
    pub top_k: i32,
    /// 1.0 = off.
    #[uniffi(default = 0.95)]
    pub top_p: f32,
    /// 0.0 = off.
    #[uniffi(default = 0.05)]
    pub min_p: f32,
    /// 1.0 = off.
    #[uniffi(default = 1.1)]
    pub repeat_penalty: f32,
    #[uniffi(default = 64)]
    pub repeat_last_n: i32,
    /// Same seed and parameters give the same output; `None` = random.
    /// Any value is a seed (a negative one as its 64 bits).
    #[uniffi(default = None)]
    pub seed: Option<i64>,
    /// Generation stops before any of these; they are never streamed.
    #[uniffi(default = [])]
    pub stop: Vec<String>,
    /// What the answer must be; `None` is plain text. Not with tools that
    /// may be called (`toolChoice` `TextOnly` for a formatted answer).
    #[uniffi(default = None)]
    pub response_format: Option<ResponseFormat>,
    /// Whether a turn of a session with tools may call them; `None` is
    /// `Auto`.
    #[uniffi(default = None)]
    pub tool_choice: Option<ToolChoice>,
}

/// Whether a chat turn may, must or must not call the session's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ToolChoice {
    /// The model answers in text or calls tools, as it decides.
    Auto,
    /// The answer is one or more tool calls.
    Required,
    /// A text answer; the tools stay declared.
    TextOnly,
}

impl From<ToolChoice> for engine::ToolChoice {
    fn from(c: ToolChoice) -> Self {
        match c {
            ToolChoice::Auto => engine::ToolChoice::Auto,
            ToolChoice::Required => engine::ToolChoice::Required,
            ToolChoice::TextOnly => engine::ToolChoice::TextOnly,
        }
    }
}

/// A function the model may call in a session (`LanguageModel.newSessionWithTools`).
/// The library never runs it: a call comes back in
/// `GenerationResult.toolCalls` and the app answers with
/// `ChatSession.sendToolResults`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Tool {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`, unique in the session.
    pub name: String,
    /// What it does, for the model to decide when to call it.
    pub description: String,
    /// A JSON Schema of its arguments (an object); `{}` for none.
    pub parameters: String,
}

impl From<Tool> for engine::Tool {
    fn from(t: Tool) -> Self {
        engine::Tool { name: t.name, description: t.description, parameters: t.parameters }
    }
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ToolCall {
    /// One of the session's tools.
    pub name: String,
    /// A JSON object valid against the tool's `parameters`.
    pub arguments: String,
}

impl From<engine::ToolCall> for ToolCall {
    fn from(c: engine::ToolCall) -> Self {
        ToolCall { name: c.name, arguments: c.arguments }
    }
}

impl From<ToolCall> for engine::ToolCall {
    fn from(c: ToolCall) -> Self {
        engine::ToolCall { name: c.name, arguments: c.arguments }
    }
}

/// An answer guaranteed to have a shape: every token that cannot continue a
/// valid answer is masked out before sampling (at any temperature), and the
/// answer ends once complete. `stopReason` says whether it is: `EndOfSequence`
/// for a complete answer, `MaxTokens` or `ContextFull` for one cut short.
/// A format that does not compile is `InvalidParameter` saying why.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ResponseFormat {
    /// Plain text (the same as none).
    Text,
    /// Any JSON object.
    Json,
    /// A JSON value valid against `schema`, a JSON Schema document (draft
    /// 2020-12 keywords; `$ref` only within the document).
    JsonSchema { schema: String },
    /// Text matching `pattern` as a whole (Rust regex syntax: no lookaround
    /// or backreferences).
    Regex { pattern: String },
}

impl From<ResponseFormat> for engine::ResponseFormat {
    fn from(f: ResponseFormat) -> Self {
        match f {
            ResponseFormat::Text => engine::ResponseFormat::Text,
            ResponseFormat::Json => engine::ResponseFormat::Json,
            ResponseFormat::JsonSchema { schema } => engine::ResponseFormat::JsonSchema(schema),
            ResponseFormat::Regex { pattern } => engine::ResponseFormat::Regex(pattern),
        }
    }
}

impl Default for GenerationParams {
    fn default() -> Self {
        let d = engine::GenerateOptions::default();
        Self {
            max_tokens: int(d.max_tokens),
            temperature: d.sampling.temperature,
            top_k: int(d.sampling.top_k),
            top_p: d.sampling.top_p,
            min_p: d.sampling.min_p,
            repeat_penalty: d.sampling.repeat_penalty,
            repeat_last_n: int(d.sampling.repeat_last_n),
            seed: d.sampling.seed.map(|s| s as i64),
            stop: d.stop,
            response_format: None,
            tool_choice: None,
        }
    }
}

impl GenerationParams {
    /// Deterministic argmax decoding.
    pub fn greedy(max_tokens: i32) -> Self {
        Self { max_tokens, temperature: 0.0, repeat_penalty: 1.0, ..Self::default() }
    }
}

impl TryFrom<GenerationParams> for engine::GenerateOptions {
    type Error = LlmError;

    fn try_from(p: GenerationParams) -> Result<Self> {
        Ok(engine::GenerateOptions {
            sampling: engine::SamplingConfig {
                temperature: p.temperature,
                top_k: count("top_k", p.top_k)?,
                top_p: p.top_p,
                min_p: p.min_p,
                repeat_penalty: p.repeat_penalty,
                repeat_last_n: count("repeat_last_n", p.repeat_last_n)?,
                // The caller's 64 bits, reinterpreted: every value is a seed.
                seed: p.seed.map(|s| s as u64),
            },
            max_tokens: count("max_tokens", p.max_tokens)?,
            stop: p.stop,
            format: p.response_format.map(Into::into).unwrap_or_default(),
            tool_choice: p.tool_choice.map(Into::into).unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum StopReason {
    /// The model ended its answer.
    EndOfSequence,
    MaxTokens,
    StopString,
    /// `cancel()` was called or the sink returned false.
    Cancelled,
    /// The context window is full; start a new session to go on.
    ContextFull,
    /// The answer ended with tool calls (`GenerationResult.toolCalls`): run
    /// them and answer with `ChatSession.sendToolResults`.
    ToolCalls,
}

impl From<engine::StopReason> for StopReason {
    fn from(r: engine::StopReason) -> Self {
        match r {
            engine::StopReason::EndOfSequence => StopReason::EndOfSequence,
            engine::StopReason::MaxTokens => StopReason::MaxTokens,
            engine::StopReason::StopString => StopReason::StopString,
            engine::StopReason::Cancelled => StopReason::Cancelled,
            engine::StopReason::ContextFull => StopReason::ContextFull,
            engine::StopReason::ToolCalls => StopReason::ToolCalls,
        }
    }
}

/// What one generation call answered (its text, ids and tool calls) and
/// what it took: a result, with its statistics.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerationResult {
    /// Exactly the concatenation of the pieces the sink received.
    pub text: String,
    pub token_ids: Vec<i32>,
    pub prompt_tokens: i32,
    /// Prompt tokens served from the session's cache instead of recomputed.
    pub cached_prompt_tokens: i32,
    pub generated_tokens: i32,
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub stop_reason: StopReason,
    /// The tool calls the answer ended with (`text` is what came before).
    pub tool_calls: Vec<ToolCall>,
}

impl From<engine::Outcome> for GenerationResult {
    fn from(o: engine::Outcome) -> Self {
        Self {
            prefill_tokens_per_second: o.prefill_tokens_per_second(),
            decode_tokens_per_second: o.decode_tokens_per_second(),
            time_to_first_token_ms: o.timings.time_to_first_token.as_secs_f64() * 1e3,
            prompt_tokens: int(o.prompt_tokens),
            cached_prompt_tokens: int(o.cached_prompt_tokens),
            generated_tokens: int(o.token_ids.len()),
            stop_reason: o.stop_reason.into(),
            tool_calls: o.tool_calls.into_iter().map(Into::into).collect(),
            token_ids: ids_out(o.token_ids),
            text: o.text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: Option<String>,
    pub parameter_count: i64,
    /// The context in use (after any cap from `ModelConfig`).
    pub context_length: i32,
    pub trained_context_length: i32,
    pub vocab_size: i32,
    /// Main weight type, e.g. "Q4_K".
    pub quantization: String,
    pub file_size_bytes: i64,
    /// The weights are the file's mapped pages (false: a heap copy, because
    /// the file system refused a map or `map_weights` was off).
    pub weights_mapped: bool,
    pub threads: i32,
    /// The CPU cores the compute threads are pinned to: the performance
    /// cores (empty: not pinned, because all cores are alike, the OS does not
    /// say which are fast, or more threads were asked for than there are).
    pub cores: Vec<i32>,
    /// KV-cache bytes each token of a conversation takes (all layers; half
    /// with the default f16 cache of what `kv_cache_f32` takes).
    pub kv_bytes_per_token: i64,
    /// Set when the file's chat template was refused (too large, too deeply
    /// nested, does not compile, or fails on a one-message chat) and the
    /// built-in format of the model's family is used instead: why.
    pub chat_template_warning: Option<String>,
}

impl From<&engine::ModelInfo> for ModelInfo {
    fn from(i: &engine::ModelInfo) -> Self {
        Self {
            architecture: i.architecture.clone(),
            name: i.name.clone(),
            parameter_count: long(i.parameter_count),
            context_length: int(i.context_length),
            trained_context_length: int(i.trained_context_length),
            vocab_size: int(i.vocab_size),
            quantization: i.quantization.clone(),
            file_size_bytes: long(i.file_size),
            weights_mapped: i.weights_mapped,
            threads: int(i.threads),
            cores: i.cores.iter().map(|&c| int(c)).collect(),
            kv_bytes_per_token: long(i.kv_bytes_per_token as u64),
            chat_template_warning: i.chat_template_warning.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result (`ChatSession.sendToolResults`).
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// An assistant message's tool calls.
    #[uniffi(default = [])]
    pub tool_calls: Vec<ToolCall>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new() }
    }
}

impl From<ChatMessage> for engine::Message {
    fn from(m: ChatMessage) -> Self {
        let role = match m.role {
            Role::System => engine::Role::System,
            Role::User => engine::Role::User,
            Role::Assistant => engine::Role::Assistant,
            Role::Tool => engine::Role::Tool,
        };
        let mut message = engine::Message::new(role, m.content);
        message.tool_calls = m.tool_calls.into_iter().map(Into::into).collect();
        message
    }
}

impl From<&engine::Message> for ChatMessage {
    fn from(m: &engine::Message) -> Self {
        let role = match m.role {
            engine::Role::System => Role::System,
            engine::Role::User => Role::User,
            engine::Role::Assistant => Role::Assistant,
            engine::Role::Tool => Role::Tool,
        };
        let tool_calls = m.tool_calls.iter().cloned().map(Into::into).collect();
        ChatMessage { role, content: m.content.clone(), tool_calls }
    }
}

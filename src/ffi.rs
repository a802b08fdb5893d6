//! The UniFFI surface: thin wrappers that convert records to engine types,
//! call the engine, and map its errors to `LlmError`. No logic lives here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::engine::{self, panic_message};

/// The one error type callers see. Each variant is something an app can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum LlmError {
    #[error("Model file not found: {path}.")]
    ModelNotFound { path: String },
    #[error("The file is not a usable model: {reason}.")]
    InvalidModel { reason: String },
    #[error("Model architecture '{architecture}' is not supported (supported: phi3, llama).")]
    UnsupportedArchitecture { architecture: String },
    #[error("Tokenizer problem: {reason}.")]
    Tokenizer { reason: String },
    #[error("Invalid parameter {name}: {reason}.")]
    InvalidParameter { name: String, reason: String },
    #[error("The input needs {needed} tokens but the context holds {available}.")]
    ContextOverflow { needed: u32, available: u32 },
    #[error("A callback failed: {reason}.")]
    Callback { reason: String },
    #[error("Inference failed: {reason}.")]
    Inference { reason: String },
    #[error("Download failed: {reason}.")]
    Network { reason: String },
    #[error("Cannot write the file: {reason}.")]
    Storage { reason: String },
    #[error("The operation was cancelled.")]
    Cancelled,
}

/// A Kotlin/Swift exception thrown inside a `TokenSink` arrives here.
impl From<uniffi::UnexpectedUniFFICallbackError> for LlmError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        LlmError::Callback { reason: e.reason }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<engine::Error> for LlmError {
    fn from(e: engine::Error) -> Self {
        use engine::Error as E;
        match e {
            E::NotFound(p) => LlmError::ModelNotFound { path: p.display().to_string() },
            E::Io { path, source } => {
                LlmError::InvalidModel { reason: format!("cannot read {}: {source}", path.display()) }
            }
            E::InvalidModel(reason) => LlmError::InvalidModel { reason },
            E::UnsupportedArchitecture(architecture) => LlmError::UnsupportedArchitecture { architecture },
            E::Tokenizer(reason) => LlmError::Tokenizer { reason },
            E::InvalidParameter { name, reason } => LlmError::InvalidParameter { name: name.to_string(), reason },
            E::ContextOverflow { needed, available } => {
                LlmError::ContextOverflow { needed: saturating_u32(needed), available: saturating_u32(available) }
            }
            E::Callback(reason) => LlmError::Callback { reason },
            E::Inference(reason) => LlmError::Inference { reason },
            E::Network(reason) => LlmError::Network { reason },
            e @ E::Storage { .. } => LlmError::Storage { reason: e.to_string() },
            E::Cancelled => LlmError::Cancelled,
        }
    }
}

type Result<T, E = LlmError> = std::result::Result<T, E>;

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
    #[uniffi(default = None)]
    pub context_length: Option<u32>,
    /// Compute threads; default one per physical core. Process-wide: the first
    /// model loaded fixes it.
    #[uniffi(default = None)]
    pub threads: Option<u32>,
    /// Off (the default): control tokens typed in chat messages (e.g.
    /// `<|system|>`, `<|im_start|>`) are encoded as plain text, so a user
    /// cannot forge a turn; only the chat template writes control tokens.
    /// On: they become control tokens, as before. Raw prompts
    /// (`generate`, `tokenize`) always parse them: the app wrote those.
    #[uniffi(default = false)]
    pub parse_special_in_messages: bool,
}

impl ModelConfig {
    pub fn new(model_path: impl Into<String>) -> Self {
        Self {
            model_path: model_path.into(),
            tokenizer_path: None,
            context_length: None,
            threads: None,
            parse_special_in_messages: false,
        }
    }
}

/// Sampling and stopping. `GenerationParams::default()` (Rust) and the
/// generated constructors' defaults (Kotlin/Swift) are the same values.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerationParams {
    #[uniffi(default = 512)]
    pub max_tokens: u32,
    /// 0 = greedy.
    #[uniffi(default = 0.8)]
    pub temperature: f32,
    /// 0 = off.
    #[uniffi(default = 40)]
    pub top_k: u32,
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
    pub repeat_last_n: u32,
    /// Same seed and parameters give the same output; `None` = random.
    #[uniffi(default = None)]
    pub seed: Option<u64>,
    /// Generation stops before any of these; they are never streamed.
    #[uniffi(default = [])]
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        let d = engine::GenerateOptions::default();
        Self {
            max_tokens: saturating_u32(d.max_tokens),
            temperature: d.sampling.temperature,
            top_k: saturating_u32(d.sampling.top_k),
            top_p: d.sampling.top_p,
            min_p: d.sampling.min_p,
            repeat_penalty: d.sampling.repeat_penalty,
            repeat_last_n: saturating_u32(d.sampling.repeat_last_n),
            seed: d.sampling.seed,
            stop: d.stop,
        }
    }
}

impl GenerationParams {
    /// Deterministic argmax decoding.
    pub fn greedy(max_tokens: u32) -> Self {
        Self { max_tokens, temperature: 0.0, repeat_penalty: 1.0, ..Self::default() }
    }
}

impl From<GenerationParams> for engine::GenerateOptions {
    fn from(p: GenerationParams) -> Self {
        engine::GenerateOptions {
            sampling: engine::SamplingConfig {
                temperature: p.temperature,
                top_k: p.top_k as usize,
                top_p: p.top_p,
                min_p: p.min_p,
                repeat_penalty: p.repeat_penalty,
                repeat_last_n: p.repeat_last_n as usize,
                seed: p.seed,
            },
            max_tokens: p.max_tokens as usize,
            stop: p.stop,
        }
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
}

impl From<engine::StopReason> for StopReason {
    fn from(r: engine::StopReason) -> Self {
        match r {
            engine::StopReason::EndOfSequence => StopReason::EndOfSequence,
            engine::StopReason::MaxTokens => StopReason::MaxTokens,
            engine::StopReason::StopString => StopReason::StopString,
            engine::StopReason::Cancelled => StopReason::Cancelled,
            engine::StopReason::ContextFull => StopReason::ContextFull,
        }
    }
}

/// The result of one generation call.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerationStats {
    /// Exactly the concatenation of the pieces the sink received.
    pub text: String,
    pub token_ids: Vec<u32>,
    pub prompt_tokens: u32,
    /// Prompt tokens served from the session's cache instead of recomputed.
    pub cached_prompt_tokens: u32,
    pub generated_tokens: u32,
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub stop_reason: StopReason,
}

impl From<engine::Outcome> for GenerationStats {
    fn from(o: engine::Outcome) -> Self {
        Self {
            prefill_tokens_per_second: o.prefill_tokens_per_second(),
            decode_tokens_per_second: o.decode_tokens_per_second(),
            time_to_first_token_ms: o.timings.time_to_first_token.as_secs_f64() * 1e3,
            prompt_tokens: saturating_u32(o.prompt_tokens),
            cached_prompt_tokens: saturating_u32(o.cached_prompt_tokens),
            generated_tokens: saturating_u32(o.token_ids.len()),
            stop_reason: o.stop_reason.into(),
            token_ids: o.token_ids,
            text: o.text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: Option<String>,
    pub parameter_count: u64,
    /// The context in use (after any cap from `ModelConfig`).
    pub context_length: u32,
    pub trained_context_length: u32,
    pub vocab_size: u32,
    /// Main weight type, e.g. "Q4_K".
    pub quantization: String,
    pub file_size_bytes: u64,
    pub threads: u32,
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
            parameter_count: i.parameter_count,
            context_length: saturating_u32(i.context_length),
            trained_context_length: saturating_u32(i.trained_context_length),
            vocab_size: saturating_u32(i.vocab_size),
            quantization: i.quantization.clone(),
            file_size_bytes: i.file_size,
            threads: saturating_u32(i.threads),
            chat_template_warning: i.chat_template_warning.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl From<ChatMessage> for engine::Message {
    fn from(m: ChatMessage) -> Self {
        let role = match m.role {
            Role::System => engine::Role::System,
            Role::User => engine::Role::User,
            Role::Assistant => engine::Role::Assistant,
        };
        engine::Message::new(role, m.content)
    }
}

impl From<&engine::Message> for ChatMessage {
    fn from(m: &engine::Message) -> Self {
        let role = match m.role {
            engine::Role::System => Role::System,
            engine::Role::User => Role::User,
            engine::Role::Assistant => Role::Assistant,
        };
        ChatMessage { role, content: m.content.clone() }
    }
}

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
fn callback_error(e: LlmError) -> engine::Error {
    match e {
        LlmError::Callback { reason } => engine::Error::Callback(reason),
        other => engine::Error::Callback(other.to_string()),
    }
}

fn call_sink<'a>(sink: &'a dyn TokenSink) -> impl FnMut(&str) -> engine::Result<bool> + 'a {
    move |piece| {
        catch_unwind(AssertUnwindSafe(|| sink.on_text(piece.to_string())))
            .map_err(|p| engine::Error::Callback(format!("the sink panicked: {}", panic_message(&*p))))?
            .map_err(callback_error)
    }
}

/// Every exported call that can fail runs inside this: a panic that got past
/// the engine's own guards becomes a typed error here instead of UniFFI's
/// internal error (or an abort) in the host app. `tests/ffi_boundary.rs`
/// checks that each such export uses it.
fn guard<T>(on_panic: fn(String) -> LlmError, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(on_panic(format!("internal error: {}", panic_message(&*p)))))
}

fn invalid_model(reason: String) -> LlmError {
    LlmError::InvalidModel { reason }
}

fn tokenizer_error(reason: String) -> LlmError {
    LlmError::Tokenizer { reason }
}

fn inference_error(reason: String) -> LlmError {
    LlmError::Inference { reason }
}

/// Cancels a one-shot `Model.generate` from another thread. One token per
/// call; once cancelled it stays cancelled.
#[derive(Debug, Default, uniffi::Object)]
pub struct CancellationToken {
    flag: AtomicBool,
}

#[uniffi::export]
impl CancellationToken {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A loaded model. Thread-safe; many sessions can run on it at once, each
/// with its own KV cache over the shared weights.
#[derive(uniffi::Object)]
pub struct Model {
    inner: Arc<engine::LoadedModel>,
}

#[uniffi::export]
impl Model {
    /// Loads a GGUF model (blocking; call it off the UI thread).
    #[uniffi::constructor]
    pub fn load(config: ModelConfig) -> Result<Arc<Self>> {
        Self::load_inner(config, &mut |_, _| {})
    }

    /// Like `load`, reporting bytes read as it goes.
    #[uniffi::constructor]
    pub fn load_with_progress(config: ModelConfig, progress: Arc<dyn LoadProgress>) -> Result<Arc<Self>> {
        // A panicking progress callback must not abort the load half-way
        // through candle; it only loses its reports.
        let mut broken = false;
        Self::load_inner(config, &mut |done, total| {
            if !broken {
                broken = catch_unwind(AssertUnwindSafe(|| progress.on_progress(done, total))).is_err();
            }
        })
    }

    pub fn info(&self) -> ModelInfo {
        (&self.inner.info).into()
    }

    /// Token ids for `text` as this model's tokenizer encodes a prompt.
    pub fn tokenize(&self, text: String) -> Result<Vec<u32>> {
        guard(tokenizer_error, || Ok(self.inner.encode(&text)?))
    }

    /// Text for token ids (special tokens skipped).
    pub fn detokenize(&self, ids: Vec<u32>) -> Result<String> {
        guard(tokenizer_error, || Ok(self.inner.decode(&ids)?))
    }

    /// The prompt text a chat with these messages is rendered to (the model's
    /// chat format, ending with the cue for the assistant's answer).
    pub fn format_chat(&self, messages: Vec<ChatMessage>) -> Result<String> {
        let messages: Vec<engine::Message> = messages.into_iter().map(Into::into).collect();
        guard(inference_error, || Ok(self.inner.format_chat(&messages)?))
    }

    /// Completes `prompt` as raw text (no chat template), streaming to `sink`.
    /// Blocks the calling thread. `cancel`, if given, stops it within one
    /// token (or one prefill chunk) from any thread.
    #[uniffi::method(default(cancel = None))]
    pub fn generate(
        &self,
        prompt: String,
        params: GenerationParams,
        sink: Arc<dyn TokenSink>,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Result<GenerationStats> {
        guard(inference_error, || {
            let opts = params.into();
            let ids = self.inner.encode_prompt(&prompt)?;
            let mut sequence = engine::Sequence::new(&self.inner);
            let never = AtomicBool::new(false);
            let flag = cancel.as_ref().map_or(&never, |c| &c.flag);
            let outcome = sequence.generate(&self.inner, &ids, &opts, flag, &mut call_sink(sink.as_ref()))?;
            Ok(outcome.into())
        })
    }

    /// A chat session, optionally starting from an earlier transcript
    /// (e.g. a system message, or a conversation restored from storage).
    pub fn new_session(&self, history: Vec<ChatMessage>) -> Arc<ChatSession> {
        let history: Vec<engine::Message> = history.into_iter().map(Into::into).collect();
        Arc::new(ChatSession {
            model: self.inner.clone(),
            conversation: Mutex::new(engine::Conversation::new(&self.inner, history.clone())),
            history: Mutex::new(history),
            turn_thread: Mutex::new(None),
            reset_pending: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
        })
    }
}

impl Model {
    fn load_inner(config: ModelConfig, progress: &mut dyn FnMut(u64, u64)) -> Result<Arc<Self>> {
        guard(invalid_model, || {
            let cfg = engine::LoadConfig {
                model_path: PathBuf::from(config.model_path),
                tokenizer_path: config.tokenizer_path.map(PathBuf::from),
                context_length: config.context_length.map(|c| c as usize),
                threads: config.threads.map(|t| t as usize),
                parse_special_in_messages: config.parse_special_in_messages,
            };
            let inner = engine::LoadedModel::load(&cfg, progress)?;
            Ok(Arc::new(Self { inner: Arc::new(inner) }))
        })
    }
}

/// A multi-turn chat. Keeps its history and KV cache, so each turn only
/// processes the new tokens. Calls on one session run one at a time; use one
/// session per conversation.
///
/// The session's own `TokenSink` may call back into it: `history()` (without
/// the turn in progress) and `cancel()` work, `reset()` takes effect when the
/// turn ends, and a nested `send()` is an `InvalidParameter` error rather
/// than a deadlock.
#[derive(uniffi::Object)]
pub struct ChatSession {
    model: Arc<engine::LoadedModel>,
    /// Held for a whole turn (the sink runs under it).
    conversation: Mutex<engine::Conversation>,
    /// A copy of the conversation's history under its own, briefly held lock,
    /// for `history()` from inside the turn's own sink.
    history: Mutex<Vec<engine::Message>>,
    /// The thread running a turn: a `send` from that same thread (its sink)
    /// would wait on itself forever.
    turn_thread: Mutex<Option<ThreadId>>,
    reset_pending: AtomicBool,
    cancel: AtomicBool,
}

#[uniffi::export]
impl ChatSession {
    /// Sends a user message and streams the answer to `sink`. Blocks the
    /// calling thread.
    pub fn send(&self, message: String, params: GenerationParams, sink: Arc<dyn TokenSink>) -> Result<GenerationStats> {
        if self.in_own_turn() {
            return Err(LlmError::InvalidParameter {
                name: "session".into(),
                reason: "send() was called from inside this session's own TokenSink; use another session".into(),
            });
        }
        let mut conversation = self.lock();
        let _turn = TurnGuard::enter(&self.turn_thread);
        // A cancel() aimed at an earlier turn must not stop this one.
        self.cancel.store(false, Ordering::SeqCst);
        let result = guard(inference_error, || {
            let outcome =
                conversation.send(&self.model, message, &params.into(), &self.cancel, &mut call_sink(sink.as_ref()))?;
            Ok(outcome.into())
        });
        if self.reset_pending.swap(false, Ordering::SeqCst) {
            conversation.reset();
        }
        *lock_ignoring_poison(&self.history) = conversation.history().to_vec();
        result
    }

    /// Stops the generation in progress within one token (from any thread).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The messages so far. From another thread during a turn, it waits for
    /// the turn to end (and includes it); from inside this session's own
    /// sink, it answers at once, without the turn in progress.
    pub fn history(&self) -> Vec<ChatMessage> {
        if self.in_own_turn() {
            return lock_ignoring_poison(&self.history).iter().map(Into::into).collect();
        }
        self.lock().history().iter().map(Into::into).collect()
    }

    /// Back to the history the session was created with. From inside this
    /// session's own sink it applies when the turn ends (dropping that turn).
    pub fn reset(&self) {
        if self.in_own_turn() {
            self.reset_pending.store(true, Ordering::SeqCst);
            return;
        }
        let mut conversation = self.lock();
        conversation.reset();
        *lock_ignoring_poison(&self.history) = conversation.history().to_vec();
    }
}

impl ChatSession {
    fn lock(&self) -> MutexGuard<'_, engine::Conversation> {
        // A panic cannot happen while the lock is held (the engine catches
        // them), but if one did, the conversation is still structurally valid.
        lock_ignoring_poison(&self.conversation)
    }

    fn in_own_turn(&self) -> bool {
        *lock_ignoring_poison(&self.turn_thread) == Some(std::thread::current().id())
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records the thread running a turn for as long as the turn lasts.
struct TurnGuard<'a>(&'a Mutex<Option<ThreadId>>);

impl<'a> TurnGuard<'a> {
    fn enter(slot: &'a Mutex<Option<ThreadId>>) -> Self {
        *lock_ignoring_poison(slot) = Some(std::thread::current().id());
        Self(slot)
    }
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        *lock_ignoring_poison(self.0) = None;
    }
}

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
    /// Access token for gated or private repos.
    #[uniffi(default = None)]
    pub token: Option<String>,
}

/// Receives download progress on the thread that called `download_model`,
/// at most about 20 times a second.
#[uniffi::export(foreign)]
pub trait DownloadProgress: Send + Sync {
    /// Return `false` to cancel (the download then fails with
    /// `LlmError.Cancelled`); throwing cancels it with `LlmError.Callback`.
    fn on_progress(&self, bytes_done: u64, bytes_total: u64) -> Result<bool, LlmError>;
}

/// Downloads a model file into `directory` and returns its path; blocking
/// (call it off the UI thread).
///
/// If an earlier call already downloaded it, returns at once without network.
/// An interrupted download (dropped connection, app killed, cancelled) resumes
/// where it stopped, in this call or the next. The file appears at the
/// returned path only once complete and checked against the size the server
/// announced and, for LFS files (all model weights), their SHA-256.
/// `cancel` stops it from any thread (`LlmError.Cancelled`); the partial
/// file is kept for the next call. The layout inside `directory` is the Hub
/// cache's (`models--org--name/...`), so an app can share it with other tools.
#[uniffi::export(default(progress = None, cancel = None))]
pub fn download_model(
    request: DownloadRequest,
    directory: String,
    progress: Option<Arc<dyn DownloadProgress>>,
    cancel: Option<Arc<CancellationToken>>,
) -> Result<String> {
    guard(|reason| LlmError::Network { reason }, || download_inner(request, directory, progress, cancel))
}

fn download_inner(
    request: DownloadRequest,
    directory: String,
    progress: Option<Arc<dyn DownloadProgress>>,
    cancel: Option<Arc<CancellationToken>>,
) -> Result<String> {
    let spec = engine::DownloadSpec {
        repo_id: request.repo_id,
        filename: request.filename,
        revision: request.revision,
        endpoint: request.endpoint,
        token: request.token,
        directory: PathBuf::from(directory),
    };
    let never = AtomicBool::new(false);
    let flag = cancel.as_ref().map_or(&never, |c| &c.flag);
    let mut report = |done: u64, total: u64| match &progress {
        Some(p) => catch_unwind(AssertUnwindSafe(|| p.on_progress(done, total)))
            .map_err(|e| engine::Error::Callback(format!("the progress callback panicked: {}", panic_message(&*e))))?
            .map_err(callback_error),
        None => Ok(true),
    };
    let path = engine::download(&spec, &mut report, flag)?;
    Ok(path.to_string_lossy().into_owned())
}

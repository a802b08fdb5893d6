//! `LanguageModel`: load a GGUF, tokenize, format a chat, generate, start sessions.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;
use crate::engine::{self};

/// A loaded model. Thread-safe; many sessions can run on it at once, each
/// with its own KV cache over the shared weights. (Not plain `Model`: that
/// is the name of many an app's own type.)
#[derive(uniffi::Object)]
pub struct LanguageModel {
    pub(crate) inner: Arc<engine::LoadedModel>,
}

#[uniffi::export]
impl LanguageModel {
    /// Loads a GGUF model (blocking; call it off the UI thread).
    #[uniffi::constructor]
    pub fn load(config: ModelConfig) -> Result<Arc<Self>> {
        Self::load_inner(config, &mut |_, _| Ok(true))
    }

    /// Like `load`, reporting progress as it goes; `progress` (returning
    /// `false` or throwing) or `cancel` stops the load, with
    /// `LlmError.Cancelled` (or `Callback`) and nothing left loaded. A cancel
    /// that came before the call stops it at once.
    #[uniffi::constructor(default(cancel = None))]
    pub fn load_with_progress(
        config: ModelConfig,
        progress: Option<Arc<dyn LoadProgress>>,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Result<Arc<Self>> {
        Self::load_inner(config, &mut |done, total| {
            if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Ok(false);
            }
            progress.as_ref().map_or(Ok(true), |p| call_progress(|| p.on_progress(long(done), long(total))))
        })
    }

    pub fn info(&self) -> ModelInfo {
        (&self.inner.info).into()
    }

    /// Token ids for `text` as this model's tokenizer encodes a prompt.
    pub fn tokenize(&self, text: String) -> Result<Vec<i32>> {
        tokenizer::tokenize(&self.inner.text, &text)
    }

    /// How many tokens `generate(text)` feeds the model for this prompt (its
    /// start token included): what it costs of the context.
    pub fn count_tokens(&self, text: String) -> Result<i32> {
        tokenizer::count_tokens(&self.inner.text, &text)
    }

    /// Token ids of a chat of these messages as a prompt: what a session's
    /// `send` feeds (message contents encoded as text, never as control
    /// tokens).
    pub fn tokenize_chat(&self, messages: Vec<ChatMessage>) -> Result<Vec<i32>> {
        tokenizer::tokenize_chat(&self.inner.text, messages)
    }

    /// How many tokens a chat of these messages takes as a prompt, rendered
    /// in the model's chat format with the cue for the assistant's answer:
    /// with a session's `history()` plus the next message, the prompt its
    /// `send` would feed, to compare with `info().contextLength`.
    pub fn count_chat_tokens(&self, messages: Vec<ChatMessage>) -> Result<i32> {
        tokenizer::count_chat_tokens(&self.inner.text, messages)
    }

    /// Text for token ids (special tokens skipped).
    pub fn detokenize(&self, ids: Vec<i32>) -> Result<String> {
        tokenizer::detokenize(&self.inner.text, &ids)
    }

    /// The prompt text a chat with these messages is rendered to (the model's
    /// chat format, ending with the cue for the assistant's answer).
    pub fn format_chat(&self, messages: Vec<ChatMessage>) -> Result<String> {
        tokenizer::format_chat(&self.inner.text, messages)
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
    ) -> Result<GenerationResult> {
        guard(inference_error, || {
            let opts = params.try_into()?;
            let ids = self.inner.text.encode_prompt(&prompt)?;
            let mut sequence = engine::Sequence::new(&self.inner);
            let flags: Vec<&AtomicBool> = cancel.iter().map(|c| &*c.flag).collect();
            let stop = engine::Stop(&flags);
            let outcome = sequence.generate(&self.inner, &ids, &opts, stop, &mut call_sink(sink.as_ref()))?;
            Ok(outcome.into())
        })
    }

    /// A chat that `ChatSession.save` wrote, with its KV cache as it was:
    /// the next turn's first token comes as fast as in the chat that never
    /// stopped (its history is not run through the model again). The file
    /// must have been saved by this model (same file, tokenizer and
    /// template): a missing file, another model's, a truncated or a corrupt
    /// one is `InvalidSavedChat` (start a new chat); a file the OS refuses to
    /// read is `Storage`.
    pub fn restore_session(&self, path: String) -> Result<Arc<ChatSession>> {
        guard(inference_error, || {
            let conversation = engine::Conversation::restore(&self.inner, std::path::Path::new(&path))?;
            Ok(ChatSession::resume(&self.inner, conversation))
        })
    }

    /// `restoreSession` for a chat saved from a session with tools: the same
    /// `tools` declared again (as `newSessionWithTools` checks them), so the
    /// next turn's prompt matches the saved cache.
    pub fn restore_session_with_tools(&self, path: String, tools: Vec<Tool>) -> Result<Arc<ChatSession>> {
        guard(inference_error, || {
            let tools = engine::Toolset::new(&self.inner.text, tools.into_iter().map(Into::into).collect())?;
            let conversation = engine::Conversation::restore(&self.inner, std::path::Path::new(&path))?;
            Ok(ChatSession::resume(&self.inner, conversation.with_tools(tools.map(Arc::new))))
        })
    }

    /// Bytes of the weights in memory now: with mapped weights, the pages of
    /// the file the OS holds (it reads them on use and may drop them under
    /// pressure); with weights in the heap, all of them. `None` where the OS
    /// does not say.
    pub fn weights_resident_bytes(&self) -> Option<i64> {
        self.inner.weights_resident().map(long)
    }

    /// The most memory one chat session of `context_length` tokens takes:
    /// the weights (the whole file, once every page is read), its KV cache
    /// at that length (`ModelInfo.kv_bytes_per_token` each) and the working
    /// buffers. Capped at the model's context; a negative length is
    /// `InvalidParameter`.
    pub fn memory_estimate_bytes(&self, context_length: i32) -> Result<i64> {
        guard(inference_error, || Ok(long(self.inner.memory_estimate(count("context_length", context_length)?))))
    }

    /// A chat session, optionally starting from an earlier transcript
    /// (e.g. a system message, or a conversation restored from storage).
    pub fn new_session(&self, history: Vec<ChatMessage>) -> Arc<ChatSession> {
        ChatSession::start(&self.inner, history.into_iter().map(Into::into).collect())
    }

    /// A chat session whose turns may call `tools`: they are in every
    /// prompt (through the model's chat template, or described in the system
    /// message when the template has no place for them), and an answer that
    /// calls them ends with `StopReason.ToolCalls` and the calls in
    /// `GenerationResult.toolCalls`, each naming a tool with arguments valid
    /// against its schema. Run them and answer with `sendToolResults`.
    /// A tool with a bad name, a duplicate name or a schema that is not a
    /// JSON object or does not compile is `InvalidParameter` naming it.
    pub fn new_session_with_tools(&self, history: Vec<ChatMessage>, tools: Vec<Tool>) -> Result<Arc<ChatSession>> {
        guard(inference_error, || {
            let tools = engine::Toolset::new(&self.inner.text, tools.into_iter().map(Into::into).collect())?;
            let conversation = engine::Conversation::new(&self.inner, history.into_iter().map(Into::into).collect())
                .with_tools(tools.map(Arc::new));
            Ok(ChatSession::resume(&self.inner, conversation))
        })
    }
}

impl LanguageModel {
    fn load_inner(config: ModelConfig, progress: &mut engine::Progress<'_>) -> Result<Arc<Self>> {
        guard(invalid_model, || {
            let cfg = engine::LoadConfig {
                model_path: PathBuf::from(config.model_path),
                tokenizer_path: config.tokenizer_path.map(PathBuf::from),
                context_length: config.context_length.map(|c| count("context_length", c)).transpose()?,
                threads: config.threads.map(|t| count("threads", t)).transpose()?,
                parse_special_in_messages: config.parse_special_in_messages,
                no_map: !config.map_weights,
                kv_precision: if config.kv_cache_f32 { engine::KvPrecision::F32 } else { engine::KvPrecision::F16 },
            };
            let inner = engine::LoadedModel::load(&cfg, progress)?;
            Ok(Arc::new(Self { inner: Arc::new(inner) }))
        })
    }
}

/// The most memory one chat session of `context_length` tokens (`None`: the
/// model's own context) would take with the model file at `model_path`,
/// read from its header alone, before loading: what
/// `LanguageModel.memoryEstimateBytes` says once it is loaded (f16 cache; see there).
/// Compare it with what the device has free before a load.
#[uniffi::export(default(context_length = None))]
pub fn estimate_model_memory(model_path: String, context_length: Option<i32>) -> Result<i64> {
    guard(invalid_model, || {
        let context = context_length.map(|c| count("context_length", c)).transpose()?;
        let bytes =
            engine::memory_estimate_of_file(std::path::Path::new(&model_path), context, engine::KvPrecision::F16)?;
        Ok(long(bytes))
    })
}

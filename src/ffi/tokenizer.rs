//! `ModelTokenizer`: a model file's tokenizer and chat format without its
//! weights (`engine::Text`), and the text calls `LanguageModel` shares with it.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::engine;

/// A model's tokenizer and chat format, read from the GGUF's header only
/// (milliseconds, a few MB; a vocabulary-only GGUF will do): count or
/// inspect a prompt's tokens without loading the weights. A loaded `LanguageModel`
/// has the same calls.
#[derive(uniffi::Object)]
pub struct ModelTokenizer {
    text: engine::Text,
}

#[uniffi::export]
impl ModelTokenizer {
    /// The tokenizer of the GGUF at `model_path`, or the Hugging Face
    /// `tokenizer.json` at `tokenizer_path` as `ModelConfig` would use it.
    #[uniffi::constructor(default(tokenizer_path = None))]
    pub fn load(model_path: String, tokenizer_path: Option<String>) -> Result<Arc<Self>> {
        guard(invalid_model, || {
            let tokenizer = tokenizer_path.map(PathBuf::from);
            Ok(Arc::new(Self { text: engine::Text::load(model_path.as_ref(), tokenizer.as_deref())? }))
        })
    }

    /// Token ids for `text` as the model encodes a prompt.
    pub fn tokenize(&self, text: String) -> Result<Vec<i32>> {
        tokenize(&self.text, &text)
    }

    /// How many tokens `LanguageModel.generate(text)` feeds (see `LanguageModel.countTokens`).
    pub fn count_tokens(&self, text: String) -> Result<i32> {
        count_tokens(&self.text, &text)
    }

    /// Token ids of a chat of these messages as a prompt (see
    /// `LanguageModel.tokenizeChat`).
    pub fn tokenize_chat(&self, messages: Vec<ChatMessage>) -> Result<Vec<i32>> {
        tokenize_chat(&self.text, messages)
    }

    /// How many tokens a chat of these messages takes as a prompt (see
    /// `LanguageModel.countChatTokens`).
    pub fn count_chat_tokens(&self, messages: Vec<ChatMessage>) -> Result<i32> {
        count_chat_tokens(&self.text, messages)
    }

    /// Text for token ids (special tokens skipped).
    pub fn detokenize(&self, ids: Vec<i32>) -> Result<String> {
        detokenize(&self.text, &ids)
    }

    /// The prompt text a chat with these messages is rendered to.
    pub fn format_chat(&self, messages: Vec<ChatMessage>) -> Result<String> {
        format_chat(&self.text, messages)
    }
}

pub(super) fn tokenize(text: &engine::Text, s: &str) -> Result<Vec<i32>> {
    guard(tokenizer_error, || Ok(ids_out(text.encode(s)?)))
}

pub(super) fn count_tokens(text: &engine::Text, s: &str) -> Result<i32> {
    guard(tokenizer_error, || Ok(int(text.encode_prompt(s)?.len())))
}

fn engine_messages(messages: Vec<ChatMessage>) -> Vec<engine::Message> {
    messages.into_iter().map(Into::into).collect()
}

pub(super) fn tokenize_chat(text: &engine::Text, messages: Vec<ChatMessage>) -> Result<Vec<i32>> {
    guard(inference_error, || Ok(ids_out(text.encode_chat(&engine_messages(messages))?)))
}

pub(super) fn count_chat_tokens(text: &engine::Text, messages: Vec<ChatMessage>) -> Result<i32> {
    guard(inference_error, || Ok(int(text.encode_chat(&engine_messages(messages))?.len())))
}

pub(super) fn detokenize(text: &engine::Text, ids: &[i32]) -> Result<String> {
    guard(tokenizer_error, || Ok(text.decode(&ids_in(ids)?)?))
}

pub(super) fn format_chat(text: &engine::Text, messages: Vec<ChatMessage>) -> Result<String> {
    guard(inference_error, || Ok(text.format_chat(&engine_messages(messages))?))
}

//! A chat session: the history and one sequence whose KV cache holds the
//! rendered history, so that each turn feeds only its new tokens.

use std::path::Path;

use super::super::chat::{Message, Role};
use super::super::error::Result;
use super::super::model::LoadedModel;
use super::saved::{self, Saved};
use super::{GenerateOptions, Outcome, Sequence, Sink, Stop};

/// A chat: history plus a sequence whose cache holds the rendered history, so
/// each turn feeds only the new tokens.
pub struct Conversation {
    initial: Vec<Message>,
    history: Vec<Message>,
    sequence: Sequence,
}

impl Conversation {
    pub fn new(model: &LoadedModel, history: Vec<Message>) -> Self {
        Self { initial: history.clone(), history, sequence: Sequence::new(model) }
    }

    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// Writes the conversation and its KV cache to `path` (`saved.rs`).
    pub fn save(&self, model: &LoadedModel, path: &Path) -> Result<()> {
        let saved = Saved { initial: self.initial.clone(), history: self.history.clone() };
        saved::save(model, &saved, &self.sequence, path)
    }

    /// A conversation `save` wrote for this model, its cache as it was: the
    /// next turn feeds only its own tokens.
    pub fn restore(model: &LoadedModel, path: &Path) -> Result<Self> {
        let mut sequence = Sequence::new(model);
        let Saved { initial, history } = saved::restore(model, &mut sequence, path)?;
        Ok(Self { initial, history, sequence })
    }

    /// Bytes its KV cache holds.
    pub fn cache_bytes(&self) -> usize {
        self.sequence.cache_bytes()
    }

    /// Releases KV-cache memory beyond what the conversation holds: the
    /// tokens its history renders to (after `reset()`, the first messages;
    /// the rest of the old chat goes), which is all the next turn can reuse.
    pub fn trim(&mut self, model: &LoadedModel) {
        let keep = match model.text.encode_chat(&self.history) {
            Ok(ids) => self.sequence.cached_tokens().iter().zip(&ids).take_while(|(a, b)| a == b).count(),
            Err(_) => 0,
        };
        self.sequence.trim(keep)
    }

    /// Back to the history the conversation started with. The cache is kept:
    /// the next turn reuses whatever prefix (e.g. a system prompt) still matches.
    pub fn reset(&mut self) {
        self.history = self.initial.clone();
    }

    pub fn send(
        &mut self,
        model: &LoadedModel,
        user_message: String,
        opts: &GenerateOptions,
        cancel: Stop<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Outcome> {
        let mut messages = self.history.clone();
        messages.push(Message::new(Role::User, user_message));
        let prompt = model.text.encode_chat(&messages)?;
        let outcome = self.sequence.generate(model, &prompt, opts, cancel, sink)?;
        messages.push(Message::new(Role::Assistant, outcome.text.clone()));
        self.history = messages;
        Ok(outcome)
    }
}

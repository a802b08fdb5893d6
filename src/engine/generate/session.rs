//! A chat session: the history and one sequence whose KV cache holds the
//! rendered history, so that each turn feeds only its new tokens.

use std::path::Path;
use std::sync::Arc;

use super::super::chat::{Message, Role};
use super::super::error::{Error, Result};
use super::super::model::LoadedModel;
use super::super::tools::Toolset;
use super::saved::{self, Saved};
use super::{GenerateOptions, Outcome, Sequence, Sink, Stop};

/// A chat: history plus a sequence whose cache holds the rendered history, so
/// each turn feeds only the new tokens.
pub struct Conversation {
    initial: Vec<Message>,
    history: Vec<Message>,
    sequence: Sequence,
    /// The tools its turns may call (in every prompt).
    tools: Option<Arc<Toolset>>,
}

impl Conversation {
    pub fn new(model: &LoadedModel, history: Vec<Message>) -> Self {
        Self { initial: history.clone(), history, sequence: Sequence::new(model), tools: None }
    }

    /// The conversation with `tools` declared to the model (see `tools.rs`).
    pub fn with_tools(mut self, tools: Option<Arc<Toolset>>) -> Self {
        self.tools = tools;
        self
    }

    pub fn tools(&self) -> Option<&Toolset> {
        self.tools.as_deref()
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
        Ok(Self { initial, history, sequence, tools: None })
    }

    /// Bytes its KV cache holds.
    pub fn cache_bytes(&self) -> usize {
        self.sequence.cache_bytes()
    }

    /// Releases KV-cache memory beyond what the conversation holds: the
    /// tokens its history renders to (after `reset()`, the first messages;
    /// the rest of the old chat goes), which is all the next turn can reuse.
    pub fn trim(&mut self, model: &LoadedModel) {
        let keep = match model.text.encode_chat_with(&self.history, self.tools()) {
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
        self.turn(model, vec![Message::new(Role::User, user_message)], opts, cancel, sink)
    }

    /// Answers the last turn's tool calls with their `results`, one per call
    /// in call order, and generates the next answer.
    pub fn send_tool_results(
        &mut self,
        model: &LoadedModel,
        results: Vec<String>,
        opts: &GenerateOptions,
        cancel: Stop<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Outcome> {
        let calls = self.history.last().filter(|m| m.role == Role::Assistant).map_or(0, |m| m.tool_calls.len());
        if calls == 0 {
            return Err(Error::param("results", "the last answer called no tool: there is nothing to answer"));
        }
        if results.len() != calls {
            return Err(Error::param(
                "results",
                format!("the last answer made {calls} tool calls; give one result per call, got {}", results.len()),
            ));
        }
        let messages = results.into_iter().map(|r| Message::new(Role::Tool, r)).collect();
        self.turn(model, messages, opts, cancel, sink)
    }

    fn turn(
        &mut self,
        model: &LoadedModel,
        new: Vec<Message>,
        opts: &GenerateOptions,
        cancel: Stop<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Outcome> {
        let mut messages = self.history.clone();
        messages.extend(new);
        let tools = self.tools.as_deref();
        let prompt = model.text.encode_chat_with(&messages, tools)?;
        let outcome = self.sequence.generate_turn(model, &prompt, opts, tools, cancel, sink)?;
        let mut answer = Message::new(Role::Assistant, outcome.text.clone());
        answer.tool_calls = outcome.tool_calls.clone();
        messages.push(answer);
        self.history = messages;
        Ok(outcome)
    }
}

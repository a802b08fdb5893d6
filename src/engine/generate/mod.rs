//! The generation loop: prefill the prompt in batched chunks, then sample one
//! token per step, streaming text through a sink. Chat sessions and their
//! turn rules are in `session`.

mod saved;
mod session;

pub use session::Conversation;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chat::ToolCall;
use super::constraint::{Constraint, ResponseFormat};
use super::error::{catch_panic, Error, Result};
use super::model::LoadedModel;
use super::sampler::{Sampler, SamplingConfig};
use super::tokenizer::stream::{Filtered, PieceStream};
use super::tools::{ToolChoice, Toolset, Trigger};
use super::weights::{State, Weights};

/// Prompt tokens per forward call: bounds the forward pass's buffers (a
/// chunk's rows of the widest layer) while keeping prefill batched.
pub(crate) const PREFILL_CHUNK: usize = 256;
pub const MAX_STOP_STRINGS: usize = 16;
const MAX_STOP_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub sampling: SamplingConfig,
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are never streamed.
    pub stop: Vec<String>,
    /// What the answer must be (JSON, a schema, a regex); plain text by default.
    pub format: ResponseFormat,
    /// Whether a chat turn may call its session's tools.
    pub tool_choice: ToolChoice,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingConfig::default(),
            max_tokens: 512,
            stop: Vec::new(),
            format: ResponseFormat::default(),
            tool_choice: ToolChoice::default(),
        }
    }
}

impl GenerateOptions {
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        if self.max_tokens == 0 {
            return Err(Error::param("max_tokens", "must be at least 1"));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(Error::param("stop", format!("at most {MAX_STOP_STRINGS} stop strings")));
        }
        if let Some(s) = self.stop.iter().find(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
            return Err(Error::param(
                "stop",
                format!("stop strings must be 1..={MAX_STOP_LEN} bytes, got {} bytes", s.len()),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-turn / end-of-text token.
    EndOfSequence,
    MaxTokens,
    StopString,
    /// `cancel()` was called or the sink asked to stop.
    Cancelled,
    /// The context window is full.
    ContextFull,
    /// The answer ended with tool calls (`Outcome::tool_calls`), for the
    /// app to run and answer.
    ToolCalls,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Call start to the first sampled token (includes prefill).
    pub time_to_first_token: Duration,
    pub prefill: Duration,
    /// First sampled token to the end.
    pub decode: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Exactly the concatenation of the streamed pieces.
    pub text: String,
    /// Generated token ids, without the end token.
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cache was reused from an earlier call.
    pub cached_prompt_tokens: usize,
    pub stop_reason: StopReason,
    /// The calls the answer ended with (`text` is what came before them).
    pub tool_calls: Vec<ToolCall>,
    pub timings: Timings,
}

impl Outcome {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens - self.cached_prompt_tokens, self.timings.prefill)
    }

    /// Tokens after the first, over the time after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        per_second(self.token_ids.len().saturating_sub(1), self.timings.decode)
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    if n == 0 || d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// One token stream with its own KV cache over shared weights.
pub struct Sequence {
    weights: Arc<Weights>,
    state: State,
    /// Tokens whose keys/values are in the cache, in order.
    cached: Vec<u32>,
}

/// Receives each text piece; returns `Ok(false)` to stop generating.
pub type Sink<'a> = dyn FnMut(&str) -> Result<bool> + 'a;

/// What stops a generation within one token: any of these flags, set from
/// any thread. A chat turn watches its session's `cancel()` and the caller's
/// per-call token; a flag set before the turn starts stops it at once.
#[derive(Clone, Copy)]
pub struct Stop<'a>(pub &'a [&'a AtomicBool]);

impl Stop<'_> {
    /// Nothing can stop it but the sink.
    pub const NEVER: Stop<'static> = Stop(&[]);

    pub fn is_set(&self) -> bool {
        self.0.iter().any(|f| f.load(Ordering::Relaxed))
    }
}

impl Sequence {
    pub fn new(model: &LoadedModel) -> Self {
        let weights = model.weights.clone();
        Self { state: weights.new_state(), weights, cached: Vec::new() }
    }

    /// Forgets the cache (its memory is kept for the next run).
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Bytes the KV cache holds now.
    pub fn cache_bytes(&self) -> usize {
        self.state.cache.bytes()
    }

    /// Keeps the cache's first `keep` tokens at most and releases the
    /// memory past them (`KvCache::trim`).
    pub fn trim(&mut self, keep: usize) {
        self.cached.truncate(keep);
        self.state.cache.truncate(self.cached.len());
        self.state.cache.trim();
    }

    /// Runs `ids` after the first `pos` cached tokens, on the way to a
    /// sequence of `total` tokens; writes the logits of the last into
    /// `logits` (reused: no allocation per token). On an error (a stop
    /// included) the cache is as it was up to `pos`, or, when LongRoPE's
    /// switch had the cache recomputed, a prefix of it.
    fn feed(&mut self, ids: &[u32], pos: usize, total: usize, cancel: Stop<'_>, logits: &mut Vec<f32>) -> Result<()> {
        self.cached.truncate(pos);
        let long = self.weights.long_rope_for(total);
        if long == self.state.long_rope {
            return self.feed_rows(ids, pos, cancel, logits);
        }
        // Past its original context a LongRoPE model turns every position
        // by its long factors, the earlier ones too, and back below it by
        // the short ones: the cached positions are recomputed once, as
        // transformers' Phi-3 generate does at that point.
        let mut all = std::mem::take(&mut self.cached);
        all.extend_from_slice(ids);
        self.state.long_rope = long;
        for chunk in all.chunks(PREFILL_CHUNK) {
            if cancel.is_set() {
                return Err(Error::Cancelled);
            }
            self.feed_rows(chunk, self.cached.len(), cancel, logits)?;
        }
        Ok(())
    }

    fn feed_rows(&mut self, ids: &[u32], pos: usize, cancel: Stop<'_>, logits: &mut Vec<f32>) -> Result<()> {
        let (weights, state) = (&self.weights, &mut self.state);
        let stop = || cancel.is_set();
        catch_panic(Error::Inference, || {
            let out = weights.forward(state, ids, pos, &stop)?;
            logits.clear();
            logits.extend_from_slice(out);
            Ok(())
        })?;
        self.cached.extend_from_slice(ids);
        Ok(())
    }

    /// Generates a continuation of `prompt` (the full token sequence, BOS
    /// included). Reuses the cache for the longest prefix `prompt` shares
    /// with the previous call.
    pub fn generate(
        &mut self,
        model: &LoadedModel,
        prompt: &[u32],
        opts: &GenerateOptions,
        cancel: Stop<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Outcome> {
        self.generate_turn(model, prompt, opts, None, cancel, sink)
    }

    /// `generate` for a chat turn whose answer may call `tools` (with
    /// `opts.tool_choice`): the calls are constrained to the tools' schemas,
    /// not streamed, and parsed into `Outcome::tool_calls`.
    pub(crate) fn generate_turn(
        &mut self,
        model: &LoadedModel,
        prompt: &[u32],
        opts: &GenerateOptions,
        tools: Option<&Toolset>,
        cancel: Stop<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Outcome> {
        opts.validate()?;
        let ctx = model.context_length();
        if prompt.is_empty() {
            return Err(Error::param("prompt", "encodes to no tokens"));
        }
        if prompt.len() > ctx {
            return Err(Error::ContextOverflow { needed: prompt.len(), available: ctx });
        }
        // A format that does not compile fails before any work.
        let tools = tools.filter(|_| opts.tool_choice != ToolChoice::TextOnly);
        let mut constraint =
            match tools {
                None => model.text.grammars.compile(&model.text, &opts.format)?,
                Some(_) if opts.format != ResponseFormat::Text => return Err(Error::param(
                    "response_format",
                    "a turn that may call tools cannot also have a response format; set toolChoice to TextOnly for it",
                )),
                Some(set) => {
                    Some(model.text.grammars.compile_lark(&model.text, &set.grammar(opts.tool_choice), "tools")?)
                }
            };
        let started = Instant::now();
        let mut timings = Timings::default();

        let mut common = self.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        if self.weights.long_rope_for(prompt.len()) != self.state.long_rope {
            // Rotated by the other LongRoPE factors: nothing can be reused.
            common = 0;
        }
        // The cache keeps the shared prefix; the last prompt token is always
        // fed, for its logits.
        let start = common.min(prompt.len() - 1);
        self.cached.truncate(start);

        let mut logits = Vec::new();
        for chunk in prompt[start..].chunks(PREFILL_CHUNK) {
            // A stop is also seen inside the chunk's forward pass.
            let fed = if cancel.is_set() {
                Err(Error::Cancelled)
            } else {
                self.feed(chunk, self.cached.len(), prompt.len(), cancel, &mut logits)
            };
            match fed {
                Ok(()) => {}
                Err(Error::Cancelled) => {
                    timings.prefill = started.elapsed();
                    return Ok(Outcome {
                        text: String::new(),
                        token_ids: Vec::new(),
                        prompt_tokens: prompt.len(),
                        cached_prompt_tokens: start,
                        stop_reason: StopReason::Cancelled,
                        tool_calls: Vec::new(),
                        timings,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        timings.prefill = started.elapsed();

        let mut sampler =
            Sampler::for_vocabulary(opts.sampling.clone(), model.text.vocab.end(), model.text.vocab.gaps());
        let trigger = tools.map(Toolset::trigger);
        let mut stops = opts.stop.clone();
        if let Some(Trigger::Text(t)) = trigger {
            // Text is streamed up to the calls, never into them.
            stops.push(t.to_string());
        }
        let mut pieces = PieceStream::new(model.text.tokenizer(), stops);
        // In the calls: nothing more is streamed.
        let mut calling = false;
        let mut context = prompt.to_vec();
        let mut generated = Vec::new();
        let mut text = String::new();
        let mut sink_stopped = false;
        let mut emit = |piece: String, text: &mut String, sink_stopped: &mut bool| -> Result<()> {
            if piece.is_empty() || *sink_stopped {
                return Ok(());
            }
            text.push_str(&piece);
            if !sink(&piece)? {
                *sink_stopped = true;
            }
            Ok(())
        };
        let mut first_token_at = None;

        let reason = loop {
            if cancel.is_set() {
                break StopReason::Cancelled;
            }
            if let Some(c) = constraint.as_mut() {
                c.mask(&mut logits, &model.end_tokens)?;
            }
            let token = sampler.sample(&mut logits, &context)?;
            if first_token_at.is_none() {
                first_token_at = Some(Instant::now());
                timings.time_to_first_token = started.elapsed();
            }
            if model.end_tokens.contains(&token) {
                break StopReason::EndOfSequence;
            }
            if let Some(c) = constraint.as_mut() {
                c.accept(token)?;
            }
            generated.push(token);
            context.push(token);
            if !calling && trigger == Some(Trigger::Token(token)) {
                calling = true;
                let (Filtered::Stop(piece) | Filtered::Continue(piece)) = pieces.finish()?;
                emit(piece, &mut text, &mut sink_stopped)?;
                if pieces.matched_stop().is_some() {
                    break StopReason::StopString;
                }
            } else if !calling {
                match pieces.push(token)? {
                    Filtered::Continue(piece) => emit(piece, &mut text, &mut sink_stopped)?,
                    Filtered::Stop(piece) => {
                        emit(piece, &mut text, &mut sink_stopped)?;
                        match (pieces.matched_stop(), trigger) {
                            (Some(stop), Some(Trigger::Text(t))) if stop == t => calling = true,
                            _ => break StopReason::StopString,
                        }
                    }
                }
            }
            if sink_stopped {
                break StopReason::Cancelled;
            }
            if constraint.as_ref().is_some_and(Constraint::is_complete) {
                // Nothing may follow: the answer ends without asking the model.
                break StopReason::EndOfSequence;
            }
            if generated.len() >= opts.max_tokens {
                break StopReason::MaxTokens;
            }
            // The token just sampled goes in at the next free position.
            if self.cached.len() >= ctx {
                break StopReason::ContextFull;
            }
            match self.feed(&[token], self.cached.len(), self.cached.len() + 1, cancel, &mut logits) {
                Err(Error::Cancelled) => break StopReason::Cancelled,
                fed => fed?,
            }
        };

        let mut reason = reason;
        if reason != StopReason::StopString && !calling {
            // Release what is held back (also on cancel: the text of every
            // generated token goes out).
            match pieces.finish()? {
                Filtered::Stop(piece) => {
                    emit(piece, &mut text, &mut sink_stopped)?;
                    reason = StopReason::StopString;
                }
                Filtered::Continue(piece) => emit(piece, &mut text, &mut sink_stopped)?,
            }
        }
        if let Some(t) = first_token_at {
            timings.decode = t.elapsed();
        }
        let mut tool_calls = Vec::new();
        if let (true, Some(set)) = (calling, tools) {
            // Complete calls only: one cut short is not a call.
            let raw = catch_panic(Error::Tokenizer, || Ok(model.text.tokenizer().decode(&generated, false)?))?;
            if let Some((_, calls, whole)) = set.parse(&raw) {
                if whole && reason == StopReason::EndOfSequence && !calls.is_empty() {
                    reason = StopReason::ToolCalls;
                }
                tool_calls = calls;
            }
        }
        Ok(Outcome {
            text,
            token_ids: generated,
            prompt_tokens: prompt.len(),
            cached_prompt_tokens: start,
            stop_reason: reason,
            tool_calls,
            timings,
        })
    }
}

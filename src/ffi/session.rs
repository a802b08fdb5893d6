//! `ChatSession`: the exported face of `engine::Conversation`, with the
//! locking that lets a session's own sink call back into it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use super::*;
use crate::engine::{self};

/// A multi-turn chat. Keeps its history and KV cache, so each turn only
/// processes the new tokens. Calls on one session run one at a time; use one
/// session per conversation.
///
/// The session's own `TokenSink` may call back into it: `history()` (without
/// the turn in progress), `historySnapshot()` and `cancel()` work, `reset()`
/// takes effect when the turn ends, and a nested `send()` is a `Busy` error
/// rather than a deadlock.
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
    /// calling thread. `cancel`, if given, stops this turn within one token
    /// from any thread, even when cancelled before the turn starts (the
    /// contract of `LanguageModel.generate`); `cancel()` on the session stops only a
    /// turn already in progress.
    #[uniffi::method(default(cancel = None))]
    pub fn send(
        &self,
        message: String,
        params: GenerationParams,
        sink: Arc<dyn TokenSink>,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Result<GenerationResult> {
        self.run(Input::User(message), params, &mut call_sink(sink.as_ref()), cancel)
    }

    /// One turn, whole, without streaming: the answer's text once it is
    /// complete (the model ended it, or a stop string did). For a
    /// `params.responseFormat` that makes it valid JSON for the schema, or a
    /// match of the regex. An answer cut short (by `maxTokens` or a full
    /// context) is `IncompleteAnswer` with what there is; a cancel is
    /// `Cancelled`. The turn is in the history either way.
    #[uniffi::method(default(cancel = None))]
    pub fn answer(
        &self,
        message: String,
        params: GenerationParams,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Result<String> {
        complete_answer(self.run(Input::User(message), params, &mut |_| Ok(true), cancel)?)
    }

    /// Answers the last turn's tool calls with their `results` (one per
    /// call, in call order; each what the app wants the model to read, e.g.
    /// JSON) and streams the next answer, which may call tools again. As
    /// `send` otherwise; a count that does not match the calls, or no calls
    /// to answer, is `InvalidParameter`.
    #[uniffi::method(default(cancel = None))]
    pub fn send_tool_results(
        &self,
        results: Vec<String>,
        params: GenerationParams,
        sink: Arc<dyn TokenSink>,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Result<GenerationResult> {
        self.run(Input::ToolResults(results), params, &mut call_sink(sink.as_ref()), cancel)
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
            return self.history_snapshot();
        }
        self.lock().history().iter().map(Into::into).collect()
    }

    /// The messages of the turns that have ended, at once from any thread:
    /// it never waits, unlike `history()`, so during a turn it is the history
    /// before that turn (its message and answer come when it ends). For a UI
    /// that redraws the transcript while an answer streams.
    pub fn history_snapshot(&self) -> Vec<ChatMessage> {
        lock_ignoring_poison(&self.history).iter().map(Into::into).collect()
    }

    /// Writes the conversation and its KV cache to `path` (replacing the file
    /// there only once the new one is complete), for `LanguageModel.restoreSession`
    /// after the app is killed. Waits for a turn in progress to end; from
    /// inside this session's own sink it is `Busy`. About
    /// `ModelInfo.kv_bytes_per_token` bytes per token of the conversation.
    pub fn save(&self, path: String) -> Result<()> {
        self.refuse_in_own_turn("save()")?;
        guard(inference_error, || Ok(self.lock().save(&self.model, std::path::Path::new(&path))?))
    }

    /// Releases the KV-cache memory beyond what the conversation holds (the
    /// room it grew for ahead; after `reset()`, the old chat past the first
    /// messages), for `onTrimMemory` or a memory warning. The next turn
    /// grows it again.
    /// From inside this session's own sink it does nothing.
    pub fn trim(&self) {
        if !self.in_own_turn() {
            self.lock().trim(&self.model);
        }
    }

    /// Bytes this session's KV cache holds now.
    pub fn kv_cache_bytes(&self) -> i64 {
        if self.in_own_turn() {
            return 0;
        }
        long(self.lock().cache_bytes() as u64)
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
    pub(crate) fn start(model: &Arc<engine::LoadedModel>, history: Vec<engine::Message>) -> Arc<Self> {
        Self::resume(model, engine::Conversation::new(model, history))
    }

    pub(crate) fn resume(model: &Arc<engine::LoadedModel>, conversation: engine::Conversation) -> Arc<Self> {
        Arc::new(ChatSession {
            model: model.clone(),
            history: Mutex::new(conversation.history().to_vec()),
            conversation: Mutex::new(conversation),
            turn_thread: Mutex::new(None),
            reset_pending: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, engine::Conversation> {
        // A panic cannot happen while the lock is held (the engine catches
        // them), but if one did, the conversation is still structurally valid.
        lock_ignoring_poison(&self.conversation)
    }

    /// A call from inside the session's own turn (its sink) would wait on
    /// itself: a state error, not a bad argument.
    fn refuse_in_own_turn(&self, call: &str) -> Result<()> {
        if self.in_own_turn() {
            return Err(LlmError::Busy {
                reason: format!(
                    "this chat session is generating: {call} was called from inside its own TokenSink; use another session"
                ),
            });
        }
        Ok(())
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

impl ChatSession {
    fn run(
        &self,
        input: Input,
        params: GenerationParams,
        sink: &mut engine::Sink<'_>,
        cancel: Option<Arc<CancellationToken>>,
    ) -> Result<GenerationResult> {
        self.refuse_in_own_turn("send()")?;
        let mut conversation = self.lock();
        let _turn = TurnGuard::enter(&self.turn_thread);
        // A cancel() aimed at an earlier turn must not stop this one.
        self.cancel.store(false, Ordering::SeqCst);
        let result = guard(inference_error, || {
            let mut flags = vec![&self.cancel];
            flags.extend(cancel.iter().map(|c| &*c.flag));
            let stop = engine::Stop(&flags);
            let opts = params.try_into()?;
            Ok(match input {
                Input::User(message) => conversation.send(&self.model, message, &opts, stop, sink)?,
                Input::ToolResults(results) => {
                    conversation.send_tool_results(&self.model, results, &opts, stop, sink)?
                }
            }
            .into())
        });
        if self.reset_pending.swap(false, Ordering::SeqCst) {
            conversation.reset();
        }
        *lock_ignoring_poison(&self.history) = conversation.history().to_vec();
        result
    }
}

/// What a turn answers.
enum Input {
    User(String),
    ToolResults(Vec<String>),
}

/// The text of an answer that ended by itself; otherwise why it did not
/// (tool calls included: `send` returns them).
fn complete_answer(stats: GenerationResult) -> Result<String> {
    match stats.stop_reason {
        StopReason::EndOfSequence | StopReason::StopString => Ok(stats.text),
        StopReason::Cancelled => Err(LlmError::Cancelled),
        StopReason::MaxTokens | StopReason::ContextFull | StopReason::ToolCalls => {
            Err(LlmError::IncompleteAnswer { stop_reason: stats.stop_reason, partial: stats.text })
        }
    }
}

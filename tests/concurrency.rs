//! Threads: sessions on one model from several threads while another thread
//! cancels at random moments, and calls back into the library from inside a
//! `TokenSink`. No crash, no deadlock (every scenario runs under a deadline),
//! no cross-talk between sessions.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{reference_model, Collect};
use phi_mobile::*;

/// Runs `f` on its own thread; fails the test if it has not finished in `secs`
/// (a deadlock), re-raises its panic otherwise.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not finished after {secs} s (deadlock?)"),
    }
}

/// A small deterministic generator, so a failing schedule can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn four_sessions_and_a_random_canceller() {
    let model = reference_model();
    let prompts = ["alpha", "beta gamma", "delta epsilon zeta", "eta theta"];
    let params = || GenerationParams::greedy(24);
    // Sequential answers, one fresh session each.
    let expected: Vec<Vec<i32>> = prompts
        .iter()
        .map(|p| model.new_session(vec![]).send(p.to_string(), params(), Collect::new(), None).unwrap().token_ids)
        .collect();
    let expected = Arc::new(expected);

    within(240, "threads with cancels", move || {
        let sessions: Vec<Arc<ChatSession>> = (0..4).map(|_| model.new_session(vec![])).collect();
        let done = Arc::new(AtomicBool::new(false));
        let cancelled_turns = Arc::new(AtomicUsize::new(0));
        let finished_turns = Arc::new(AtomicUsize::new(0));
        let canceller = {
            let (sessions, done) = (sessions.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
                while !done.load(Ordering::SeqCst) {
                    // Up to ~2 turns' time: some turns run to the end, some stop early.
                    std::thread::sleep(Duration::from_micros(rng.next(25_000)));
                    sessions[rng.next(4) as usize].cancel();
                }
            })
        };
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let (session, expected) = (sessions[i].clone(), expected.clone());
                let (cancelled, finished) = (cancelled_turns.clone(), finished_turns.clone());
                std::thread::spawn(move || {
                    // At least 6 rounds, and on until both outcomes were seen
                    // (bounded: the canceller fires every ~12 ms).
                    for round in 0..200 {
                        let seen_both = cancelled.load(Ordering::SeqCst) > 0 && finished.load(Ordering::SeqCst) > 0;
                        if round >= 6 && seen_both {
                            break;
                        }
                        let stats = session.send(prompts[i].to_string(), params(), Collect::new(), None).unwrap();
                        // Cancelled turns stop early, but what they produced
                        // is this session's answer, never another's.
                        if stats.stop_reason == StopReason::Cancelled {
                            cancelled.fetch_add(1, Ordering::SeqCst);
                            assert!(expected[i].starts_with(&stats.token_ids), "session {i} round {round}: cross-talk");
                        } else {
                            finished.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(stats.token_ids, expected[i], "session {i} round {round}");
                        }
                        // Back to an empty history: the next turn has the
                        // same prompt and reuses (part of) the cache.
                        session.reset();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        canceller.join().unwrap();
        let (cancelled, finished) = (cancelled_turns.load(Ordering::SeqCst), finished_turns.load(Ordering::SeqCst));
        eprintln!("{cancelled} turns were cancelled, {finished} ran to the end");
        assert!(cancelled > 0, "no turn was cancelled: the test did not test cancellation");
        assert!(finished > 0, "every turn was cancelled: the answers were never compared");
    });
}

/// A sink that calls back into the library at its second piece.
struct Reentrant {
    model: Arc<LanguageModel>,
    session: Mutex<Option<Arc<ChatSession>>>,
    seen: AtomicUsize,
    log: Mutex<Vec<String>>,
}

impl TokenSink for Reentrant {
    fn on_text(&self, _piece: String) -> Result<bool, LlmError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) != 1 {
            return Ok(true);
        }
        let mut log = self.log.lock().unwrap();
        log.push(format!("tokenize {:?}", self.model.tokenize("nested".into()).map(|v| v.len())));
        let nested = self.model.generate("nested".into(), GenerationParams::greedy(3), Collect::new(), None);
        log.push(format!("generate {:?}", nested.map(|s| s.generated_tokens)));
        if let Some(session) = self.session.lock().unwrap().as_ref() {
            log.push(format!("history {}", session.history().len()));
            match session.send("again".into(), GenerationParams::greedy(2), Collect::new(), None) {
                Err(LlmError::Busy { .. }) => log.push("send refused (busy)".into()),
                other => log.push(format!("send {other:?}")),
            }
            // Another session on the same model works from here.
            let other = self.model.new_session(vec![]);
            log.push(format!(
                "other {:?}",
                other.send("x".into(), GenerationParams::greedy(2), Collect::new(), None).map(|s| s.generated_tokens)
            ));
            session.reset();
            session.cancel();
        }
        Ok(true)
    }
}

#[test]
fn calling_back_into_the_library_from_a_sink() {
    let model = reference_model();
    within(120, "re-entrant sink", move || {
        // One-shot generation: everything works from inside its sink.
        let sink = Arc::new(Reentrant {
            model: model.clone(),
            session: Mutex::new(None),
            seen: AtomicUsize::new(0),
            log: Mutex::default(),
        });
        let stats = model.generate("Hello".into(), GenerationParams::greedy(6), sink.clone(), None).unwrap();
        assert_eq!(stats.generated_tokens, 6);
        let log = sink.log.lock().unwrap().clone();
        let n = model.tokenize("nested".into()).unwrap().len();
        assert_eq!(log, [format!("tokenize Ok({n})"), "generate Ok(3)".into()], "{log:?}");

        // A session's own sink: history answers (the turn is not in it yet),
        // a nested send is refused, reset applies when the turn ends, cancel
        // stops the turn.
        let system = ChatMessage::new(Role::System, "Sys");
        let session = model.new_session(vec![system.clone()]);
        session.send("first".into(), GenerationParams::greedy(2), Collect::new(), None).unwrap();
        assert_eq!(session.history().len(), 3);
        let sink = Arc::new(Reentrant {
            model: model.clone(),
            session: Mutex::new(Some(session.clone())),
            seen: AtomicUsize::new(0),
            log: Mutex::default(),
        });
        let stats = session.send("second".into(), GenerationParams::greedy(50), sink.clone(), None).unwrap();
        assert_eq!(stats.stop_reason, StopReason::Cancelled);
        let log = sink.log.lock().unwrap().clone();
        assert_eq!(log[2], "history 3", "{log:?}");
        assert_eq!(log[3], "send refused (busy)", "{log:?}");
        assert_eq!(log[4], "other Ok(2)", "{log:?}");
        assert_eq!(session.history(), vec![system], "the reset from the sink applied after the turn");
        // The session is usable afterwards.
        let next = session.send("third".into(), GenerationParams::greedy(3), Collect::new(), None).unwrap();
        assert_eq!(next.generated_tokens, 3);
        assert_eq!(session.history().len(), 3);
        // Break the session ↔ sink cycle.
        sink.session.lock().unwrap().take();
    });
}

/// A sink that, at its first piece, says so and waits for a go-ahead.
struct Pause {
    started: Mutex<Option<mpsc::Sender<()>>>,
    go: Mutex<mpsc::Receiver<()>>,
}

impl TokenSink for Pause {
    fn on_text(&self, _piece: String) -> Result<bool, LlmError> {
        if let Some(tx) = self.started.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
        }
        Ok(true)
    }
}

/// `history()` from another thread during a turn waits for the turn and
/// includes it (the Swift and Kotlin layers rely on this), while `cancel()`
/// answers at once.
#[test]
fn history_from_another_thread_waits_for_the_turn() {
    let model = reference_model();
    within(120, "history during a turn", move || {
        let session = model.new_session(vec![]);
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let sink = Arc::new(Pause { started: Mutex::new(Some(started_tx)), go: Mutex::new(go_rx) });
        let turn = {
            let session = session.clone();
            std::thread::spawn(move || session.send("Go on".into(), GenerationParams::greedy(400), sink, None))
        };
        started.recv().unwrap();
        let (history_tx, history) = mpsc::channel();
        let reader = {
            let session = session.clone();
            std::thread::spawn(move || history_tx.send(session.history()).unwrap())
        };
        assert!(history.recv_timeout(Duration::from_millis(200)).is_err(), "history() did not wait for the turn");
        session.cancel();
        go.send(()).unwrap();
        let stats = turn.join().unwrap().unwrap();
        assert_eq!(stats.stop_reason, StopReason::Cancelled);
        assert_eq!(history.recv().unwrap().len(), 2, "the turn is in it");
        reader.join().unwrap();
    });
}

/// `history_snapshot()` never waits: from another thread during a turn it is
/// the history before the turn, and once the turn ends it is `history()`.
#[test]
fn history_snapshot_answers_during_a_turn() {
    let model = reference_model();
    within(120, "history snapshot during a turn", move || {
        let system = ChatMessage::new(Role::System, "Be brief.");
        let session = model.new_session(vec![system.clone()]);
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let sink = Arc::new(Pause { started: Mutex::new(Some(started_tx)), go: Mutex::new(go_rx) });
        let turn = {
            let session = session.clone();
            std::thread::spawn(move || session.send("Go on".into(), GenerationParams::greedy(4), sink, None))
        };
        started.recv().unwrap();
        // The turn is paused inside its sink, holding the session: a call
        // that waited for it would never return here.
        assert_eq!(session.history_snapshot(), vec![system]);
        go.send(()).unwrap();
        let stats = turn.join().unwrap().unwrap();
        let history = session.history();
        assert_eq!(history.len(), 3);
        assert_eq!(history[2].content, stats.text);
        assert_eq!(session.history_snapshot(), history);
    });
}

//! Behaviour of the public API on synthetic Phi-3 models: streaming, stop
//! strings, cancellation, sink errors, seeds, chat sessions, threads, context.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::{reference_model, Collect};
use phi_mobile::*;
use tokenizers::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(common::tokenizer_path()).unwrap()
}

fn greedy(n: i32) -> GenerationParams {
    GenerationParams::greedy(n)
}

#[test]
fn info_describes_the_file() {
    let info = reference_model().info();
    let spec = common::synthetic::Phi3Spec::reference();
    assert_eq!(info.architecture, "phi3");
    assert_eq!(info.name.as_deref(), Some("synthetic-phi3"));
    assert_eq!(info.context_length, 512);
    assert_eq!(info.vocab_size, 32011);
    assert_eq!(info.quantization, "F32");
    let per_layer =
        spec.hidden * 2 + 3 * spec.hidden * spec.hidden + spec.hidden * spec.hidden + 3 * spec.hidden * spec.ff;
    let expected = 2 * spec.vocab * spec.hidden + spec.hidden + spec.layers * per_layer;
    assert_eq!(info.parameter_count, expected as i64);
    assert!(info.threads >= 1);
}

#[test]
fn streamed_pieces_concatenate_to_the_decoded_text() {
    let model = reference_model();
    let sink = Collect::new();
    let stats = model.generate("Once upon a time".into(), greedy(48), sink.clone(), None).unwrap();
    assert_eq!(stats.stop_reason, StopReason::MaxTokens);
    assert_eq!(stats.generated_tokens, 48);
    assert_eq!(stats.token_ids.len(), 48);
    assert_eq!(sink.text(), stats.text);
    assert_eq!(stats.text, tokenizer().decode(&common::unsigned(&stats.token_ids), true).unwrap());
    assert!(sink.pieces().iter().all(|p| !p.is_empty()));
    assert_eq!(stats.prompt_tokens, model.tokenize("Once upon a time".into()).unwrap().len() as i32);
}

/// Sampled text from random weights is full of byte-fallback tokens, broken
/// UTF-8 and odd code points: its pieces still end on grapheme boundaries.
#[test]
fn streamed_pieces_end_on_grapheme_boundaries() {
    use unicode_segmentation::UnicodeSegmentation;
    let model = reference_model();
    for seed in 0..4 {
        let params = GenerationParams { max_tokens: 64, temperature: 1.5, top_k: 0, seed: Some(seed), ..greedy(64) };
        let sink = Collect::new();
        let stats = model.generate("Emoji: 👩‍♀️🇯🇵".into(), params, sink.clone(), None).unwrap();
        assert_eq!(sink.text(), stats.text);
        let mut bounds: Vec<usize> = stats.text.grapheme_indices(true).map(|(i, _)| i).collect();
        bounds.push(stats.text.len());
        let mut end = 0;
        for piece in sink.pieces() {
            end += piece.len();
            assert!(bounds.contains(&end), "seed {seed}: piece ends inside a cluster: {:?}", sink.pieces());
        }
    }
}

#[test]
fn greedy_is_deterministic_and_max_tokens_is_exact() {
    let model = reference_model();
    let a = model.generate("abc".into(), greedy(10), Collect::new(), None).unwrap();
    let b = model.generate("abc".into(), greedy(10), Collect::new(), None).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.generated_tokens, 10);
    let c = model.generate("abc".into(), greedy(3), Collect::new(), None).unwrap();
    assert_eq!(c.token_ids, a.token_ids[..3]);
}

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let model = reference_model();
    let params = |seed| GenerationParams { max_tokens: 24, temperature: 1.0, seed: Some(seed), ..Default::default() };
    let a = model.generate("Seeds".into(), params(42), Collect::new(), None).unwrap();
    let b = model.generate("Seeds".into(), params(42), Collect::new(), None).unwrap();
    let c = model.generate("Seeds".into(), params(43), Collect::new(), None).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    assert_ne!(a.token_ids, c.token_ids);
}

#[test]
fn stop_string_ends_generation_and_is_never_streamed() {
    let model = reference_model();
    let full = model.generate("Stop here".into(), greedy(30), Collect::new(), None).unwrap();
    // A stop string spanning the boundary between two tokens' text.
    let pieces: Vec<String> = {
        let sink = Collect::new();
        model.generate("Stop here".into(), greedy(30), sink.clone(), None).unwrap();
        sink.pieces()
    };
    let before: String = pieces[..6].concat();
    let stop = format!("{}{}", &pieces[6], pieces[7].chars().next().unwrap());
    let expected_text = before.clone();
    // The stop must first occur where we put it.
    assert_eq!(full.text.find(&stop), Some(before.len()), "pick a stop that first occurs at piece 6");

    let sink = Collect::new();
    let params = GenerationParams { stop: vec!["never-occurs".into(), stop.clone()], ..greedy(30) };
    let stats = model.generate("Stop here".into(), params, sink.clone(), None).unwrap();
    assert_eq!(stats.stop_reason, StopReason::StopString);
    assert_eq!(stats.text, expected_text);
    assert_eq!(sink.text(), expected_text);
    assert!(!sink.text().contains(&stop));
}

#[test]
fn sink_returning_false_stops_after_that_piece() {
    let model = reference_model();
    let sink = Arc::new(Collect { stop_after: Some(4), ..Default::default() });
    let stats = model.generate("Count".into(), greedy(50), sink.clone(), None).unwrap();
    assert_eq!(stats.stop_reason, StopReason::Cancelled);
    assert_eq!(sink.pieces().len(), 4);
    assert_eq!(stats.text, sink.text());
}

#[test]
fn failing_sink_is_a_callback_error_and_the_model_keeps_working() {
    let model = reference_model();
    let expected = model.generate("Robust".into(), greedy(12), Collect::new(), None).unwrap();
    let sink = Arc::new(Collect { fail_at: Some(3), ..Default::default() });
    let err = model.generate("Robust".into(), greedy(12), sink, None).unwrap_err();
    assert!(matches!(err, LlmError::Callback { .. }), "{err:?}");

    let session = model.new_session(vec![]);
    let sink = Arc::new(Collect { fail_at: Some(2), ..Default::default() });
    assert!(matches!(session.send("Hi".into(), greedy(8), sink, None), Err(LlmError::Callback { .. })));
    assert!(session.history().is_empty(), "a failed turn is not recorded");
    session.send("Hi".into(), greedy(8), Collect::new(), None).unwrap();
    assert_eq!(session.history().len(), 2);

    let again = model.generate("Robust".into(), greedy(12), Collect::new(), None).unwrap();
    assert_eq!(again.token_ids, expected.token_ids);
}

/// A sink that, at piece `at`, lets the test thread cancel and waits until it has.
struct PauseAt {
    at: usize,
    seen: AtomicUsize,
    reached: Barrier,
    cancelled: Barrier,
}

impl TokenSink for PauseAt {
    fn on_text(&self, _piece: String) -> Result<bool, LlmError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            self.reached.wait();
            self.cancelled.wait();
        }
        Ok(true)
    }
}

#[test]
fn cancel_from_another_thread_takes_effect_within_one_token() {
    let model = reference_model();
    let session = model.new_session(vec![]);
    let sink =
        Arc::new(PauseAt { at: 5, seen: AtomicUsize::new(0), reached: Barrier::new(2), cancelled: Barrier::new(2) });
    let worker = {
        let (session, sink) = (session.clone(), sink.clone());
        std::thread::spawn(move || session.send("Go on forever".into(), greedy(400), sink, None))
    };
    sink.reached.wait();
    session.cancel();
    sink.cancelled.wait();
    let stats = worker.join().unwrap().unwrap();
    assert_eq!(stats.stop_reason, StopReason::Cancelled);
    // Pieces can lag tokens (multi-byte characters, held-back clusters), and
    // lead them by one only: the end of the last token's text, released on cancel.
    assert!(sink.seen.load(Ordering::SeqCst) <= 6);
    assert!(stats.generated_tokens >= 5 && stats.generated_tokens <= 6, "{}", stats.generated_tokens);
    // The cancelled turn is kept, and the session goes on normally.
    assert_eq!(session.history().len(), 2);
    let next = session.send("Next".into(), greedy(4), Collect::new(), None).unwrap();
    assert_eq!(next.stop_reason, StopReason::MaxTokens);
}

#[test]
fn chat_turn_two_equals_a_fresh_run_on_the_transcript() {
    turn_two_equals_a_fresh_run(&reference_model());
}

/// The same on Q4_K weights: a prompt fed as a batch and the same tokens fed
/// one by one give identical logits (CI runs it with our kernels too).
#[test]
fn chat_turn_two_equals_a_fresh_run_with_quantized_weights() {
    let path = common::model_file("q4k", &common::synthetic::Phi3Spec::quantized());
    turn_two_equals_a_fresh_run(&LanguageModel::load(common::config(&path)).unwrap());
}

fn turn_two_equals_a_fresh_run(model: &LanguageModel) {
    for first_turn_tokens in [1, 16] {
        let session = model.new_session(vec![ChatMessage::new(Role::System, "You are terse.")]);
        let t1 = session.send("Hi there".into(), greedy(first_turn_tokens), Collect::new(), None).unwrap();
        let t2 = session.send("Tell me more".into(), greedy(16), Collect::new(), None).unwrap();

        let transcript = vec![
            ChatMessage::new(Role::System, "You are terse."),
            ChatMessage::new(Role::User, "Hi there"),
            ChatMessage::new(Role::Assistant, t1.text.clone()),
        ];
        let fresh = model.new_session(transcript.clone());
        let f2 = fresh.send("Tell me more".into(), greedy(16), Collect::new(), None).unwrap();
        assert_eq!(t2.token_ids, f2.token_ids);
        assert_eq!(t2.text, f2.text);
        assert_eq!(f2.cached_prompt_tokens, 0);

        // The cache is reused for the prefix turn 1's fed tokens share with
        // turn 2's prompt (all of them when turn 1 fed no generated token;
        // the turn-1 prompt at least otherwise).
        let mut history = transcript;
        history.push(ChatMessage::new(Role::User, "Tell me more"));
        let prompt2 = model.tokenize(model.format_chat(history).unwrap()).unwrap();
        let mut fed = model
            .tokenize(
                model
                    .format_chat(vec![
                        ChatMessage::new(Role::System, "You are terse."),
                        ChatMessage::new(Role::User, "Hi there"),
                    ])
                    .unwrap(),
            )
            .unwrap();
        fed.extend(&t1.token_ids[..t1.token_ids.len() - 1]);
        let expected_reuse = fed.iter().zip(&prompt2).take_while(|(a, b)| a == b).count();
        assert_eq!(t2.cached_prompt_tokens as usize, expected_reuse);
        assert_eq!(t2.prompt_tokens as usize, prompt2.len());
        let turn1_prompt = fed.len() - (t1.token_ids.len() - 1);
        assert!(expected_reuse >= turn1_prompt, "the turn-1 prompt is reused");
        assert_eq!(session.history().len(), 5);
    }
}

#[test]
fn reset_returns_to_the_initial_history() {
    let model = reference_model();
    let system = ChatMessage::new(Role::System, "Sys");
    let session = model.new_session(vec![system.clone()]);
    let first = session.send("Q".into(), greedy(6), Collect::new(), None).unwrap();
    session.send("Q2".into(), greedy(6), Collect::new(), None).unwrap();
    session.reset();
    assert_eq!(session.history(), vec![system]);
    let again = session.send("Q".into(), greedy(6), Collect::new(), None).unwrap();
    assert_eq!(again.token_ids, first.token_ids);
}

#[test]
fn four_threads_with_their_own_sessions_match_sequential_runs() {
    let model = reference_model();
    let prompts = ["alpha", "beta gamma", "delta epsilon zeta", "eta"];
    let run = |p: &str| {
        let s = model.new_session(vec![]);
        let a = s.send(p.to_string(), greedy(12), Collect::new(), None).unwrap();
        let b = s.send("and then?".into(), greedy(8), Collect::new(), None).unwrap();
        (a.token_ids, b.token_ids)
    };
    let sequential: Vec<_> = prompts.iter().map(|p| run(p)).collect();
    let concurrent: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts.iter().map(|p| scope.spawn(move || run(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, concurrent);
}

#[test]
fn context_full_is_a_stop_reason() {
    let mut cfg = common::config(&common::reference_model_path());
    cfg.context_length = Some(24);
    let model = LanguageModel::load(cfg).unwrap();
    assert_eq!(model.info().context_length, 24);
    assert_eq!(model.info().trained_context_length, 512);
    let stats = model.generate("A short prompt".into(), greedy(100), Collect::new(), None).unwrap();
    assert_eq!(stats.stop_reason, StopReason::ContextFull);
    assert_eq!(stats.generated_tokens, 24 - stats.prompt_tokens + 1);
}

#[test]
fn prompt_past_the_context_is_an_error() {
    let mut cfg = common::config(&common::reference_model_path());
    cfg.context_length = Some(16);
    let model = LanguageModel::load(cfg).unwrap();
    let long = "word ".repeat(40);
    let n = model.tokenize(long.clone()).unwrap().len() as i32;
    match model.generate(long, greedy(4), Collect::new(), None) {
        Err(LlmError::ContextOverflow { needed, available }) => {
            assert_eq!((needed, available), (n, 16));
        }
        other => panic!("{other:?}"),
    }
    // A chat that outgrows the context fails the same way, and its history stays.
    let session = model.new_session(vec![]);
    let mut turns = 0;
    let err = loop {
        match session.send("more words please".into(), greedy(2), Collect::new(), None) {
            Ok(_) => turns += 1,
            Err(e) => break e,
        }
        assert!(turns < 16);
    };
    assert!(matches!(err, LlmError::ContextOverflow { .. }), "{err:?}");
    assert_eq!(session.history().len(), 2 * turns);
}

#[test]
fn load_progress_is_monotonic_and_complete() {
    struct Progress(std::sync::Mutex<Vec<(i64, i64)>>);
    impl LoadProgress for Progress {
        fn on_progress(&self, done: i64, total: i64) -> Result<bool, LlmError> {
            self.0.lock().unwrap().push((done, total));
            Ok(true)
        }
    }
    let p = Arc::new(Progress(Default::default()));
    let path = common::reference_model_path();
    let model = LanguageModel::load_with_progress(common::config(&path), Some(p.clone()), None).unwrap();
    let seen = p.0.lock().unwrap().clone();
    let size = std::fs::metadata(&path).unwrap().len() as i64;
    assert!(seen.len() > 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(seen.iter().all(|&(_, t)| t == size));
    assert_eq!(*seen.last().unwrap(), (size, size));
    assert_eq!(model.info().file_size_bytes, size);
}

/// A load stops when its progress callback says so (at its third report,
/// mapped and read into the heap), when it throws, or when its token was
/// cancelled before the call: `Cancelled` or `Callback`, and the model
/// loads normally afterwards.
#[test]
fn a_load_stops_when_its_progress_or_token_says_so() {
    struct StopAt(std::sync::atomic::AtomicUsize, Result<bool, LlmError>);
    impl LoadProgress for StopAt {
        fn on_progress(&self, _: i64, _: i64) -> Result<bool, LlmError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 2 {
                self.1.clone()
            } else {
                Ok(true)
            }
        }
    }
    let path = common::reference_model_path();
    for map_weights in [true, false] {
        let cfg = || ModelConfig { map_weights, ..common::config(&path) };
        let stop = Arc::new(StopAt(Default::default(), Ok(false)));
        let e = LanguageModel::load_with_progress(cfg(), Some(stop.clone()), None).err();
        assert_eq!(e, Some(LlmError::Cancelled), "map_weights {map_weights}");
        assert_eq!(stop.0.load(std::sync::atomic::Ordering::SeqCst), 3, "no report after the stop");
        let failing = Arc::new(StopAt(Default::default(), Err(LlmError::Callback { reason: "app says no".into() })));
        match LanguageModel::load_with_progress(cfg(), Some(failing), None) {
            Err(LlmError::Callback { reason }) => assert_eq!(reason, "app says no"),
            other => panic!("{:?}", other.err()),
        }
        let token = CancellationToken::new();
        token.cancel();
        assert_eq!(LanguageModel::load_with_progress(cfg(), None, Some(token)).err(), Some(LlmError::Cancelled));
        assert!(LanguageModel::load_with_progress(cfg(), None, Some(CancellationToken::new())).is_ok());
    }
}

#[test]
fn quantized_model_runs() {
    let path = common::model_file("q4k", &common::synthetic::Phi3Spec::quantized());
    let model = LanguageModel::load(common::config(&path)).unwrap();
    assert_eq!(model.info().quantization, "Q4_K");
    let a = model.generate("Quantized".into(), greedy(16), Collect::new(), None).unwrap();
    let b = model.generate("Quantized".into(), greedy(16), Collect::new(), None).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.generated_tokens, 16);
}

#[test]
fn a_chat_template_in_the_gguf_is_used_and_bos_is_not_doubled() {
    // Phi-3's template as older GGUFs carry it, writing the BOS itself.
    let template = "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";
    let spec = common::synthetic::Phi3Spec::reference()
        .with_metadata("tokenizer.chat_template", candle_core::quantized::gguf_file::Value::String(template.into()));
    let templated = LanguageModel::load(common::config(&common::model_file("templated", &spec))).unwrap();
    let builtin = reference_model();
    let messages = vec![ChatMessage::new(Role::System, "Be brief."), ChatMessage::new(Role::User, "Hi")];
    let rendered = templated.format_chat(messages.clone()).unwrap();
    assert_eq!(rendered, format!("<s>{}", builtin.format_chat(messages.clone()).unwrap()));

    let a = templated.new_session(messages[..1].to_vec()).send("Hi".into(), greedy(12), Collect::new(), None).unwrap();
    let b = builtin.new_session(messages[..1].to_vec()).send("Hi".into(), greedy(12), Collect::new(), None).unwrap();
    assert_eq!(a.prompt_tokens, b.prompt_tokens, "one BOS, not two");
    assert_eq!(a.token_ids, b.token_ids);
}

#[test]
fn a_template_that_rejects_the_messages_is_an_invalid_parameter() {
    let template = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}";
    let spec = common::synthetic::Phi3Spec::reference()
        .with_metadata("tokenizer.chat_template", candle_core::quantized::gguf_file::Value::String(template.into()));
    let model = LanguageModel::load(common::config(&common::model_file("rejecting-template", &spec))).unwrap();
    let session = model.new_session(vec![ChatMessage::new(Role::System, "x")]);
    match session.send("Hi".into(), greedy(4), Collect::new(), None) {
        Err(LlmError::InvalidParameter { name, reason }) => {
            assert_eq!(name, "messages");
            assert!(reason.contains("System role not supported"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The contract of a per-call token, for `LanguageModel.generate` and
/// `ChatSession.send` alike: cancelled before the call, it stops it before
/// its first token; cancelled from another thread mid-call, within one.
fn check_token_contract(
    call: impl Fn(Arc<dyn TokenSink>, Arc<CancellationToken>) -> GenerationResult + Send + Sync + 'static,
) {
    let call = Arc::new(call);
    let token = CancellationToken::new();
    token.cancel();
    assert!(token.is_cancelled());
    let stats = call(Collect::new(), token);
    assert_eq!(stats.stop_reason, StopReason::Cancelled);
    assert_eq!(stats.generated_tokens, 0);

    let token = CancellationToken::new();
    let sink =
        Arc::new(PauseAt { at: 3, seen: AtomicUsize::new(0), reached: Barrier::new(2), cancelled: Barrier::new(2) });
    let worker = {
        let (call, sink, token) = (call.clone(), sink.clone(), token.clone());
        std::thread::spawn(move || call(sink, token))
    };
    sink.reached.wait();
    token.cancel();
    sink.cancelled.wait();
    let stats = worker.join().unwrap();
    assert_eq!(stats.stop_reason, StopReason::Cancelled);
    assert!(stats.generated_tokens <= 4, "{}", stats.generated_tokens);
}

#[test]
fn a_cancellation_token_stops_one_shot_generation() {
    let model = reference_model();
    check_token_contract(move |sink, token| model.generate("Go".into(), greedy(400), sink, Some(token)).unwrap());
}

#[test]
fn a_token_cancelled_before_the_turn_starts_stops_it() {
    let model = reference_model();
    let session = model.new_session(vec![]);
    let turns = session.clone();
    check_token_contract(move |sink, token| turns.send("Go on".into(), greedy(400), sink, Some(token)).unwrap());

    // `cancel()` aims at the turn in progress: one that lands between turns
    // does not stop the next (a per-call token is how to stop that one).
    session.cancel();
    let next = session.send("Next".into(), greedy(4), Collect::new(), None).unwrap();
    assert_eq!(next.stop_reason, StopReason::MaxTokens);
}

/// Token counts are what the calls that feed the model feed: a raw prompt
/// for `generate`, a chat for a session's `send`.
#[test]
fn token_counts_equal_what_generation_feeds() {
    let model = reference_model();
    let text = "Emoji 👩‍💻 and 日本語<|end|>";
    let stats = model.generate(text.into(), greedy(1), Collect::new(), None).unwrap();
    assert_eq!(model.count_tokens(text.into()).unwrap(), stats.prompt_tokens);
    assert_eq!(model.count_tokens(text.into()).unwrap() as usize, model.tokenize(text.into()).unwrap().len());

    let system = ChatMessage::new(Role::System, "You are terse.");
    let session = model.new_session(vec![system.clone()]);
    let first = session.send("Hi there".into(), greedy(4), Collect::new(), None).unwrap();
    let mut next = session.history();
    next.push(ChatMessage::new(Role::User, "And <|user|> then?"));
    let counted = model.count_chat_tokens(next.clone()).unwrap();
    let second = session.send("And <|user|> then?".into(), greedy(4), Collect::new(), None).unwrap();
    assert_eq!(counted, second.prompt_tokens);
    assert!(counted > first.prompt_tokens);
    assert_eq!(model.tokenize_chat(next).unwrap().len() as i32, counted);
}

/// The tokenizer alone, from the model file's header: the same ids and
/// counts as the loaded model, and from a GGUF that has no weights at all.
#[test]
fn a_model_tokenizer_needs_no_weights() {
    let model = reference_model();
    let path = common::reference_model_path().display().to_string();
    let tok = common::tokenizer_path().display().to_string();
    let alone = ModelTokenizer::load(path, Some(tok)).unwrap();
    let messages =
        vec![ChatMessage::new(Role::System, "You are terse."), ChatMessage::new(Role::User, "Hi <|end|> there")];
    for text in ["Hello, world", "naïve café 👩‍💻", ""] {
        assert_eq!(alone.tokenize(text.into()).unwrap(), model.tokenize(text.into()).unwrap(), "{text:?}");
        assert_eq!(alone.count_tokens(text.into()).unwrap(), model.count_tokens(text.into()).unwrap());
    }
    assert_eq!(alone.tokenize_chat(messages.clone()).unwrap(), model.tokenize_chat(messages.clone()).unwrap());
    assert_eq!(alone.format_chat(messages.clone()).unwrap(), model.format_chat(messages).unwrap());
    let ids = model.tokenize("Hello, world".into()).unwrap();
    assert_eq!(alone.detokenize(ids.clone()).unwrap(), model.detokenize(ids).unwrap());

    // A vocabulary-only GGUF (scripts/fetch-fixtures.sh) loads as a tokenizer,
    // not as a model.
    let vocab = common::tokenizer_path().with_file_name("phi3-vocab.gguf").display().to_string();
    let alone = ModelTokenizer::load(vocab.clone(), None).unwrap();
    assert_eq!(alone.count_tokens("Hello, world".into()).unwrap(), 4);
    assert!(matches!(LanguageModel::load(ModelConfig::new(vocab)), Err(LlmError::InvalidModel { .. })));

    // Phi-4-mini's: o200k and its chat template, from the GGUF; the ids are
    // Hugging Face's for the rendered prompt, and a marker typed in a
    // message stays text.
    let phi4 = common::tokenizer_path().with_file_name("phi4-vocab.gguf").display().to_string();
    let phi4 = ModelTokenizer::load(phi4, None).unwrap();
    let chat = |user: &str| vec![ChatMessage::new(Role::System, "Be brief."), ChatMessage::new(Role::User, user)];
    assert_eq!(
        phi4.format_chat(chat("Hello, world")).unwrap(),
        "<|system|>Be brief.<|end|><|user|>Hello, world<|end|><|assistant|>"
    );
    assert_eq!(
        phi4.tokenize_chat(chat("Hello, world")).unwrap(),
        [200022, 3238, 14567, 13, 200020, 200021, 13225, 11, 2375, 200020, 200019]
    );
    assert_eq!(phi4.tokenize_chat(chat("Hi <|end|>")).unwrap().iter().filter(|&&t| t == 200020).count(), 2);

    assert!(matches!(
        ModelTokenizer::load("/nonexistent/model.gguf".into(), None),
        Err(LlmError::ModelNotFound { .. })
    ));
    let not_gguf = common::tokenizer_path().display().to_string();
    assert!(matches!(ModelTokenizer::load(not_gguf, None), Err(LlmError::InvalidModel { .. })));
}

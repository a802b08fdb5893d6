//! What a caller passes, wrong: paths, load and generation parameters,
//! prompts and messages, token ids. Each gives its typed error (odd but
//! valid prompts a normal answer), at once, never a panic.
//!
//! Where a new case goes: if the bad data is an argument of the call, here;
//! if it is in the bytes of a file (a GGUF, a tokenizer.json, a chat
//! template), in tests/hostile.rs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::synthetic::Phi3Spec;
use common::{invalid_model, load, reference_model, Collect};
use phi_mobile::*;

#[test]
fn missing_file() {
    let err = load(Path::new("/nonexistent/model.gguf")).err().unwrap();
    assert_eq!(err, LlmError::ModelNotFound { what: "/nonexistent/model.gguf".into() });
    assert_eq!(err.to_string(), "Model not found: /nonexistent/model.gguf.");
    assert!(matches!(LanguageModel::load(ModelConfig::new("")), Err(LlmError::ModelNotFound { .. })));
}

#[test]
fn a_directory_is_not_a_model() {
    let dir = std::env::temp_dir();
    let reason = invalid_model("a directory", load(&dir));
    assert!(reason.contains("not a model file"), "{reason}");
}

/// A model file without a vocabulary and no tokenizer, or a tokenizer path
/// that is not a file.
#[test]
fn tokenizer_paths_that_are_not_tokenizers() {
    let model = common::reference_model_path();
    let with_tokenizer = |t: Option<String>| {
        let mut cfg = common::config(&model);
        cfg.tokenizer_path = t;
        LanguageModel::load(cfg)
    };
    for t in [None, Some("/nonexistent/tokenizer.json".into()), Some(std::env::temp_dir().display().to_string())] {
        assert!(matches!(with_tokenizer(t.clone()), Err(LlmError::Tokenizer { .. })), "{t:?}");
    }
}

#[test]
fn invalid_load_parameters() {
    let path = common::reference_model_path();
    for (field, cfg) in [
        ("context_length", ModelConfig { context_length: Some(0), ..common::config(&path) }),
        ("threads", ModelConfig { threads: Some(0), ..common::config(&path) }),
        ("threads", ModelConfig { threads: Some(100_000), ..common::config(&path) }),
        ("threads", ModelConfig { threads: Some(i32::MAX), ..common::config(&path) }),
        // Signed at the boundary (Kotlin and Swift have no unsigned counts):
        // a negative one is refused, never wrapped to a huge one.
        ("context_length", ModelConfig { context_length: Some(-1), ..common::config(&path) }),
        ("threads", ModelConfig { threads: Some(-4), ..common::config(&path) }),
    ] {
        match LanguageModel::load(cfg) {
            Err(LlmError::InvalidParameter { name, .. }) => assert_eq!(name, field),
            other => panic!("{field}: {:?}", other.err()),
        }
    }
    // The largest context a caller can ask for is capped by the model's own.
    let big = LanguageModel::load(ModelConfig { context_length: Some(i32::MAX), ..common::config(&path) }).unwrap();
    assert_eq!(big.info().context_length, 512);
}

#[test]
fn every_invalid_generation_parameter() {
    let model = reference_model();
    let d = GenerationParams::default;
    let cases: Vec<(&str, GenerationParams)> = vec![
        ("max_tokens", GenerationParams { max_tokens: 0, ..d() }),
        ("max_tokens", GenerationParams { max_tokens: -1, ..d() }),
        ("top_k", GenerationParams { top_k: -40, ..d() }),
        ("repeat_last_n", GenerationParams { repeat_last_n: i32::MIN, ..d() }),
        ("temperature", GenerationParams { temperature: -1.0, ..d() }),
        ("temperature", GenerationParams { temperature: f32::NAN, ..d() }),
        ("temperature", GenerationParams { temperature: f32::INFINITY, ..d() }),
        ("top_p", GenerationParams { top_p: 0.0, ..d() }),
        ("top_p", GenerationParams { top_p: 1.01, ..d() }),
        ("top_p", GenerationParams { top_p: f32::NAN, ..d() }),
        ("min_p", GenerationParams { min_p: -0.1, ..d() }),
        ("min_p", GenerationParams { min_p: 1.0, ..d() }),
        ("repeat_penalty", GenerationParams { repeat_penalty: 0.0, ..d() }),
        ("repeat_penalty", GenerationParams { repeat_penalty: -2.0, ..d() }),
        ("repeat_penalty", GenerationParams { repeat_penalty: f32::NAN, ..d() }),
        ("stop", GenerationParams { stop: vec![String::new()], ..d() }),
        ("stop", GenerationParams { stop: vec!["x".repeat(1000)], ..d() }),
        ("stop", GenerationParams { stop: vec!["a".into(); 100], ..d() }),
    ];
    let session = model.new_session(vec![]);
    for (field, params) in cases {
        for result in [
            model.generate("hi".into(), params.clone(), Collect::new(), None),
            session.send("hi".into(), params.clone(), Collect::new(), None),
        ] {
            match result {
                Err(LlmError::InvalidParameter { name, reason }) => {
                    assert_eq!(name, field);
                    assert!(!reason.is_empty());
                }
                other => panic!("{field} {params:?}: {other:?}"),
            }
        }
    }
    assert!(session.history().is_empty());
}

/// Token ids the vocabulary does not have; messages for a model without a
/// chat template.
#[test]
fn ids_and_messages_the_model_cannot_take() {
    let model = common::reference_model();
    for ids in [vec![1, 32011, 5], vec![1, -1]] {
        match model.detokenize(ids) {
            Err(LlmError::InvalidParameter { name, reason }) => {
                assert_eq!(name, "ids");
                assert!(reason.contains("outside the vocabulary"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    let llama = LanguageModel::load(common::config(&common::model_file("llama", &Phi3Spec::llama()))).unwrap();
    match llama.format_chat(vec![ChatMessage::new(Role::User, "hi")]) {
        Err(LlmError::InvalidParameter { name, .. }) => assert_eq!(name, "messages"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn odd_but_valid_prompts() {
    let model = reference_model();
    for prompt in ["", " ", "\n\n\t", "<|end|>", "<|user|><|assistant|>", "\u{0}", "🧑‍🤝‍🧑", "日本語"] {
        let sink = Collect::new();
        let stats = model.generate(prompt.into(), GenerationParams::greedy(4), sink.clone(), None).unwrap();
        assert_eq!(stats.text, sink.text(), "{prompt:?}");
    }
}

#[test]
fn prompts_of_zero_and_a_hundred_thousand_characters() {
    let model = common::reference_model();
    let empty = model.generate(String::new(), GenerationParams::greedy(3), Collect::new(), None).unwrap();
    assert_eq!(empty.prompt_tokens, 1, "only the BOS token");
    assert_eq!(empty.generated_tokens, 3);
    let session = model.new_session(vec![]);
    session.send(String::new(), GenerationParams::greedy(3), Collect::new(), None).unwrap();
    assert_eq!(session.history().len(), 2);

    let huge: String = "The quick brown fox jumps over the lazy dog. ".repeat(2223)[..100_000].to_string();
    let n = model.tokenize(huge.clone()).unwrap().len() as i32;
    assert!(n > 512, "{n}");
    let started = Instant::now();
    match model.generate(huge.clone(), GenerationParams::greedy(3), Collect::new(), None) {
        // Refused by its size before tokenizing: `needed` is a lower bound.
        Err(LlmError::ContextOverflow { needed, available }) => {
            assert!(needed > 512 && needed <= n && available == 512)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        session.send(huge, GenerationParams::greedy(3), Collect::new(), None),
        Err(LlmError::ContextOverflow { .. })
    ));
    assert_eq!(session.history().len(), 2, "the failed turn is not recorded");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// 16 MB cost 1.3–1.8 GB and 11–20 s of tokenizing before `ContextOverflow`;
/// now the size alone refuses it (no more bytes than context × the longest
/// token can fit), at once.
#[test]
fn a_sixteen_megabyte_prompt_or_message_overflows_at_once() {
    let model = common::reference_model();
    let huge = "The quick brown fox jumps over the lazy dog. ".repeat(16 << 20 >> 5);
    let started = Instant::now();
    let overflow = |r: Result<(), LlmError>| match r {
        Err(LlmError::ContextOverflow { needed, available }) => assert!(needed > available && available == 512),
        other => panic!("{other:?}"),
    };
    overflow(model.generate(huge.clone(), GenerationParams::greedy(3), Collect::new(), None).map(|_| ()));
    let session = model.new_session(vec![]);
    overflow(session.send(huge.clone(), GenerationParams::greedy(3), Collect::new(), None).map(|_| ()));
    overflow(model.format_chat(vec![ChatMessage::new(Role::User, huge)]).map(|_| ()));
    assert!(session.history().is_empty());
    // Tokenizing alone takes seconds on this machine; three refusals far less.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

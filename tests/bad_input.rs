//! Every kind of bad input gives its typed error — never a panic.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use common::synthetic::Phi3Spec;
use common::{reference_model, Collect};
use phi_mobile::*;

fn load(path: &Path) -> Result<std::sync::Arc<Model>, LlmError> {
    Model::load(common::config(path))
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    // Cargo's scratch directory for test files, reused run after run (nothing left in the system's temp dir).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-input");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn invalid_model(r: Result<std::sync::Arc<Model>, LlmError>) -> String {
    match r {
        Err(LlmError::InvalidModel { reason }) => reason,
        Err(e) => panic!("expected InvalidModel, got {e:?}"),
        Ok(_) => panic!("expected InvalidModel, got a model"),
    }
}

#[test]
fn missing_file() {
    let err = load(Path::new("/nonexistent/model.gguf")).err().unwrap();
    assert_eq!(err, LlmError::ModelNotFound { what: "/nonexistent/model.gguf".into() });
    assert_eq!(err.to_string(), "Model not found: /nonexistent/model.gguf.");
}

#[test]
fn empty_file() {
    let reason = invalid_model(load(&scratch("empty.gguf", b"")));
    assert!(reason.contains("empty"), "{reason}");
}

#[test]
fn random_bytes() {
    let mut x = 0x1234_5678u32;
    let bytes: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    invalid_model(load(&scratch("random.gguf", &bytes)));
    // Random bytes behind a valid magic number, too.
    let mut with_magic = b"GGUF\x03\x00\x00\x00".to_vec();
    with_magic.extend_from_slice(&bytes);
    invalid_model(load(&scratch("random-magic.gguf", &with_magic)));
}

#[test]
fn truncated_files() {
    let full = std::fs::read(common::reference_model_path()).unwrap();
    for keep in [7, 64, 4096, full.len() / 2, full.len() - 1] {
        let reason = invalid_model(load(&scratch(&format!("truncated-{keep}.gguf"), &full[..keep])));
        assert!(!reason.is_empty());
    }
    let half = invalid_model(load(&scratch("truncated-half.gguf", &full[..full.len() / 2])));
    assert!(half.contains("past the end of the file"), "{half}");
}

#[test]
fn a_directory_is_not_a_model() {
    let dir = std::env::temp_dir();
    let reason = invalid_model(load(&dir));
    assert!(reason.contains("not a model file"), "{reason}");
}

#[test]
fn other_architecture() {
    let spec = Phi3Spec::reference().with_metadata("general.architecture", Value::String("gemma".into()));
    let err = load(&common::model_file("arch-gemma", &spec)).err().unwrap();
    assert_eq!(err, LlmError::UnsupportedArchitecture { architecture: "gemma".into() });
    // A Phi-3 file that claims to be Llama lacks Llama's metadata and tensors.
    let spec = Phi3Spec::reference().with_metadata("general.architecture", Value::String("llama".into()));
    let reason = invalid_model(load(&common::model_file("arch-llama-lie", &spec)));
    assert!(reason.contains("llama.embedding_length"), "{reason}");
}

#[test]
fn metadata_that_contradicts_the_tensors() {
    let cases = [
        ("heads-5", Phi3Spec::reference().with_metadata("phi3.attention.head_count", Value::U32(5)), "divide"),
        ("heads-0", Phi3Spec::reference().with_metadata("phi3.attention.head_count", Value::U32(0)), "zero"),
        (
            "hidden-128",
            Phi3Spec::reference()
                .with_metadata("phi3.embedding_length", Value::U32(128))
                .with_metadata("phi3.rope.dimension_count", Value::U32(32)),
            "shape",
        ),
        ("layers-3", Phi3Spec::reference().with_metadata("phi3.block_count", Value::U32(3)), "missing tensor blk.2"),
        ("ff-64", Phi3Spec::reference().with_metadata("phi3.feed_forward_length", Value::U32(64)), "shape"),
        ("ctx-0", Phi3Spec::reference().with_metadata("phi3.context_length", Value::U32(0)), "context length"),
        ("ctx-huge", Phi3Spec::reference().with_metadata("phi3.context_length", Value::U32(1 << 31)), "context length"),
        ("rope-18", Phi3Spec::reference().with_metadata("phi3.rope.dimension_count", Value::U32(18)), "rope"),
        ("rope-7", Phi3Spec::reference().with_metadata("phi3.rope.dimension_count", Value::U32(7)), "rope"),
        (
            "eps-string",
            Phi3Spec::reference().with_metadata("phi3.attention.layer_norm_rms_epsilon", Value::String("x".into())),
            "epsilon",
        ),
        ("no-arch", Phi3Spec::reference().with_metadata("general.architecture", Value::U32(3)), "architecture"),
    ];
    for (name, spec, expect) in cases {
        let reason = invalid_model(load(&common::model_file(name, &spec)));
        assert!(reason.contains(expect), "{name}: {reason}");
    }
}

/// LongRoPE's factors and metadata that do not fit together.
#[test]
fn longrope_that_does_not_add_up() {
    let spec = Phi3Spec::phi35_like;
    let cases = [
        ("lr-no-long", spec().without_tensor("rope_factors_long.weight"), "needs both"),
        ("lr-no-short", spec().without_tensor("rope_factors_short.weight"), "needs both"),
        (
            "lr-no-original",
            spec().with_metadata("phi3.rope.scaling.original_context_length", Value::String("48".into())),
            "original_context_length",
        ),
        ("lr-original-0", spec().with_metadata("phi3.rope.scaling.original_context_length", Value::U32(0)), "original"),
        (
            "lr-original-past",
            spec().with_metadata("phi3.rope.scaling.original_context_length", Value::U32(4096)),
            "not within the context 512",
        ),
        ("lr-attn-nan", spec().with_metadata("phi3.rope.scaling.attn_factor", Value::F32(f32::NAN)), "attn_factor"),
        ("lr-attn-0", spec().with_metadata("phi3.rope.scaling.attn_factor", Value::F32(0.0)), "attn_factor"),
        // The factors' length follows the rotated part of a head (16 here).
        (
            "lr-rope-12",
            spec().with_metadata("phi3.rope.dimension_count", Value::U32(12)),
            "has shape [8], the metadata implies [6]",
        ),
    ];
    for (name, spec, expect) in cases {
        let reason = invalid_model(load(&common::model_file(name, &spec)));
        assert!(reason.contains(expect), "{name}: {reason}");
    }
}

#[test]
fn bad_tokenizers() {
    let model = common::reference_model_path();
    let with_tokenizer = |t: Option<String>| {
        let mut cfg = common::config(&model);
        cfg.tokenizer_path = t;
        Model::load(cfg)
    };
    let is_tokenizer_err = |r: Result<std::sync::Arc<Model>, LlmError>| matches!(r, Err(LlmError::Tokenizer { .. }));

    assert!(is_tokenizer_err(with_tokenizer(None)));
    assert!(is_tokenizer_err(with_tokenizer(Some("/nonexistent/tokenizer.json".into()))));
    for (name, body) in [
        ("not-json.json", &b"this is not json"[..]),
        ("wrong-json.json", b"{\"model\": 3}"),
        ("truncated.json", &std::fs::read(common::tokenizer_path()).unwrap()[..5000]),
        ("invalid-utf8.json", b"{\"version\": \"\xff\xfe\"}"),
    ] {
        let p = scratch(name, body);
        assert!(is_tokenizer_err(with_tokenizer(Some(p.display().to_string()))), "{name}");
    }
    // A tokenizer with more tokens than the model's embedding has rows.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::tokenizer_path()).unwrap()).unwrap();
    // (tokenizers numbers added tokens consecutively, whatever ids the file says.)
    for i in 0..60 {
        json["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({
            "id": 32011 + i, "content": format!("<|extra{i}|>"), "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    let p = scratch("too-big.json", json.to_string().as_bytes());
    match with_tokenizer(Some(p.display().to_string())) {
        Err(LlmError::Tokenizer { reason }) => assert!(reason.contains("do not belong together"), "{reason}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn invalid_load_parameters() {
    let path = common::reference_model_path();
    for (field, cfg) in [
        ("context_length", ModelConfig { context_length: Some(0), ..common::config(&path) }),
        ("threads", ModelConfig { threads: Some(0), ..common::config(&path) }),
        ("threads", ModelConfig { threads: Some(100_000), ..common::config(&path) }),
    ] {
        match Model::load(cfg) {
            Err(LlmError::InvalidParameter { name, .. }) => assert_eq!(name, field),
            other => panic!("{field}: {:?}", other.err()),
        }
    }
}

#[test]
fn every_invalid_generation_parameter() {
    let model = reference_model();
    let d = GenerationParams::default;
    let cases: Vec<(&str, GenerationParams)> = vec![
        ("max_tokens", GenerationParams { max_tokens: 0, ..d() }),
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

#[test]
fn odd_but_valid_prompts() {
    let model = reference_model();
    for prompt in ["", " ", "\n\n\t", "<|end|>", "<|user|><|assistant|>", "\u{0}", "🧑‍🤝‍🧑", "日本語"] {
        let sink = Collect::new();
        let stats = model.generate(prompt.into(), GenerationParams::greedy(4), sink.clone(), None).unwrap();
        assert_eq!(stats.text, sink.text(), "{prompt:?}");
    }
}

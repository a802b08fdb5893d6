//! Files that are not what they claim: no GGUF at all (empty, random,
//! truncated), a GGUF whose metadata contradicts its tensors or names
//! another architecture, LongRoPE factors that do not fit, tokenizer.json
//! files that are not tokenizers or do not fit the model.

use candle_core::quantized::gguf_file::Value;
use phi_mobile::*;

use super::common;
use super::common::synthetic::Phi3Spec;
use super::common::{invalid_model, load};

/// `bytes` written to the scratch file `name`.
fn file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = common::scratch("hostile-files", name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn empty_file() {
    let reason = invalid_model("empty", load(&file("empty.gguf", b"")));
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
    invalid_model("random", load(&file("random.gguf", &bytes)));
    // Random bytes behind a valid magic number, too.
    let mut with_magic = b"GGUF\x03\x00\x00\x00".to_vec();
    with_magic.extend_from_slice(&bytes);
    invalid_model("random after the magic", load(&file("random-magic.gguf", &with_magic)));
}

#[test]
fn truncated_files() {
    let full = std::fs::read(common::reference_model_path()).unwrap();
    for keep in [7, 64, 4096, full.len() / 2, full.len() - 1] {
        let name = format!("truncated-{keep}.gguf");
        let reason = invalid_model(&name, load(&file(&name, &full[..keep])));
        assert!(!reason.is_empty());
    }
    let half = invalid_model("half", load(&file("truncated-half.gguf", &full[..full.len() / 2])));
    assert!(half.contains("past the end of the file"), "{half}");
}

#[test]
fn other_architecture() {
    let spec = Phi3Spec::reference().with_metadata("general.architecture", Value::String("gemma".into()));
    let err = load(&common::model_file("arch-gemma", &spec)).err().unwrap();
    assert_eq!(err, LlmError::UnsupportedArchitecture { architecture: "gemma".into() });
    // A Phi-3 file that claims to be Llama lacks Llama's metadata and tensors.
    let spec = Phi3Spec::reference().with_metadata("general.architecture", Value::String("llama".into()));
    let reason = invalid_model("llama lie", load(&common::model_file("arch-llama-lie", &spec)));
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
        let reason = invalid_model(name, load(&common::model_file(name, &spec)));
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
        let reason = invalid_model(name, load(&common::model_file(name, &spec)));
        assert!(reason.contains(expect), "{name}: {reason}");
    }
}

/// tokenizer.json files that are not tokenizers, and one with more tokens
/// than the model's embedding has rows.
#[test]
fn tokenizer_files_that_are_not_this_models() {
    let model = common::reference_model_path();
    let with_tokenizer = |p: std::path::PathBuf| {
        let mut cfg = common::config(&model);
        cfg.tokenizer_path = Some(p.display().to_string());
        LanguageModel::load(cfg)
    };
    for (name, body) in [
        ("not-json.json", &b"this is not json"[..]),
        ("wrong-json.json", b"{\"model\": 3}"),
        ("truncated.json", &std::fs::read(common::tokenizer_path()).unwrap()[..5000]),
        ("invalid-utf8.json", b"{\"version\": \"\xff\xfe\"}"),
    ] {
        assert!(matches!(with_tokenizer(file(name, body)), Err(LlmError::Tokenizer { .. })), "{name}");
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
    match with_tokenizer(file("too-big.json", json.to_string().as_bytes())) {
        Err(LlmError::Tokenizer { reason }) => assert!(reason.contains("do not belong together"), "{reason}"),
        other => panic!("{:?}", other.err()),
    }
}

//! The `llama` architecture (SmolLM2, TinyLlama, Llama-family GGUFs) on a
//! synthetic model with grouped-query attention and a tied output embedding.

mod common;

use candle_core::quantized::gguf_file::Value;
use common::synthetic::Phi3Spec;
use common::Collect;
use phi_mobile::*;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn llama() -> std::sync::Arc<LanguageModel> {
    LanguageModel::load(common::config(&common::model_file("llama", &Phi3Spec::llama()))).unwrap()
}

#[test]
fn loads_and_generates() {
    let model = llama();
    let info = model.info();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.context_length, 512);
    let sink = Collect::new();
    let a = model.generate("Hello".into(), GenerationParams::greedy(20), sink.clone(), None).unwrap();
    let b = model.generate("Hello".into(), GenerationParams::greedy(20), Collect::new(), None).unwrap();
    assert_eq!(a.generated_tokens, 20);
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(sink.text(), a.text);
}

#[test]
fn context_is_capped_at_what_candle_supports() {
    let spec = Phi3Spec::llama().with_metadata("llama.context_length", Value::U32(8192));
    let model = LanguageModel::load(common::config(&common::model_file("llama-8k", &spec))).unwrap();
    assert_eq!(model.info().trained_context_length, 8192);
    assert_eq!(model.info().context_length, 4096);
}

#[test]
fn chat_needs_a_template_and_uses_it() {
    let session = llama().new_session(vec![]);
    assert!(matches!(
        session.send("Hi".into(), GenerationParams::greedy(4), Collect::new(), None),
        Err(LlmError::InvalidParameter { .. })
    ));

    let spec = Phi3Spec::llama().with_metadata("tokenizer.chat_template", Value::String(CHATML.into()));
    let model = LanguageModel::load(common::config(&common::model_file("llama-chatml", &spec))).unwrap();
    let session = model.new_session(vec![]);
    let t1 = session.send("Hi".into(), GenerationParams::greedy(8), Collect::new(), None).unwrap();
    let t2 = session.send("More".into(), GenerationParams::greedy(8), Collect::new(), None).unwrap();
    let mut transcript = session.history();
    transcript.truncate(3);
    let fresh =
        model.new_session(transcript).send("More".into(), GenerationParams::greedy(8), Collect::new(), None).unwrap();
    assert_eq!(t2.token_ids, fresh.token_ids);
    assert_eq!(t1.generated_tokens, 8);
}

#[test]
fn lying_llama_metadata_is_rejected() {
    for (name, spec, expect) in [
        ("llama-kv-3", Phi3Spec::llama().with_metadata("llama.attention.head_count_kv", Value::U32(3)), "divide"),
        ("llama-kv-4", Phi3Spec::llama().with_metadata("llama.attention.head_count_kv", Value::U32(4)), "attn_k"),
        (
            "llama-no-gate",
            Phi3Spec::llama().without_tensor("blk.1.ffn_gate.weight"),
            "missing tensor blk.1.ffn_gate.weight",
        ),
        ("llama-rope-base", Phi3Spec::llama().with_metadata("llama.rope.freq_base", Value::F32(f32::NAN)), "rope base"),
    ] {
        match LanguageModel::load(common::config(&common::model_file(name, &spec))) {
            Err(LlmError::InvalidModel { reason }) => assert!(reason.contains(expect), "{name}: {reason}"),
            other => panic!("{name}: {:?}", other.err()),
        }
    }
    let moe = Phi3Spec::llama().with_metadata("llama.expert_count", Value::U32(8));
    assert!(matches!(
        LanguageModel::load(common::config(&common::model_file("llama-moe", &moe))),
        Err(LlmError::UnsupportedArchitecture { .. })
    ));
}

#[test]
fn math_this_decoder_does_not_compute_is_refused_by_name() {
    let unsupported = |name: &str, path: &std::path::Path, expect: &str| match LanguageModel::load(common::config(path))
    {
        Err(LlmError::UnsupportedArchitecture { architecture }) => {
            assert!(architecture.contains(expect), "{name}: {architecture}")
        }
        other => panic!("{name}: {:?}", other.err()),
    };
    for (name, key, value, expect) in [
        ("llama-yarn", "llama.rope.scaling.type", Value::String("yarn".into()), "yarn rope scaling"),
        ("llama-softcap", "llama.attn_logit_softcapping", Value::F32(50.0), "soft-capping"),
        ("llama-final-softcap", "llama.final_logit_softcapping", Value::F32(30.0), "final logit"),
        ("llama-key-length", "llama.attention.key_length", Value::U32(8), "key_length 8"),
    ] {
        unsupported(name, &common::model_file(name, &Phi3Spec::llama().with_metadata(key, value)), expect);
    }
    // Tensors it would skip (here a QK-norm): named, not ignored.
    let dir = tempfile::tempdir().unwrap();
    let plain = common::model_file("llama", &Phi3Spec::llama());
    let q_norm = dir.path().join("q-norm.gguf");
    common::synthetic::with_tensor(&plain, &q_norm, "blk.0.attn_q_norm.weight", &[1.0; 16]).unwrap();
    unsupported("llama-q-norm", &q_norm, "tensor blk.0.attn_q_norm.weight");
    // LongRoPE is Phi-3's: in a Llama file its factors are unknown tensors.
    let factors = dir.path().join("longrope.gguf");
    common::synthetic::with_tensor(&plain, &factors, "rope_factors_long.weight", &[1.0; 8]).unwrap();
    unsupported("llama-longrope", &factors, "tensor rope_factors_long.weight");
    let yarn = Phi3Spec::reference().with_metadata("phi3.rope.scaling.type", Value::String("yarn".into()));
    unsupported("phi3-yarn", &common::model_file("phi3-yarn", &yarn), "phi3 with yarn rope scaling");

    // Llama 3 rope factors that cannot be: the wrong length, zero.
    for (name, factors, expect) in
        [("short", vec![1.0; 7], "rope_freqs.weight has shape [7]"), ("zero", vec![0.0; 8], "positive")]
    {
        let path = dir.path().join(format!("{name}.gguf"));
        common::synthetic::with_rope_freqs(&plain, &path, &factors).unwrap();
        match LanguageModel::load(common::config(&path)) {
            Err(LlmError::InvalidModel { reason }) => assert!(reason.contains(expect), "{name}: {reason}"),
            other => panic!("{name}: {:?}", other.err()),
        }
    }
    // A sliding window is not refused: Phi-3 files declare one that llama.cpp ignores too.
    let window = Phi3Spec::reference().with_metadata("phi3.attention.sliding_window", Value::U32(2047));
    assert!(LanguageModel::load(common::config(&common::model_file("phi3-window", &window))).is_ok());
    // Linear scaling is computed (engine test: rope.rs), and a factor out of range refused.
    let linear = Phi3Spec::llama()
        .with_metadata("llama.rope.scaling.type", Value::String("linear".into()))
        .with_metadata("llama.rope.scaling.factor", Value::F32(4.0));
    assert!(LanguageModel::load(common::config(&common::model_file("llama-linear", &linear))).is_ok());
    let bad = Phi3Spec::llama().with_metadata("llama.rope.scaling.factor", Value::F32(-1.0));
    assert!(matches!(
        LanguageModel::load(common::config(&common::model_file("llama-linear-bad", &bad))),
        Err(LlmError::InvalidModel { .. })
    ));
}

/// Llama 3's rope scaling, as llama.cpp's converter stores it
/// (`rope_freqs.weight`), equals transformers' own "llama3" rope type
/// computed from the scaling's parameters (tests/data/reference_llama3.json,
/// `scripts/make_reference.sh llama3`); without the tensor the answers differ.
#[test]
fn llama3_rope_scaling_equals_transformers() {
    let data: serde_json::Value = serde_json::from_str(include_str!("data/reference_llama3.json")).unwrap();
    assert!(data["generator"].as_str().unwrap().contains("llama3 rope"));
    let load =
        |name: &str, spec: &Phi3Spec| LanguageModel::load(common::config(&common::model_file(name, spec))).unwrap();
    let scaled = load("llama3-like", &Phi3Spec::llama3_like());
    let unscaled = load("llama3-like-unscaled", &Phi3Spec { extra_tensors: Vec::new(), ..Phi3Spec::llama3_like() });
    let mut differ = 0;
    for case in data["cases"].as_array().unwrap() {
        let ids =
            |k: &str| -> Vec<i32> { case[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect() };
        let (prompt, expected) = (ids("prompt_ids"), ids("expected_ids"));
        let text = case["prompt"].as_str().unwrap().to_string();
        assert_eq!(scaled.tokenize(text.clone()).unwrap(), prompt, "{}: encoding", case["name"]);
        let params = GenerationParams::greedy(expected.len() as i32);
        let got = scaled.generate(text.clone(), params.clone(), Collect::new(), None).unwrap();
        assert_eq!(got.token_ids, expected, "{}", case["name"]);
        differ += usize::from(unscaled.generate(text, params, Collect::new(), None).unwrap().token_ids != expected);
    }
    assert!(differ >= 2, "the scaling shows in the answers ({differ} of 4 differ without it)");
}

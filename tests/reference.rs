//! Greedy continuations on the synthetic reference model must equal those of
//! Hugging Face transformers' `Phi3ForCausalLM` loaded with the same weights
//! (tests/data/reference_phi3.json, written by scripts/make_reference.sh).

mod common;

use common::{reference_model, Collect};
use phi_mobile::{GenerationParams, Model, ModelConfig, StopReason};

#[test]
fn greedy_ids_equal_transformers_with_an_f16_cache() {
    // transformers keeps its cache in f32; rounding ours to f16 moves no
    // greedy choice here (the smallest top-2 margin in the reference is
    // stated in the file), so the ids are compared exactly.
    greedy_ids_equal_transformers(&reference_model());
}

#[test]
fn greedy_ids_equal_transformers_with_an_f32_cache() {
    let model =
        Model::load(ModelConfig { kv_cache_f32: true, ..common::config(&common::reference_model_path()) }).unwrap();
    greedy_ids_equal_transformers(&model);
}

fn greedy_ids_equal_transformers(model: &Model) {
    let data: serde_json::Value = serde_json::from_str(include_str!("data/reference_phi3.json")).unwrap();
    assert!(data["generator"].as_str().unwrap().contains("Phi3ForCausalLM"));
    let end_tokens =
        ["<|end|>", "<|endoftext|>", "</s>"].map(|t| model.tokenize(t.into()).unwrap().last().copied().unwrap());
    let cases = data["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let ids =
            |k: &str| -> Vec<u32> { case[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
        let (prompt_ids, expected) = (ids("prompt_ids"), ids("expected_ids"));
        assert_eq!(model.tokenize(prompt.into()).unwrap(), prompt_ids, "{name}: encoding differs");

        // Our loop stops at an end token (transformers' loop did not).
        let until_end = expected.iter().position(|t| end_tokens.contains(t)).unwrap_or(expected.len());
        let stats = model
            .generate(prompt.into(), GenerationParams::greedy(expected.len() as u32), Collect::new(), None)
            .unwrap();
        assert_eq!(stats.token_ids, expected[..until_end], "{name}");
        let reason = if until_end < expected.len() { StopReason::EndOfSequence } else { StopReason::MaxTokens };
        assert_eq!(stats.stop_reason, reason, "{name}");
    }
}

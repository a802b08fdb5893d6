//! Structured output: answers constrained to a JSON schema, any JSON object
//! or a regex are valid — checked by an independent validator (jsonschema,
//! regex) — at temperature 0 and at 1.0 with several seeds, on the real
//! SmolLM2 (GGUF gpt2 byte-level vocabulary) and on the synthetic Phi-3
//! (SentencePiece tokenizer.json with byte fallback).

mod common;

use common::{smollm2, Collect};
use phi_mobile::*;

fn params(format: ResponseFormat, temperature: f32, seed: i64, max_tokens: i32) -> GenerationParams {
    GenerationParams {
        response_format: Some(format),
        temperature,
        seed: Some(seed),
        max_tokens,
        ..GenerationParams::default()
    }
}

/// (temperature, seed) pairs every format is tried with.
const RUNS: [(f32, i64); 4] = [(0.0, 0), (1.0, 1), (1.0, 2), (1.0, 3)];

fn ask(model: &LanguageModel, prompt: &str, p: GenerationParams) -> GenerationResult {
    let sink = Collect::new();
    let stats = model.new_session(vec![]).send(prompt.into(), p, sink.clone(), None).expect("constrained turn");
    assert_eq!(sink.text(), stats.text);
    stats
}

const PERSON: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 20},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"},
    "role": {"enum": ["admin", "user", "guest"]},
    "scores": {"type": "array", "items": {"type": "number", "minimum": -1, "maximum": 1}, "minItems": 1, "maxItems": 3},
    "address": {
      "type": "object",
      "properties": {"city": {"type": "string", "maxLength": 12}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
      "required": ["city", "zip"],
      "additionalProperties": false
    },
    "nickname": {"type": "string", "maxLength": 8}
  },
  "required": ["name", "age", "email", "role", "scores", "address"],
  "additionalProperties": false
}"#;

const SCHEMAS: [&str; 4] = [
    PERSON,
    r#"{"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 4}"#,
    r#"{"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "number", "exclusiveMinimum": 0, "maximum": 10}}, "required": ["ok", "n"], "additionalProperties": false}"#,
    r##"{"$defs": {"leaf": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["id"], "additionalProperties": false}}, "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/leaf"}, "maxItems": 2}}, "required": ["items"], "additionalProperties": false}"##,
];

fn assert_valid(schema: &str, stats: &GenerationResult, what: &str) {
    assert_eq!(stats.stop_reason, StopReason::EndOfSequence, "{what}: {stats:?}");
    let value: serde_json::Value =
        serde_json::from_str(&stats.text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", stats.text));
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {} is invalid: {errors:?}", stats.text);
}

/// Every schema of `schemas`, at every (temperature, seed) of `RUNS`.
fn assert_schemas_hold(model: &LanguageModel, prompt: &str, schemas: &[(usize, &str)], max_tokens: i32) {
    for &(i, schema) in schemas {
        for (t, seed) in RUNS {
            let format = ResponseFormat::JsonSchema { schema: schema.to_string() };
            let stats = ask(model, prompt, params(format, t, seed, max_tokens));
            assert_valid(schema, &stats, &format!("schema {i} at t={t} seed={seed}"));
        }
    }
}

#[test]
fn smollm2_answers_validate_against_their_schema() {
    let all: Vec<(usize, &str)> = SCHEMAS.into_iter().enumerate().collect();
    assert_schemas_hold(&smollm2(), "Describe a person as JSON.", &all, 200);
}

#[test]
fn random_weights_still_give_valid_answers() {
    // The synthetic model's weights are random: whatever it prefers, the
    // mask leaves only valid continuations.
    let all_but_person: Vec<(usize, &str)> = SCHEMAS.into_iter().enumerate().skip(1).collect();
    assert_schemas_hold(&common::reference_model(), "JSON please", &all_but_person, 120);
}

#[test]
fn any_json_object() {
    for model in [smollm2(), common::reference_model()] {
        for (t, seed) in RUNS {
            let stats = ask(&model, "Give me a JSON object.", params(ResponseFormat::Json, t, seed, 300));
            if stats.stop_reason == StopReason::MaxTokens {
                // An object may be longer than any budget; what there is must still be a prefix of one.
                continue;
            }
            assert_valid(r#"{"type": "object"}"#, &stats, &format!("t={t} seed={seed}"));
        }
    }
}

#[test]
fn regex_answers_match_whole() {
    let cases = [
        r"[0-9]{3}-[0-9]{4}",
        r"(yes|no)",
        r"[A-Z][a-z]{2,6}( [A-Z][a-z]{2,6})?",
        // Multi-byte UTF-8: byte-level tokens and byte-fallback tokens that
        // each carry part of a character must only ever complete these.
        r"[äöü日本語🙂]{3,5}",
        r"(é|ß|€|👩‍💻){1,3}!",
    ];
    for model in [smollm2(), common::reference_model()] {
        for pattern in cases {
            let whole = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
            for (t, seed) in RUNS {
                let format = ResponseFormat::Regex { pattern: pattern.into() };
                let stats = ask(&model, "Answer:", params(format, t, seed, 40));
                assert_eq!(stats.stop_reason, StopReason::EndOfSequence, "{pattern} t={t} seed={seed}: {stats:?}");
                assert!(whole.is_match(&stats.text), "{pattern} t={t} seed={seed}: {:?}", stats.text);
            }
        }
    }
}

#[test]
fn a_format_that_cannot_compile_is_invalid_parameter_saying_why() {
    let model = common::reference_model();
    let cases = [
        (ResponseFormat::JsonSchema { schema: "{\"type\": ".into() }, "not valid JSON"),
        (ResponseFormat::JsonSchema { schema: "[1, 2]".into() }, "must be a JSON object"),
        (ResponseFormat::JsonSchema { schema: r#"{"type": "strin"}"#.into() }, "strin"),
        // Keywords llguidance does not implement are refused by name, never ignored.
        (ResponseFormat::JsonSchema { schema: r#"{"type": "array", "uniqueItems": true}"#.into() }, "uniqueItems"),
        (ResponseFormat::JsonSchema { schema: r#"{"if": {"type": "string"}, "then": {"minLength": 2}}"#.into() }, "if"),
        (
            ResponseFormat::JsonSchema { schema: r#"{"type": "string", "format": "bogus-format"}"#.into() },
            "bogus-format",
        ),
        (ResponseFormat::JsonSchema { schema: r#"{"$ref": "https://example.com/s.json"}"#.into() }, "example.com"),
        (ResponseFormat::JsonSchema { schema: r##"{"$ref": "#/$defs/missing"}"##.into() }, "missing"),
        (ResponseFormat::Regex { pattern: "(unclosed".into() }, "cannot compile"),
        (ResponseFormat::Regex { pattern: r"(a)\1".into() }, "cannot compile"),
        (
            ResponseFormat::JsonSchema { schema: format!("{{\"description\": \"{}\"}}", "x".repeat(300 * 1024)) },
            "bytes",
        ),
    ];
    for (format, says) in cases {
        let what = format!("{format:?}").chars().take(80).collect::<String>();
        let err = model.generate("x".into(), params(format, 0.0, 0, 8), Collect::new(), None).expect_err(&what);
        match err {
            LlmError::InvalidParameter { name, reason } => {
                assert_eq!(name, "response_format", "{what}");
                assert!(reason.contains(says), "{what}: {reason}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn an_answer_cut_short_says_so() {
    // Ten strings of up to 50 characters cannot fit in 8 tokens.
    let schema = r#"{"type": "array", "items": {"type": "string", "minLength": 50}, "minItems": 10}"#;
    let format = ResponseFormat::JsonSchema { schema: schema.into() };
    let stats = ask(&smollm2(), "List", params(format, 0.0, 0, 8));
    assert_eq!(stats.stop_reason, StopReason::MaxTokens);
    assert_eq!(stats.generated_tokens, 8);
    assert!(stats.text.starts_with("[\""), "{:?}", stats.text);
}

#[test]
fn a_constrained_turn_continues_the_chat_with_its_cache() {
    let model = smollm2();
    let session = model.new_session(vec![]);
    let format = ResponseFormat::JsonSchema { schema: SCHEMAS[2].into() };
    let first =
        session.send("Is water wet? Answer as JSON.".into(), params(format, 0.0, 0, 60), Collect::new(), None).unwrap();
    assert_valid(SCHEMAS[2], &first, "first turn");
    let second = session.send("Why?".into(), GenerationParams::greedy(24), Collect::new(), None).unwrap();
    assert!(second.cached_prompt_tokens >= first.prompt_tokens, "{second:?}");
    // The same as a fresh session given the same history.
    let mut history = session.history();
    history.truncate(2);
    assert_eq!(history[1].content, first.text);
    let fresh =
        model.new_session(history).send("Why?".into(), GenerationParams::greedy(24), Collect::new(), None).unwrap();
    assert_eq!(second.token_ids, fresh.token_ids);
}

#[test]
fn plain_text_is_unconstrained() {
    // `Text` and no format are the same generation, token for token.
    let model = smollm2();
    let none = ask(&model, "Say hello", GenerationParams::greedy(16));
    let text = ask(
        &model,
        "Say hello",
        GenerationParams { response_format: Some(ResponseFormat::Text), ..GenerationParams::greedy(16) },
    );
    assert_eq!(none.token_ids, text.token_ids);
}

#[test]
fn answer_returns_only_a_complete_answer() {
    let model = smollm2();
    let format = || ResponseFormat::JsonSchema { schema: SCHEMAS[2].into() };
    let session = model.new_session(vec![]);
    let answer = session.answer("Is water wet? Answer as JSON.".into(), params(format(), 0.0, 0, 60), None).unwrap();
    assert_eq!(session.history()[1].content, answer);
    let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(value["ok"].is_boolean(), "{answer}");

    let session = model.new_session(vec![]);
    match session.answer("Is water wet? Answer as JSON.".into(), params(format(), 0.0, 0, 3), None) {
        Err(LlmError::IncompleteAnswer { stop_reason: StopReason::MaxTokens, partial }) => {
            assert!(answer.starts_with(&partial) && !partial.is_empty(), "{partial:?} of {answer:?}");
            assert_eq!(session.history()[1].content, partial);
        }
        other => panic!("{other:?}"),
    }

    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let result = model.new_session(vec![]).answer("Hi".into(), params(format(), 0.0, 0, 60), Some(cancelled));
    assert_eq!(result, Err(LlmError::Cancelled));
}

#[test]
fn hostile_formats_end_in_a_typed_error_or_bounded_work() {
    let model = common::reference_model();
    let run = |format: ResponseFormat| model.generate("x".into(), params(format, 0.0, 0, 6), Collect::new(), None);
    let refused = |format: ResponseFormat, says: &str| match run(format) {
        Err(LlmError::InvalidParameter { name, reason }) if name == "response_format" => {
            assert!(reason.contains(says), "{reason}")
        }
        other => panic!("{other:?}"),
    };
    // Nesting past serde_json's recursion limit.
    let deep = format!("{}{{}}{}", "{\"items\": ".repeat(200), "}".repeat(200));
    refused(ResponseFormat::JsonSchema { schema: deep }, "recursion limit");
    // A schema that only refers to itself allows no answer at all.
    let self_ref = r##"{"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}"##;
    refused(ResponseFormat::JsonSchema { schema: self_ref.into() }, "cannot be continued");
    // Huge repetitions compile within llguidance's fuel and generate what they allow.
    for pattern in ["a{100000}", "(a{1000}){1000}"] {
        let stats = run(ResponseFormat::Regex { pattern: pattern.into() }).unwrap();
        assert_eq!(stats.stop_reason, StopReason::MaxTokens);
        assert!(!stats.text.is_empty() && stats.text.chars().all(|c| c == 'a'), "{pattern}: {:?}", stats.text);
    }
}

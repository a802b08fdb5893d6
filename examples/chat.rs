//! Desktop CLI over the public API (the same calls Kotlin and Swift make).
//!
//!     cargo run --release --example chat -- --model m.gguf --tokenizer tokenizer.json --prompt "Hi"
//!     cargo run --release --example chat -- --model m.gguf --tokenizer tokenizer.json      # interactive
//!
//! Without --model it downloads Phi-3-mini-4k-instruct (q4 GGUF) and its
//! tokenizer from the Hugging Face Hub.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use phi_mobile::{
    ChatMessage, GenerationParams, GenerationStats, LlmError, LoadProgress, Model, ModelConfig, Role,
    TokenSink,
};

const DEFAULT_REPO: &str = "microsoft/Phi-3-mini-4k-instruct-gguf";
const DEFAULT_FILE: &str = "Phi-3-mini-4k-instruct-q4.gguf";
const TOKENIZER_REPO: &str = "microsoft/Phi-3-mini-4k-instruct";

#[derive(Parser, Debug)]
#[command(about = "Chat with a GGUF model through phi-mobile")]
struct Args {
    /// GGUF model file (default: Phi-3-mini-4k-instruct q4 from the Hugging Face Hub).
    #[arg(long)]
    model: Option<String>,
    /// tokenizer.json (default: the one inside the GGUF; for the Hub default, Phi-3-mini-4k-instruct's).
    #[arg(long)]
    tokenizer: Option<String>,
    /// Answer one message and exit; without it, chat interactively.
    #[arg(long)]
    prompt: Option<String>,
    /// Treat --prompt as raw text to complete (no chat template).
    #[arg(long, requires = "prompt")]
    raw: bool,
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: u32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: u32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Cap the context window (saves memory).
    #[arg(long)]
    context: Option<u32>,
    #[arg(long)]
    threads: Option<u32>,
    /// Print the generated token ids and the stats as JSON instead of streaming text.
    #[arg(long, requires = "prompt")]
    json: bool,
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

struct LoadBar;

impl LoadProgress for LoadBar {
    fn on_progress(&self, done: u64, total: u64) {
        let pct = if total == 0 { 100 } else { done * 100 / total };
        eprint!("\rloading model: {pct:3}%");
        if done >= total {
            eprintln!();
        }
    }
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
    let config = ModelConfig {
        model_path,
        tokenizer_path,
        context_length: args.context,
        threads: args.threads,
    };
    let started = std::time::Instant::now();
    let model = Model::load_with_progress(config, Arc::new(LoadBar)).map_err(|e| e.to_string())?;
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
    };
    let history: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage { role: Role::System, content: s.clone() })
        .collect();
    let sink: Arc<dyn TokenSink> = if args.json { Arc::new(Silent) } else { Arc::new(Stdout) };

    if let Some(prompt) = &args.prompt {
        let stats = if args.raw {
            model.generate(prompt.clone(), params, sink, None)
        } else {
            model.new_session(history).send(prompt.clone(), params, sink)
        }
        .map_err(|e| e.to_string())?;
        if args.json {
            println!("{}", stats_json(&stats));
        } else {
            println!();
            report(&stats);
        }
        return Ok(());
    }

    let session = model.new_session(history);
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
                let stats = session.send(msg.to_string(), params.clone(), sink.clone()).map_err(|e| e.to_string())?;
                println!();
                report(&stats);
            }
        }
    }
}

fn report(s: &GenerationStats) {
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

fn stats_json(s: &GenerationStats) -> serde_json::Value {
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
    })
}

/// The model and tokenizer paths: given on the command line, or downloaded
/// (and cached) from the Hub.
fn resolve_files(args: &Args) -> Result<(String, Option<String>), String> {
    // A local model without --tokenizer uses the tokenizer inside its GGUF.
    if let Some(m) = &args.model {
        return Ok((m.clone(), args.tokenizer.clone()));
    }
    let hub_fail = |e: hf_hub::api::sync::ApiError| {
        format!(
            "cannot download the default model from the Hugging Face Hub ({e}); pass --model FILE.gguf --tokenizer tokenizer.json"
        )
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(hub_fail)?;
    eprintln!("downloading {DEFAULT_REPO}/{DEFAULT_FILE} (2.2 GB, cached after the first time)");
    let model = api.model(DEFAULT_REPO.into()).get(DEFAULT_FILE).map_err(hub_fail)?.display().to_string();
    let tokenizer = match &args.tokenizer {
        Some(t) => t.clone(),
        None => api.model(TOKENIZER_REPO.into()).get("tokenizer.json").map_err(hub_fail)?.display().to_string(),
    };
    Ok((model, Some(tokenizer)))
}

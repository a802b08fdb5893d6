//! Speed and memory benchmark: phi-mobile and (when built) llama.cpp on the
//! same GGUF, threads and prompt lengths, back to back in one run.
//!
//!     cargo run --release --example bench                 # synthetic Phi-3-mini + SmolLM2
//!     cargo run --release --example bench -- --model phi3-mini --runs 3
//!     cargo run --release --example bench -- --kernels candle,scalar,avx2
//!     cargo run --release --example bench -- --llama-bench /path/to/llama-bench
//!
//! Each measurement runs in a fresh child process, so load time and peak RSS
//! (VmHWM) are its own. Per model it reports load time, time to first token
//! for a 16-token prompt, prefill and decode tokens/s (172-token prompt, 32
//! new tokens, greedy), turn-2 time to first token after a short and a long
//! first turn, peak RSS, and how long a stop during a long prompt takes to
//! return. llama.cpp's llama-bench (scripts/build-llamacpp.sh; its AVX2
//! build and, when built, its AVX-512 one, each a column) gives
//! prefill/decode for the same lengths; its peak RSS is sampled from /proc
//! while it runs. The synthetic Phi-3-mini (random weights, Microsoft's
//! layout, Q4_K) is written once into the cache.

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use clap::Parser;
use phi_mobile::engine::{
    Conversation, GenerateOptions, KvPrecision, LoadConfig, LoadedModel, ResponseFormat, SamplingConfig, Sequence, Stop,
};

/// Structured output's cost: an object with a short string, an enum array
/// and a string long enough that no run completes it, so decode runs its
/// full length under the mask.
const BENCH_SCHEMA: &str = r#"{"type": "object", "properties": {
  "title": {"type": "string", "maxLength": 40},
  "tags": {"type": "array", "items": {"enum": ["news", "sport", "science"]}, "maxItems": 3},
  "story": {"type": "string", "minLength": 4000}},
  "required": ["title", "tags", "story"], "additionalProperties": false}"#;

#[derive(Parser, Debug)]
struct Args {
    /// phi3-mini, phi3-mini-q3k, phi3-mini-q2k, phi4-mini, smollm2, all, or a path to a GGUF.
    #[arg(long, default_value = "all")]
    model: String,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 172)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Repetitions per engine (the best is reported).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// llama-bench binaries, comma-separated, a column each (default: the
    /// AVX2 and AVX-512 builds of scripts/build-llamacpp.sh that are present).
    #[arg(long, value_delimiter = ',')]
    llama_bench: Vec<PathBuf>,
    /// Kernel choices to compare (`PHI_MOBILE_KERNELS` values, comma-separated),
    /// one table each; default: the one chosen for this CPU.
    #[arg(long, value_delimiter = ',')]
    kernels: Vec<String>,
    /// Read the weights into the heap instead of mapping the file.
    #[arg(long)]
    no_map: bool,
    /// Keep the KV cache in f32 (the default is f16).
    #[arg(long)]
    kv_f32: bool,
    /// Drop the model file from the page cache before each of our runs (a
    /// cold load: the first after a reboot or after the OS reclaimed it).
    #[arg(long)]
    cold: bool,
    /// Internal: run one measurement of this model file and print JSON.
    #[arg(long, hide = true)]
    worker: Option<PathBuf>,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("PHI_MOBILE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/phi-mobile"))
}

fn main() {
    let args = Args::parse();
    if let Some(model) = &args.worker {
        let r = worker(model, &args);
        println!("{}", serde_json::to_string(&r).unwrap());
        return;
    }
    let cache = cache_dir();
    let mut models: Vec<(String, PathBuf, Option<PathBuf>)> = Vec::new();
    if args.model == "all" || args.model == "phi3-mini" {
        let path = cache.join("synthetic-phi3-mini-4k-q4.gguf");
        if !path.is_file() {
            eprintln!("writing the synthetic Phi-3-mini to {} (once; a few minutes)", path.display());
            phi3_mini_spec(&cache).write(&path).expect("write synthetic Phi-3-mini");
        }
        models.push(("synthetic Phi-3-mini-4k (Q4_K, Q6_K output)".into(), path, None));
    }
    // Phi-3-mini's layout in the low-bit K-quants (as Q3_K_S and Q2_K files
    // are, but every matrix in the one type; output Q6_K).
    for (name, dtype) in [("phi3-mini-q3k", GgmlDType::Q3K), ("phi3-mini-q2k", GgmlDType::Q2K)] {
        if args.model == name {
            let path = cache.join(format!("synthetic-{name}.gguf"));
            if !path.is_file() {
                eprintln!("writing the synthetic Phi-3-mini ({dtype:?}) to {} (once; a few minutes)", path.display());
                synthetic::Phi3Spec { dtype, ..phi3_mini_spec(&cache) }
                    .write(&path)
                    .expect("write synthetic Phi-3-mini");
            }
            models.push((format!("synthetic Phi-3-mini-4k ({dtype:?}, Q6_K output)"), path, None));
        }
    }
    if args.model == "all" || args.model == "phi4-mini" {
        let path = cache.join("synthetic-phi4-mini-q4.gguf");
        if !path.is_file() {
            eprintln!("writing the synthetic Phi-4-mini to {} (once; a few minutes)", path.display());
            let spec = synthetic::Phi3Spec::phi4_mini().with_vocab_of(&cache.join("phi4-vocab.gguf"));
            spec.and_then(|s| s.write(&path)).expect("write synthetic Phi-4-mini");
        }
        models.push(("synthetic Phi-4-mini (Q4_K, tied output, LongRoPE)".into(), path, None));
    }
    if args.model == "all" || args.model == "smollm2" {
        let path = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(path.is_file(), "{} is missing: run scripts/fetch-fixtures.sh", path.display());
        models.push(("SmolLM2-135M-Instruct (Q4_1)".into(), path, None));
    }
    if models.is_empty() {
        let path = PathBuf::from(&args.model);
        models.push((path.file_name().unwrap().to_string_lossy().into(), path, None));
    }
    let llamas: Vec<Llama> = if args.llama_bench.is_empty() {
        [("build", "AVX2"), ("build-avx512", "AVX-512")]
            .into_iter()
            .map(|(dir, isa)| Llama {
                bin: cache.join("llamacpp-bench").join(dir).join("bin/llama-bench"),
                label: format!("llama.cpp {isa}"),
            })
            .filter(|l| l.bin.is_file())
            .collect()
    } else {
        args.llama_bench
            .iter()
            .map(|bin| Llama { bin: bin.clone(), label: format!("llama.cpp ({})", bin.display()) })
            .collect()
    };

    println!("{}", machine_info(&args, &llamas));
    for (name, path, tok) in &models {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("\n### {name}: {} ({:.2} GB)\n", path.display(), size as f64 / 1e9);
        let choices: Vec<Option<&str>> =
            if args.kernels.is_empty() { vec![None] } else { args.kernels.iter().map(|k| Some(k.as_str())).collect() };
        // Alternating, so all see the same machine state; the read bandwidth
        // measured before and after each run, so each decode is set against
        // the machine it ran on (this VM's bandwidth moves by up to 2×
        // within minutes).
        let probe = Probe::new(path, args.threads);
        // The probe's read left the file in the page cache in the pieces a
        // read makes; a load of ours reads it into 2 MB pages, which later
        // loads map whole (1.12× decode for Phi-3-mini). From a cold start,
        // the page cache is as an app's loads leave it.
        evict(path);
        let mut bandwidth = vec![probe.gbps()];
        let mut share = |decode_tps: f64| {
            let (before, after) = (*bandwidth.last().unwrap(), probe.gbps());
            bandwidth.push(after);
            decode_tps * probe.bytes_per_token as f64 / 1e9 / ((before + after) / 2.0)
        };
        let (mut ours, mut theirs) = (vec![Vec::new(); choices.len()], vec![Vec::new(); llamas.len()]);
        let (mut our_shares, mut their_shares) = (vec![Vec::new(); choices.len()], vec![Vec::new(); llamas.len()]);
        for _ in 0..args.runs.max(1) {
            for ((runs, shares), kernels) in ours.iter_mut().zip(&mut our_shares).zip(&choices) {
                let r = run_worker(path, tok.as_deref(), *kernels, &args);
                shares.push(share(r.decode_tps));
                runs.push(r);
            }
            for ((runs, shares), llama) in theirs.iter_mut().zip(&mut their_shares).zip(&llamas) {
                if let Some(r) = run_llama_bench(&llama.bin, path, &args) {
                    shares.push(share(r.decode_tps));
                    runs.push(r);
                }
            }
        }
        let theirs: Vec<Runs> = theirs
            .into_iter()
            .zip(their_shares)
            .zip(&llamas)
            .map(|((runs, shares), llama)| Runs::new(&llama.label, runs, shares))
            .collect();
        let read = Read { bytes_per_token: probe.bytes_per_token, gbps: bandwidth };
        for ((runs, shares), kernels) in ours.into_iter().zip(our_shares).zip(&choices) {
            if let Some(k) = kernels {
                println!("\n#### kernels: {k}\n");
            }
            print_table(&Runs::new("phi-mobile", runs, shares), &theirs, size, &args, &read);
        }
    }
}

/// Microsoft's Phi-3-mini-4k-instruct q4 layout with random weights, carrying
/// the real Phi-3 vocabulary (tokenizer.ggml.* from the fixture
/// phi3-vocab.gguf) so llama.cpp loads the same file.
fn phi3_mini_spec(cache: &Path) -> synthetic::Phi3Spec {
    let vocab_file = cache.join("phi3-vocab.gguf");
    synthetic::Phi3Spec::phi3_mini()
        .with_vocab_of(&vocab_file)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-fixtures.sh)", vocab_file.display()))
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Result_ {
    load_s: f64,
    /// The first prompt after the load (llama-bench: `--no-warmup`).
    ttft16_ms: f64,
    /// The same prompt again (llama-bench: after its warm-up run).
    #[serde(default)]
    ttft16_warm_ms: f64,
    prefill_tps: f64,
    decode_tps: f64,
    decode_tokens: usize,
    turn2_ttft_short_ms: f64,
    turn2_ttft_long_ms: f64,
    long_history_tokens: usize,
    /// After the 16-token and the main prompt (what llama-bench's runs compare to).
    peak_rss_bytes: u64,
    /// After the turn-2 runs too (a longer chat: a larger KV cache).
    peak_rss_chat_bytes: u64,
    /// Anonymous memory (RssAnon: what the OS cannot reclaim without ending
    /// the app), the largest of samples after load and after each phase
    /// (llama-bench: sampled every 20 ms).
    anon_peak_bytes: u64,
    /// The longest a stop during a long prompt's prefill took to return.
    stop_latency_ms: f64,
    stop_prompt_tokens: usize,
    kv_bytes_per_token: usize,
    /// A chat of `long_history_tokens` saved, then restored from its file
    /// (just written, so from the page cache), then its next turn's first
    /// token, against the same turn in the chat that went on.
    saved_chat_bytes: u64,
    save_ms: f64,
    restore_ms: f64,
    restored_ttft_ms: f64,
    uninterrupted_ttft_ms: f64,
    /// The main prompt's decode under `BENCH_SCHEMA`.
    schema_decode_tps: f64,
    /// The first format compile (indexing the vocabulary too), a later one,
    /// and the anonymous memory the first added.
    schema_first_compile_ms: f64,
    schema_compile_ms: f64,
    schema_anon_bytes: u64,
}

/// The best of each number over several runs (max for speeds, min for times;
/// peak RSS is the max, so memory is never flattered).
fn best(all: Vec<Result_>) -> Option<Result_> {
    let mut it = all.into_iter();
    let mut best = it.next()?;
    for r in it {
        best.load_s = best.load_s.min(r.load_s);
        best.ttft16_ms = best.ttft16_ms.min(r.ttft16_ms);
        best.ttft16_warm_ms = best.ttft16_warm_ms.min(r.ttft16_warm_ms);
        best.prefill_tps = best.prefill_tps.max(r.prefill_tps);
        best.decode_tps = best.decode_tps.max(r.decode_tps);
        best.turn2_ttft_short_ms = best.turn2_ttft_short_ms.min(r.turn2_ttft_short_ms);
        best.turn2_ttft_long_ms = best.turn2_ttft_long_ms.min(r.turn2_ttft_long_ms);
        best.peak_rss_bytes = best.peak_rss_bytes.max(r.peak_rss_bytes);
        best.peak_rss_chat_bytes = best.peak_rss_chat_bytes.max(r.peak_rss_chat_bytes);
        best.anon_peak_bytes = best.anon_peak_bytes.max(r.anon_peak_bytes);
        best.stop_latency_ms = best.stop_latency_ms.max(r.stop_latency_ms);
        best.save_ms = best.save_ms.min(r.save_ms);
        best.restore_ms = best.restore_ms.min(r.restore_ms);
        best.restored_ttft_ms = best.restored_ttft_ms.min(r.restored_ttft_ms);
        best.uninterrupted_ttft_ms = best.uninterrupted_ttft_ms.min(r.uninterrupted_ttft_ms);
        best.schema_decode_tps = best.schema_decode_tps.max(r.schema_decode_tps);
        best.schema_first_compile_ms = best.schema_first_compile_ms.min(r.schema_first_compile_ms);
        best.schema_compile_ms = best.schema_compile_ms.min(r.schema_compile_ms);
        best.schema_anon_bytes = best.schema_anon_bytes.max(r.schema_anon_bytes);
    }
    Some(best)
}

fn run_worker(model: &Path, tokenizer: Option<&Path>, kernels: Option<&str>, args: &Args) -> Result_ {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    if let Some(k) = kernels {
        cmd.env("PHI_MOBILE_KERNELS", k);
    }
    cmd.arg("--worker").arg(model);
    cmd.args(["--threads", &args.threads.to_string()]);
    cmd.args(["--prompt-tokens", &args.prompt_tokens.to_string()]);
    cmd.args(["--gen-tokens", &args.gen_tokens.to_string()]);
    if args.no_map {
        cmd.arg("--no-map");
    }
    if args.kv_f32 {
        cmd.arg("--kv-f32");
    }
    if args.cold {
        evict(model);
    }
    if let Some(t) = tokenizer {
        cmd.env("BENCH_TOKENIZER", t);
    }

    let out = cmd.stderr(Stdio::inherit()).output().expect("run the benchmark worker");
    assert!(out.status.success(), "worker failed");
    serde_json::from_slice(&out.stdout).expect("worker JSON")
}

/// Token ids of ordinary text, cycled to `n`: real tokens, no specials.
fn prompt_ids(model: &LoadedModel, n: usize) -> Vec<u32> {
    let text = "The history of ice hockey begins on frozen ponds and rivers, where players \
                chased a ball or a puck with curved sticks. Over the decades the rules settled, \
                indoor rinks spread, and leagues formed in many countries. ";
    let ids = model.text.encode(text).expect("encode");
    ids.iter().copied().cycle().take(n).collect()
}

fn worker(path: &Path, args: &Args) -> Result_ {
    let started = Instant::now();
    let cfg = LoadConfig {
        model_path: path.to_path_buf(),
        tokenizer_path: std::env::var_os("BENCH_TOKENIZER").map(PathBuf::from),
        threads: Some(args.threads),
        no_map: args.no_map,
        kv_precision: if args.kv_f32 { KvPrecision::F32 } else { KvPrecision::F16 },
        ..LoadConfig::default()
    };
    let model = LoadedModel::load(&cfg, &mut |_, _| Ok(true)).expect("load");
    let load_s = started.elapsed().as_secs_f64();
    assert_eq!(model.info.weights_mapped, !args.no_map, "the weights are mapped unless --no-map");
    let anon = || status_bytes(std::process::id(), "RssAnon:").unwrap_or(0);
    let mut anon_peak_bytes = anon();
    let greedy = |max_tokens| GenerateOptions {
        sampling: SamplingConfig { temperature: 0.0, repeat_penalty: 1.0, ..SamplingConfig::default() },
        max_tokens,
        ..GenerateOptions::default()
    };
    let mut sink = |_: &str| Ok(true);

    // Warm-up is deliberately absent from the first: a phone app's first
    // answer is cold too. The second is the same prompt warm.
    let mut ttft16 = || {
        let short = Sequence::new(&model)
            .generate(&model, &prompt_ids(&model, 16), &greedy(1), Stop::NEVER, &mut sink)
            .expect("ttft");
        short.timings.time_to_first_token.as_secs_f64() * 1e3
    };
    let ttft16_ms = ttft16();
    let ttft16_warm_ms = ttft16();

    let mut seq = Sequence::new(&model);
    let main = seq
        .generate(&model, &prompt_ids(&model, args.prompt_tokens), &greedy(args.gen_tokens), Stop::NEVER, &mut sink)
        .expect("generate");

    let peak_rss_bytes = vm_hwm(std::process::id()).unwrap_or(0);
    anon_peak_bytes = anon_peak_bytes.max(anon());

    // The same decode under a JSON schema, after its compile times (in a
    // scope: its sequence must not linger into the memory samples below).
    let (schema_decode_tps, schema_first_compile_ms, schema_compile_ms, schema_anon_bytes) = {
        let schema = ResponseFormat::JsonSchema(BENCH_SCHEMA.into());
        let (anon_before, at) = (anon(), Instant::now());
        model.text.check_format(&schema).expect("compile the bench schema");
        let first_ms = at.elapsed().as_secs_f64() * 1e3;
        let anon_bytes = anon().saturating_sub(anon_before);
        let at = Instant::now();
        model.text.check_format(&schema).expect("compile the bench schema");
        let later_ms = at.elapsed().as_secs_f64() * 1e3;
        let constrained = GenerateOptions { format: schema, ..greedy(args.gen_tokens) };
        let under_schema = Sequence::new(&model)
            .generate(&model, &prompt_ids(&model, args.prompt_tokens), &constrained, Stop::NEVER, &mut sink)
            .expect("generate under a schema");
        assert_eq!(under_schema.token_ids.len(), args.gen_tokens, "the schema's answer ended early");
        (under_schema.decode_tokens_per_second(), first_ms, later_ms, anon_bytes)
    };

    // Turn 2 after a short and after a long first turn: the cache makes the
    // second turn's cost independent of the history.
    let turn2 = |history: usize| -> Duration {
        let mut seq = Sequence::new(&model);
        let first = prompt_ids(&model, history);
        seq.generate(&model, &first, &greedy(1), Stop::NEVER, &mut |_| Ok(true)).expect("turn 1");
        let mut ids = seq.cached_tokens().to_vec();
        ids.extend(prompt_ids(&model, 16));
        let o = seq.generate(&model, &ids, &greedy(1), Stop::NEVER, &mut |_| Ok(true)).expect("turn 2");
        o.timings.time_to_first_token
    };
    let long_history = 512.min(model.context_length() / 2);
    let turn2_short = turn2(32);
    let turn2_long = turn2(long_history);
    let peak_rss_chat_bytes = vm_hwm(std::process::id()).unwrap_or(0);
    anon_peak_bytes = anon_peak_bytes.max(anon());

    // A chat saved after a long first turn and restored, as an app killed in
    // the background would: the next turn against the chat that went on.
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = dir.path().join("chat.phichat");
    let history_text = model.text.decode(&prompt_ids(&model, long_history)).expect("decode");
    let mut chat = Conversation::new(&model, Vec::new());
    chat.send(&model, history_text, &greedy(1), Stop::NEVER, &mut sink).expect("chat turn 1");
    let at = Instant::now();
    chat.save(&model, &saved).expect("save");
    let save_ms = at.elapsed().as_secs_f64() * 1e3;
    let saved_chat_bytes = std::fs::metadata(&saved).map(|m| m.len()).unwrap_or(0);
    let next = "And what happened next?".to_string();
    let ttft = |o: phi_mobile::engine::Outcome| o.timings.time_to_first_token.as_secs_f64() * 1e3;
    let uninterrupted_ttft_ms =
        ttft(chat.send(&model, next.clone(), &greedy(1), Stop::NEVER, &mut sink).expect("turn 2"));
    drop(chat);
    let at = Instant::now();
    let mut back = Conversation::restore(&model, &saved).expect("restore");
    let restore_ms = at.elapsed().as_secs_f64() * 1e3;
    let restored_ttft_ms = ttft(back.send(&model, next, &greedy(1), Stop::NEVER, &mut sink).expect("restored turn 2"));
    drop(back);

    // A stop during a long prompt, at a few points into its prefill: how
    // long until generate returns (the worst of them).
    let stop_prompt_tokens = 1440.min(model.context_length() - 1);
    let long_prompt = prompt_ids(&model, stop_prompt_tokens);
    let stop_latency = [50u64, 170, 420]
        .into_iter()
        .map(|after_ms| {
            let flag = std::sync::atomic::AtomicBool::new(false);
            let mut seq = Sequence::new(&model);
            std::thread::scope(|s| {
                let stopper = s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(after_ms));
                    let at = Instant::now();
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    at
                });
                let o = seq
                    .generate(&model, &long_prompt, &greedy(1), Stop(&[&flag]), &mut |_| Ok(true))
                    .expect("stopped generate");
                let returned = Instant::now();
                let stopped_at = stopper.join().unwrap();
                assert_eq!(o.stop_reason, phi_mobile::engine::StopReason::Cancelled, "the prompt ended first");
                returned.saturating_duration_since(stopped_at)
            })
        })
        .max()
        .unwrap_or_default();

    Result_ {
        load_s,
        ttft16_ms,
        ttft16_warm_ms,
        prefill_tps: main.prefill_tokens_per_second(),
        decode_tps: main.decode_tokens_per_second(),
        decode_tokens: main.token_ids.len(),
        turn2_ttft_short_ms: turn2_short.as_secs_f64() * 1e3,
        turn2_ttft_long_ms: turn2_long.as_secs_f64() * 1e3,
        long_history_tokens: long_history,
        peak_rss_bytes,
        peak_rss_chat_bytes,
        anon_peak_bytes,
        stop_latency_ms: stop_latency.as_secs_f64() * 1e3,
        stop_prompt_tokens,
        kv_bytes_per_token: model.info.kv_bytes_per_token,
        saved_chat_bytes,
        save_ms,
        restore_ms,
        restored_ttft_ms,
        uninterrupted_ttft_ms,
        schema_decode_tps,
        schema_first_compile_ms,
        schema_compile_ms,
        schema_anon_bytes,
    }
}

/// Peak resident set of a live process, from /proc.
fn vm_hwm(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A `kB` field of /proc/<pid>/status, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Drops the file's pages from the page cache (GNU dd's `nocache`: a
/// `POSIX_FADV_DONTNEED` on the whole file), so the next load reads the disk.
fn evict(path: &Path) {
    let ok = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "dd iflag=nocache failed: cold runs need GNU dd");
}

fn run_llama_bench(bin: &Path, model: &Path, args: &Args) -> Option<Result_> {
    let prompts = format!("16,{}", args.prompt_tokens);
    let gen = args.gen_tokens.to_string();
    let (tests, peak_rss_bytes, anon_peak_bytes) = llama_bench_json(bin, model, args, &["-p", &prompts, "-n", &gen])?;
    let mut r = Result_ { peak_rss_bytes, anon_peak_bytes, ..Result_::default() };
    for test in &tests {
        let (p, n) = (test["n_prompt"].as_u64()?, test["n_gen"].as_u64()?);
        let tps = test["avg_ts"].as_f64()?;
        match (p, n) {
            (16, 0) => r.ttft16_warm_ms = 16.0 / tps * 1e3,
            (0, _) => {
                r.decode_tps = tps;
                r.decode_tokens = n as usize;
            }
            (_, 0) => r.prefill_tps = tps,
            _ => {}
        }
    }
    // The first prompt after its load, as ours is measured.
    let (first, _, _) = llama_bench_json(bin, model, args, &["-p", "16", "-n", "0", "--no-warmup"])?;
    r.ttft16_ms = 16.0 / first.first()?["avg_ts"].as_f64()? * 1e3;
    Some(r)
}

/// One llama-bench run's tests (`-r 1`, JSON), with its peak RSS and peak
/// anonymous memory (sampled every 20 ms).
fn llama_bench_json(
    bin: &Path,
    model: &Path,
    args: &Args,
    tests: &[&str],
) -> Option<(Vec<serde_json::Value>, u64, u64)> {
    let mut child = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-t", &args.threads.to_string()])
        .args(tests)
        .args(["-r", "1", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let reader = {
        let mut stdout = child.stdout.take()?;
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).ok();
            s
        })
    };
    let (mut peak, mut anon) = (0, 0);
    while child.try_wait().ok()?.is_none() {
        peak = peak.max(vm_hwm(pid).unwrap_or(0));
        anon = anon.max(status_bytes(pid, "RssAnon:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let json: serde_json::Value = serde_json::from_str(&reader.join().ok()?).ok()?;
    Some((json.as_array()?.clone(), peak, anon))
}

/// The plain read of the weights' bytes that decode's speed is set against.
struct Probe {
    /// The model file, in the heap (a plain loop reads a map and the heap
    /// alike: 34.1 against 34.3 GB/s here).
    words: Vec<u64>,
    threads: usize,
    /// What one decoded token reads: every tensor but the token embedding
    /// (of which it reads one row), unless the output reuses it.
    bytes_per_token: u64,
}

impl Probe {
    fn new(path: &Path, threads: usize) -> Self {
        let mut file = std::fs::File::open(path).expect("open the model file");
        let len = file.metadata().expect("the model file's size").len() as usize;
        let mut words = vec![0u64; len / 8];
        std::io::Read::read_exact(&mut file, bytemuck::cast_slice_mut(&mut words)).expect("read the model file");
        std::io::Seek::rewind(&mut file).expect("rewind the model file");
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("GGUF");
        let tied = !content.tensor_infos.contains_key("output.weight");
        let bytes_per_token = content
            .tensor_infos
            .iter()
            .filter(|(name, _)| tied || name.as_str() != "token_embd.weight")
            .map(|(_, t)| (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64)
            .sum();
        Self { words, threads, bytes_per_token }
    }

    /// GB/s of `threads` threads each summing a contiguous share of the
    /// file, as decode's threads read theirs; the best of three passes.
    fn gbps(&self) -> f64 {
        let share = self.words.len().div_ceil(self.threads);
        (0..3)
            .map(|_| {
                let started = Instant::now();
                std::thread::scope(|s| {
                    for part in self.words.chunks(share) {
                        s.spawn(move || std::hint::black_box(part.iter().fold(0u64, |a, &w| a.wrapping_add(w))));
                    }
                });
                (self.words.len() * 8) as f64 / 1e9 / started.elapsed().as_secs_f64()
            })
            .fold(0.0, f64::max)
    }
}

/// A llama-bench binary and its column's name.
struct Llama {
    bin: PathBuf,
    label: String,
}

/// One engine's runs: the best of each number, the median decode, and the
/// median decode as a share of the read bandwidth beside each run.
struct Runs {
    label: String,
    best: Option<Result_>,
    decode_median: Option<f64>,
    share: Option<f64>,
}

impl Runs {
    fn new(label: &str, runs: Vec<Result_>, shares: Vec<f64>) -> Self {
        Self {
            label: label.into(),
            decode_median: median(runs.iter().map(|r| r.decode_tps).collect()),
            best: best(runs),
            share: median(shares),
        }
    }
}

/// The read bandwidth measured beside the runs.
struct Read {
    bytes_per_token: u64,
    gbps: Vec<f64>,
}

/// The middle value; of an even count, the higher of the two in the middle.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn print_table(runs: &Runs, theirs: &[Runs], file_size: u64, args: &Args, read: &Read) {
    let gb = |b: u64| b as f64 / 1e9;
    let ours = runs.best.as_ref().expect("at least one run");
    println!("| | {} |{}", runs.label, theirs.iter().map(|t| format!(" {} | ratio |", t.label)).collect::<String>());
    println!("|---|---|{}", "---|---|".repeat(theirs.len()));
    // Rows that only phi-mobile measures.
    let none = " — | — |".repeat(theirs.len());
    let cells = |a: f64, b: &dyn Fn(&Runs) -> Option<f64>, higher_better: bool, unit: &str| {
        theirs
            .iter()
            .map(|t| match b(t) {
                Some(b) if b > 0.0 => {
                    format!(" {b:.2}{unit} | {:.2}× |", if higher_better { a / b } else { b / a })
                }
                _ => " — | — |".into(),
            })
            .collect::<String>()
    };
    let row = |name: &str, a: f64, b: &dyn Fn(&Result_) -> f64, higher_better: bool, unit: &str| {
        println!("| {name} | {a:.2}{unit} |{}", cells(a, &|t| t.best.as_ref().map(b), higher_better, unit));
    };
    row(&format!("prefill, {} tokens (tok/s)", args.prompt_tokens), ours.prefill_tps, &|t| t.prefill_tps, true, "");
    row(&format!("decode, {} tokens (tok/s)", ours.decode_tokens), ours.decode_tps, &|t| t.decode_tps, true, "");
    let median = runs.decode_median.unwrap_or(0.0);
    println!("| decode, median of the runs (tok/s) | {median:.2} |{}", cells(median, &|t| t.decode_median, true, ""));
    let (low, high) = read.gbps.iter().fold((f64::MAX, 0.0f64), |(l, h), &g| (l.min(g), h.max(g)));
    let share = runs.share.unwrap_or(0.0);
    println!(
        "| decode, share of the read bandwidth beside each run (median; {:.2} GB per token, {low:.1}–{high:.1} GB/s) | {:.0}% |{}",
        read.bytes_per_token as f64 / 1e9,
        share * 100.0,
        theirs
            .iter()
            .map(|t| t.share.map_or(" — | — |".into(), |t| format!(" {:.0}% | {:.2}× |", t * 100.0, share / t)))
            .collect::<String>(),
    );
    row(
        "time to first token, 16-token prompt, the first after the load (ms)",
        ours.ttft16_ms,
        &|t| t.ttft16_ms,
        false,
        "",
    );
    row("time to first token, 16-token prompt, warm (ms)", ours.ttft16_warm_ms, &|t| t.ttft16_warm_ms, false, "");
    row("peak RSS (GB)", gb(ours.peak_rss_bytes), &|t| gb(t.peak_rss_bytes), false, "");
    row("peak anonymous memory (GB)", gb(ours.anon_peak_bytes), &|t| gb(t.anon_peak_bytes), false, "");
    println!(
        "| peak RSS with the {}-token chat below (GB) | {:.2} |{none}",
        ours.long_history_tokens + 17,
        gb(ours.peak_rss_chat_bytes)
    );
    println!(
        "| load (s; {}, {}) | {:.2} |{none}",
        if args.cold { "cold" } else { "warm" },
        if args.no_map { "read into the heap" } else { "mapped" },
        ours.load_s
    );
    println!(
        "| turn-2 time to first token after 32 / {} history tokens (ms) | {:.0} / {:.0} |{none}",
        ours.long_history_tokens, ours.turn2_ttft_short_ms, ours.turn2_ttft_long_ms
    );
    println!(
        "| a chat of {} tokens saved (MB, ms) / restored (ms) | {:.1} MB, {:.0} / {:.0} |{none}",
        ours.long_history_tokens,
        ours.saved_chat_bytes as f64 / 1e6,
        ours.save_ms,
        ours.restore_ms
    );
    println!(
        "| its next turn's first token: restored (restore + turn) vs uninterrupted (ms) | {:.0} + {:.0} vs {:.0} ({:.2}×) |{none}",
        ours.restore_ms,
        ours.restored_ttft_ms,
        ours.uninterrupted_ttft_ms,
        (ours.restore_ms + ours.restored_ttft_ms) / ours.uninterrupted_ttft_ms.max(1e-9)
    );
    println!("| KV cache per token (KB) | {:.1} |{none}", ours.kv_bytes_per_token as f64 / 1e3);
    println!(
        "| decode under a JSON schema (tok/s; ÷ unconstrained) | {:.2} ({:.2}×) |{none}",
        ours.schema_decode_tps,
        ours.schema_decode_tps / ours.decode_tps.max(1e-9)
    );
    println!(
        "| schema compile: first with vocabulary index / later (ms); memory (MB) | {:.0} / {:.1}; {:.1} |{none}",
        ours.schema_first_compile_ms,
        ours.schema_compile_ms,
        ours.schema_anon_bytes as f64 / 1e6
    );
    println!(
        "| a stop during a {}-token prompt returns within (ms, worst of 3 points) | {:.1} |{none}",
        ours.stop_prompt_tokens, ours.stop_latency_ms
    );
    println!(
        "\npeak RSS − file size: {:.2} GB (target ≤ 0.60; context: the model's own)",
        gb(ours.peak_rss_bytes) - gb(file_size)
    );
    println!("(ratio: phi-mobile ÷ llama.cpp for speeds, llama.cpp ÷ phi-mobile for times and memory; > 1 means phi-mobile is better)");
}

fn machine_info(args: &Args, llamas: &[Llama]) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    format!(
        "## Machine\n\n- CPU: {cpu}, {cores} cores visible, {:.1} GB RAM\n- threads: {}, prompt {} tokens, {} new tokens (greedy), best of {} runs\n- phi-mobile {} (candle 0.11.1, release profile, target features from .cargo/config.toml)\n- llama.cpp: {}",
        mem as f64 / 1e6,
        args.threads,
        args.prompt_tokens,
        args.gen_tokens,
        args.runs,
        env!("CARGO_PKG_VERSION"),
        if llamas.is_empty() {
            "not built (scripts/build-llamacpp.sh)".into()
        } else {
            llamas
                .iter()
                .map(|l| format!("{}: llama-bench at {} (llama-cpp-python 0.3.36 sdist)", l.label, l.bin.display()))
                .collect::<Vec<_>>()
                .join("; ")
        }
    )
}

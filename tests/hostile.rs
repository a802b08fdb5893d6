//! What a file contains, malformed or crafted: a GGUF's header, metadata,
//! tensors and vocabulary (sizes that would exhaust memory if trusted,
//! tensors of the wrong type, NaN and infinite weights, vocabularies that do
//! not fit the model), files that are no GGUF or contradict themselves
//! (`hostile/files.rs`), tokenizer.json files, chat templates
//! (`hostile/templates.rs`). Each must give its typed `LlmError` (or a
//! bounded, well-defined result), quickly, without a panic.
//!
//! Where a new case goes: if the bad data is in the bytes of a file, here;
//! if it is an argument of the call (a path, a parameter, a prompt), in
//! tests/bad_input.rs.

mod common;
#[path = "hostile/files.rs"]
mod files;
#[path = "hostile/templates.rs"]
mod templates;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::synthetic::Phi3Spec;
use common::{invalid_model, load, Collect};
use phi_mobile::*;

fn scratch(name: &str) -> PathBuf {
    common::scratch("hostile", name)
}

/// A small Phi-3 (the reference shape with 2 layers, F32) as the base.
fn small() -> Phi3Spec {
    Phi3Spec::reference()
}

/// Copies the GGUF at `src` to `dst`, passing every tensor through `f`.
fn rewrite(src: &Path, dst: &Path, mut f: impl FnMut(&str, QTensor) -> QTensor) {
    let mut r = std::fs::File::open(src).unwrap();
    let content = Content::read(&mut r).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> =
        names.iter().map(|n| (n.to_string(), f(n, content.tensor(&mut r, n, &Device::Cpu).unwrap()))).collect();
    let md: Vec<(&str, &Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    gguf_file::write(&mut out, &md, &ts).unwrap();
}

fn filled(t: &QTensor, value: f32, dtype: GgmlDType) -> QTensor {
    let dims = t.shape().dims().to_vec();
    let n: usize = dims.iter().product();
    QTensor::quantize(&Tensor::from_vec(vec![value; n], dims, &Device::Cpu).unwrap(), dtype).unwrap()
}

#[test]
fn sizes_that_would_exhaust_memory_are_refused_at_once() {
    let cases: Vec<(&str, Phi3Spec, &str)> = vec![
        // Before the layer check, a lying block_count built a list of
        // 7 × 4 billion expected tensor names.
        ("layers-max", small().with_metadata("phi3.block_count", Value::U32(u32::MAX)), "layers declared"),
        ("layers-u64", small().with_metadata("phi3.block_count", Value::U64(1 << 40)), "layers declared"),
        ("heads-max", small().with_metadata("phi3.attention.head_count", Value::U32(u32::MAX)), "exceeds"),
        ("kv-heads-huge", small().with_metadata("phi3.attention.head_count_kv", Value::U32(1 << 31)), "exceeds"),
        ("hidden-u64", small().with_metadata("phi3.embedding_length", Value::U64(u64::MAX)), "exceeds"),
        ("ff-max", small().with_metadata("phi3.feed_forward_length", Value::U32(u32::MAX)), "exceeds"),
        ("ctx-u64", small().with_metadata("phi3.context_length", Value::U64(1 << 40)), "context length"),
        ("ctx-2^31", small().with_metadata("phi3.context_length", Value::U32(1 << 31)), "context length"),
    ];
    for (name, spec, expect) in cases {
        let started = Instant::now();
        let reason = invalid_model(name, load(&common::model_file(name, &spec)));
        assert!(reason.contains(expect), "{name}: {reason}");
        assert!(started.elapsed() < Duration::from_secs(10), "{name} took {:?}", started.elapsed());
    }
}

/// A SentencePiece vocabulary without its unknown token parses, but cannot
/// encode anything: refused at load, not at the first prompt.
#[test]
fn a_gguf_vocabulary_that_cannot_encode() {
    let tokens: Vec<Value> = ["a", "b"].iter().map(|t| Value::String(t.to_string())).collect();
    let spec = small()
        .with_metadata("tokenizer.ggml.model", Value::String("llama".into()))
        .with_metadata("tokenizer.ggml.tokens", Value::Array(tokens))
        .with_metadata("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); 2]));
    let mut cfg = common::config(&common::model_file("vocab-no-unk", &spec));
    cfg.tokenizer_path = None;
    match LanguageModel::load(cfg) {
        Err(LlmError::Tokenizer { reason }) => assert!(reason.contains("fails on a simple text"), "{reason}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn metadata_arrays_that_would_blow_up_in_memory_are_refused() {
    // 10 M one-byte elements: a 10 MB file whose parsed metadata would take
    // 320 MB (one 32-byte value per element).
    let bytes = Value::Array(vec![Value::U8(0); 10 << 20]);
    let spec = small().with_metadata("junk.bytes", bytes);
    let reason = invalid_model("u8-array", load(&common::model_file("u8-array", &spec)));
    assert!(reason.contains("MiB of memory"), "{reason}");
}

/// The byte where the tensor table stores `name`'s data offset.
fn offset_field(file: &[u8], content: &Content, name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = file.windows(key.len()).position(|w| w == key).expect("tensor name in the table");
    let dims = content.tensor_infos[name].shape.dims().len();
    // name, n_dims (u32), dims (u64 each), type (u32), then the offset.
    at + key.len() + 4 + 8 * dims + 4
}

#[test]
fn tensor_data_off_the_alignment_or_shared_by_two_tensors_is_refused() {
    // The weights are read in place from the mapped file, so where each
    // tensor's bytes lie must be right before anything reads them.
    let src = common::reference_model_path();
    let full = std::fs::read(&src).unwrap();
    let content = Content::read(&mut std::fs::File::open(&src).unwrap()).unwrap();
    let mut by_offset: Vec<(u64, &String)> = content.tensor_infos.iter().map(|(n, t)| (t.offset, n)).collect();
    by_offset.sort();
    let patched = |file: &str, name: &str, offset: u64| {
        let mut b = full.clone();
        let at = offset_field(&full, &content, name);
        assert_eq!(b[at..at + 8], content.tensor_infos[name].offset.to_le_bytes(), "found {name}'s offset");
        b[at..at + 8].copy_from_slice(&offset.to_le_bytes());
        let p = scratch(file);
        std::fs::write(&p, b).unwrap();
        load(&p)
    };
    // Inside the file, but 4 bytes past the file's 32-byte alignment.
    let (offset, first) = by_offset[0];
    let reason = invalid_model("misaligned", patched("misaligned.gguf", first, offset + 4));
    assert!(reason.contains("alignment") && reason.contains(first.as_str()), "{reason}");
    // A second tensor pointing at the first one's bytes.
    let (_, second) = by_offset[1];
    let reason = invalid_model("overlapping", patched("overlapping.gguf", second, offset));
    assert!(reason.contains("overlap"), "{reason}");
    // An alignment that is no power of two cannot place any tensor.
    let p = scratch("alignment-24.gguf");
    small().with_metadata("general.alignment", Value::U32(24)).write(&p).unwrap();
    let reason = invalid_model("alignment 24", load(&p));
    assert!(reason.contains("general.alignment"), "{reason}");
    // The untouched file loads: the patches above are what was refused.
    load(&src).expect("the original file");
}

#[test]
fn header_counts_and_lengths_past_the_end_of_the_file() {
    let full = std::fs::read(common::reference_model_path()).unwrap();
    let patch = |name: &str, at: usize, value: u64| {
        let mut b = full[..4096].to_vec();
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let p = scratch(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // GGUF v3: magic, version, tensor count at 8, metadata count at 16, first key length at 24.
    for (name, at, value) in [
        ("tensors-max", 8, u64::MAX),
        ("tensors-many", 8, 1 << 20),
        ("kvs-max", 16, u64::MAX),
        ("key-len-max", 24, u64::MAX),
        ("key-len-past-end", 24, 5000),
    ] {
        invalid_model(name, load(&patch(name, at, value)));
    }
    let mut v9 = full.clone();
    v9[4] = 9;
    let p = scratch("version-9.gguf");
    std::fs::write(&p, v9).unwrap();
    assert!(invalid_model("version", load(&p)).contains("version"));
}

#[test]
fn tensors_of_the_wrong_type() {
    let src = common::reference_model_path();
    // A norm weight quantized (llama.cpp writes them as F32): candle
    // dequantizes it, so the file is odd but usable, and must give the same
    // kind of result as any model: text, not a crash.
    let q_norm = scratch("q8-norm.gguf");
    rewrite(
        &src,
        &q_norm,
        |name, t| if name == "blk.0.attn_norm.weight" { filled(&t, 1.0, GgmlDType::Q8_0) } else { t },
    );
    let model = load(&q_norm).unwrap();
    let stats = model.generate("Hi".into(), GenerationParams::greedy(4), Collect::new(), None).unwrap();
    assert_eq!(stats.generated_tokens, 4);

    // A type id no GGUF reader knows.
    let bytes = std::fs::read(&src).unwrap();
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let type_at = at + 4 + 8 * dims;
    assert_eq!(u32::from_le_bytes(bytes[type_at..type_at + 4].try_into().unwrap()), 0, "F32 expected");
    let mut patched = bytes.clone();
    patched[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let p = scratch("unknown-type.gguf");
    std::fs::write(&p, &patched).unwrap();
    invalid_model("unknown type", load(&p));

    // A 1-D norm declared as a block type whose blocks do not fit its length.
    patched[type_at..type_at + 4].copy_from_slice(&12u32.to_le_bytes()); // Q4_K: 256-wide blocks, hidden is 64
    std::fs::write(&p, &patched).unwrap();
    let reason = invalid_model("Q4_K norm", load(&p));
    assert!(reason.contains("blocks"), "{reason}");
}

/// NaN weights make NaN logits: a typed `Inference` error at the first token
/// (the sampler checks), never a stream of garbage. Infinite weights make
/// NaN too (inf − inf in the norms), with the same result.
#[test]
fn nan_and_infinite_weights_stop_with_an_inference_error() {
    let src = common::reference_model_path();
    for (name, tensor, value) in [
        ("nan-output", "output.weight", f32::NAN),
        ("nan-embedding", "token_embd.weight", f32::NAN),
        ("inf-qkv", "blk.0.attn_qkv.weight", f32::INFINITY),
        ("neg-inf-output", "output.weight", f32::NEG_INFINITY),
    ] {
        let p = scratch(&format!("{name}.gguf"));
        rewrite(&src, &p, |n, t| if n == tensor { filled(&t, value, GgmlDType::F32) } else { t });
        let model = load(&p).unwrap();
        let started = Instant::now();
        let sink = Collect::new();
        match model.generate("Hello".into(), GenerationParams::greedy(200), sink.clone(), None) {
            Err(LlmError::Inference { reason }) => assert!(reason.contains("NaN"), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
        assert!(sink.pieces().is_empty(), "{name}: streamed {:?}", sink.text());
        let session = model.new_session(vec![]);
        assert!(matches!(
            session.send("Hello".into(), GenerationParams::default(), Collect::new(), None),
            Err(LlmError::Inference { .. })
        ));
        assert!(session.history().is_empty());
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
}

/// Large but finite weights: logits are huge, not NaN. Generation runs and
/// stops at max_tokens like any model's.
#[test]
fn huge_finite_weights_give_a_bounded_generation() {
    let src = common::reference_model_path();
    let p = scratch("huge-output.gguf");
    rewrite(&src, &p, |n, t| if n == "output.weight" { filled(&t, 1e30, GgmlDType::F32) } else { t });
    let model = load(&p).unwrap();
    let stats = model.generate("Hello".into(), GenerationParams::greedy(8), Collect::new(), None);
    match stats {
        Ok(s) => assert_eq!(s.stop_reason, StopReason::MaxTokens),
        Err(LlmError::Inference { .. }) => {}
        Err(e) => panic!("{e:?}"),
    }
}

/// Phi-3's output has 32064 rows for the tokenizer's 32011 tokens. Here the
/// padding rows are scaled up 20 times, so their logits (≈ 60 × a standard
/// normal each, against ≈ 12 for the best real token) lead at every step:
/// still no padding id is sampled, at any setting, and a vanishing
/// temperature (which used to overflow and pick id 32063) is greedy.
#[test]
fn padding_rows_with_the_largest_logits_are_never_sampled() {
    const VOCAB: u32 = 32011;
    let p = scratch("loud-padding.gguf");
    rewrite(&common::reference_model_path(), &p, |n, t| {
        if n != "output.weight" {
            return t;
        }
        let rows = t.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let (n_rows, width) = (rows.len(), rows[0].len());
        let scaled: Vec<f32> = rows
            .into_iter()
            .enumerate()
            .flat_map(|(i, row)| row.into_iter().map(move |w| if i >= VOCAB as usize { 20.0 * w } else { w }))
            .collect();
        QTensor::quantize(&Tensor::from_vec(scaled, (n_rows, width), &Device::Cpu).unwrap(), GgmlDType::F32).unwrap()
    });
    let model = load(&p).unwrap();
    let run = |params: GenerationParams| model.generate("Hello".into(), params, Collect::new(), None).unwrap();
    let greedy = run(GenerationParams::greedy(16));
    assert!(!greedy.token_ids.is_empty());
    for t in [1e-45, f32::MIN_POSITIVE, 1e-6] {
        assert_eq!(
            run(GenerationParams { temperature: t, ..GenerationParams::greedy(16) }).token_ids,
            greedy.token_ids
        );
    }
    let sampled = |temperature, top_k, top_p, min_p, repeat_penalty| GenerationParams {
        max_tokens: 16,
        temperature,
        top_k,
        top_p,
        min_p,
        repeat_penalty,
        seed: Some(3),
        ..Default::default()
    };
    for params in [
        GenerationParams::greedy(16),
        sampled(1.0, 0, 1.0, 0.0, 1.0),
        sampled(100.0, 0, 1.0, 0.0, 1.0),
        sampled(100.0, 50, 1.0, 0.0, 1.0),
        sampled(100.0, 0, 0.9, 0.0, 1.0),
        sampled(100.0, 0, 1.0, 0.01, 0.5),
        GenerationParams { seed: Some(3), max_tokens: 16, ..Default::default() },
    ] {
        let stats = run(params.clone());
        assert!(stats.token_ids.iter().all(|&id| (0..VOCAB as i32).contains(&id)), "{params:?}: {:?}", stats.token_ids);
        assert_eq!(model.detokenize(stats.token_ids).unwrap(), stats.text);
    }
}

/// A GGUF vocabulary with more tokens than the embedding has rows.
#[test]
fn gguf_vocabulary_larger_than_the_model() {
    let n = 40_000; // the reference embedding has 32064 rows
    let tokens: Vec<Value> =
        (0..n).map(|i| Value::String(if i == 0 { "<unk>".into() } else { format!("t{i}") })).collect();
    let spec = small()
        .with_metadata("tokenizer.ggml.model", Value::String("llama".into()))
        .with_metadata("tokenizer.ggml.tokens", Value::Array(tokens))
        .with_metadata("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); n]));
    let mut cfg = common::config(&common::model_file("vocab-40k", &spec));
    cfg.tokenizer_path = None;
    match LanguageModel::load(cfg) {
        Err(LlmError::Tokenizer { reason }) => assert!(reason.contains("do not belong together"), "{reason}"),
        other => panic!("{:?}", other.err()),
    }
}

/// GGUF strings are meant to be UTF-8; invalid bytes in a vocabulary are
/// read lossily (as llama.cpp tolerates them), so the model loads and works.
#[test]
fn invalid_utf8_in_a_gguf_vocabulary() {
    let spec = small()
        .with_metadata("tokenizer.ggml.model", Value::String("llama".into()))
        .with_metadata(
            "tokenizer.ggml.tokens",
            Value::Array(
                ["<unk>", "<s>", "</s>", "@@BAD@@", "a", "▁a"].iter().map(|t| Value::String(t.to_string())).collect(),
            ),
        )
        .with_metadata("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); 6]));
    let good = common::model_file("utf8-placeholder", &spec);
    let mut bytes = std::fs::read(good).unwrap();
    let at = bytes.windows(7).position(|w| w == b"@@BAD@@").unwrap();
    let bad = b"\xff\xfe\xc3(\xa0\xa1\x80";
    bytes[at..at + 7].copy_from_slice(bad);
    let p = scratch("invalid-utf8-vocab.gguf");
    std::fs::write(&p, bytes).unwrap();
    let mut cfg = common::config(&p);
    cfg.tokenizer_path = None;
    let model = LanguageModel::load(cfg).unwrap();
    let ids = model.tokenize("a a".into()).unwrap();
    assert!(!ids.is_empty());
    // Each invalid byte becomes U+FFFD; the valid `(` survives.
    assert_eq!(model.detokenize(vec![3]).unwrap(), String::from_utf8_lossy(bad));
}

/// The fuzzers' seeds (fuzz/seeds) are valid models: if they stopped
/// loading, fuzzing would only ever exercise the error paths.
#[test]
fn fuzz_seed_models_load_and_generate() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/load_gguf");
    for name in ["phi3-spm", "llama-gpt2"] {
        let p = seeds.join(name);
        let model =
            LanguageModel::load(ModelConfig { context_length: Some(48), ..ModelConfig::new(p.display().to_string()) })
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let stats = model.generate("hello".into(), GenerationParams::greedy(3), Collect::new(), None).unwrap();
        assert!(stats.prompt_tokens > 0, "{name}");
        model.new_session(vec![]).send("hello".into(), GenerationParams::greedy(2), Collect::new(), None).unwrap();
    }
}

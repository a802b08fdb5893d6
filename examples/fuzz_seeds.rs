//! Writes the fuzzers' seed corpus (fuzz/seeds/, committed): tiny but valid
//! Phi-3 and Llama GGUFs with their vocabulary in the metadata, the same
//! vocabularies as metadata-only GGUFs and as tokenizer.json files, and
//! truncations. Tiny so that each fuzz iteration takes about a millisecond.
//!
//!     cargo run --release --example fuzz_seeds -- fuzz/seeds
//!
//! The fuzz targets build their fixed model with `tiny_phi3()` from here
//! (fuzz/src/lib.rs includes this file), so seeds and targets agree.

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::GgmlDType;
use synthetic::{Arch, Phi3Spec};

/// Embedding rows of the tiny models: room for either vocabulary below.
pub const TINY_VOCAB: usize = 320;

/// Phi-3 layout, one layer, Q8_0 (32-wide blocks fit hidden 32): about 25 KB.
pub fn tiny_phi3() -> Phi3Spec {
    Phi3Spec {
        arch: Arch::Phi3,
        vocab: TINY_VOCAB,
        hidden: 32,
        heads: 2,
        kv_heads: 2,
        layers: 1,
        ff: 64,
        context: 64,
        dtype: GgmlDType::Q8_0,
        output_dtype: None,
        seed: 0xf022_0001,
        extra_metadata: Vec::new(),
        omit: Vec::new(),
        rope_dim: None,
        long_rope: None,
        tied: false,
        extra_tensors: Vec::new(),
    }
}

/// Llama layout with grouped-query attention and a tied output, Q4_0.
pub fn tiny_llama() -> Phi3Spec {
    Phi3Spec { arch: Arch::Llama, kv_heads: 1, dtype: GgmlDType::Q4_0, seed: 0xf022_0002, ..tiny_phi3() }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
}

/// A SentencePiece (`llama`) vocabulary as in Phi-3's GGUFs: unk/bos/eos,
/// 256 byte tokens, a few scored pieces, Phi-3's chat specials.
pub fn spm_metadata() -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for piece in [
        "▁", "h", "e", "l", "o", "▁t", "he", "▁the", "▁h", "ll", "▁he", "llo", "▁hello", "a", "▁a", "i", "n", "in",
        "▁in",
    ] {
        tokens.push(piece.into());
        types.push(1);
    }
    for special in ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    let scores: Vec<Value> = (0..tokens.len()).map(|i| Value::F32(-(i as f32) / 10.0)).collect();
    let end = tokens.iter().position(|t| t == "<|end|>").unwrap() as u32;
    vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        ("tokenizer.ggml.scores".into(), Value::Array(scores)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(end)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
    ]
}

/// GPT-2's byte-to-character table (byte-level BPE vocabularies spell bytes this way).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A byte-level BPE (`gpt2`) vocabulary with merges and a ChatML template, as in SmolLM2's GGUF.
pub fn gpt2_metadata() -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let sp = byte_char(b' ');
    let merges: Vec<(String, String)> = [("h", "e"), ("l", "l"), ("ll", "o"), ("he", "llo"), ("t", "he")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .chain([(sp.to_string(), "t".into()), (sp.to_string(), "hello".into())])
        .collect();
    for (a, b) in &merges {
        tokens.push(format!("{a}{b}"));
    }
    let mut types = vec![1i32; tokens.len()];
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.merges".into(), strings(&merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>())),
        ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(id("<|im_start|>"))),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(id("<|im_end|>"))),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), Value::String(chatml.into())),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
    ]
}

pub fn with_metadata(mut spec: Phi3Spec, metadata: Vec<(String, Value)>) -> Phi3Spec {
    for (k, v) in metadata {
        spec = spec.with_metadata(&k, v);
    }
    spec
}

/// A GGUF with metadata and no tensors (the gguf_tokenizer target's input).
pub fn metadata_only(metadata: &[(String, Value)]) -> Vec<u8> {
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &[]).expect("write metadata-only gguf");
    out.into_inner()
}

/// A small tokenizer.json: byte-level BPE with added special tokens and a
/// BOS post-processor, in the Hugging Face format.
const TOKENIZER_JSON_BPE: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": true, "normalized": false, "special": true}
  ],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {"<s>": 0, "<|end|>": 1, "h": 2, "e": 3, "l": 4, "o": 5, "Ġ": 6, "w": 7, "r": 8, "d": 9,
      "he": 10, "ll": 11, "llo": 12, "hello": 13, "Ġw": 14, "or": 15, "Ġwor": 16, "Ġworld": 17, "ld": 18},
    "merges": ["h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]}
}"#;

/// SentencePiece-style BPE with byte fallback (Llama 2 / Phi-3 tokenizer.json shape).
const TOKENIZER_JSON_SPM: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xC3>": 4, "<0xA9>": 5, "▁": 6, "h": 7, "i": 8, "▁h": 9, "▁hi": 10, "t": 11, "▁t": 12},
    "merges": ["▁ h", "▁h i", "▁ t"]}
}"#;

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into());
    let out = Path::new(&out);
    let tmp = tempfile_dir();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let gguf = |spec: Phi3Spec| {
        let p = tmp.join("seed.gguf");
        spec.write(&p).expect("write seed gguf");
        std::fs::read(&p).unwrap()
    };

    let phi3 = gguf(with_metadata(tiny_phi3(), spm_metadata()));
    let llama = gguf(with_metadata(tiny_llama(), gpt2_metadata()));
    write("load_gguf", "phi3-spm", &phi3);
    write("load_gguf", "llama-gpt2", &llama);
    // Truncations: inside the header, at the end of the metadata, inside the data.
    write("load_gguf", "phi3-header-only", &phi3[..200]);
    write("load_gguf", "llama-half", &llama[..llama.len() / 2]);

    write("gguf_tokenizer", "spm", &metadata_only(&spm_metadata()));
    write("gguf_tokenizer", "gpt2", &metadata_only(&gpt2_metadata()));

    // A chat saved by the model the saved_chat target restores into (the
    // same tiny Phi-3 with its vocabulary, so the identity matches), whole
    // and cut inside its cache.
    std::fs::write(tmp.join("seed.gguf"), &phi3).unwrap();
    let chat = saved_chat(&tmp.join("seed.gguf"), &tmp.join("seed.phichat"));
    write("saved_chat", "one-turn", &chat);
    write("saved_chat", "one-turn-cut", &chat[..chat.len() - 100]);

    write("tokenizer_json", "bpe.json", TOKENIZER_JSON_BPE.as_bytes());
    write("tokenizer_json", "spm.json", TOKENIZER_JSON_SPM.as_bytes());
    write("tokenizer_json", "truncated.json", &TOKENIZER_JSON_SPM.as_bytes()[..400]);
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("wrote seeds to {}", out.display());
}

/// The model the saved_chat fuzz target restores chats into.
pub fn saved_chat_model() -> Phi3Spec {
    with_metadata(tiny_phi3(), spm_metadata())
}

/// The bytes of a chat of one turn saved by the model in `gguf`.
pub fn saved_chat(gguf: &Path, path: &Path) -> Vec<u8> {
    use phi_mobile::{ChatMessage, GenerationParams, LanguageModel, LlmError, ModelConfig, Role, TokenSink};
    struct Discard;
    impl TokenSink for Discard {
        fn on_text(&self, _: String) -> Result<bool, LlmError> {
            Ok(true)
        }
    }
    let config =
        ModelConfig { context_length: Some(48), threads: Some(1), ..ModelConfig::new(gguf.display().to_string()) };
    let model = LanguageModel::load(config).expect("load the seed model");
    let chat = model.new_session(vec![ChatMessage::new(Role::System, "Be brief.")]);
    chat.send("hi".into(), GenerationParams::greedy(3), std::sync::Arc::new(Discard), None).expect("one turn");
    chat.save(path.display().to_string()).expect("save");
    std::fs::read(path).unwrap()
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("phi-mobile-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

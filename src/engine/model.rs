//! Loading a GGUF model and its tokenizer, with every check that turns a bad
//! file into a typed error before candle sees it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use tokenizers::Tokenizer;

use super::chat::prompt::{self, FormatConfig, PromptFormat};
use super::chat::Message;
use super::error::{catch_panic, Error, Result};
use super::gguf_scan;
use super::gguf_tokenizer;
use super::threads;
use super::transformer::{self, TensorSource, Transformer};
use super::vocab::VocabIndex;

/// What the caller asks for when loading.
#[derive(Debug, Clone, Default)]
pub struct LoadConfig {
    pub model_path: PathBuf,
    /// A Hugging Face `tokenizer.json`; `None` uses the GGUF's own vocabulary.
    pub tokenizer_path: Option<PathBuf>,
    /// Caps the context below the model's own (saves KV-cache memory).
    pub context_length: Option<usize>,
    /// Compute threads; `None` = one per physical core.
    pub threads: Option<usize>,
    /// Lets control tokens typed in chat messages act as control tokens
    /// (the behaviour before role-injection protection).
    pub parse_special_in_messages: bool,
}

/// Upper bound on a context we accept from a file, far above any model we
/// can run but low enough that position tables cannot exhaust memory.
const MAX_CONTEXT: usize = 1 << 20;
const MAX_THREADS: usize = 256;
const LLAMA_MAX_CONTEXT: usize = 4096;
/// Upper bound on a hidden/feed-forward size or head count in the metadata.
const MAX_DIM: usize = 1 << 24;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: Option<String>,
    pub parameter_count: u64,
    pub context_length: usize,
    /// The context the file was trained for (before any cap).
    pub trained_context_length: usize,
    pub vocab_size: usize,
    /// The weight type holding most of the file's bytes, e.g. `Q4_K`.
    pub quantization: String,
    pub file_size: u64,
    pub threads: usize,
    /// Why the GGUF's chat template was refused (the built-in format of the
    /// family is used instead).
    pub chat_template_warning: Option<String>,
}

/// The network with its own KV cache; cloning shares the weights and gives
/// the clone an empty cache.
#[derive(Clone)]
pub(crate) struct Weights(Transformer);

impl Weights {
    /// Runs `ids` at positions `index_pos..`; returns the last position's logits.
    pub fn forward(&mut self, ids: &[u32], index_pos: usize) -> Result<Vec<f32>> {
        Ok(self.0.forward(ids, index_pos)?.to_dtype(candle_core::DType::F32)?.to_vec1()?)
    }
}

pub struct LoadedModel {
    /// Never run: each sequence clones it, which shares the weights but gives
    /// the clone its own (still unallocated) KV cache.
    pub(crate) pristine: Weights,
    pub(crate) tokenizer: Tokenizer,
    /// The ids `tokenizer` knows (the embedding may have more rows).
    pub(crate) vocab: VocabIndex,
    /// Tokens that end generation (never streamed).
    pub(crate) end_tokens: Vec<u32>,
    /// `tokenizer.chat_template` or the architecture's format.
    chat: PromptFormat,
    pub info: ModelInfo,
}

/// End-of-turn markers of common chat formats; each counts only where the
/// vocabulary has it as a special token.
const END_OF_TURN_TOKENS: [&str; 7] =
    ["<|end|>", "<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"];

/// The GGUF metadata the engine reads besides the architecture's own.
struct TokenizerMetadata {
    bos_id: Option<u32>,
    end_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl TokenizerMetadata {
    fn read(c: &Content) -> Self {
        let id = |k: &str| gguf_tokenizer::meta_u32(c, k);
        Self {
            bos_id: id("tokenizer.ggml.bos_token_id"),
            end_ids: ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
                .iter()
                .filter_map(|k| id(k))
                .collect(),
            chat_template: c.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned(),
        }
    }
}

impl LoadedModel {
    pub fn load(cfg: &LoadConfig, progress: &mut dyn FnMut(u64, u64)) -> Result<Self> {
        if cfg.context_length == Some(0) {
            return Err(Error::param("context_length", "must be at least 1"));
        }
        if let Some(t) = cfg.threads {
            if t == 0 || t > MAX_THREADS {
                return Err(Error::param("threads", format!("must be in 1..={MAX_THREADS}, got {t}")));
            }
        }
        let threads = threads::configure(cfg.threads);
        let parse_special_in_messages = cfg.parse_special_in_messages;

        let path = &cfg.model_path;
        let file = open(path)?;
        let metadata = file.metadata().map_err(|source| Error::Io { path: path.clone(), source })?;
        if !metadata.is_file() {
            return Err(Error::invalid_model(format!("{} is a directory or device, not a model file", path.display())));
        }
        let file_size = metadata.len();
        if file_size == 0 {
            return Err(Error::invalid_model("the model file is empty"));
        }
        let mut buffered = BufReader::new(file);
        gguf_scan::check(&mut buffered, file_size)?;
        let mut reader = ProgressReader::new(buffered, file_size, progress);

        let content = catch_panic(Error::invalid_model, || {
            Content::read(&mut reader).map_err(|e| Error::invalid_model(format!("not a readable GGUF file: {e}")))
        })?;
        check_tensor_table(&content, file_size)?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| Error::invalid_model("the GGUF has no general.architecture"))?;
        let name = content.metadata.get("general.name").and_then(|v| v.to_string().ok()).cloned();
        let (parameter_count, quantization) = summarize_weights(&content);
        let tok_meta = TokenizerMetadata::read(&content);

        let family = match arch.as_str() {
            "phi3" => Family::Phi3,
            "llama" => Family::Llama,
            other => return Err(Error::UnsupportedArchitecture(other.to_string())),
        };
        let hp = Hyper::read(&content, &arch, family)?;
        // Without a tokenizer.json the GGUF's own vocabulary is used. Either
        // way it is loaded before the weights, so a bad one fails fast.
        let tokenizer = match cfg.tokenizer_path.as_deref() {
            Some(path) => load_tokenizer(path)?,
            None => catch_panic(Error::Tokenizer, || gguf_tokenizer::from_gguf(&content))?,
        };
        probe_tokenizer(&tokenizer)?;
        // candle's llama precomputes rotary tables for a fixed 4096 positions.
        // Llama-family contexts stay at 4096 positions, candle's quantized
        // llama's limit, which the tests and apps have relied on so far.
        let implementation_max = match family {
            Family::Phi3 => hp.context_length,
            Family::Llama => LLAMA_MAX_CONTEXT,
        };
        let trained_ctx = hp.context_length;
        let context_length = cfg.context_length.unwrap_or(trained_ctx).min(trained_ctx).min(implementation_max);
        let rows = hp.vocab_rows;
        let load_err = |e: candle_core::Error| Error::invalid_model(format!("cannot load the weights: {e}"));
        let cfg = transformer::Config {
            fused: family == Family::Phi3,
            n_head: hp.heads,
            n_kv_head: hp.kv_heads,
            head_dim: hp.hidden / hp.heads,
            ff: hp.ff,
            eps: hp.eps,
            rope_base: hp.rope_base,
            max_positions: context_length,
        };
        let pristine = catch_panic(Error::invalid_model, || {
            let mut source = GgufTensors { content: &content, reader: &mut reader };
            Transformer::load(cfg, hp.layers, &mut source).map(Weights).map_err(load_err)
        })?;
        reader.finish();

        let vocab_size = tokenizer.get_vocab_size(true);
        // Ids, not the count, must fit: added tokens can leave gaps.
        let max_id = tokenizer.get_vocab(true).into_values().max().unwrap_or(0) as usize;
        if max_id >= rows {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has token id {max_id} but the model's embedding only {rows} rows; they do not belong together"
            )));
        }
        let vocab = VocabIndex::new(&tokenizer, rows);
        let special: std::collections::HashSet<u32> =
            tokenizer.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        let mut end_tokens: Vec<u32> = END_OF_TURN_TOKENS
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .filter(|id| special.contains(id))
            .chain(tok_meta.end_ids.iter().copied().filter(|&id| (id as usize) < rows))
            .collect();
        end_tokens.sort_unstable();
        end_tokens.dedup();
        let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let bos_text = token_text(tok_meta.bos_id);
        let chat = PromptFormat::new(
            &tokenizer,
            FormatConfig {
                template: tok_meta.chat_template.as_deref(),
                builtin: match family {
                    Family::Phi3 => Some(super::chat::phi3_prompt),
                    Family::Llama => None,
                },
                bos_text,
                eos_text: token_text(tok_meta.end_ids.first().copied()).unwrap_or_default(),
                context: context_length,
                parse_special_in_messages,
            },
        )?;

        Ok(Self {
            pristine,
            tokenizer,
            vocab,
            end_tokens,
            info: ModelInfo {
                chat_template_warning: chat.warning.clone(),
                architecture: arch,
                name,
                parameter_count,
                context_length,
                trained_context_length: trained_ctx,
                vocab_size,
                quantization,
                file_size,
                threads,
            },
            chat,
        })
    }

    pub fn context_length(&self) -> usize {
        self.info.context_length
    }

    /// Text of `ids`, special tokens skipped (as generation streams it).
    /// Costs O(ids): the check reads the index built at load.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| !self.vocab.contains(id)) {
            return Err(Error::param("ids", format!("token id {bad} is outside the vocabulary")));
        }
        catch_panic(Error::Tokenizer, || Ok(self.tokenizer.decode(ids, true)?))
    }

    /// Renders a chat in this model's prompt format, ending with the cue for
    /// the assistant's answer: the GGUF's own chat template when it has one
    /// (and it was not refused), else the architecture's known format.
    pub fn format_chat(&self, messages: &[Message]) -> Result<String> {
        Ok(self.chat.render(messages)?.text)
    }

    /// Token ids of a chat prompt; contents are encoded as text (see
    /// `chat/spans.rs`).
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.chat.encode(&self.tokenizer, messages)
    }

    /// Encodes a raw prompt (special tokens parsed: the app wrote it), after
    /// refusing one too long to fit the context without tokenizing it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.chat.check_size(text.len())?;
        self.encode(text)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Encodes with the tokenizer's own special-token handling (BOS for Phi-3).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        prompt::plain(&self.tokenizer, text, true)
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(path.to_path_buf()),
        _ => Error::Io { path: path.to_path_buf(), source },
    })
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(Error::Tokenizer(format!("tokenizer file not found: {}", path.display())));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::Tokenizer(format!("cannot read {}: {e}", path.display())))?;
    // Well-formed JSON first, strings and escapes decoded: tokenizers' own
    // deserializers `expect` on some syntax and encoding errors inside a
    // component (found by fuzz/tokenizer_json), and a panic is no way to
    // report a bad file. serde_json's recursion limit also bounds nesting.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        return Err(Error::Tokenizer(format!("{} is not valid JSON: {e}", path.display())));
    }
    catch_panic(Error::Tokenizer, || {
        Tokenizer::from_bytes(&bytes).map_err(|e| Error::Tokenizer(format!("cannot read {}: {e}", path.display())))
    })
}

/// Encodes and decodes a short text once, so a tokenizer that parsed but
/// cannot work (e.g. a post-processor template naming a special token it does
/// not define, which tokenizers only notices, by panicking, when encoding —
/// found by fuzz/tokenizer_json) is refused at load, not at every prompt.
fn probe_tokenizer(tokenizer: &Tokenizer) -> Result<()> {
    catch_panic(
        |m| Error::Tokenizer(format!("the tokenizer fails on a simple text: {m}")),
        || {
            let ids = tokenizer
                .encode("Hi é\n", true)
                .map_err(|e| Error::Tokenizer(format!("the tokenizer fails on a simple text: {e}")))?;
            tokenizer
                .decode(ids.get_ids(), false)
                .map_err(|e| Error::Tokenizer(format!("the tokenizer fails on a simple text: {e}")))?;
            Ok(())
        },
    )
}

/// Every tensor must have a sane shape and lie inside the file.
fn check_tensor_table(content: &Content, file_size: u64) -> Result<()> {
    for (name, t) in &content.tensor_infos {
        let elems = t
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::invalid_model(format!("tensor {name} has an impossible shape {:?}", t.shape)))?;
        let block = t.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(Error::invalid_model(format!("tensor {name} does not fill whole {block}-element blocks")));
        }
        let bytes = (elems / block) as u64 * t.ggml_dtype.type_size() as u64;
        let end = content.tensor_data_offset.checked_add(t.offset).and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|e| e > file_size) {
            return Err(Error::invalid_model(format!(
                "tensor {name} extends past the end of the file (truncated download?)"
            )));
        }
    }
    Ok(())
}

fn summarize_weights(content: &Content) -> (u64, String) {
    let mut params = 0u64;
    let mut bytes_by_type: HashMap<GgmlDType, u64> = HashMap::new();
    for t in content.tensor_infos.values() {
        let n = t.shape.elem_count() as u64;
        params += n;
        *bytes_by_type.entry(t.ggml_dtype).or_default() +=
            n / t.ggml_dtype.block_size() as u64 * t.ggml_dtype.type_size() as u64;
    }
    let main = bytes_by_type.into_iter().max_by_key(|(_, b)| *b).map(|(t, _)| t);
    (params, main.map_or_else(|| "none".into(), dtype_name))
}

/// llama.cpp's spelling of a weight type.
fn dtype_name(t: GgmlDType) -> String {
    let s = match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    };
    s.to_string()
}

/// Transformer hyperparameters, checked against each other and against the
/// tensor shapes, so a file whose metadata lies fails here rather than deep
/// inside a matmul.
struct Hyper {
    context_length: usize,
    /// Rows of the embedding: the largest token id the model accepts + 1.
    vocab_rows: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ff: usize,
    eps: f64,
    rope_base: f32,
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    /// Fused `attn_qkv` and `ffn_up` (gate|up), neox rope, rope base 10000.
    Phi3,
    /// Separate q/k/v and gate/up, interleaved rope, optional tied output.
    Llama,
}

impl Hyper {
    fn read(c: &Content, arch: &str, family: Family) -> Result<Self> {
        let get = |key: &str| -> Result<usize> {
            let full = format!("{arch}.{key}");
            let v = c.metadata.get(&full).ok_or_else(|| Error::invalid_model(format!("missing metadata {full}")))?;
            let n = v
                .to_u32()
                .map(|n| n as u64)
                .or_else(|_| v.to_u64())
                .map_err(|_| Error::invalid_model(format!("metadata {full} is not an unsigned integer")))?;
            usize::try_from(n).map_err(|_| Error::invalid_model(format!("metadata {full} is too large")))
        };
        let hidden = get("embedding_length")?;
        let layers = get("block_count")?;
        let heads = get("attention.head_count")?;
        let kv_heads = get("attention.head_count_kv")?;
        let ff = get("feed_forward_length")?;
        let ctx = get("context_length")?;
        let rope_dim = get("rope.dimension_count")?;
        let eps_key = format!("{arch}.attention.layer_norm_rms_epsilon");
        let eps = c
            .metadata
            .get(&eps_key)
            .and_then(|v| v.to_f32().ok())
            .ok_or_else(|| Error::invalid_model(format!("missing metadata {eps_key} (RMS-norm epsilon)")))?;

        let bad = |why: String| Err(Error::invalid_model(why));
        if hidden == 0 || layers == 0 || heads == 0 || kv_heads == 0 || ff == 0 {
            return bad(format!("a {arch} dimension in the metadata is zero"));
        }
        // Bounds before any arithmetic or allocation sized by them: a layer
        // is several tensors, and no real dimension nears 2^24.
        if [hidden, heads, kv_heads, ff].iter().any(|&d| d > MAX_DIM) {
            return bad(format!("a {arch} dimension in the metadata exceeds {MAX_DIM}"));
        }
        if layers > c.tensor_infos.len() {
            return bad(format!("{layers} layers declared but the file has only {} tensors", c.tensor_infos.len()));
        }
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return bad(format!("{heads} heads / {kv_heads} KV heads do not divide the hidden size {hidden}"));
        }
        let head_dim = hidden / heads;
        if rope_dim != head_dim || head_dim % 2 != 0 {
            return bad(format!("rope dimension {rope_dim} must equal the head size {head_dim} (and be even)"));
        }
        if ctx == 0 || ctx > MAX_CONTEXT {
            return bad(format!("context length {ctx} is out of range"));
        }
        if !eps.is_finite() || eps <= 0.0 {
            return bad(format!("RMS-norm epsilon {eps} is not a positive number"));
        }
        let freq_base = c.metadata.get(&format!("{arch}.rope.freq_base")).and_then(|v| v.to_f32().ok());
        if freq_base.is_some_and(|b| !b.is_finite() || b <= 1.0) {
            return bad(format!("rope base {freq_base:?} is out of range"));
        }
        if family == Family::Phi3 {
            // candle's Phi-3 hard-codes rope base 10000 and has no LongRoPE.
            if let Some(base) = freq_base.filter(|b| *b != 10_000.0) {
                return Err(Error::UnsupportedArchitecture(format!("phi3 with rope base {base}")));
            }
            if c.tensor_infos.contains_key("rope_factors_long.weight") {
                return Err(Error::UnsupportedArchitecture("phi3 with LongRoPE scaling (128k context)".into()));
            }
        }
        if family == Family::Llama
            && c.metadata.get(&format!("{arch}.expert_count")).is_some_and(|v| v.to_u32().is_ok_and(|n| n > 1))
        {
            return Err(Error::UnsupportedArchitecture(format!("{arch} mixture-of-experts")));
        }

        let vocab = shape_of(c, "token_embd.weight")?.first().copied().unwrap_or(0);
        let kv = kv_heads * head_dim;
        let mut expect: Vec<(String, Vec<usize>)> =
            vec![("token_embd.weight".into(), vec![vocab, hidden]), ("output_norm.weight".into(), vec![hidden])];
        // Llama-family files may tie the output projection to the embedding.
        if family == Family::Phi3 || c.tensor_infos.contains_key("output.weight") {
            expect.push(("output.weight".into(), vec![vocab, hidden]));
        }
        for i in 0..layers {
            let b = |t: &str| format!("blk.{i}.{t}.weight");
            expect.extend([
                (b("attn_norm"), vec![hidden]),
                (b("attn_output"), vec![hidden, hidden]),
                (b("ffn_norm"), vec![hidden]),
                (b("ffn_down"), vec![hidden, ff]),
            ]);
            match family {
                Family::Phi3 => {
                    expect.extend([(b("attn_qkv"), vec![hidden + 2 * kv, hidden]), (b("ffn_up"), vec![2 * ff, hidden])])
                }
                Family::Llama => expect.extend([
                    (b("attn_q"), vec![hidden, hidden]),
                    (b("attn_k"), vec![kv, hidden]),
                    (b("attn_v"), vec![kv, hidden]),
                    (b("ffn_gate"), vec![ff, hidden]),
                    (b("ffn_up"), vec![ff, hidden]),
                ]),
            }
        }
        for (name, want) in &expect {
            let got = shape_of(c, name)?;
            if got != want.as_slice() {
                return bad(format!("tensor {name} has shape {got:?}, the metadata implies {want:?}"));
            }
        }
        Ok(Self {
            context_length: ctx,
            vocab_rows: vocab,
            hidden,
            layers,
            heads,
            kv_heads,
            ff,
            eps: eps as f64,
            rope_base: freq_base.unwrap_or(10_000.0),
        })
    }
}

/// Tensors as the GGUF's reader yields them.
struct GgufTensors<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
}

impl<R: Read + Seek> TensorSource for GgufTensors<'_, R> {
    fn tensor(&mut self, name: &str) -> candle_core::Result<candle_core::quantized::QTensor> {
        self.content.tensor(self.reader, name, &Device::Cpu)
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

fn shape_of<'a>(c: &'a Content, name: &str) -> Result<&'a [usize]> {
    c.tensor_infos
        .get(name)
        .map(|t| t.shape.dims())
        .ok_or_else(|| Error::invalid_model(format!("missing tensor {name}")))
}

/// Counts bytes as candle reads the file, to report load progress.
struct ProgressReader<'p, R> {
    inner: R,
    done: u64,
    total: u64,
    last_reported: u64,
    report: &'p mut dyn FnMut(u64, u64),
}

impl<'p, R> ProgressReader<'p, R> {
    fn new(inner: R, total: u64, report: &'p mut dyn FnMut(u64, u64)) -> Self {
        report(0, total);
        Self { inner, done: 0, total, last_reported: 0, report }
    }

    fn finish(&mut self) {
        (self.report)(self.total, self.total);
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done = (self.done + n as u64).min(self.total);
        // About a hundred reports per load, not one per read.
        if self.done - self.last_reported > self.total / 100 {
            self.last_reported = self.done;
            (self.report)(self.done, self.total);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for ProgressReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

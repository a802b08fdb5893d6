//! Loading a GGUF model and its tokenizer, with every check that turns a bad
//! file into a typed error before candle sees it.

use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;

use super::arch::{Family, Hyper};
use super::error::{catch_panic, Error, Result};
use super::gguf::map::FileBytes;
use super::gguf::{self, FileTensors};
use super::kv_cache::KvPrecision;
use super::text::{self, Text, TextConfig};
use super::threads;
use super::tokenizer::{self as tok, TokenizerMetadata};
use super::weights::Weights;

const MAX_THREADS: usize = 256;

/// What the caller asks for when loading.
#[derive(Debug, Clone, Default)]
pub struct LoadConfig {
    pub model_path: PathBuf,
    /// A Hugging Face `tokenizer.json`; `None` uses the GGUF's own vocabulary.
    pub tokenizer_path: Option<PathBuf>,
    /// Caps the context below the model's own (saves KV-cache memory).
    pub context_length: Option<usize>,
    /// Compute threads; `None` = one per performance core (see `threads.rs`).
    pub threads: Option<usize>,
    /// Lets control tokens typed in chat messages act as control tokens
    /// (the behaviour before role-injection protection).
    pub parse_special_in_messages: bool,
    /// Reads the weights into the heap instead of mapping the file.
    pub no_map: bool,
    /// How the KV cache stores keys and values (f16 unless asked).
    pub kv_precision: KvPrecision,
}

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
    /// The weights are the file's mapped pages (else a heap copy: the file
    /// system refused a map, or the app asked for none).
    pub weights_mapped: bool,
    pub threads: usize,
    /// The cores the compute threads are pinned to: the performance cores
    /// (empty: not pinned, where all cores are alike or the OS does not say).
    pub cores: Vec<usize>,
    /// KV-cache bytes each token of a conversation holds (all layers).
    pub kv_bytes_per_token: usize,
    /// Why the GGUF's chat template was refused (the built-in format of the
    /// family is used instead).
    pub chat_template_warning: Option<String>,
}

pub struct LoadedModel {
    /// Shared by every sequence, each with its own state.
    pub(crate) weights: Arc<Weights>,
    /// The tokenizer and chat format.
    pub text: Text,
    /// Tokens that end generation (never streamed).
    pub(crate) end_tokens: Vec<u32>,
    /// The weights' bytes (mapped or read), for the memory report.
    file: Arc<FileBytes>,
    /// `gguf::identity` of the tensors and the chat template.
    weights_identity: [u8; 32],
    /// With the vocabulary, computed on the first save or restore only.
    identity: std::sync::OnceLock<[u8; 32]>,
    pub info: ModelInfo,
}

/// The file mapped, or read where a map is refused (or not wanted).
fn file_bytes(
    mut file: std::fs::File,
    path: &std::path::Path,
    size: u64,
    no_map: bool,
    progress: &mut Progress<'_>,
) -> Result<FileBytes> {
    let len = usize::try_from(size)
        .map_err(|_| Error::invalid_model("the model file is larger than this device's address space"))?;
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if !no_map {
        if let Ok(map) = FileBytes::map(&file, len) {
            return Ok(map);
        }
    }
    FileBytes::read(&mut file, len, progress, &|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            Error::invalid_model("the model file is shorter than its header says (truncated while loading?)")
        }
        _ => io(e),
    })
}

/// Load progress, `(bytes done, bytes total)`: `Ok(false)` stops the load
/// with `Cancelled`, an error stops it with that error.
pub type Progress<'a> = dyn FnMut(u64, u64) -> Result<bool> + 'a;

/// Reports to `progress`; `Err` if it stops the load.
pub(crate) fn report(progress: &mut Progress<'_>, done: u64, total: u64) -> Result<()> {
    if progress(done, total)? {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}

/// The GGUF's header and tensor table, checked, with the file's size and
/// the reader positioned after them.
pub(crate) fn read_header(path: &std::path::Path) -> Result<(Content, u64, BufReader<std::fs::File>)> {
    let file = gguf::open(path)?;
    let metadata = file.metadata().map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if !metadata.is_file() {
        return Err(Error::invalid_model(format!("{} is a directory or device, not a model file", path.display())));
    }
    let file_size = metadata.len();
    if file_size == 0 {
        return Err(Error::invalid_model("the model file is empty"));
    }
    let mut buffered = BufReader::new(file);
    gguf::scan::check(&mut buffered, file_size)?;
    let content = catch_panic(Error::invalid_model, || {
        Content::read(&mut buffered).map_err(|e| Error::invalid_model(format!("not a readable GGUF file: {e}")))
    })?;
    gguf::check_tensor_table(&content, file_size)?;
    Ok((content, file_size, buffered))
}

pub(crate) fn architecture(content: &Content) -> Result<String> {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| Error::invalid_model("the GGUF has no general.architecture"))
}

/// The most memory one conversation of `context` tokens (`None`: the
/// model's own context) takes with the model at `path`, from its header
/// alone (no weights read): what `LoadedModel::memory_estimate` gives once
/// loaded, for deciding before a load whether it fits.
pub fn memory_estimate_of_file(path: &std::path::Path, context: Option<usize>, precision: KvPrecision) -> Result<u64> {
    let (content, file_size, _) = read_header(path)?;
    let arch = architecture(&content)?;
    let family = Family::of(&arch)?;
    let hp = Hyper::read(&content, &arch, family)?;
    let in_use = context.unwrap_or(hp.context_length).min(hp.context_length).min(family.max_context(&hp));
    let cfg = family.weights_config(&hp, in_use, precision);
    let kv = super::kv_cache::bytes_per_position(hp.layers, cfg.n_kv_head, cfg.head_dim, precision);
    let scratch = crate::engine::weights::scratch_bytes(
        super::generate::PREFILL_CHUNK,
        &cfg,
        hp.hidden_size(),
        hp.feed_forward(),
        hp.vocab_rows,
    );
    Ok(estimate(file_size, in_use, kv, scratch))
}

/// The weights (all of the file, once every page is read), a cache of
/// `context` positions and the forward pass's buffers.
fn estimate(file_size: u64, context: usize, kv_per_token: usize, scratch: usize) -> u64 {
    file_size.saturating_add((context as u64).saturating_mul(kv_per_token as u64)).saturating_add(scratch as u64)
}

impl LoadedModel {
    /// Loads the model, reporting to `progress` (which may stop it).
    pub fn load(cfg: &LoadConfig, progress: &mut Progress<'_>) -> Result<Self> {
        if cfg.context_length == Some(0) {
            return Err(Error::param("context_length", "must be at least 1"));
        }
        if let Some(t) = cfg.threads {
            if t == 0 || t > MAX_THREADS {
                return Err(Error::param("threads", format!("must be in 1..={MAX_THREADS}, got {t}")));
            }
        }
        super::kernels::selected().map_err(|e| Error::param("PHI_MOBILE_KERNELS", e.0))?;
        let plan = threads::configure(cfg.threads);
        let parse_special_in_messages = cfg.parse_special_in_messages;

        let path = &cfg.model_path;
        let (content, file_size, buffered) = read_header(path)?;
        let arch = architecture(&content)?;
        let name = content.metadata.get("general.name").and_then(|v| v.to_string().ok()).cloned();
        let (parameter_count, quantization) = gguf::summarize_weights(&content);
        let tok_meta = TokenizerMetadata::read(&content);

        let family = Family::of(&arch)?;
        let hp = Hyper::read(&content, &arch, family)?;
        // Without a tokenizer.json the GGUF's own vocabulary is used. Either
        // way it is loaded before the weights, so a bad one fails fast.
        let tokenizer = text::tokenizer_for(&content, cfg.tokenizer_path.as_deref())?;
        let implementation_max = family.max_context(&hp);
        let trained_ctx = hp.context_length;
        let context_length = cfg.context_length.unwrap_or(trained_ctx).min(trained_ctx).min(implementation_max);
        let rows = hp.vocab_rows;
        // The first report once the file checks out: what fails fast fails first.
        report(progress, 0, file_size)?;
        let bytes = Arc::new(file_bytes(buffered.into_inner(), path, file_size, cfg.no_map, progress)?);
        let weights_mapped = bytes.is_mapped();
        let file = bytes.clone();
        let cfg = family.weights_config(&hp, context_length, cfg.kv_precision);
        let weights = catch_panic(Error::invalid_model, || {
            let progress: Option<&mut Progress<'_>> = if weights_mapped { Some(&mut *progress) } else { None };
            let mut source = FileTensors { content: &content, file: bytes, progress, done: 0 };
            Weights::load(cfg, hp.layers, &mut source).map(Arc::new)
        })?;
        report(progress, file_size, file_size)?;

        let vocab_size = tokenizer.get_vocab_size(true);
        let end_tokens = tok::end_tokens(&tokenizer, &tok_meta, rows);
        let text = Text::new(
            tokenizer,
            TextConfig { meta: &tok_meta, family, rows, context: context_length, parse_special_in_messages },
        )?;

        // The chat format decides what a saved chat's history means, beyond
        // the weights (the vocabulary joins on first use: `identity`).
        let weights_identity =
            gguf::identity(&content, &file, &[tok_meta.chat_template.as_deref().unwrap_or("").as_bytes()]);
        let kv_bytes_per_token = weights.kv_bytes_per_token();
        Ok(Self {
            weights,
            end_tokens,
            file,
            weights_identity,
            identity: std::sync::OnceLock::new(),
            info: ModelInfo {
                chat_template_warning: text.chat_template_warning().map(str::to_string),
                architecture: arch,
                name,
                parameter_count,
                context_length,
                trained_context_length: trained_ctx,
                vocab_size,
                quantization,
                file_size,
                weights_mapped,
                threads: plan.threads,
                cores: plan.cores,
                kv_bytes_per_token,
            },
            text,
        })
    }

    pub fn context_length(&self) -> usize {
        self.info.context_length
    }

    /// What a saved chat must have been saved by: the weights and template
    /// (`gguf::identity`) and the vocabulary, which decides what its ids mean.
    pub(crate) fn identity(&self) -> [u8; 32] {
        *self.identity.get_or_init(|| {
            use sha2::{Digest, Sha256};
            let mut vocab: Vec<(u32, String)> =
                self.text.tokenizer.get_vocab(true).into_iter().map(|(t, id)| (id, t)).collect();
            vocab.sort_unstable();
            let mut h = Sha256::new();
            h.update(self.weights_identity);
            for (id, token) in &vocab {
                h.update(id.to_le_bytes());
                h.update((token.len() as u64).to_le_bytes());
                h.update(token.as_bytes());
            }
            h.finalize().into()
        })
    }

    /// Bytes of the weights in memory now (`FileBytes::resident`).
    pub fn weights_resident(&self) -> Option<u64> {
        self.file.resident()
    }

    /// The most memory one conversation of `context` tokens takes: the
    /// weights (all of the file, once every page is read), its KV cache at
    /// that length, and the forward pass's buffers.
    pub fn memory_estimate(&self, context: usize) -> u64 {
        let scratch = self.weights.scratch_bytes(super::generate::PREFILL_CHUNK);
        estimate(self.info.file_size, context.min(self.context_length()), self.info.kv_bytes_per_token, scratch)
    }
}

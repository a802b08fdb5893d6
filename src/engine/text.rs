//! A model's text side: its tokenizer and chat format. Read from the GGUF's
//! header alone it needs no weights, so an app can count a prompt's tokens
//! before loading gigabytes (or with a vocabulary-only GGUF, as the CLI's
//! `--tokenize` does); a loaded model holds the same.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::Tokenizer;

use super::arch::Family;
use super::chat::prompt::{self, FormatConfig, PromptFormat};
use super::chat::Message;
use super::constraint::{Grammars, ResponseFormat};
use super::error::{catch_panic, Error, Result};
use super::tokenizer::vocab::VocabIndex;
use super::tokenizer::{self as tok, TokenizerMetadata};
use super::tools::Toolset;

/// Context assumed for a file's text side when its metadata states none:
/// it only bounds the prompt size checked before tokenizing.
const CONTEXT_WITHOUT_METADATA: usize = 1 << 20;

pub struct Text {
    pub(crate) tokenizer: Tokenizer,
    /// The ids `tokenizer` knows (the embedding may have more rows).
    pub(crate) vocab: VocabIndex,
    /// `tokenizer.chat_template` or the architecture's format.
    pub(crate) chat: PromptFormat,
    /// Constrained output over this vocabulary, built when first asked for.
    pub(crate) grammars: Grammars,
}

/// What decides a text side besides the tokenizer.
pub(crate) struct TextConfig<'a> {
    pub meta: &'a TokenizerMetadata,
    pub family: Family,
    /// Token ids the model has rows for.
    pub rows: usize,
    pub context: usize,
    pub parse_special_in_messages: bool,
}

/// The tokenizer a model file is read with: the `tokenizer.json` at
/// `path`, else the GGUF's own vocabulary.
pub(crate) fn tokenizer_for(content: &Content, path: Option<&Path>) -> Result<Tokenizer> {
    let tokenizer = match path {
        Some(path) => tok::load_tokenizer(path)?,
        None => catch_panic(Error::Tokenizer, || tok::gguf::from_gguf(content))?,
    };
    tok::probe_tokenizer(&tokenizer)?;
    Ok(tokenizer)
}

impl Text {
    /// Compiles `format` for this vocabulary without generating: a format
    /// that cannot compile is the `InvalidParameter` a generation would
    /// return. The first call also indexes the vocabulary (kept for later).
    pub fn check_format(&self, format: &ResponseFormat) -> Result<()> {
        self.grammars.compile(self, format).map(drop)
    }

    pub(crate) fn new(tokenizer: Tokenizer, cfg: TextConfig<'_>) -> Result<Self> {
        // Ids, not the count, must fit: added tokens can leave gaps.
        let max_id = tokenizer.get_vocab(true).into_values().max().unwrap_or(0) as usize;
        if max_id >= cfg.rows {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has token id {max_id} but the model's embedding only {} rows; they do not belong together",
                cfg.rows
            )));
        }
        let vocab = VocabIndex::new(&tokenizer, cfg.rows);
        let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let chat = PromptFormat::new(
            &tokenizer,
            FormatConfig {
                template: cfg.meta.chat_template.as_deref(),
                builtin: match cfg.family {
                    Family::Phi3 => Some(super::chat::phi3_prompt),
                    Family::Llama => None,
                },
                bos_text: token_text(cfg.meta.bos_id),
                eos_text: token_text(cfg.meta.end_ids.first().copied()).unwrap_or_default(),
                context: cfg.context,
                parse_special_in_messages: cfg.parse_special_in_messages,
            },
        )?;
        Ok(Self { tokenizer, vocab, chat, grammars: Grammars::default() })
    }

    /// The text side of the model file at `path`, from its header (a
    /// vocabulary-only GGUF will do); `tokenizer_path` as in `LoadConfig`.
    pub fn load(path: &Path, tokenizer_path: Option<&Path>) -> Result<Self> {
        let (content, _, _) = super::model::read_header(path)?;
        let arch = super::model::architecture(&content)?;
        let family = Family::of(&arch)?;
        let meta = TokenizerMetadata::read(&content);
        let tokenizer = tokenizer_for(&content, tokenizer_path)?;
        let context = content
            .metadata
            .get(&format!("{arch}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map_or(CONTEXT_WITHOUT_METADATA, |c| (c as usize).clamp(1, CONTEXT_WITHOUT_METADATA));
        let rows = tokenizer.get_vocab(true).into_values().max().map_or(1, |m| m as usize + 1);
        Self::new(tokenizer, TextConfig { meta: &meta, family, rows, context, parse_special_in_messages: false })
    }

    /// Why the GGUF's chat template was refused (the family's format is used).
    pub fn chat_template_warning(&self) -> Option<&str> {
        self.chat.warning.as_deref()
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
        Ok(self.chat.render(messages, None)?.text)
    }

    /// Token ids of a chat prompt; contents are encoded as text (see
    /// `chat/spans.rs`).
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.chat.encode(&self.tokenizer, messages, None)
    }

    /// `encode_chat` with the session's tools in the prompt.
    pub fn encode_chat_with(&self, messages: &[Message], tools: Option<&Toolset>) -> Result<Vec<u32>> {
        self.chat.encode(&self.tokenizer, messages, tools)
    }

    /// `format_chat` with the session's tools in the prompt.
    pub fn format_chat_with(&self, messages: &[Message], tools: Option<&Toolset>) -> Result<String> {
        Ok(self.chat.render(messages, tools)?.text)
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

//! Tokenizers: a Hugging Face `tokenizer.json` or the GGUF's own vocabulary
//! (`gguf`), the ids they know (`vocab`), the end-of-turn tokens, and
//! incremental detokenization on grapheme boundaries (`stream`, `graphemes`).

pub(crate) mod bytes;
pub(crate) mod gguf;
pub(crate) mod graphemes;
pub(crate) mod stream;
pub(crate) mod vocab;

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::Tokenizer;

use super::error::{catch_panic, Error, Result};

/// End-of-turn markers of common chat formats; each counts only where the
/// vocabulary has it as a special token.
const END_OF_TURN_TOKENS: [&str; 7] =
    ["<|end|>", "<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"];

/// The GGUF metadata the engine reads besides the architecture's own.
pub(crate) struct TokenizerMetadata {
    pub bos_id: Option<u32>,
    pub end_ids: Vec<u32>,
    pub chat_template: Option<String>,
}

/// The ids that end generation (never streamed): the end-of-turn markers the
/// vocabulary has as special tokens, and the GGUF's EOS/EOT ids below `rows`.
pub(crate) fn end_tokens(tokenizer: &Tokenizer, meta: &TokenizerMetadata, rows: usize) -> Vec<u32> {
    let special: std::collections::HashSet<u32> =
        tokenizer.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
    let mut end_tokens: Vec<u32> = END_OF_TURN_TOKENS
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .filter(|id| special.contains(id))
        .chain(meta.end_ids.iter().copied().filter(|&id| (id as usize) < rows))
        .collect();
    end_tokens.sort_unstable();
    end_tokens.dedup();
    end_tokens
}

impl TokenizerMetadata {
    pub fn read(c: &Content) -> Self {
        let id = |k: &str| gguf::meta_u32(c, k);
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

pub(crate) fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
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
pub(crate) fn probe_tokenizer(tokenizer: &Tokenizer) -> Result<()> {
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

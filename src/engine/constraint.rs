//! Constrained decoding: answers guaranteed to match a JSON schema, to be a
//! JSON object, or to match a regex. llguidance (crates.io; the engine
//! llama.cpp and mistral.rs use) compiles the format and, token by token,
//! says which tokens can continue a valid answer; the sampler never sees the
//! rest. It works on bytes: `tokenizer::bytes` gives it every token's, so
//! byte-fallback and multi-byte UTF-8 tokens are masked exactly, and special
//! tokens (marked) are never part of an answer.
//!
//! The end of the answer is the model's end tokens, allowed exactly when the
//! answer is complete; when nothing may follow it (a closed JSON object) the
//! answer ends there without asking the model.

use std::sync::{Arc, OnceLock};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};

use super::error::{catch_panic, Error, Result};
use super::tokenizer::bytes::token_bytes;
use super::Text;

/// What an answer must be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// Anything the model says.
    #[default]
    Text,
    /// Any JSON object.
    Json,
    /// A JSON value valid against this JSON schema (the schema's text).
    JsonSchema(String),
    /// Text matching this regex, whole (Rust `regex` syntax, no lookaround
    /// or backreferences).
    Regex(String),
}

/// Longest schema or regex accepted: larger ones are far beyond any real
/// answer format, and bound the compile's time and memory.
const MAX_FORMAT_BYTES: usize = 256 * 1024;

/// The per-model part, built on the first constrained request: the token
/// trie over the vocabulary and llguidance's precomputed slices of it
/// (measured: 71 ms and 12 MB for Phi-3's 32k tokens, 116 ms and 21 MB for
/// SmolLM2's 49k; docs/PERFORMANCE.md).
#[derive(Default)]
pub(crate) struct Grammars {
    /// A failure is kept as its sentence: this tokenizer cannot be used
    /// for constrained output at all.
    factory: OnceLock<std::result::Result<Arc<ParserFactory>, String>>,
}

impl Grammars {
    /// The constraint for one answer; `None` for plain text. A format that
    /// does not compile is `InvalidParameter` saying why.
    pub fn compile(&self, text: &Text, format: &ResponseFormat) -> Result<Option<Constraint>> {
        let grammar = match format {
            ResponseFormat::Text => return Ok(None),
            ResponseFormat::Json => json_grammar(serde_json::json!({ "type": "object" })),
            ResponseFormat::JsonSchema(schema) => {
                check_size(schema, "JSON schema")?;
                let schema: serde_json::Value = serde_json::from_str(schema)
                    .map_err(|e| Error::param("response_format", format!("the JSON schema is not valid JSON: {e}")))?;
                if !schema.is_object() {
                    return Err(Error::param("response_format", "the JSON schema must be a JSON object"));
                }
                json_grammar(schema)
            }
            ResponseFormat::Regex(regex) => {
                check_size(regex, "regex")?;
                TopLevelGrammar::from_regex(regex)
            }
        };
        self.compile_grammar(text, grammar, "response_format").map(Some)
    }

    /// The constraint of a Lark grammar (tool calls); errors name `param`.
    pub fn compile_lark(&self, text: &Text, lark: &str, param: &'static str) -> Result<Constraint> {
        self.compile_grammar(text, TopLevelGrammar::from_lark(lark.to_string()), param)
    }

    fn compile_grammar(&self, text: &Text, grammar: TopLevelGrammar, param: &'static str) -> Result<Constraint> {
        let factory = self.factory.get_or_init(|| build_factory(text)).clone().map_err(|e| Error::param(param, e))?;
        let failed = |m: String| Error::param(param, format!("cannot compile the format: {m}"));
        let parser = catch_panic(failed, || factory.create_parser(grammar).map_err(|e| failed(e.to_string())))?;
        let matcher = Matcher::new(Ok(parser));
        Ok(Constraint { matcher, end: text.vocab.end() as u32, saved_ends: Vec::new(), param })
    }
}

/// JSON on one line, spaced as models write it (`{"a": 1, "b": [2, 3]}`):
/// with whitespace free, a model can pad an answer with newlines until its
/// budget runs out. A schema's own `x-guidance` options win.
fn json_grammar(mut schema: serde_json::Value) -> TopLevelGrammar {
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(
            || serde_json::json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " }),
        );
    }
    TopLevelGrammar::from_json_schema(schema)
}

fn check_size(s: &str, what: &str) -> Result<()> {
    if s.len() > MAX_FORMAT_BYTES {
        return Err(Error::param("response_format", format!("the {what} is over {MAX_FORMAT_BYTES} bytes")));
    }
    Ok(())
}

fn build_factory(text: &Text) -> std::result::Result<Arc<ParserFactory>, String> {
    let end = text.vocab.end();
    let mut words = token_bytes(&text.tokenizer, end).map_err(|e| e.to_string())?;
    // One id past the vocabulary stands for "the answer may end here": the
    // model's own end tokens are ours to allow (there may be several).
    words.push(Vec::new());
    let info = TokRxInfo::new(words.len() as u32, end as u32);
    let failed = |m: String| Error::Inference(format!("cannot index the vocabulary for constrained output: {m}"));
    catch_panic(failed, || {
        let trie = TokTrie::from(&info, &words);
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| failed(e.to_string()))?;
        // Errors reach the app as our sentences; nothing goes to stderr.
        factory.quiet();
        *factory.limits_mut() = ParserLimits { verbose_errors: false, ..ParserLimits::default() };
        Ok(Arc::new(factory))
    })
    .map_err(|e| e.to_string())
}

/// One answer's state in its format.
pub(crate) struct Constraint {
    matcher: Matcher,
    /// The "may end" id.
    end: u32,
    /// The end tokens' logits while the mask is applied (kept: no
    /// allocation per token).
    saved_ends: Vec<(usize, f32)>,
    /// The parameter its errors name.
    param: &'static str,
}

impl Constraint {
    /// Sets the logit of every token that cannot continue the answer to
    /// -inf; the model's `end_tokens` stay only where the answer may end.
    pub fn mask(&mut self, logits: &mut [f32], end_tokens: &[u32]) -> Result<()> {
        let mask = self.matcher.compute_mask().map_err(|e| self.failed(e))?;
        self.saved_ends.clear();
        self.saved_ends.extend(end_tokens.iter().filter_map(|&id| Some((id as usize, *logits.get(id as usize)?))));
        let mut any = false;
        for (id, l) in logits.iter_mut().enumerate() {
            if id < mask.len() && mask.is_allowed(id as u32) {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        // As special tokens no text produces them: the grammar never allows
        // them itself, only says whether the answer may end.
        if (self.end as usize) < mask.len() && mask.is_allowed(self.end) && !self.saved_ends.is_empty() {
            for &(id, l) in &self.saved_ends {
                logits[id] = l;
            }
        } else if !any {
            return Err(Error::param(self.param, "no token of this model can continue the answer"));
        }
        Ok(())
    }

    /// Moves past a sampled token (one the mask allowed).
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher.consume_token(token).map_err(|e| self.failed(e))
    }

    /// Nothing may follow: the answer is complete.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::param(self.param, format!("the format cannot be continued with this vocabulary: {e}"))
    }
}

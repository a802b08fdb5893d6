//! A model's chat prompt format (its template or the built-in format of its
//! family), the prompt size bound, and encoding a chat into ids with the
//! messages' contents kept as text.

use tokenizers::Tokenizer;

use super::super::error::{Error, Result};
use super::spans::{self, Rendered, Specials};
use super::template::{ChatTemplate, RenderError};
use super::Message;

/// A format written in Rust (e.g. [`super::phi3_prompt`]).
pub type Builtin = fn(&[Message]) -> String;

pub(crate) struct PromptFormat {
    template: Option<ChatTemplate>,
    builtin: Option<Builtin>,
    /// Why the GGUF's template was refused in favour of the built-in format.
    pub warning: Option<String>,
    specials: Specials,
    bos_text: Option<String>,
    /// Bytes of the vocabulary's longest token (at least one character's 4).
    max_token_bytes: usize,
    context: usize,
    parse_special_in_messages: bool,
}

pub struct FormatConfig<'a> {
    pub template: Option<&'a str>,
    pub builtin: Option<Builtin>,
    pub bos_text: Option<String>,
    pub eos_text: String,
    pub context: usize,
    pub parse_special_in_messages: bool,
}

impl PromptFormat {
    /// A refused template falls back to `builtin` (with a warning) or, with
    /// no built-in format, makes the model invalid.
    pub fn new(tokenizer: &Tokenizer, cfg: FormatConfig<'_>) -> Result<Self> {
        let max_token_bytes = tokenizer.get_vocab(true).keys().map(String::len).max().unwrap_or(0).max(4);
        let max_prompt = cfg.context.saturating_mul(max_token_bytes);
        let mut warning = None;
        let template = match cfg.template {
            None => None,
            Some(src) => {
                let bos = cfg.bos_text.clone().unwrap_or_default();
                match ChatTemplate::new(src, bos, cfg.eos_text, max_prompt) {
                    Ok(t) => Some(t),
                    Err(why) if cfg.builtin.is_some() => {
                        warning = Some(format!(
                            "the model's chat template is not used ({why}); the built-in format of its family is"
                        ));
                        None
                    }
                    Err(why) => return Err(Error::invalid_model(format!("the chat template is refused: {why}"))),
                }
            }
        };
        Ok(Self {
            template,
            builtin: cfg.builtin,
            warning,
            specials: Specials::new(tokenizer),
            bos_text: cfg.bos_text,
            max_token_bytes,
            context: cfg.context,
            parse_special_in_messages: cfg.parse_special_in_messages,
        })
    }

    /// Longest text (in bytes) whose tokens could fit the context.
    pub fn max_prompt_bytes(&self) -> usize {
        self.context.saturating_mul(self.max_token_bytes)
    }

    /// `ContextOverflow` for a text too long to fit, before tokenizing it.
    pub fn check_size(&self, bytes: usize) -> Result<()> {
        if bytes > self.max_prompt_bytes() {
            return Err(Error::ContextOverflow { needed: bytes.div_ceil(self.max_token_bytes), available: self.context });
        }
        Ok(())
    }

    pub fn render(&self, messages: &[Message]) -> Result<Rendered> {
        let total = messages.iter().try_fold(0usize, |sum, m| {
            self.check_size(m.content.len())?;
            Ok::<_, Error>(sum.saturating_add(m.content.len()))
        })?;
        self.check_size(total)?;
        match (&self.template, self.builtin) {
            (Some(t), _) => t.render(messages, true).map_err(|e| match e {
                RenderError::TooLong => Error::ContextOverflow {
                    needed: self.max_prompt_bytes().div_ceil(self.max_token_bytes) + 1,
                    available: self.context,
                },
                RenderError::Failed(e) => e,
            }),
            (None, Some(builtin)) => {
                let marked: Vec<Message> =
                    messages.iter().map(|m| Message::new(m.role, spans::mark(&m.content))).collect();
                let (text, spans) = spans::unmark(&builtin(&marked))
                    .ok_or_else(|| Error::Inference("the built-in chat format lost a message".into()))?;
                Ok(Rendered { text, spans: Some(spans) })
            }
            (None, None) => Err(Error::param(
                "messages",
                "this model has no chat template; use generate() with a prompt in its own format",
            )),
        }
    }

    /// Token ids of a chat prompt. Templates that write the BOS token
    /// themselves get no second one from the tokenizer.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        let rendered = self.render(messages)?;
        self.check_size(rendered.text.len())?;
        let text = rendered.text.as_str();
        let add_special = !self.bos_text.as_deref().is_some_and(|b| !b.is_empty() && text.starts_with(b));
        if self.parse_special_in_messages {
            return plain(tokenizer, text, add_special);
        }
        match &rendered.spans {
            Some(spans) => self.specials.encode(tokenizer, text, spans, add_special),
            None => match messages.iter().find_map(|m| self.specials.find_in(&m.content)) {
                // The template changed contents beyond trimming, so they
                // cannot be located: safe only if none holds a special token.
                None => plain(tokenizer, text, add_special),
                Some(token) => Err(Error::param(
                    "messages",
                    format!(
                        "a message contains the control token {token}, which this model's chat template would \
                         not keep apart from its own (set parseSpecialInMessages to allow it)"
                    ),
                )),
            },
        }
    }
}

fn plain(tokenizer: &Tokenizer, text: &str, add_special: bool) -> Result<Vec<u32>> {
    super::super::error::catch_panic(
        |m| Error::Tokenizer(m),
        || Ok(tokenizer.encode(text, add_special)?.get_ids().to_vec()),
    )
}

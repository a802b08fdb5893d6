//! Chat messages, prompt formats and templates: the built-in Phi-3 format
//! (here), Hugging Face chat templates from the GGUF (`template.rs`) within
//! the bounds of `limits.rs` and `filters.rs`, and keeping message contents
//! from becoming control tokens (`spans.rs`).

mod filters;
mod limits;
pub(crate) mod prompt;
pub(crate) mod spans;
pub(crate) mod template;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering the assistant's call (in call order).
    Tool,
}

/// A call the model made to one of the session's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as the model wrote them: a JSON object valid against
    /// the tool's parameter schema.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// An assistant message's calls (after its `content`, if any).
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new() }
    }
}

/// Phi-3-instruct's format, as its Hugging Face chat template renders it (the
/// BOS token comes from the tokenizer's post-processor, not from here):
/// `<|system|>\n…<|end|>\n<|user|>\n…<|end|>\n<|assistant|>\n…<|end|>\n`,
/// ending with `<|assistant|>\n` to ask for the next answer.
pub fn phi3_prompt(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        let tag = match m.role {
            Role::System => "<|system|>",
            Role::User => "<|user|>",
            Role::Assistant => "<|assistant|>",
            // Phi-3 has no tool role: results come back as the user's turn
            // (wrapped by `tools.rs` before they get here).
            Role::Tool => "<|user|>",
        };
        out.push_str(tag);
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|end|>\n");
    }
    out.push_str("<|assistant|>\n");
    out
}

/// Compiles `source` as a chat template with the loader's checks and renders
/// `messages` (for the fuzzer, fuzz/fuzz_targets/chat_template.rs): a typed
/// error for a refused template, never a crash.
#[doc(hidden)]
pub fn render_untrusted_template(source: &str, messages: &[Message], max_output: usize) -> super::Result<String> {
    let template = template::ChatTemplate::new(source, "<s>".into(), "</s>".into(), max_output)
        .map_err(super::Error::invalid_model)?;
    template.render(messages, true).map(|r| r.text).map_err(|e| match e {
        template::RenderError::TooLong => {
            super::Error::ContextOverflow { needed: max_output + 1, available: max_output }
        }
        template::RenderError::Failed(e) => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_hf_template() {
        let p = phi3_prompt(&[
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello!"),
            Message::new(Role::User, "Bye"),
        ]);
        assert_eq!(
            p,
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n"
        );
    }
}

//! Hugging Face chat templates (Jinja, from `tokenizer.chat_template` in the
//! GGUF) rendered with minijinja, configured as transformers configures Jinja2:
//! `trim_blocks`, `lstrip_blocks`, loop controls, Python string methods,
//! `raise_exception`, `tojson` — within the bounds of `limits.rs` (size,
//! nesting, stack, output) and `filters.rs` (filters that allocate by a
//! parameter).

use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, ErrorKind, Value};

use super::super::error::{Error, Result};
use super::limits::{self, CappedWriter};
use super::spans::{self, Rendered};
use super::{filters, Message, Role};

/// Instructions a template may run per render, on top of [`FUEL_PER_BYTE`]
/// times the output cap; far above any real template, low enough that a
/// hostile one cannot hang the app. minijinja also charges fuel for the
/// bytes a template creates (64 bytes per fuel): this bounds its memory to
/// about 64 × the fuel.
const BASE_FUEL: u64 = 300_000;
const FUEL_PER_BYTE: u64 = 1;
/// Size checks on values a filter serializes (`tojson`, `string`, …) allow
/// at least this much, or the output cap if larger.
const MIN_VALUE_BUDGET: usize = 1 << 20;
/// Bytes of values one render may format (`~`, filters taking strings,
/// output), in multiples of the value budget: lists share their items, so
/// what they format is not bounded by the fuel (our minijinja patch).
const FORMAT_BUDGET_FACTOR: u64 = 8;

/// Marks errors a template raised on purpose via `raise_exception`.
#[derive(Debug)]
struct Raised;

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the chat template")
    }
}

impl std::error::Error for Raised {}

/// Why a render produced no prompt.
#[derive(Debug)]
pub enum RenderError {
    /// The output passed the cap: the prompt cannot fit the context.
    TooLong,
    Failed(Error),
}

impl From<Error> for RenderError {
    fn from(e: Error) -> Self {
        RenderError::Failed(e)
    }
}

/// One message as the template sees it.
pub(crate) struct Turn {
    pub role: Role,
    pub plain: String,
    /// `plain` with the message-written parts marked (`spans.rs`).
    pub marked: String,
    /// Phi-4-mini's `tools` on the system message (a JSON array's text).
    pub tools: Option<String>,
    /// An assistant's calls in Hugging Face's shape, for templates that
    /// render them.
    pub tool_calls: Option<serde_json::Value>,
}

impl Turn {
    pub fn of(m: &Message) -> Self {
        Self::new(m.role, spans::clean(&m.content).into_owned(), spans::mark(&m.content))
    }

    pub fn new(role: Role, plain: String, marked: String) -> Self {
        Self { role, plain, marked, tools: None, tool_calls: None }
    }
}

/// What a template does with tools, found by rendering a probe chat.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ToolSupport {
    /// It shows the tools declared (in `tools` or on the system message).
    pub tools: bool,
    /// It renders an assistant message's `tool_calls`.
    pub calls: bool,
}

pub(crate) struct ChatTemplate {
    /// Filled in by `new`.
    pub tool_support: ToolSupport,
    env: Environment<'static>,
    bos: String,
    eos: String,
    max_output: usize,
    format_budget: u64,
}

impl ChatTemplate {
    /// Checks, compiles and probes `source` (on the template thread); `Err`
    /// says why the template is refused.
    pub fn new(source: &str, bos: String, eos: String, max_output: usize) -> std::result::Result<Self, String> {
        limits::scan(source)?;
        let budget = max_output.max(MIN_VALUE_BUDGET);
        let mut env = Environment::new();
        let syntax =
            SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(|e| e.to_string())?;
        env.set_syntax(syntax);
        env.set_fuel(Some(BASE_FUEL + FUEL_PER_BYTE * max_output as u64));
        env.set_unknown_method_callback(filters::unknown_method(budget));
        env.add_filter("tojson", filters::tojson(budget));
        env.add_filter("string", filters::string(budget));
        env.add_filter("trim", filters::trim);
        env.remove_filter("pprint");
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg).with_source(Raised))
        });
        let source = source.to_string();
        let env = limits::on_template_thread(move || {
            env.add_template_owned("chat", source)
                .map_err(|e| Error::invalid_model(format!("it does not compile: {e}")))?;
            Ok(env)
        })
        .map_err(|e| e.to_string())?;
        let mut template = Self {
            tool_support: ToolSupport::default(),
            env,
            bos,
            eos,
            max_output,
            format_budget: FORMAT_BUDGET_FACTOR * budget as u64,
        };
        match template.render(&[Message::new(Role::User, "Hi")], true) {
            Ok(_) => {
                template.tool_support = template.probe_tools();
                Ok(template)
            }
            Err(RenderError::TooLong) => Err("it renders a one-word chat longer than the context".into()),
            Err(RenderError::Failed(e)) => Err(format!("it fails on a one-word chat: {e}")),
        }
    }

    /// Renders a chat declaring a tool and one calling it: a template that
    /// shows neither has no place for tools (a failure counts as no).
    fn probe_tools(&self) -> ToolSupport {
        const NAME: &str = "phi_mobile_probe_tool";
        let function = serde_json::json!({ "name": NAME, "description": "", "parameters": { "type": "object" } });
        let tools = serde_json::json!([{ "type": "function", "function": function }]);
        let mut system = Turn::new(Role::System, String::new(), String::new());
        system.tools = Some(serde_json::json!([function]).to_string());
        let user = || Turn::new(Role::User, "Hi".into(), "Hi".into());
        let shows = |turns: &[Turn], tools| self.render_turns(turns, tools, false).is_ok_and(|r| r.text.contains(NAME));
        let mut call = Turn::new(Role::Assistant, String::new(), String::new());
        call.tool_calls =
            Some(serde_json::json!([{ "type": "function", "function": { "name": NAME, "arguments": {} } }]));
        ToolSupport { tools: shows(&[system, user()], Some(&tools)), calls: shows(&[user(), call], Some(&tools)) }
    }

    /// Renders on the template thread, twice: plainly, and with contents
    /// marked to find where they are (see `spans.rs`).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<Rendered, RenderError> {
        let turns: Vec<Turn> = messages.iter().map(Turn::of).collect();
        self.render_turns(&turns, None, add_generation_prompt)
    }

    /// `render` of turns prepared for tools (`prompt.rs`): `tools` is
    /// Hugging Face's context variable.
    pub fn render_turns(
        &self,
        turns: &[Turn],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> std::result::Result<Rendered, RenderError> {
        limits::on_template_thread(|| {
            Ok((
                self.render_once(turns, false, tools, add_generation_prompt),
                self.render_once(turns, true, tools, add_generation_prompt),
            ))
        })
        .map_err(RenderError::Failed)
        .and_then(|(plain, marked)| {
            let text = plain?;
            let spans = marked.ok().and_then(|m| spans::unmark(&m)).filter(|(t, _)| *t == text).map(|(_, s)| s);
            Ok(Rendered { text, spans })
        })
    }

    fn render_once(
        &self,
        turns: &[Turn],
        marked: bool,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> std::result::Result<String, RenderError> {
        let messages: Vec<Value> = turns
            .iter()
            .map(|t| {
                let role = match t.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                };
                let mut m = serde_json::Map::new();
                m.insert("role".into(), role.into());
                m.insert("content".into(), if marked { t.marked.as_str() } else { t.plain.as_str() }.into());
                if let Some(tools) = &t.tools {
                    m.insert("tools".into(), tools.as_str().into());
                }
                if let Some(calls) = &t.tool_calls {
                    m.insert("tool_calls".into(), calls.clone());
                }
                Value::from(minijinja::value::Serde(&m))
            })
            .collect();
        let template =
            self.env.get_template("chat").map_err(|e| Error::invalid_model(format!("chat template: {e}")))?;
        let mut out = CappedWriter::new(self.max_output);
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
            tools => tools.map(|t| Value::from(minijinja::value::Serde(t))),
        };
        // Formatting past the budget, or a value nested past minijinja's depth
        // bound (our patch), fails inside minijinja, as an error or, where it
        // formats with `to_string`, as a panic: all end here.
        minijinja::value::take_nesting_exceeded();
        let rendered = minijinja::value::with_format_budget(self.format_budget, || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                template.render_captured_to(ctx, &mut out).map(drop)
            }));
            (result, minijinja::value::format_budget_exhausted(), minijinja::value::take_nesting_exceeded())
        });
        let result = match rendered {
            (_, true, _) => {
                return Err(RenderError::Failed(Error::Inference(format!(
                    "the chat template formats more than {} MB of values",
                    self.format_budget >> 20
                ))))
            }
            (_, _, true) => {
                return Err(RenderError::Failed(Error::Inference("the chat template nests values too deeply".into())))
            }
            (Ok(result), false, false) => result,
            (Err(panic), false, false) => std::panic::resume_unwind(panic),
        };
        match result {
            Ok(()) => String::from_utf8(out.out)
                .map_err(|_| RenderError::Failed(Error::Inference("the chat template wrote invalid UTF-8".into()))),
            Err(_) if out.overflowed => Err(RenderError::TooLong),
            Err(e) => {
                let raised =
                    std::iter::successors(std::error::Error::source(&e), |s| s.source()).any(|s| s.is::<Raised>());
                Err(RenderError::Failed(if raised {
                    // The template rejected these messages (e.g. a role it does not support).
                    Error::param("messages", e.detail().unwrap_or("rejected by the chat template").to_string())
                } else {
                    Error::Inference(format!("the chat template failed: {e}"))
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    // microsoft/Phi-3-mini-4k-instruct's tokenizer_config.json template.
    const PHI3: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

    const CAP: usize = 1 << 20;

    fn new(src: &str, bos: &str, eos: &str) -> ChatTemplate {
        ChatTemplate::new(src, bos.into(), eos.into(), CAP).unwrap()
    }

    fn render(t: &ChatTemplate, m: &[Message], add: bool) -> std::result::Result<String, RenderError> {
        t.render(m, add).map(|r| r.text)
    }

    fn msgs() -> Vec<Message> {
        vec![Message::new(Role::User, "Hi"), Message::new(Role::Assistant, "Hello!"), Message::new(Role::User, "Bye")]
    }

    #[test]
    fn chatml_with_default_system_prompt() {
        let t = new(CHATML, "", "<|im_end|>");
        assert_eq!(
            render(&t, &msgs(), true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn phi3_template_matches_the_builtin_format() {
        let t = new(PHI3, "<s>", "<|endoftext|>");
        let mut m = vec![Message::new(Role::System, "Be brief.")];
        m.extend(msgs());
        let r = t.render(&m, true).unwrap();
        assert_eq!(r.text, super::super::phi3_prompt(&m));
        let spans = r.spans.unwrap();
        let contents: Vec<&str> = spans.iter().map(|s| &r.text[s.clone()]).collect();
        assert_eq!(contents, ["Be brief.", "Hi", "Hello!", "Bye"]);
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content.strip().upper() }}|{% endfor %}";
        let t = new(src, "", "");
        assert_eq!(render(&t, &[Message::new(Role::User, "  hi ")], false).unwrap(), "HI|");
        match render(&t, &[Message::new(Role::System, "x")], false) {
            Err(RenderError::Failed(Error::InvalidParameter { name: "messages", reason })) => {
                assert!(reason.contains("System role"), "{reason}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(s) => panic!("{s}"),
        }
    }

    /// Llama 3 trims contents: the marked render trims alike, so the spans
    /// are found (and are the trimmed contents).
    #[test]
    fn trimming_templates_keep_their_spans() {
        let src = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{{ m.content.strip('x ') }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}{% endfor %}";
        let t = new(src, "", "");
        let r = t.render(&[Message::new(Role::User, "  x hi x \n")], false).unwrap();
        assert_eq!(r.text, "<|start_header_id|>user<|end_header_id|>\n\nx hi x<|eot_id|>hi x \n|x hi x \n|  x hi x");
        let spans = r.spans.unwrap();
        let contents: Vec<&str> = spans.iter().map(|s| &r.text[s.clone()]).collect();
        assert_eq!(contents, ["x hi x", "hi x \n", "x hi x \n", "  x hi x"]);
        // A template that changes contents (here: their length) gives no spans.
        let counting = new("{% for m in messages %}{{ m.content | length }}{{ m.content }}{% endfor %}", "", "");
        let r = counting.render(&[Message::new(Role::User, "abc")], false).unwrap();
        assert_eq!((r.text.as_str(), r.spans), ("3abc", None));
    }

    /// Gemma's shape: a system message folded into the first user turn,
    /// `raise_exception` on roles out of order, trimmed contents.
    #[test]
    fn gemma_style_template_renders_and_raises() {
        let src = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] | trim + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
        let t = new(src, "<bos>", "<eos>");
        let mut m = vec![Message::new(Role::System, " Be brief. ")];
        m.extend(msgs());
        let r = t.render(&m, true).unwrap();
        assert_eq!(
            r.text,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        let spans = r.spans.unwrap();
        let contents: Vec<&str> = spans.iter().map(|s| &r.text[s.clone()]).collect();
        assert_eq!(contents, ["Be brief.", "Hi", "Hello!", "Bye"]);
        let out_of_order = [Message::new(Role::Assistant, "x")];
        match t.render(&out_of_order, true) {
            Err(RenderError::Failed(Error::InvalidParameter { reason, .. })) => assert!(reason.contains("alternate")),
            other => panic!("{:?}", other.map(|r| r.text)),
        }
    }
}

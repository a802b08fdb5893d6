//! Tool calling. An app declares tools (a name, a description, a JSON schema
//! of the arguments) on a chat session; the library never runs one. The
//! model sees them through its chat template (`tools` in the Jinja context,
//! as Hugging Face templates expect, and Phi-4-mini's `tools` on the system
//! message) or, when the template has no place for them, in a description
//! we add to the system message. Its calls are constrained by a Lark grammar
//! over the tools' schemas (llguidance, as for `constraint.rs`): free text,
//! then optionally calls, each naming a declared tool with arguments valid
//! against its schema. They come back parsed as [`ToolCall`]s; the app
//! answers with `Role::Tool` messages and the chat goes on from the cache.
//!
//! Two call formats ("dialects"), chosen by the vocabulary: Phi-4-mini's
//! `<|tool_call|>[{"name": …, "arguments": {…}}, …]<|/tool_call|>` when it
//! has those special tokens, else the Hermes/Qwen text form
//! `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, one per call.

use serde_json::{json, value::RawValue, Value};

use super::chat::spans;
use super::chat::ToolCall;
use super::error::{Error, Result};
use super::Text;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// 1–64 of `A-Z a-z 0-9 _ -` (the rule OpenAI's API and most chat
    /// templates assume).
    pub name: String,
    pub description: String,
    /// A JSON schema of the arguments (an object); `{}` for none.
    pub parameters: String,
}

/// Whether this turn may, must or must not call a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model answers in text or calls tools, as it decides.
    #[default]
    Auto,
    /// The answer is one or more tool calls.
    Required,
    /// A text answer: the tools stay in the prompt, calls are not parsed.
    TextOnly,
}

const MAX_TOOLS: usize = 128;
/// Calls in one answer: small models, sampled, can repeat calls until their
/// budget runs out.
const MAX_CALLS: usize = 8;
const MAX_NAME: usize = 64;
/// All the tools' text together; far beyond any real set, and it bounds the
/// prompt and the grammar.
const MAX_TOOLS_BYTES: usize = 256 * 1024;
/// The JSON separators every call is written with: one line, spaced as
/// models write it (also `constraint.rs`'s), so the history renders a call
/// back exactly as it was generated.
const GUIDANCE: &str = r#"{"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `<|tool_call|>` JSON array `<|/tool_call|>`, special tokens.
    Phi4,
    /// `<tool_call>\n` JSON object `\n</tool_call>` per call, text.
    Tagged,
}

/// What starts the calls in a generated answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Token(u32),
    /// Text the free part of the answer cannot hold.
    Text(&'static str),
}

impl Dialect {
    fn of(text: &Text) -> (Self, Trigger) {
        let added = text.tokenizer().get_added_vocabulary().get_vocab();
        match (added.get(PHI4_OPEN), added.get(PHI4_CLOSE)) {
            (Some(&open), Some(_)) => (Dialect::Phi4, Trigger::Token(open)),
            _ => (Dialect::Tagged, Trigger::Text(TAG_TEXT)),
        }
    }
}

const PHI4_OPEN: &str = "<|tool_call|>";
const PHI4_CLOSE: &str = "<|/tool_call|>";
const TAG_TEXT: &str = "<tool_call>";
const TAG_OPEN: &str = "<tool_call>\n";
const TAG_CLOSE: &str = "\n</tool_call>";

/// A session's validated tools and how its model writes calls.
#[derive(Debug)]
pub struct Toolset {
    tools: Vec<Tool>,
    /// Each tool's parameter schema, parsed (`type: object` made explicit).
    parameters: Vec<Value>,
    dialect: Dialect,
    trigger: Trigger,
}

impl Toolset {
    /// Checks `tools` for this model: valid, unique names, schemas that are
    /// JSON objects and compile, no control token of the vocabulary in any
    /// text. A problem is `InvalidParameter { name: "tools" }` saying which
    /// tool. `None` for no tools.
    pub fn new(text: &Text, tools: Vec<Tool>) -> Result<Option<Self>> {
        if tools.is_empty() {
            return Ok(None);
        }
        if tools.len() > MAX_TOOLS {
            return Err(bad(format!("at most {MAX_TOOLS} tools, got {}", tools.len())));
        }
        let bytes: usize = tools.iter().map(|t| t.name.len() + t.description.len() + t.parameters.len()).sum();
        if bytes > MAX_TOOLS_BYTES {
            return Err(bad(format!("the tools' names, descriptions and schemas are over {MAX_TOOLS_BYTES} bytes")));
        }
        let mut parameters = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if tool.name.is_empty() || tool.name.len() > MAX_NAME || !tool.name.chars().all(valid_char) {
                return Err(bad(format!(
                    "tool {i}'s name {:?} must be 1 to {MAX_NAME} of A-Z, a-z, 0-9, _ and -",
                    tool.name
                )));
            }
            if tools[..i].iter().any(|t| t.name == tool.name) {
                return Err(bad(format!("two tools are named {:?}", tool.name)));
            }
            for s in [&tool.description, &tool.parameters] {
                if let Some(token) = text.chat.control_token_in(s) {
                    return Err(bad(format!("tool {:?} contains the control token {token}", tool.name)));
                }
            }
            parameters.push(parameter_schema(tool)?);
        }
        let (dialect, trigger) = Dialect::of(text);
        let set = Self { tools, parameters, dialect, trigger };
        // Every schema compiles now, not at the first call.
        text.grammars.compile_lark(text, &set.grammar(ToolChoice::Required), "tools")?;
        Ok(Some(set))
    }

    pub(crate) fn trigger(&self) -> Trigger {
        self.trigger
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The grammar (Lark) of a turn's answer.
    pub(crate) fn grammar(&self, choice: ToolChoice) -> String {
        let call = |i: usize| {
            json!({
                "type": "object",
                "properties": { "name": { "const": self.tools[i].name }, "arguments": self.parameters[i] },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        };
        let any_call = json!({ "anyOf": (0..self.tools.len()).map(call).collect::<Vec<_>>() });
        let guidance: Value = serde_json::from_str(GUIDANCE).expect("constant JSON");
        let with_guidance = |mut schema: Value| {
            schema["x-guidance"] = guidance.clone();
            schema
        };
        match self.dialect {
            Dialect::Phi4 => {
                let list =
                    with_guidance(json!({ "type": "array", "items": any_call, "minItems": 1, "maxItems": MAX_CALLS }));
                let calls = format!("calls: {PHI4_OPEN} %json {list} {PHI4_CLOSE}");
                // No text can produce the special token: free text ends
                // where the model writes it.
                match choice {
                    ToolChoice::Required => format!("start: calls\n{calls}\n"),
                    ToolChoice::Auto | ToolChoice::TextOnly => {
                        format!("start: TEXT? calls?\n{calls}\nTEXT: /(?s:.+)/\n")
                    }
                }
            }
            Dialect::Tagged => {
                let body = format!("body: %json {}\n", with_guidance(any_call));
                let close = lark_string(TAG_CLOSE);
                let more = format!("more: (\"\\n\" {} body {close}){{0,{}}}\n", lark_string(TAG_OPEN), MAX_CALLS - 1);
                match choice {
                    ToolChoice::Required => format!("start: {} body {close} more\n{body}{more}", lark_string(TAG_OPEN)),
                    // Text, or text up to the first `<tool_call>` (lazy: it
                    // ends there) and calls. Plain text cannot hold the tag,
                    // so once it is written a call follows.
                    ToolChoice::Auto | ToolChoice::TextOnly => format!(
                        "start: TEXT | head \"\\n\" body {close} more\nhead[lazy]: ANY {tag}\n{body}{more}\
                         ANY: /(?s:.*)/\nTEXT: /(?s:.+)/ & ~/(?s:.*){TAG_TEXT}(?s:.*)/\n",
                        tag = lark_string(TAG_TEXT)
                    ),
                }
            }
        }
    }

    /// Where the calls start in `raw` (generated text, special tokens kept)
    /// and the complete calls (an answer cut short keeps those before the
    /// cut), with whether all of `raw` was complete calls.
    pub(crate) fn parse(&self, raw: &str) -> Option<(usize, Vec<ToolCall>, bool)> {
        let (open, close) = match self.dialect {
            Dialect::Phi4 => (PHI4_OPEN, PHI4_CLOSE),
            Dialect::Tagged => (TAG_OPEN, TAG_CLOSE),
        };
        let start = raw.find(open)?;
        let mut rest = &raw[start..];
        let mut calls = Vec::new();
        loop {
            let Some((parsed, after)) = self.parse_one(rest, open, close) else { return Some((start, calls, false)) };
            calls.extend(parsed);
            rest = match after.strip_prefix('\n') {
                Some(more) if self.dialect == Dialect::Tagged && !more.is_empty() => more,
                _ => return Some((start, calls, after.trim().is_empty())),
            };
        }
    }

    /// The calls of one block at the start of `rest`, and what follows it.
    fn parse_one<'a>(&self, rest: &'a str, open: &str, close: &str) -> Option<(Vec<ToolCall>, &'a str)> {
        let rest = rest.strip_prefix(open)?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Box<RawValue>>();
        let value = values.next()?.ok()?;
        let after = rest[values.byte_offset()..].strip_prefix(close)?;
        Some((parse_calls(value.get(), self.dialect == Dialect::Phi4)?, after))
    }

    /// `calls` as the model writes them; `mark` wraps the model-written
    /// JSON so that the prompt encodes it as text (`chat/spans.rs`).
    pub(crate) fn markup(&self, calls: &[ToolCall], mark: bool) -> String {
        let one = |c: &ToolCall| {
            let json = format!("{{\"name\": {}, \"arguments\": {}}}", json!(c.name), c.arguments);
            if mark {
                spans::mark(&json)
            } else {
                json
            }
        };
        match self.dialect {
            Dialect::Phi4 => {
                format!("{PHI4_OPEN}[{}]{PHI4_CLOSE}", calls.iter().map(one).collect::<Vec<_>>().join(", "))
            }
            Dialect::Tagged => {
                calls.iter().map(|c| format!("{TAG_OPEN}{}{TAG_CLOSE}", one(c))).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// Hugging Face's `tools`: `[{"type": "function", "function": {…}}]`.
    pub(crate) fn context(&self) -> Value {
        Value::Array(self.functions().into_iter().map(|f| json!({ "type": "function", "function": f })).collect())
    }

    /// Phi-4-mini's system-message `tools`: a JSON array of the functions.
    pub(crate) fn system_attribute(&self) -> String {
        Value::Array(self.functions()).to_string()
    }

    fn functions(&self) -> Vec<Value> {
        self.tools
            .iter()
            .zip(&self.parameters)
            .map(|(t, p)| json!({ "name": t.name, "description": t.description, "parameters": p }))
            .collect()
    }

    /// For a template with no place for tools: what we add to the system
    /// message (the format a call must have, then one tool per line).
    pub(crate) fn instructions(&self) -> String {
        let example = ToolCall { name: self.tools[0].name.clone(), arguments: "{…}".into() };
        let mut out = format!(
            "You can call tools. To call one, answer with only this, the arguments as JSON valid against the \
             tool's parameter schema (for several calls, one after another):\n{}\nEach result comes back as \
             <tool_response>…</tool_response>. The tools:",
            self.markup(std::slice::from_ref(&example), false)
        );
        for f in self.functions() {
            out.push('\n');
            out.push_str(&f.to_string());
        }
        out
    }

    /// A tool result as a user message, for a template with no tool role.
    pub(crate) fn wrap_result(content: &str) -> String {
        format!("<tool_response>\n{content}\n</tool_response>")
    }

    /// The arguments of a call of tool `name`, for templates that render
    /// calls themselves (Hugging Face passes them as an object).
    pub(crate) fn call_context(calls: &[ToolCall]) -> Value {
        Value::Array(
            calls
                .iter()
                .map(|c| {
                    let arguments: Value =
                        serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments.clone()));
                    json!({ "type": "function", "function": { "name": c.name, "arguments": arguments } })
                })
                .collect(),
        )
    }
}

fn bad(why: String) -> Error {
    Error::param("tools", why)
}

/// The tool's parameter schema, parsed; an object schema whatever it says.
fn parameter_schema(tool: &Tool) -> Result<Value> {
    let text = if tool.parameters.trim().is_empty() { "{}" } else { tool.parameters.as_str() };
    let mut schema: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("tool {:?}'s parameters are not valid JSON: {e}", tool.name)))?;
    let Some(object) = schema.as_object_mut() else {
        return Err(bad(format!("tool {:?}'s parameters must be a JSON schema object", tool.name)));
    };
    match object.get("type") {
        None => {
            object.insert("type".into(), json!("object"));
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => {
            return Err(bad(format!(
                "tool {:?}'s arguments must be an object, its schema says type {other}",
                tool.name
            )))
        }
    }
    Ok(schema)
}

/// `{"name": …, "arguments": {…}}`, or a list of them (`list`); the
/// arguments' text kept as written.
fn parse_calls(json: &str, list: bool) -> Option<Vec<ToolCall>> {
    type Raw = std::collections::HashMap<String, Box<RawValue>>;
    let calls: Vec<Raw> = if list { serde_json::from_str(json).ok()? } else { vec![serde_json::from_str(json).ok()?] };
    calls
        .into_iter()
        .map(|c| {
            let name: String = serde_json::from_str(c.get("name")?.get()).ok()?;
            Some(ToolCall { name, arguments: c.get("arguments")?.get().to_string() })
        })
        .collect()
}

/// `s` as a Lark string literal.
fn lark_string(s: &str) -> String {
    // JSON's escapes are a subset Lark reads.
    json!(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::chat::{Message, Role};
    use super::*;

    fn text(fixture: &str) -> Text {
        Text::load(&crate::engine::test_fixture(fixture), None).unwrap()
    }

    fn weather() -> Vec<Tool> {
        let parameters = r#"{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}"#;
        vec![Tool { name: "get_weather".into(), description: "Weather now.".into(), parameters: parameters.into() }]
    }

    fn round_trip() -> Vec<Message> {
        let mut call = Message::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall { name: "get_weather".into(), arguments: r#"{"city": "Paris"}"#.into() }];
        vec![Message::new(Role::User, "Weather in Paris?"), call, Message::new(Role::Tool, r#"{"t": 21}"#)]
    }

    /// Phi-4-mini's own template shows the tools on the system message; the
    /// call is written back with its special tokens, the result in its
    /// `<|tool|>` turn.
    #[test]
    fn phi4_mini_renders_tools_its_way() {
        let text = text("phi4-vocab.gguf");
        let tools = Toolset::new(&text, weather()).unwrap().unwrap();
        assert_eq!((tools.dialect, tools.trigger), (Dialect::Phi4, Trigger::Token(200_025)));
        let prompt = text.format_chat_with(&round_trip(), Some(&tools)).unwrap();
        assert_eq!(
            prompt,
            format!(
                "<|system|><|tool|>{}<|/tool|><|end|><|user|>Weather in Paris?<|end|><|assistant|><|tool_call|>\
                 [{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}]<|/tool_call|><|end|>\
                 <|tool|>{{\"t\": 21}}<|end|><|assistant|>",
                tools.system_attribute()
            )
        );
        let ids = text.encode_chat_with(&round_trip(), Some(&tools)).unwrap();
        for special in [200_023, 200_024, 200_025, 200_026] {
            assert_eq!(ids.iter().filter(|&&i| i == special).count(), 1 + usize::from(special == 200_023), "{special}");
        }
    }

    /// A template with no place for tools (SmolLM2's ChatML): they are
    /// described in the system message, calls written into the assistant's
    /// text, results wrapped in one user turn.
    #[test]
    fn templates_without_tools_get_them_described() {
        let text = text("SmolLM2-135M-Instruct.Q4_1.gguf");
        let tools = Toolset::new(&text, weather()).unwrap().unwrap();
        assert_eq!(tools.dialect, Dialect::Tagged);
        let mut messages = round_trip();
        messages[1].tool_calls.push(ToolCall { name: "get_weather".into(), arguments: r#"{"city": "Oslo"}"#.into() });
        messages.push(Message::new(Role::Tool, "snow"));
        let prompt = text.format_chat_with(&messages, Some(&tools)).unwrap();
        let expected = format!(
            "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}\n</tool_call>\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Oslo\"}}}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n{{\"t\": 21}}\n</tool_response>\n<tool_response>\nsnow\n</tool_response>\
             <|im_end|>\n<|im_start|>assistant\n",
            tools.instructions()
        );
        assert_eq!(prompt, expected);
        assert!(tools.instructions().contains(r#"{"name":"get_weather","description":"Weather now.""#));
    }

    #[test]
    fn markup_parses_back() {
        for fixture in ["phi4-vocab.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"] {
            let text = text(fixture);
            let tools = Toolset::new(&text, weather()).unwrap().unwrap();
            let calls = vec![
                ToolCall { name: "get_weather".into(), arguments: r#"{"city": "Zürich \"Nord\""}"#.into() },
                ToolCall { name: "get_weather".into(), arguments: r#"{"city": "東京"}"#.into() },
            ];
            let raw = format!("Let me check. {}", tools.markup(&calls, false));
            assert_eq!(tools.parse(&raw), Some((14, calls.clone(), true)), "{fixture}");
            // Cut short: the complete calls before the cut, not whole.
            let cut = &raw[..raw.len() - 12];
            let (_, kept, whole) = tools.parse(cut).unwrap();
            assert!(!whole && kept.len() < 2, "{fixture}: {kept:?}");
            assert_eq!(tools.parse("no calls here"), None);
        }
    }

    /// Auto: free text, and once `<tool_call>` is written only a call of a
    /// declared tool may follow.
    #[test]
    fn auto_text_then_a_call_is_forced() {
        let text = text("SmolLM2-135M-Instruct.Q4_1.gguf");
        let tools = Toolset::new(&text, weather()).unwrap().unwrap();
        let mut c = text.grammars.compile_lark(&text, &tools.grammar(ToolChoice::Auto), "tools").unwrap();
        let vocab = text.vocab.end();
        let allowed = |c: &mut crate::engine::constraint::Constraint| {
            let mut logits = vec![0.0f32; vocab];
            c.mask(&mut logits, &[2]).unwrap();
            logits.iter().filter(|l| l.is_finite()).count()
        };
        assert!(allowed(&mut c) > vocab / 2, "free text allows nearly everything");
        let mut plain = text.grammars.compile_lark(&text, &tools.grammar(ToolChoice::Auto), "tools").unwrap();
        for &id in text.tokenizer().encode("Hello there.", false).unwrap().get_ids() {
            plain.accept(id).unwrap();
        }
        let mut logits = vec![0.0f32; vocab];
        plain.mask(&mut logits, &[2]).unwrap();
        assert!(logits[2].is_finite(), "a text answer may end");
        for &id in text.tokenizer().encode("Sure. <tool_call>\n{\"name\": \"", false).unwrap().get_ids() {
            c.accept(id).unwrap();
        }
        let mut logits = vec![0.0f32; vocab];
        c.mask(&mut logits, &[2]).unwrap();
        let ok: Vec<String> =
            (0..vocab).filter(|&i| logits[i].is_finite()).map(|i| text.decode(&[i as u32]).unwrap()).collect();
        assert!(!ok.is_empty() && ok.iter().all(|t| "get_weather\"".starts_with(t.as_str())), "{ok:?}");
    }

    /// Phi-4-mini: after free text, its `<|tool_call|>` token starts a list
    /// of calls.
    #[test]
    fn phi4_auto_call_starts_at_its_token() {
        let text = text("phi4-vocab.gguf");
        let tools = Toolset::new(&text, weather()).unwrap().unwrap();
        let mut c = text.grammars.compile_lark(&text, &tools.grammar(ToolChoice::Auto), "tools").unwrap();
        let ids: Vec<u32> = text.tokenizer().encode("Sure.", false).unwrap().get_ids().to_vec();
        for id in ids.into_iter().chain([200_025]) {
            c.accept(id).unwrap();
        }
        let vocab = text.vocab.end();
        let mut logits = vec![0.0f32; vocab];
        c.mask(&mut logits, &[200_020]).unwrap();
        let ok: Vec<String> =
            (0..vocab).filter(|&i| logits[i].is_finite()).map(|i| text.decode(&[i as u32]).unwrap()).collect();
        assert!(!ok.is_empty() && ok.iter().all(|t| t.starts_with('[')), "{ok:?}");
        assert!(!logits[200_020].is_finite(), "no end inside a call");
    }
}

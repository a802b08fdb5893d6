//! Hugging Face chat templates (Jinja, from `tokenizer.chat_template` in the
//! GGUF) rendered with minijinja, configured as transformers configures Jinja2:
//! `trim_blocks`, `lstrip_blocks`, loop controls, Python string methods,
//! `raise_exception`, `tojson`.

use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, ErrorKind};

use super::chat::{Message, Role};
use super::error::{Error, Result};

/// Instructions a template may run per render; far above any real template,
/// low enough that a hostile one cannot hang the app.
const FUEL: u64 = 2_000_000;
/// Templates larger than this are not chat templates.
const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// Marks errors a template raised on purpose via `raise_exception`.
#[derive(Debug)]
struct Raised;

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the chat template")
    }
}

impl std::error::Error for Raised {}

pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos: String, eos: String) -> Result<Self> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::invalid_model("the chat template is implausibly large"));
        }
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::invalid_model(format!("chat template: {e}")))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg).with_source(Raised))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::invalid_model(format!("the chat template does not compile: {e}")))?;
        Ok(Self { env, bos, eos })
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<_> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                context! { role => role, content => m.content.as_str() }
            })
            .collect();
        let template =
            self.env.get_template("chat").map_err(|e| Error::invalid_model(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| {
                let raised =
                    std::iter::successors(std::error::Error::source(&e), |s| s.source()).any(|s| s.is::<Raised>());
                if raised {
                    // The template rejected these messages (e.g. a role it does not support).
                    Error::param("messages", e.detail().unwrap_or("rejected by the chat template").to_string())
                } else {
                    Error::Inference(format!("the chat template failed: {e}"))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    // microsoft/Phi-3-mini-4k-instruct's tokenizer_config.json template.
    const PHI3: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

    fn msgs() -> Vec<Message> {
        vec![Message::new(Role::User, "Hi"), Message::new(Role::Assistant, "Hello!"), Message::new(Role::User, "Bye")]
    }

    #[test]
    fn chatml_with_default_system_prompt() {
        let t = ChatTemplate::new(CHATML, String::new(), "<|im_end|>".into()).unwrap();
        assert_eq!(
            t.render(&msgs(), true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn phi3_template_matches_the_builtin_format() {
        let t = ChatTemplate::new(PHI3, "<s>".into(), "<|endoftext|>".into()).unwrap();
        let mut m = vec![Message::new(Role::System, "Be brief.")];
        m.extend(msgs());
        assert_eq!(t.render(&m, true).unwrap(), super::super::chat::phi3_prompt(&m));
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content.strip().upper() }}|{% endfor %}";
        let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[Message::new(Role::User, "  hi ")], false).unwrap(), "HI|");
        match t.render(&[Message::new(Role::System, "x")], false) {
            Err(Error::InvalidParameter { name: "messages", reason }) => {
                assert!(reason.contains("System role"), "{reason}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(s) => panic!("{s}"),
        }
    }

    #[test]
    fn hostile_templates_are_typed_errors() {
        assert!(matches!(ChatTemplate::new("{% for %}", String::new(), String::new()), Err(Error::InvalidModel(_))));
        let forever = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert!(matches!(forever.render(&[], true), Err(Error::Inference(_))));
    }
}

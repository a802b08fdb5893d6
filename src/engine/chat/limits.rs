//! Bounds on a chat template checked before minijinja parses it, the thread
//! templates run on, and the capped output they render into.
//!
//! minijinja's parser guards its own recursion (150 levels of primary
//! expressions, `if` expressions and statements) and its VM limits macro and
//! include recursion (500), but chains of binary operators, filters,
//! attribute lookups and `elif`s become nested syntax trees that its code
//! generator and `Drop` walk recursively: a 4 KB chain of 2 000 `+` overflowed
//! an 8 MiB stack. The scan below bounds every such chain by bounding the
//! tokens of one tag and the nesting of blocks. With those bounds the deepest
//! admitted templates (one per kind of nesting) compile and render in 64–96
//! KiB of stack (release, x86-64; measured with `PHI_MOBILE_TEMPLATE_STACK`
//! in `deepest_allowed_templates_fit_a_sixteenth_of_the_stack`, which runs
//! them on [`STACK_BYTES`] / 16 = 512 KiB): the 8 MiB thread has a margin
//! of over 80×, enough for debug builds and other targets' frame sizes.

use minijinja::machinery::{tokenize, Token};
use minijinja::syntax::SyntaxConfig;

use super::super::error::{panic_message, Error, Result};

/// Real chat templates are 1–12 KB (Llama 3.x with tools, Qwen 3, Gemma 3).
pub const MAX_TEMPLATE_BYTES: usize = 128 * 1024;
/// Tokens inside one `{{ }}` or `{% %}` tag. The longest real ones have ~60.
pub const MAX_TOKENS_PER_TAG: usize = 400;
/// Nested blocks (`if`/`for`/`macro`/…, each `elif` counting one more). Real
/// templates nest up to ~6.
pub const MAX_BLOCK_DEPTH: usize = 40;
/// Nested parentheses/brackets/braces in one tag.
pub const MAX_BRACKET_DEPTH: usize = 24;
/// `not not …` / `- - …` prefix runs.
pub const MAX_UNARY_RUN: usize = 8;
/// `*` repeats strings and (lazily) lists: allowed only with a small number
/// literal as one operand, outside loops and macros, at most this often.
pub const MAX_MULTIPLICATIONS: usize = 2;
pub const MAX_MULTIPLIER: f64 = 16.0;
/// The stack of the thread templates compile and render on (reserved, not
/// committed memory): over 80× what the deepest admitted template needs.
pub const STACK_BYTES: usize = 8 << 20;

/// Refuses templates whose size or nesting could exhaust the stack or whose
/// `*` could build huge values. Lexer errors are compile errors.
pub fn scan(source: &str) -> std::result::Result<(), String> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(format!("it is {} bytes, more than {MAX_TEMPLATE_BYTES}", source.len()));
    }
    let mut blocks: Vec<(String, usize)> = Vec::new();
    let mut tag: Vec<Token<'_>> = Vec::new();
    let mut in_tag = false;
    let mut is_block = false;
    let mut multiplications = 0;
    for token in tokenize(source, false, SyntaxConfig::default()) {
        let (token, _) = token.map_err(|e| format!("it does not compile: {e}"))?;
        match token {
            Token::VariableStart | Token::BlockStart => {
                in_tag = true;
                is_block = matches!(token, Token::BlockStart);
                tag.clear();
            }
            Token::VariableEnd | Token::BlockEnd => {
                in_tag = false;
                let in_loop = blocks.iter().any(|(k, _)| matches!(k.as_str(), "for" | "macro" | "call"));
                multiplications += check_tag(&tag, in_loop)?;
                if multiplications > MAX_MULTIPLICATIONS {
                    return Err(format!("it uses `*` more than {MAX_MULTIPLICATIONS} times"));
                }
                if is_block {
                    track_blocks(&tag, &mut blocks)?;
                }
            }
            _ if in_tag => {
                if tag.len() >= MAX_TOKENS_PER_TAG {
                    return Err(format!("a tag has more than {MAX_TOKENS_PER_TAG} tokens"));
                }
                tag.push(token);
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_tag(tag: &[Token<'_>], in_loop: bool) -> std::result::Result<usize, String> {
    let (mut depth, mut unary, mut muls) = (0usize, 0usize, 0usize);
    for (i, t) in tag.iter().enumerate() {
        match t {
            Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => {
                depth += 1;
                if depth > MAX_BRACKET_DEPTH {
                    return Err(format!("brackets nest deeper than {MAX_BRACKET_DEPTH}"));
                }
            }
            Token::ParenClose | Token::BracketClose | Token::BraceClose => depth = depth.saturating_sub(1),
            _ => {}
        }
        let is_unary =
            matches!(t, Token::Ident("not") | Token::Minus | Token::Plus) && (i == 0 || !is_operand_end(&tag[i - 1]));
        unary = if is_unary { unary + 1 } else { 0 };
        if unary > MAX_UNARY_RUN {
            return Err(format!("more than {MAX_UNARY_RUN} unary operators in a row"));
        }
        if matches!(t, Token::Mul) {
            if in_loop {
                return Err("it uses `*` inside a loop or macro".into());
            }
            let literal_after = small_number(tag.get(i + 1)) && !binds_tighter(tag.get(i + 2));
            let literal_before = i >= 1 && small_number(tag.get(i - 1)) && (i < 2 || !binds_tighter(tag.get(i - 2)));
            if !literal_after && !literal_before {
                return Err(format!("`*` needs a number literal up to {MAX_MULTIPLIER} as one operand"));
            }
            muls += 1;
        }
    }
    Ok(muls)
}

fn is_operand_end(t: &Token<'_>) -> bool {
    matches!(
        t,
        Token::Ident(_)
            | Token::Str(_)
            | Token::String(_)
            | Token::Int(_)
            | Token::Int128(_)
            | Token::Float(_)
            | Token::ParenClose
            | Token::BracketClose
            | Token::BraceClose
    ) && !matches!(t, Token::Ident("not" | "and" | "or" | "in" | "is" | "if" | "else"))
}

fn small_number(t: Option<&Token<'_>>) -> bool {
    match t {
        Some(Token::Int(n)) => (*n as f64) <= MAX_MULTIPLIER,
        Some(Token::Float(f)) => f.abs() <= MAX_MULTIPLIER,
        _ => false,
    }
}

/// Tokens that would make the literal next to `*` part of a larger operand.
fn binds_tighter(t: Option<&Token<'_>>) -> bool {
    matches!(t, Some(Token::Pow | Token::Dot | Token::Pipe | Token::ParenOpen | Token::BracketOpen))
}

fn track_blocks(tag: &[Token<'_>], blocks: &mut Vec<(String, usize)>) -> std::result::Result<(), String> {
    let Some(Token::Ident(word)) = tag.first() else { return Ok(()) };
    let opens = match *word {
        "if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape" => true,
        // `{% set x %}…{% endset %}` is a block, `{% set x = … %}` is not.
        "set" => !tag.iter().any(|t| matches!(t, Token::Assign)),
        _ => false,
    };
    if opens {
        blocks.push((word.to_string(), 1));
    } else if *word == "elif" {
        // The parser nests each `elif` inside the previous branch.
        if let Some(top) = blocks.last_mut() {
            top.1 += 1;
        }
    } else if word.starts_with("end") {
        blocks.pop();
    }
    let depth: usize = blocks.iter().map(|(_, w)| w).sum();
    if depth > MAX_BLOCK_DEPTH {
        return Err(format!("blocks nest deeper than {MAX_BLOCK_DEPTH}"));
    }
    Ok(())
}

/// Runs `f` on a thread of our own with [`STACK_BYTES`] of stack: the
/// caller's thread may be an iOS secondary thread with 512 KiB.
pub fn on_template_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    #[cfg(test)]
    let stack = match tests::STACK_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => STACK_BYTES,
        n => n,
    };
    #[cfg(not(test))]
    let stack = STACK_BYTES;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("phi-mobile-template".into())
            .stack_size(stack)
            .spawn_scoped(s, f)
            .map_err(|e| Error::Inference(format!("cannot start the chat template's thread: {e}")))?;
        handle.join().map_err(|p| Error::Inference(format!("the chat template failed: {}", panic_message(&*p))))?
    })
}

/// Collects rendered output and fails once it passes `cap` bytes.
pub struct CappedWriter {
    pub out: Vec<u8>,
    cap: usize,
    pub overflowed: bool,
}

impl CappedWriter {
    pub fn new(cap: usize) -> Self {
        Self { out: Vec::new(), cap, overflowed: false }
    }
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("the rendered prompt is longer than the context can hold"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::template::ChatTemplate;
    use super::super::{Message, Role};
    use super::*;

    /// The template thread's stack in this test binary (0 = [`STACK_BYTES`]).
    pub static STACK_OVERRIDE: AtomicUsize = AtomicUsize::new(0);

    fn chain(open: &str, unit: &str, close: &str, n: usize) -> String {
        format!("{open}{}{close}", unit.repeat(n))
    }

    /// The deepest templates the scan admits, one per kind of nesting.
    fn deepest() -> Vec<String> {
        let ops = (MAX_TOKENS_PER_TAG - 2) / 2;
        vec![
            chain("{{ 'a'", " + 'a'", " }}", ops),
            chain("{{ 'a'", " ~ 'a'", " }}", ops),
            chain("{{ 'a'", "|e", " }}", ops),
            chain("{{ 'a'", "[0]", " }}", (MAX_TOKENS_PER_TAG - 2) / 3),
            chain("{{ messages", ".a", " if false }}", ops - 2),
            chain("{{ ", "not ", "true }}", MAX_UNARY_RUN) + &chain("{{ 1", " and 1", " }}", ops),
            format!("{{{{ {}1{} }}}}", "(".repeat(MAX_BRACKET_DEPTH), ")".repeat(MAX_BRACKET_DEPTH)),
            format!("{}x{}", "{% if true %}".repeat(MAX_BLOCK_DEPTH), "{% endif %}".repeat(MAX_BLOCK_DEPTH)),
            format!("{}x{}", "{% for i in [1] %}".repeat(MAX_BLOCK_DEPTH), "{% endfor %}".repeat(MAX_BLOCK_DEPTH)),
            chain("{% if false %}", "{% elif false %}", "{% else %}x{% endif %}", MAX_BLOCK_DEPTH - 1),
        ]
    }

    /// The deepest admitted templates run on a sixteenth of [`STACK_BYTES`].
    /// `PHI_MOBILE_TEMPLATE_STACK=<bytes>` measures: on x86-64 in release
    /// they pass with 96 KiB and overflow with 64 KiB.
    #[test]
    fn deepest_allowed_templates_fit_a_sixteenth_of_the_stack() {
        let stack = std::env::var("PHI_MOBILE_TEMPLATE_STACK").ok().and_then(|s| s.parse().ok());
        STACK_OVERRIDE.store(stack.unwrap_or(STACK_BYTES / 16), Ordering::Relaxed);
        for t in deepest() {
            scan(&t).unwrap_or_else(|e| panic!("{}: {e}", &t[..30]));
            let tmpl = ChatTemplate::new(&t, String::new(), String::new(), 1 << 20)
                .unwrap_or_else(|e| panic!("{}: {e}", &t[..30]));
            tmpl.render(&[Message::new(Role::User, "Hi")], true).map_err(|e| format!("{e:?}")).unwrap();
        }
        STACK_OVERRIDE.store(0, Ordering::Relaxed);
    }

    #[test]
    fn one_past_each_limit_is_refused() {
        let ops = MAX_TOKENS_PER_TAG / 2;
        for t in [
            chain("{{ 'a'", " + 'a'", " }}", ops),
            chain("{{ ", "not ", "true }}", MAX_UNARY_RUN + 1),
            format!("{{{{ {}1{} }}}}", "(".repeat(MAX_BRACKET_DEPTH + 1), ")".repeat(MAX_BRACKET_DEPTH + 1)),
            format!("{}x{}", "{% if true %}".repeat(MAX_BLOCK_DEPTH + 1), "{% endif %}".repeat(MAX_BLOCK_DEPTH + 1)),
            chain("{% if false %}", "{% elif false %}", "{% endif %}", MAX_BLOCK_DEPTH),
            "{{ 'a' * 17 }}".into(),
            "{{ 'a' * 2 ** 20 }}".into(),
            "{{ 'a' * n }}".into(),
            "{% for m in messages %}{{ m.content * 2 }}{% endfor %}".into(),
            "{{ 'a' * 2 }}{{ 'a' * 2 }}{{ 'a' * 2 }}".into(),
            " ".repeat(MAX_TEMPLATE_BYTES + 1),
        ] {
            assert!(scan(&t).is_err(), "{}", &t[..t.len().min(40)]);
        }
        // Real uses stay allowed.
        for t in ["{{ loop.index0 * 2 if loop is defined }}", "{{ '=' * 16 }}{{ 2 * x }}", "{{ - 1 }}{{ a - -1 }}"] {
            scan(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
}

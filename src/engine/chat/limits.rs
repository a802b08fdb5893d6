//! Bounds on a chat template checked before minijinja parses it, the thread
//! templates run on, and the capped output they render into.
//!
//! minijinja's parser guards its own recursion (150 levels of primary
//! expressions, `if` expressions and statements) and its VM limits macro and
//! include recursion (500), but chains of binary operators, filters,
//! attribute lookups and `elif`s become nested syntax trees that its code
//! generator and `Drop` walk recursively: a 4 KB chain of 2 000 `+` overflowed
//! an 8 MiB stack. The scan below bounds every such chain by bounding the
//! tokens of one tag and the nesting of blocks; with those bounds the deepest
//! template needs less than [`STACK_BYTES`] / 4 of stack (measured by
//! `deepest_allowed_templates_fit_a_quarter_of_the_stack` in tests/hostile.rs).

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
/// The stack of the thread templates compile and render on: 16× what the
/// deepest template the scan admits was measured to need (see module doc).
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
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("phi-mobile-template".into())
            .stack_size(STACK_BYTES)
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

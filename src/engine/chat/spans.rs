//! Keeping message contents from becoming control tokens (role injection: a
//! user typing `<|system|>` or `<|im_start|>system`).
//!
//! The template renders each content wrapped in Unicode noncharacters
//! ([`OPEN`] … [`CLOSE`], stripped from contents first); removing them gives
//! the prompt and the byte spans of the contents. The prompt is encoded as
//! today (special tokens parsed everywhere); only if a special token came
//! from inside a content span is it encoded again: special tokens are then
//! accepted only outside the spans, and the text between accepted ones is
//! encoded with special-token parsing off (llama.cpp's `parse_special =
//! false` for user text). A benign prompt's ids are therefore exactly the
//! old ones.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

use tokenizers::{Encoding, Tokenizer};

use super::super::error::{catch_panic, Error, Result};

pub const OPEN: char = '\u{FDD0}';
pub const CLOSE: char = '\u{FDD1}';

/// A content without our marker characters.
pub fn clean(content: &str) -> Cow<'_, str> {
    if content.contains([OPEN, CLOSE]) {
        Cow::Owned(content.chars().filter(|c| *c != OPEN && *c != CLOSE).collect())
    } else {
        Cow::Borrowed(content)
    }
}

pub fn mark(content: &str) -> String {
    format!("{OPEN}{}{CLOSE}", clean(content))
}

/// The text without markers and the byte ranges they enclosed; `None` when
/// they do not pair up (the template cut or reordered a content).
pub fn unmark(s: &str) -> Option<(String, Vec<Range<usize>>)> {
    let mut text = String::with_capacity(s.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in s.chars() {
        match c {
            OPEN if open.is_none() => open = Some(text.len()),
            CLOSE => spans.push(open.take()?..text.len()),
            OPEN => return None,
            _ => text.push(c),
        }
    }
    open.is_none().then_some((text, spans))
}

/// A rendered chat prompt and where the messages' contents are in it.
pub struct Rendered {
    pub text: String,
    /// `None` when the template transformed contents beyond trimming, so
    /// they cannot be located.
    pub spans: Option<Vec<Range<usize>>>,
}

/// Special (control) tokens of a tokenizer, with their whitespace rules.
pub struct Specials {
    by_id: HashMap<u32, (String, bool, bool)>,
    /// The same tokenizer with special-token parsing off, made on first need.
    as_text: OnceLock<Tokenizer>,
}

impl Specials {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let by_id = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, (t.content, t.lstrip, t.rstrip)))
            .collect();
        Self { by_id, as_text: OnceLock::new() }
    }

    /// The first special token's text found in `text`, if any.
    pub fn find_in<'a>(&'a self, text: &str) -> Option<&'a str> {
        self.by_id.values().map(|(s, ..)| s.as_str()).find(|s| !s.is_empty() && text.contains(s))
    }

    /// Encodes `text` with special tokens accepted only outside `spans`.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        spans: &[Range<usize>],
        add_special: bool,
    ) -> Result<Vec<u32>> {
        catch_panic(Error::Tokenizer, || {
            let full = tokenizer.encode(text, add_special)?;
            let inside = |(s, e): (usize, usize)| spans.iter().any(|r| s < r.end && r.start < e);
            // A match's offsets include the whitespace it strips (which may
            // lie in a content): only the token's own text counts.
            let core = |content: &str, (s, e): (usize, usize)| {
                let at = text.get(s..e).and_then(|m| m.find(content)).map_or(s, |i| s + i);
                (at, at + content.len())
            };
            let injected = full.get_ids().iter().zip(full.get_offsets()).any(|(id, &off)| {
                self.by_id.get(id).is_some_and(|(content, ..)| off.0 < off.1 && inside(core(content, off)))
            });
            if !injected {
                return Ok(full.get_ids().to_vec());
            }
            let as_text = self.as_text.get_or_init(|| {
                let mut t = tokenizer.clone();
                t.set_encode_special_tokens(true);
                t
            });
            let mut parts: Vec<Encoding> = Vec::new();
            let mut at = 0;
            for (id, &(s, e)) in full.get_ids().iter().zip(full.get_offsets()) {
                let Some((content, lstrip, rstrip)) = self.by_id.get(id) else { continue };
                if s >= e || inside(core(content, (s, e))) || s < at {
                    continue;
                }
                let mut piece = &text[at..s];
                if *lstrip {
                    piece = piece.trim_end();
                }
                if !piece.is_empty() {
                    parts.push(as_text.encode(piece, false)?);
                }
                parts.push(Encoding::new(
                    vec![*id],
                    vec![0],
                    vec![content.clone()],
                    vec![None],
                    vec![(s, e)],
                    vec![1],
                    vec![1],
                    vec![],
                    Default::default(),
                ));
                at = e;
                if *rstrip {
                    at += text[at..].len() - text[at..].trim_start().len();
                }
            }
            if at < text.len() {
                parts.push(as_text.encode(&text[at..], false)?);
            }
            let merged = Encoding::merge(parts, false);
            Ok(tokenizer.post_process(merged, None, add_special)?.get_ids().to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_give_spans_and_strip_cleanly() {
        let s = format!("<|user|>\n{}<|end|>{}", mark("Hi \u{FDD0}there"), mark(""));
        let (text, spans) = unmark(&s).unwrap();
        assert_eq!(text, "<|user|>\nHi there<|end|>");
        assert_eq!(&text[spans[0].clone()], "Hi there");
        assert_eq!(spans[1], text.len()..text.len());
        assert!(unmark(&format!("{OPEN}a")).is_none());
        assert!(unmark(&format!("a{CLOSE}")).is_none());
        assert!(unmark(&format!("{OPEN}{OPEN}a{CLOSE}")).is_none());
    }
}

//! Filters and methods that replace minijinja's where those could allocate in
//! proportion to a parameter rather than to their (fuel-charged) input, or
//! where they must see through the content markers (see `spans.rs`).
//!
//! What minijinja 3.1 / minijinja-contrib 3.1 builtins do with a size given
//! by an argument (read from their source):
//! - checked against the fuel before allocating: `*` on strings and tuples,
//!   `replace` (filter and method), `indent(width)`, printf `format`,
//!   `slice(count)` and `batch(count, fill)` (slots), `range` (at most
//!   100 000 items, lazy);
//! - charged item by item as they go: `join`, `list`, `reverse`, `sort`,
//!   `dictsort`, `groupby`, `unique`, `map`, `select*`/`reject*`, `sum`,
//!   `min`/`max`, pycompat's `join`/`split`/`replace`;
//! - charged only after the fact, so handled here: `tojson(indent)` (indent
//!   capped at [`MAX_JSON_INDENT`], output size walked first), `string` (size
//!   walked first), pycompat `str.format` (widths/precisions over
//!   [`MAX_FORMAT_WIDTH`] and nested specs refused, arguments walked), and
//!   `pprint` (removed: no chat template uses it);
//! - `*` on lists is lazy and uncharged: `limits.rs` admits `*` only with a
//!   number literal ≤ 16, outside loops, twice (≤ 256×). Lists joined with
//!   `+` (or `chain`) are lazy too; what formatting them writes is charged
//!   to the per-render format budget of our minijinja patch (template.rs).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, State, Value};

use super::spans::{CLOSE, OPEN};

pub const MAX_JSON_INDENT: usize = 8;
pub const MAX_FORMAT_WIDTH: usize = 1000;
/// Nesting of values walked by the size check.
const MAX_VALUE_DEPTH: usize = 32;

fn refused(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, what.into())
}

/// Subtracts the serialized size of `v` (an upper bound) from `budget`;
/// false once it does not fit. Visits at most `budget / 4` items, so lazy
/// sequences of any claimed length cost bounded time.
pub fn fits(v: &Value, depth: usize, indent: usize, budget: &mut usize) -> bool {
    fn take(budget: &mut usize, n: usize) -> bool {
        match budget.checked_sub(n) {
            Some(left) => {
                *budget = left;
                true
            }
            None => false,
        }
    }
    if depth > MAX_VALUE_DEPTH {
        return false;
    }
    match v.kind() {
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            // JSON and HTML-safe escapes are at most 6 bytes per byte.
            let escaped = s.bytes().filter(|b| *b < 0x20 || b"\"\\<>&'".contains(b)).count();
            take(budget, s.len() + 5 * escaped + 2)
        }
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            let Ok(items) = v.try_iter() else { return take(budget, 64) };
            let is_map = v.kind() == ValueKind::Map;
            for item in items {
                if !take(budget, 4 + (depth + 1) * indent) || !fits(&item, depth + 1, indent, budget) {
                    return false;
                }
                if is_map {
                    let value = v.get_item(&item).unwrap_or_default();
                    if !fits(&value, depth + 1, indent, budget) {
                        return false;
                    }
                }
            }
            take(budget, 2 + depth * indent)
        }
        _ => take(budget, 64),
    }
}

fn check_fits(v: &Value, indent: usize, budget: usize, what: &str) -> Result<(), Error> {
    let mut left = budget;
    if fits(v, 0, indent, &mut left) {
        Ok(())
    } else {
        Err(refused(format!("{what} would be larger than {budget} bytes")))
    }
}

/// `tojson` with the indent capped and the output size checked first.
pub fn tojson(budget: usize) -> impl Fn(&State, &Value, Option<Value>, Kwargs) -> Result<Value, Error> {
    move |state, value, indent, kwargs| {
        let indent = match indent {
            Some(i) => Some(i),
            None => kwargs.get::<Option<Value>>("indent")?,
        };
        kwargs.assert_all_used()?;
        let width = match &indent {
            None => 0,
            Some(v) if v.kind() == ValueKind::Bool => 2,
            Some(v) => usize::try_from(v.clone())?,
        };
        if width > MAX_JSON_INDENT {
            return Err(refused(format!("tojson indent {width} is over {MAX_JSON_INDENT}")));
        }
        check_fits(value, width, budget, "tojson's output")?;
        let json = minijinja::filters::tojson(value, indent, Kwargs::from_iter(std::iter::empty::<(&str, Value)>()))?;
        state.consume_fuel(json.as_str().map_or(0, str::len) as u64 / 4)?;
        Ok(json)
    }
}

/// `string` with the size of a container's text checked first.
pub fn string(budget: usize) -> impl Fn(&State, &Value) -> Result<Value, Error> {
    move |state, value| {
        if value.kind() == ValueKind::String {
            return Ok(value.clone());
        }
        check_fits(value, 0, budget, "the string")?;
        let s = value.to_string();
        state.consume_fuel(s.len() as u64 / 4)?;
        Ok(Value::from(s))
    }
}

/// `trim` that keeps content markers and strips what lies beyond them, so a
/// marked render trims exactly like the plain one.
pub fn trim(value: &Value, chars: Option<String>) -> Result<Value, Error> {
    let s = value.as_str().ok_or_else(|| refused("trim needs a string"))?;
    Ok(Value::from(strip_marked(s, chars.as_deref(), true, true)))
}

pub fn strip_marked(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let is_marker = |c: char| c == OPEN || c == CLOSE;
    let strippable = |c: char| !is_marker(c) && chars.map_or(c.is_whitespace(), |set| set.contains(c));
    let keep = |c: &char| !strippable(*c);
    let first = s.char_indices().find(|&(_, c)| keep(&c) && !is_marker(c)).map(|(i, _)| i);
    let Some(first) = first else {
        // Nothing but strippable characters and markers: only markers stay.
        return s.chars().filter(|c| is_marker(*c)).collect();
    };
    let last =
        s.char_indices().rev().find(|&(_, c)| keep(&c) && !is_marker(c)).map_or(s.len(), |(i, c)| i + c.len_utf8());
    let mut out = String::with_capacity(s.len());
    let head = &s[..first];
    if left {
        out.extend(head.chars().filter(|c| is_marker(*c)));
    } else {
        out.push_str(head);
    }
    out.push_str(&s[first..last]);
    let tail = &s[last..];
    if right {
        out.extend(tail.chars().filter(|c| is_marker(*c)));
    } else {
        out.push_str(tail);
    }
    out
}

/// pycompat's string/list/dict methods, with marker-aware `strip`s and a
/// bounded `str.format`.
pub fn unknown_method(budget: usize) -> impl Fn(&mut State, &Value, &str, &[Value]) -> Result<Value, Error> {
    move |state, value, method, args| {
        if let Some(s) = value.as_str() {
            let (left, right) = match method {
                "strip" => (true, true),
                "lstrip" => (true, false),
                "rstrip" => (false, true),
                "format" => {
                    check_format_spec(s)?;
                    for a in args {
                        check_fits(a, 0, budget, "a format argument")?;
                    }
                    (false, false)
                }
                _ => (false, false),
            };
            if left || right {
                let chars: Option<String> = match args {
                    [] => None,
                    [v] if v.is_none() => None,
                    [v] => Some(v.as_str().ok_or_else(|| refused("strip takes a string"))?.to_string()),
                    _ => return Err(refused("strip takes at most one argument")),
                };
                return Ok(Value::from(strip_marked(s, chars.as_deref(), left, right)));
            }
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    }
}

/// Refuses `str.format` specs whose width or precision exceeds
/// [`MAX_FORMAT_WIDTH`], and nested (argument-supplied) ones.
fn check_format_spec(s: &str) -> Result<(), Error> {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '{' {
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            continue;
        }
        let mut in_spec = false;
        let mut number = 0usize;
        for c in chars.by_ref() {
            match c {
                '}' => break,
                ':' => in_spec = true,
                '{' if in_spec => return Err(refused("nested format specs are not supported")),
                '0'..='9' if in_spec => {
                    number = number.saturating_mul(10).saturating_add(c as usize - '0' as usize);
                    if number > MAX_FORMAT_WIDTH {
                        return Err(refused(format!("format widths are limited to {MAX_FORMAT_WIDTH}")));
                    }
                }
                _ => number = 0,
            }
        }
    }
    Ok(())
}

//! The bytes each token stands for, as constrained decoding needs them: a
//! grammar matches bytes, and a token is allowed when its bytes can continue
//! the answer. Decoding a token alone does not give them (a byte-level or
//! byte-fallback token is often part of a UTF-8 sequence and decodes to
//! U+FFFD), so they are read from the token's vocabulary string the way the
//! tokenizer's decoder would map it. Two decoder families cover the
//! tokenizers we load: GPT-2 byte level (GGUF `gpt2`, most tokenizer.json
//! files) and SentencePiece style, `▁` for a space with `<0xNN>` byte
//! fallback (GGUF `llama`, Llama 2 / Phi-3 tokenizer.json).

use std::collections::HashMap;

use tokenizers::{DecoderWrapper, Tokenizer};

use super::super::error::{Error, Result};

/// Marks a special token's bytes, so no text can produce it (llguidance's
/// convention: 0xFF never occurs in UTF-8).
pub(crate) const SPECIAL_MARKER: u8 = 0xFF;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mapping {
    /// GPT-2's printable stand-ins for the 256 byte values.
    ByteLevel,
    /// `space` for a space, `<0xNN>` for a raw byte.
    SentencePiece { space: char },
}

/// Bytes of ids `0..end`: a special token's are `SPECIAL_MARKER` and its
/// text, an id the tokenizer does not know has none.
pub(crate) fn token_bytes(tokenizer: &Tokenizer, end: usize) -> Result<Vec<Vec<u8>>> {
    let mapping = tokenizer.get_decoder().and_then(mapping_of).ok_or_else(|| {
        Error::param(
            "response_format",
            "constrained output needs a byte-level or SentencePiece tokenizer; this model's decoder is neither",
        )
    })?;
    let special: HashMap<u32, String> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, t)| (id, t.content))
        .collect();
    let byte_of_char = gpt2_char_bytes();
    Ok((0..end as u32)
        .map(|id| {
            if let Some(text) = special.get(&id) {
                return std::iter::once(SPECIAL_MARKER).chain(text.bytes()).collect();
            }
            let Some(piece) = tokenizer.id_to_token(id) else { return Vec::new() };
            match mapping {
                Mapping::ByteLevel => {
                    // A string outside the byte alphabet (an added, non-special
                    // token) is its own text.
                    piece
                        .chars()
                        .map(|c| byte_of_char.get(&c).copied())
                        .collect::<Option<Vec<u8>>>()
                        .unwrap_or_else(|| piece.clone().into_bytes())
                }
                Mapping::SentencePiece { space } => match fallback_byte(&piece) {
                    Some(b) => vec![b],
                    None => piece.replace(space, " ").into_bytes(),
                },
            }
        })
        .collect())
}

fn mapping_of(d: &DecoderWrapper) -> Option<Mapping> {
    match d {
        DecoderWrapper::ByteLevel(_) => Some(Mapping::ByteLevel),
        DecoderWrapper::Metaspace(m) => Some(Mapping::SentencePiece { space: m.get_replacement() }),
        DecoderWrapper::Replace(r) => {
            // The pattern is private; its serialized form has it.
            let v = serde_json::to_value(r).ok()?;
            let mut pattern = v["pattern"]["String"].as_str()?.chars();
            match (pattern.next(), pattern.next(), v["content"].as_str()) {
                (Some(space), None, Some(" ")) => Some(Mapping::SentencePiece { space }),
                _ => None,
            }
        }
        DecoderWrapper::Sequence(s) => s.get_decoders().iter().find_map(mapping_of),
        _ => None,
    }
}

/// `<0x0A>` → 0x0A.
fn fallback_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the
/// others for U+0100 onwards in byte order.
fn gpt2_char_bytes() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (b as char, b)
            } else {
                next += 1;
                (char::from_u32(next - 1).unwrap_or_default(), b)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(tok: &Tokenizer, piece: &str) -> Vec<u8> {
        let id = tok.token_to_id(piece).unwrap_or_else(|| panic!("{piece} is not in the vocabulary"));
        token_bytes(tok, id as usize + 1).unwrap().pop().unwrap()
    }

    #[test]
    fn sentencepiece_spaces_and_fallback_bytes() {
        let tok = Tokenizer::from_file(crate::engine::test_fixture("phi3-tokenizer.json")).unwrap();
        assert_eq!(bytes_of(&tok, "▁Hello"), b" Hello");
        assert_eq!(bytes_of(&tok, "<0x0A>"), b"\n");
        assert_eq!(bytes_of(&tok, "<0xE2>"), [0xE2]);
        assert_eq!(bytes_of(&tok, "<|end|>"), b"\xFF<|end|>");
        // Every token's bytes, concatenated, are what decoding gives.
        let ids = tok.encode("Ünïcode ✓ {\"a\": 1}\n\tend", false).unwrap().get_ids().to_vec();
        let all = token_bytes(&tok, tok.get_vocab_size(true)).unwrap();
        let joined: Vec<u8> = ids.iter().flat_map(|&i| all[i as usize].clone()).collect();
        assert_eq!(String::from_utf8(joined).unwrap().trim_start(), tok.decode(&ids, false).unwrap());
    }

    #[test]
    fn byte_level_alphabet() {
        let tok = Tokenizer::from_file(crate::engine::test_fixture("phi4-tokenizer.json")).unwrap();
        assert_eq!(bytes_of(&tok, "Ġthe"), b" the");
        assert_eq!(bytes_of(&tok, "Ċ"), b"\n");
        let all = token_bytes(&tok, tok.get_vocab_size(true)).unwrap();
        let ids = tok.encode("日本語 👩‍💻 \"x\": [1, 2]\n", false).unwrap().get_ids().to_vec();
        let joined: Vec<u8> = ids.iter().flat_map(|&i| all[i as usize].clone()).collect();
        assert_eq!(String::from_utf8(joined).unwrap(), tok.decode(&ids, false).unwrap());
        let alphabet = gpt2_char_bytes();
        assert_eq!(alphabet.len(), 256);
        assert_eq!(alphabet.values().collect::<std::collections::HashSet<_>>().len(), 256);
    }

    #[test]
    fn a_decoder_of_neither_kind_is_refused_by_name() {
        let vocab = [("a", 0), ("b", 1)].map(|(t, id)| (t.to_string(), id)).into_iter().collect();
        let model = tokenizers::models::wordlevel::WordLevel::builder().vocab(vocab).build().unwrap();
        let err = token_bytes(&Tokenizer::new(model), 2).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { name: "response_format", .. }), "{err:?}");
    }
}

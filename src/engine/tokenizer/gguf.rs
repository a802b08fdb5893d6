//! Builds a `tokenizers::Tokenizer` from a GGUF's `tokenizer.ggml.*`
//! metadata, so one `.gguf` file is all an app ships. Behaviour follows
//! llama.cpp (llama-vocab.cpp), which is what produced and reads these files:
//!
//! - `gpt2` vocabularies: byte-level BPE with the file's merges, split first
//!   by the regexes llama.cpp uses for `tokenizer.ggml.pre`. An unknown
//!   `pre` is an error rather than a guess: a wrong split silently changes
//!   every prompt's tokens.
//! - `llama` vocabularies: SentencePiece BPE — `▁` for spaces, merges in
//!   score order, byte fallback for characters outside the vocabulary.
//!
//! Control and user-defined tokens are matched in text as special tokens.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use super::super::error::{Error, Result};

// llama.cpp's token types (llama_token_type).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// Larger vocabularies than any released model are not vocabularies.
const MAX_VOCAB: usize = 1 << 21;

/// The pre-tokenizer regexes llama.cpp applies, in order, for each
/// `tokenizer.ggml.pre` (llama-vocab.cpp, `llm_tokenizer_bpe`).
fn pre_regexes(pre: &str) -> Option<&'static [&'static str]> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    // o200k_base (GPT-4o; Phi-4-mini), as its tokenizer.json and tiktoken
    // write it. llama.cpp's own regex engine cannot take these classes and
    // runs a rewrite without `\p{M}`, so combining marks split apart there;
    // this follows the vocabulary's own definition, which the model was
    // trained on (the differences are listed in the parity test).
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "gpt-4o" | "llama4" => &[GPT4O],
        "default" => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => &[LLAMA3],
        "qwen2" | "deepseek-r1-qwen" => &[QWEN2],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => &[r"\p{N}", GPT2],
        "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "mpt" | "olmo" | "jais" | "trillion" => &[GPT2],
        _ => return None,
    })
}

struct Vocabulary {
    tokens: Vec<String>,
    types: Vec<i64>,
}

pub(crate) fn from_gguf(c: &Content) -> Result<Tokenizer> {
    let model = meta_str(c, "tokenizer.ggml.model")?.ok_or_else(|| {
        Error::Tokenizer("the GGUF has no tokenizer (tokenizer.ggml.model); pass a tokenizer.json".into())
    })?;
    let tokens = string_array(c, "tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::Tokenizer("the GGUF has no tokenizer.ggml.tokens".into()))?;
    if tokens.is_empty() || tokens.len() > MAX_VOCAB {
        return Err(Error::Tokenizer(format!("implausible vocabulary size {}", tokens.len())));
    }
    let types = match c.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => int_array(v, "tokenizer.ggml.token_type")?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(Error::Tokenizer("token_type and tokens differ in length".into()));
    }
    let vocab = Vocabulary { tokens, types };
    let bos = meta_u32(c, "tokenizer.ggml.bos_token_id");
    let eos = meta_u32(c, "tokenizer.ggml.eos_token_id");

    let (mut tokenizer, default_add_bos) = match model.as_str() {
        "gpt2" => {
            let pre = meta_str(c, "tokenizer.ggml.pre")?.unwrap_or_else(|| "default".into());
            (gpt2(c, &vocab, &pre)?, false)
        }
        "llama" => {
            let add_space_prefix = meta_bool(c, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
            (spm(c, &vocab, add_space_prefix)?, true)
        }
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer type '{other}' is not supported (supported: gpt2, llama)"
            )))
        }
    };

    // llama.cpp strips whitespace after Phi-3's special tokens, recognising
    // Phi-3 by name (GGUF has no per-token strip flags); Hugging Face's Phi-3
    // tokenizer.json has the same rstrip flags.
    let name = meta_str(c, "general.name")?.unwrap_or_default().to_lowercase();
    let phi3_rstrip = name.contains("phi-3") || name.contains("phi3");
    let specials: Vec<AddedToken> = vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER_DEFINED || t == TYPE_UNKNOWN)
        .map(|(tok, &t)| {
            let rstrip = phi3_rstrip && !matches!(tok.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
            AddedToken::from(tok.clone(), t != TYPE_USER_DEFINED).normalized(false).rstrip(rstrip)
        })
        .collect();
    tokenizer.add_special_tokens(&specials);

    let add_bos = meta_bool(c, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos);
    let add_eos = meta_bool(c, "tokenizer.ggml.add_eos_token").unwrap_or(false);
    if let Some(post) = bos_eos_processor(&vocab, bos.filter(|_| add_bos), eos.filter(|_| add_eos))? {
        tokenizer.with_post_processor(Some(post));
    }
    Ok(tokenizer)
}

fn gpt2(c: &Content, v: &Vocabulary, pre: &str) -> Result<Tokenizer> {
    let regexes = pre_regexes(pre).ok_or_else(|| {
        Error::Tokenizer(format!("GGUF pre-tokenizer '{pre}' is not supported; pass its tokenizer.json instead"))
    })?;
    let merges = string_array(c, "tokenizer.ggml.merges")?
        .ok_or_else(|| Error::Tokenizer("a gpt2 vocabulary needs tokenizer.ggml.merges".into()))?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("malformed merge '{m}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(v), merges)
        .ignore_merges(pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3")
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build the BPE model: {e}")))?;
    let mut splits: Vec<PreTokenizerWrapper> = regexes
        .iter()
        .map(|r| {
            Split::new(SplitPattern::Regex(r.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map(Into::into)
                .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))
        })
        .collect::<Result<_>>()?;
    splits.push(ByteLevel::new(false, false, false).into());
    let mut t = Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(PreSequence::new(splits)));
    t.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    Ok(t)
}

fn spm(c: &Content, v: &Vocabulary, add_space_prefix: bool) -> Result<Tokenizer> {
    let scores = match c.metadata.get("tokenizer.ggml.scores") {
        Some(s) => float_array(s, "tokenizer.ggml.scores")?,
        None => return Err(Error::Tokenizer("a llama vocabulary needs tokenizer.ggml.scores".into())),
    };
    if scores.len() != v.tokens.len() {
        return Err(Error::Tokenizer("scores and tokens differ in length".into()));
    }
    let ids = vocab_map(v);
    // SentencePiece merges in score order, as Hugging Face's converter derives
    // them: every split of a token into two vocabulary pieces, best score first.
    let mut order: Vec<usize> =
        (0..v.tokens.len()).filter(|&i| v.types[i] == 1 || v.types[i] == TYPE_USER_DEFINED).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut merges = Vec::new();
    for i in order {
        let tok = &v.tokens[i];
        let mut local: Vec<(u32, u32, String, String)> = tok
            .char_indices()
            .skip(1)
            .filter_map(|(k, _)| {
                let (l, r) = tok.split_at(k);
                Some((*ids.get(l)?, *ids.get(r)?, l.to_string(), r.to_string()))
            })
            .collect();
        local.sort();
        merges.extend(local.into_iter().map(|(_, _, l, r)| (l, r)));
    }
    let unk =
        v.types.iter().position(|&t| t == TYPE_UNKNOWN).map(|i| v.tokens[i].clone()).unwrap_or_else(|| "<unk>".into());
    let has_bytes = v.types.contains(&TYPE_BYTE);
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(has_bytes)
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build the SentencePiece model: {e}")))?;
    let mut t = Tokenizer::new(bpe);
    let replace = Replace::new(" ", "▁").map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(replace.into());
    t.with_normalizer(Some(NormalizerSequence::new(norms)));
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(|e| Error::Tokenizer(e.to_string()))?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    t.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(t)
}

fn vocab_map(v: &Vocabulary) -> Vocab {
    let mut map = Vocab::default();
    for (i, t) in v.tokens.iter().enumerate() {
        // A duplicated token keeps its first id, as llama.cpp's lookup does.
        map.entry(t.clone()).or_insert(i as u32);
    }
    map
}

fn bos_eos_processor(v: &Vocabulary, bos: Option<u32>, eos: Option<u32>) -> Result<Option<TemplateProcessing>> {
    let name = |id: u32| {
        v.tokens
            .get(id as usize)
            .cloned()
            .ok_or_else(|| Error::Tokenizer(format!("special token id {id} is outside the vocabulary")))
    };
    let (bos, eos) = (bos.map(name).transpose()?, eos.map(name).transpose()?);
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let ids: HashMap<String, u32> = v.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut single = Vec::new();
    let mut specials = Vec::new();
    for t in bos.iter() {
        single.push(t.clone());
        specials.push((t.clone(), ids[t]));
    }
    single.push("$A".to_string());
    for t in eos.iter() {
        single.push(t.clone());
        specials.push((t.clone(), ids[t]));
    }
    let single = single.join(" ");
    TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(format!("{single} $B:1").as_str()))
        .map_err(|e| Error::Tokenizer(format!("BOS/EOS template: {e}")))?
        .special_tokens(specials)
        .build()
        .map(Some)
        .map_err(|e| Error::Tokenizer(format!("BOS/EOS template: {e}")))
}

fn meta_str(c: &Content, key: &str) -> Result<Option<String>> {
    match c.metadata.get(key) {
        None => Ok(None),
        Some(v) => {
            v.to_string().map(|s| Some(s.clone())).map_err(|_| Error::Tokenizer(format!("{key} is not a string")))
        }
    }
}

pub(crate) fn meta_u32(c: &Content, key: &str) -> Option<u32> {
    c.metadata.get(key).and_then(|v| v.to_u32().ok().or_else(|| v.to_i32().ok().and_then(|i| u32::try_from(i).ok())))
}

fn meta_bool(c: &Content, key: &str) -> Option<bool> {
    c.metadata.get(key).and_then(|v| v.to_bool().ok())
}

fn string_array(c: &Content, key: &str) -> Result<Option<Vec<String>>> {
    let Some(v) = c.metadata.get(key) else { return Ok(None) };
    let items = v.to_vec().map_err(|_| Error::Tokenizer(format!("{key} is not an array")))?;
    items
        .iter()
        .map(|i| i.to_string().cloned().map_err(|_| Error::Tokenizer(format!("{key} holds a non-string"))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn int_array(v: &Value, key: &str) -> Result<Vec<i64>> {
    let items = v.to_vec().map_err(|_| Error::Tokenizer(format!("{key} is not an array")))?;
    items
        .iter()
        .map(|i| match i {
            Value::I32(n) => Ok(*n as i64),
            Value::U32(n) => Ok(*n as i64),
            Value::I8(n) => Ok(*n as i64),
            Value::U8(n) => Ok(*n as i64),
            Value::I16(n) => Ok(*n as i64),
            Value::U16(n) => Ok(*n as i64),
            Value::I64(n) => Ok(*n),
            Value::U64(n) => Ok(*n as i64),
            _ => Err(Error::Tokenizer(format!("{key} holds a non-integer"))),
        })
        .collect()
}

fn float_array(v: &Value, key: &str) -> Result<Vec<f32>> {
    let items = v.to_vec().map_err(|_| Error::Tokenizer(format!("{key} is not an array")))?;
    items
        .iter()
        .map(|i| match i {
            Value::F32(f) => Ok(*f),
            Value::F64(f) => Ok(*f as f32),
            _ => Err(Error::Tokenizer(format!("{key} holds a non-float"))),
        })
        .collect()
}

#[cfg(test)]
mod llama_cpp_parity {
    //! Token ids must equal llama.cpp's for the same GGUF on a corpus of hard
    //! strings (tests/data/*_tokens.json, from scripts/reference_llamacpp.py).
    use super::*;

    fn check(gguf: &str, expected: &str) -> Vec<String> {
        let mut f = std::fs::File::open(crate::engine::test_fixture(gguf)).unwrap();
        let content = Content::read(&mut f).unwrap();
        let tok = from_gguf(&content).unwrap();
        let data: serde_json::Value = serde_json::from_str(expected).unwrap();
        let specials: Vec<String> = tok.get_added_tokens_decoder().into_values().map(|t| t.content).collect();
        let mut failures = Vec::new();
        for case in data["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> =
                case["ids_special"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, true).unwrap().get_ids().to_vec();
            if got != want {
                failures.push(format!("{text:?}\n  llama.cpp {want:?}\n  ours      {got:?}"));
            }
            // Decoding round-trips wherever llama.cpp's does (special-token
            // text is excluded: stripping around it is by design).
            let has_special = specials.iter().any(|s| text.contains(s.as_str()));
            if case["detokenized"].as_str() == Some(text) && !has_special {
                let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
                let back = tok.decode(&ids, false).unwrap();
                if back != text {
                    failures.push(format!("{text:?} decodes back as {back:?}"));
                }
            }
        }
        failures
    }

    #[test]
    fn smollm2_gpt2_vocabulary_matches_llama_cpp() {
        let f = check("SmolLM2-135M-Instruct.Q4_1.gguf", include_str!("../../../tests/data/smollm2_tokens.json"));
        assert!(f.is_empty(), "{} mismatches:\n{}", f.len(), f.join("\n"));
    }

    /// Phi-4-mini's o200k (`gpt-4o`) vocabulary: ids equal Hugging Face's
    /// tokenizer.json everywhere, and llama.cpp's everywhere but where its
    /// regex rewrite splits combining marks from their letters (Devanagari,
    /// Thai, Bengali; tests/data/phi4_vocab_tokens_hf.json lists them).
    #[test]
    fn phi4_gpt4o_vocabulary_matches_hugging_face_and_llama_cpp() {
        let mut f = std::fs::File::open(crate::engine::test_fixture("phi4-vocab.gguf")).unwrap();
        let tok = from_gguf(&Content::read(&mut f).unwrap()).unwrap();
        assert_eq!(tok.get_vocab_size(true), 200_064, "o200k, Phi-4-mini's tokens and the unused slots");
        let hf: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/data/phi4_vocab_tokens_hf.json")).unwrap();
        let llama: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/data/phi4_vocab_tokens.json")).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
        };
        let (mut failures, mut marks) = (Vec::new(), 0);
        for (h, l) in hf["cases"].as_array().unwrap().iter().zip(llama["cases"].as_array().unwrap()) {
            let text = h["text"].as_str().unwrap();
            assert_eq!(l["text"].as_str(), Some(text), "the two files follow one corpus");
            let got = tok.encode(text, true).unwrap().get_ids().to_vec();
            if got != ids(&h["ids_hf"]) {
                failures.push(format!("{text:?}: Hugging Face {:?}, ours {got:?}", ids(&h["ids_hf"])));
            }
            let same_as_llama = got == ids(&l["ids_special"]);
            if !same_as_llama {
                marks += 1;
                if !text.chars().any(unicode_mark) {
                    failures.push(format!("{text:?}: differs from llama.cpp without a combining mark"));
                }
            }
        }
        assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
        assert_eq!(marks, 4, "llama.cpp differs on the four Indic/Thai strings only");
    }

    /// Combining marks of the scripts in the corpus (Devanagari, Bengali,
    /// Thai, Hebrew points, the combining diacritics block).
    fn unicode_mark(c: char) -> bool {
        matches!(c as u32, 0x0300..=0x036F | 0x0591..=0x05C7 | 0x0900..=0x0903 | 0x093A..=0x094F | 0x0981..=0x0983
            | 0x09BC..=0x09D7 | 0x0E31 | 0x0E34..=0x0E3A | 0x0E47..=0x0E4E)
    }

    #[test]
    fn phi3_llama_vocabulary_matches_llama_cpp() {
        let f = check("phi3-vocab.gguf", include_str!("../../../tests/data/phi3_vocab_tokens.json"));
        assert!(f.is_empty(), "{} mismatches:\n{}", f.len(), f.join("\n"));
    }
}

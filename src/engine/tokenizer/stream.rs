//! Incremental detokenization and stop strings.
//!
//! `TextStream` turns token ids into text pieces whose concatenation equals
//! decoding all ids at once. It decodes only a short window of recent tokens
//! (the "prefix/read offset" method), so the cost per token does not grow with
//! the output, and it holds a piece back only while it ends in an incomplete
//! UTF-8 sequence — punctuation, spaces and emoji go out as soon as they are
//! complete. tokenizers' own `DecodeStream` uses the same method but has no
//! way to flush a trailing incomplete sequence when generation ends.
//!
//! `PieceStream` is what generation streams: `TextStream`, then the stop
//! filter, then a `GraphemeBuffer`, so every piece ends on a grapheme-cluster
//! boundary of the final text.

use tokenizers::Tokenizer;

use super::super::error::Result;
use super::graphemes::GraphemeBuffer;

/// Token ids in, text pieces out: decoded, stop strings cut, ending on
/// grapheme boundaries.
pub(crate) struct PieceStream<'a> {
    text: TextStream<'a>,
    stops: StopFilter,
    graphemes: GraphemeBuffer,
}

impl<'a> PieceStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, stops: Vec<String>) -> Self {
        Self { text: TextStream::new(tokenizer), stops: StopFilter::new(stops), graphemes: GraphemeBuffer::default() }
    }

    /// The stop string that ended the stream, once one has.
    pub fn matched_stop(&self) -> Option<&str> {
        self.stops.matched.map(|i| self.stops.stops[i].as_str())
    }

    /// Adds one token. On `Stop` the text is everything left to stream.
    pub fn push(&mut self, id: u32) -> Result<Filtered> {
        Ok(match self.stops.push(&self.text.push(id)?) {
            Filtered::Continue(piece) => Filtered::Continue(self.graphemes.push(&piece)),
            Filtered::Stop(piece) => Filtered::Stop(self.release(&piece)),
        })
    }

    /// Generation ended for any reason but a stop string: releases what the
    /// decoder, the stop filter and the grapheme buffer still hold (a stop
    /// string may still match in it).
    pub fn finish(&mut self) -> Result<Filtered> {
        Ok(match self.stops.push(&self.text.finish()?) {
            Filtered::Stop(piece) => Filtered::Stop(self.release(&piece)),
            Filtered::Continue(piece) => {
                let mut out = self.graphemes.push(&piece);
                let held_by_filter = self.stops.finish();
                out.push_str(&self.release(&held_by_filter));
                Filtered::Continue(out)
            }
        })
    }

    /// The held cluster and `last`, the final text.
    fn release(&mut self, last: &str) -> String {
        let mut out = self.graphemes.finish();
        out.push_str(last);
        out
    }
}

const REPLACEMENT: char = '\u{FFFD}';

pub(crate) struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the decode window: the token before the text not yet emitted,
    /// kept so decoders that look at the previous token (leading-space
    /// stripping, byte fallback) see the same context as a full decode.
    prefix: usize,
    /// End of what has been emitted.
    read: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self { tokenizer, ids: Vec::new(), prefix: 0, read: 0 }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids, true)?)
    }

    /// Adds one token; returns the text it completes (often the token's own
    /// text, empty while a multi-byte character is still incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let after = self.decode(&self.ids[self.prefix..])?;
        if after.len() > before.len() && !after.ends_with(REPLACEMENT) && after.starts_with(&before) {
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(after[before.len()..].to_string())
        } else {
            Ok(String::new())
        }
    }

    /// Emits whatever is still held back (an incomplete UTF-8 sequence that
    /// will now never complete decodes to U+FFFD, as in a full decode).
    pub fn finish(&mut self) -> Result<String> {
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let after = self.decode(&self.ids[self.prefix..])?;
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(after.strip_prefix(before.as_str()).unwrap_or("").to_string())
    }
}

/// Holds back text that might be the start of a stop string, so a stop string
/// is never streamed, not even partly.
pub(crate) struct StopFilter {
    stops: Vec<String>,
    text: String,
    emitted: usize,
    /// Which stop string matched.
    matched: Option<usize>,
}

pub(crate) enum Filtered {
    /// Text that is safe to stream (may be empty).
    Continue(String),
    /// A stop string matched; this is the text before it, the last to stream.
    Stop(String),
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, text: String::new(), emitted: 0, matched: None }
    }

    pub fn push(&mut self, piece: &str) -> Filtered {
        self.text.push_str(piece);
        // A match cannot start in emitted text: any suffix that could begin a
        // stop string was held back.
        let pending = &self.text[self.emitted..];
        let earliest = self.stops.iter().enumerate().filter_map(|(i, s)| Some((pending.find(s.as_str())?, i))).min();
        if let Some((pos, i)) = earliest {
            self.matched = Some(i);
            let cut = self.emitted + pos;
            let out = self.text[self.emitted..cut].to_string();
            self.text.truncate(cut);
            self.emitted = cut;
            return Filtered::Stop(out);
        }
        let hold = self.held_suffix_len(pending);
        let end = self.text.len() - hold;
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        Filtered::Continue(out)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a
    /// stop string.
    fn held_suffix_len(&self, pending: &str) -> usize {
        pending
            .char_indices()
            .map(|(i, _)| &pending[i..])
            .find(|suffix| self.stops.iter().any(|s| s.len() > suffix.len() && s.starts_with(suffix)))
            .map_or(0, str::len)
    }

    /// Releases held text when generation ends without a match.
    pub fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text[..self.emitted]
    }
}

#[cfg(test)]
mod text_stream_tests {
    use super::*;

    /// The real Phi-3 (Llama 2) tokenizer from scripts/fetch-fixtures.sh.
    fn phi3_tokenizer() -> Tokenizer {
        Tokenizer::from_file(crate::engine::test_fixture("phi3-tokenizer.json")).unwrap()
    }

    fn stream_all(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut s = TextStream::new(tok);
        let mut pieces: Vec<String> = ids.iter().map(|&id| s.push(id).unwrap()).collect();
        pieces.push(s.finish().unwrap());
        pieces
    }

    #[test]
    fn pieces_concatenate_to_the_full_decode() {
        let tok = phi3_tokenizer();
        for text in [
            "Hello, world! How are you?",
            "Family: 👨‍👩‍👧‍👦, flags 🇯🇵🇫🇷, skin tone 👋🏽.",
            "日本語のテキストと中文文本，还有한국어.",
            "Ünïcödé àccents: naïve café, Ångström, ß.",
            "fn main() {\n\tprintln!(\"{}\", 1 + 2);\n}\n",
            "Numbers 3.14159, 1,000,000 and   runs    of spaces.",
        ] {
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            let pieces = stream_all(&tok, &ids);
            assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap(), "{text}");
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.contains(REPLACEMENT)), "{text}: {pieces:?}");
        }
    }

    #[test]
    fn punctuation_and_spaces_are_not_held_back() {
        let tok = phi3_tokenizer();
        let ids = tok.encode("Hi, you! Yes: ok... (fine) ; -", false).unwrap().get_ids().to_vec();
        let mut s = TextStream::new(&tok);
        for &id in &ids {
            assert!(!s.push(id).unwrap().is_empty(), "token {id} was held back");
        }
        assert_eq!(s.finish().unwrap(), "");
    }

    #[test]
    fn an_emoji_goes_out_whole_as_soon_as_its_last_byte_arrives() {
        let tok = phi3_tokenizer();
        let ids = tok.encode("a🦀b", false).unwrap().get_ids().to_vec();
        let pieces = stream_all(&tok, &ids);
        let crab = pieces.iter().position(|p| p.contains('🦀')).unwrap();
        // The crab is byte-fallback tokens: nothing until the last, then the whole crab.
        assert!(pieces[1..crab].iter().all(String::is_empty), "{pieces:?}");
        assert_eq!(pieces[crab], "🦀");
        assert_eq!(pieces[crab + 1], "b");
    }

    #[test]
    fn an_incomplete_character_is_flushed_as_a_full_decode_shows_it() {
        let tok = phi3_tokenizer();
        let ids = tok.encode("x🦀", false).unwrap().get_ids().to_vec();
        let cut = &ids[..ids.len() - 1];
        let pieces = stream_all(&tok, cut);
        assert_eq!(pieces.concat(), tok.decode(cut, true).unwrap());
        assert!(pieces.last().unwrap().contains(REPLACEMENT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        let mut stopped = false;
        for p in pieces {
            match f.push(p) {
                Filtered::Continue(s) => out.push(s),
                Filtered::Stop(s) => {
                    out.push(s);
                    stopped = true;
                    break;
                }
            }
        }
        if !stopped {
            out.push(f.finish());
        }
        (out, stopped, f.text().to_string())
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_streamed() {
        let (out, stopped, text) = run(&["\nUser:"], &["Hi", " there\n", "Us", "er", ": more"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hi there");
        assert_eq!(text, "Hi there");
        assert!(out.iter().all(|p| !p.contains('\n')), "{out:?}");
    }

    #[test]
    fn false_start_is_released() {
        let (out, stopped, _) = run(&["STOP"], &["a S", "T", "x", "yz"]);
        assert!(!stopped);
        assert_eq!(out, vec!["a ", "", "STx", "yz", ""]);
    }

    #[test]
    fn held_text_is_flushed_at_the_end() {
        let (out, stopped, text) = run(&["</s>"], &["done </"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "done </");
        assert_eq!(text, "done </");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let (out, stopped, _) = run(&["é!"], &["caf", "é", "?é", "!"]);
        assert!(stopped);
        assert_eq!(out.concat(), "café?");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (out, _, _) = run(&["bc", "abcd", "x"], &["zab", "cd"]);
        assert_eq!(out.concat(), "z");
    }
}

#[cfg(test)]
mod piece_stream_tests {
    use unicode_segmentation::UnicodeSegmentation;

    use super::*;

    fn phi3_tokenizer() -> Tokenizer {
        Tokenizer::from_file(crate::engine::test_fixture("phi3-tokenizer.json")).unwrap()
    }

    /// The pieces of `ids` (the last from `finish` unless a stop matched) and
    /// whether a stop string matched.
    fn stream(tok: &Tokenizer, ids: &[u32], stops: &[&str]) -> (Vec<String>, bool) {
        let mut s = PieceStream::new(tok, stops.iter().map(|s| s.to_string()).collect());
        let mut pieces = Vec::new();
        for &id in ids {
            match s.push(id).unwrap() {
                Filtered::Continue(p) => pieces.push(p),
                Filtered::Stop(p) => {
                    pieces.push(p);
                    return (pieces, true);
                }
            }
        }
        match s.finish().unwrap() {
            Filtered::Continue(p) => pieces.push(p),
            Filtered::Stop(p) => {
                pieces.push(p);
                return (pieces, true);
            }
        }
        (pieces, false)
    }

    /// Byte offsets where `pieces` end, within their concatenation.
    fn piece_ends(pieces: &[String]) -> Vec<usize> {
        let mut at = 0;
        pieces
            .iter()
            .map(|p| {
                at += p.len();
                at
            })
            .collect()
    }

    fn assert_on_boundaries(pieces: &[String], what: &str) {
        let text = pieces.concat();
        let mut bounds: Vec<usize> = text.grapheme_indices(true).map(|(i, _)| i).collect();
        bounds.push(text.len());
        for end in piece_ends(pieces) {
            assert!(bounds.contains(&end), "{what}: a piece ends inside a cluster at byte {end}: {pieces:?}");
        }
    }

    const TEXTS: [&str; 7] = [
        "She said 👩‍♀️ and 👨‍👩‍👧‍👦 then 🏳️‍🌈.",
        "Flags 🇯🇵🇫🇷🇩🇪 in a row",
        "Combining: e\u{301}te\u{301}, n\u{303}, a\u{308}\u{304}, o\u{301}\u{302}\u{303}\u{304}.",
        "Skin tones 👋🏽👍🏿🧑🏻‍💻 done",
        "CRLF\r\nlines\r\n\r\nend",
        "Hangul jamo \u{1100}\u{1161}\u{11A8} and Devanagari नमस्ते",
        "Hello, world! Plain ASCII text streams promptly.",
    ];

    #[test]
    fn every_piece_ends_on_a_grapheme_boundary_of_the_final_text() {
        let tok = phi3_tokenizer();
        let mut clusters_split_by_tokens = 0;
        for text in TEXTS {
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(tok.decode(&ids, true).unwrap(), text);
            let (pieces, stopped) = stream(&tok, &ids, &[]);
            assert!(!stopped);
            assert_eq!(pieces.concat(), text);
            assert_on_boundaries(&pieces, text);

            // The texts do split clusters across tokens: decoded alone, they
            // would stream pieces ending inside a cluster.
            let mut raw = TextStream::new(&tok);
            let raw_pieces: Vec<String> = ids.iter().map(|&id| raw.push(id).unwrap()).collect();
            let mut bounds: Vec<usize> = text.grapheme_indices(true).map(|(i, _)| i).collect();
            bounds.push(text.len());
            clusters_split_by_tokens += piece_ends(&raw_pieces).iter().filter(|e| !bounds.contains(e)).count();
        }
        assert!(clusters_split_by_tokens >= 10, "{clusters_split_by_tokens}");
    }

    #[test]
    fn only_the_last_cluster_is_held_back() {
        let tok = phi3_tokenizer();
        for text in TEXTS {
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            let mut s = PieceStream::new(&tok, Vec::new());
            let mut raw = TextStream::new(&tok);
            let (mut streamed, mut decoded) = (String::new(), String::new());
            for &id in &ids {
                let Filtered::Continue(piece) = s.push(id).unwrap() else { panic!("no stop strings") };
                streamed.push_str(&piece);
                decoded.push_str(&raw.push(id).unwrap());
                // Out: all of the decoded text but its last cluster.
                let last = decoded.grapheme_indices(true).next_back().map_or(0, |(i, _)| i);
                assert_eq!(streamed, decoded[..last], "{text}");
            }
        }
    }

    #[test]
    fn stop_strings_still_cut_exactly() {
        let tok = phi3_tokenizer();
        let ids = |t: &str| tok.encode(t, false).unwrap().get_ids().to_vec();
        for (text, stop, expected, should_stop) in [
            // A stop inside a ZWJ sequence: the text before it, whole clusters or not.
            ("a👩‍♀️b", "♀", "a👩\u{200D}", true),
            ("x 👋🏽 y", "🏽", "x 👋", true),
            // A false start ending in a base that a combining mark then extends.
            ("cafe\u{301} ok", "e!", "cafe\u{301} ok", false),
            ("cafe\u{301} ok", "\u{301} o", "cafe", true),
            ("one\r\ntwo", "\ntw", "one\r", true),
            ("flags 🇯🇵🇫🇷", "🇵🇫", "flags 🇯", true),
        ] {
            let (pieces, stopped) = stream(&tok, &ids(text), &[stop]);
            assert_eq!(stopped, should_stop, "{text} / {stop:?}");
            assert_eq!(pieces.concat(), expected, "{text} / {stop:?}");
            assert_on_boundaries(&pieces, text);
        }
    }
}

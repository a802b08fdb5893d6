//! Holds streamed text back to grapheme-cluster boundaries (UAX 29).
//!
//! 👩‍♀️ is four code points (👩, ZWJ, ♀, VS16) that often arrive in separate
//! tokens. Streamed one by one, an app's growing text would show 👩 and then
//! replace it, and Swift, which compares strings by grapheme, would find the
//! earlier text is no prefix of the later. So the last cluster is held until
//! the next one starts: whether a boundary falls before a character depends
//! only on the text up to and including it, so everything before the last
//! cluster's start is final.

use unicode_segmentation::UnicodeSegmentation;

/// A cluster longer than this goes out anyway: a model stuck emitting
/// combining marks must not stall the stream (or make each push rescan an
/// ever longer cluster). Real clusters (a family emoji is 25 bytes) are far
/// shorter.
const MAX_HELD: usize = 1024;

#[derive(Default)]
pub(crate) struct GraphemeBuffer {
    held: String,
}

impl GraphemeBuffer {
    /// Adds `text`; returns what is now complete: everything before the last
    /// cluster, which the next text may still extend.
    pub fn push(&mut self, text: &str) -> String {
        if text.is_empty() {
            return String::new();
        }
        self.held.push_str(text);
        // `held` starts on a boundary, so segmenting it alone gives the
        // same clusters as segmenting the whole text.
        let last = self.held.grapheme_indices(true).next_back().map_or(0, |(start, _)| start);
        let cut = if self.held.len() - last > MAX_HELD { self.held.len() } else { last };
        let rest = self.held.split_off(cut);
        std::mem::replace(&mut self.held, rest)
    }

    /// Releases the held cluster (generation ended: nothing can extend it).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes each piece, then finishes; returns the pieces that went out.
    fn run(pieces: &[&str]) -> Vec<String> {
        let mut g = GraphemeBuffer::default();
        let mut out: Vec<String> = pieces.iter().map(|p| g.push(p)).collect();
        out.push(g.finish());
        out
    }

    #[test]
    fn a_zwj_sequence_split_into_code_points_goes_out_whole() {
        let out = run(&["a👩", "\u{200D}", "♀", "\u{FE0F}", " b"]);
        assert_eq!(out, ["a", "", "", "", "👩\u{200D}♀\u{FE0F} ", "b"]);
    }

    #[test]
    fn flags_pair_regional_indicators() {
        // 🇯🇵🇫🇷 is four regional indicators: two flags, not four letters.
        let out = run(&["🇯", "🇵🇫", "🇷", "!"]);
        assert_eq!(out, ["", "🇯🇵", "", "🇫🇷", "!"]);
    }

    #[test]
    fn combining_marks_skin_tones_and_crlf_stay_with_their_base() {
        assert_eq!(run(&["cafe", "\u{301}", "s"]), ["caf", "", "e\u{301}", "s"]);
        assert_eq!(run(&["👋", "🏽", "x"]), ["", "", "👋🏽", "x"]);
        assert_eq!(run(&["a\r", "\nb"]), ["a", "\r\n", "b"]);
    }

    #[test]
    fn plain_text_is_held_by_one_character_only() {
        assert_eq!(run(&["Hello", " world", ".", ""]), ["Hell", "o worl", "d", "", "."]);
    }

    #[test]
    fn an_endless_cluster_is_released_at_the_cap() {
        let mut g = GraphemeBuffer::default();
        let mut out = g.push("x");
        for _ in 0..2000 {
            out.push_str(&g.push("\u{301}"));
        }
        // Held: at most one cap's worth, never the whole run.
        assert!(out.len() >= 2 * 2000 - MAX_HELD, "{} bytes out", out.len());
        out.push_str(&g.finish());
        assert_eq!(out, format!("x{}", "\u{301}".repeat(2000)));
    }
}

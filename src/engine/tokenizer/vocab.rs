//! Which token ids the tokenizer knows, computed once at load.
//!
//! The model's embedding often has more rows than the tokenizer has tokens
//! (Phi-3: 32064 rows, 32011 tokens), and vocabularies can leave gaps. Those
//! ids decode to nothing, so they must never be sampled or accepted by
//! `decode`; asking the tokenizer per call (`get_vocab_size(true)` rebuilds
//! the whole vocabulary as a map) made every `detokenize` cost milliseconds.

use tokenizers::Tokenizer;

pub(crate) struct VocabIndex {
    /// `known[id]`: the tokenizer has a token for `id`. Ends at the largest
    /// known id, so its length is where the padding rows begin.
    known: Vec<bool>,
    /// Unknown ids below `known.len()` (usually none).
    gaps: Vec<u32>,
}

impl VocabIndex {
    /// Looks at ids `0..rows` (the embedding's rows; the caller has checked
    /// the tokenizer has no id beyond them).
    pub fn new(tokenizer: &Tokenizer, rows: usize) -> Self {
        // By id, not through `get_vocab`: a token string used by two ids
        // (it happens in GGUF vocabularies) maps to one of them only.
        let mut known: Vec<bool> = (0..rows).map(|id| tokenizer.id_to_token(id as u32).is_some()).collect();
        let end = known.iter().rposition(|&k| k).map_or(0, |last| last + 1);
        known.truncate(end);
        let gaps = known.iter().enumerate().filter(|(_, &k)| !k).map(|(id, _)| id as u32).collect();
        Self { known, gaps }
    }

    /// One past the largest id the tokenizer knows.
    pub fn end(&self) -> usize {
        self.known.len()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.known.get(id as usize).copied().unwrap_or(false)
    }

    pub fn gaps(&self) -> &[u32] {
        &self.gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi3_padding_rows_are_outside() {
        let tok = Tokenizer::from_file(crate::engine::test_fixture("phi3-tokenizer.json")).unwrap();
        let v = VocabIndex::new(&tok, 32064);
        assert_eq!(v.end(), 32011);
        assert!(v.gaps().is_empty());
        assert!(v.contains(0) && v.contains(32010));
        assert!(!v.contains(32011) && !v.contains(32063) && !v.contains(u32::MAX));
    }

    #[test]
    fn gaps_are_listed() {
        let vocab = [("a", 0), ("b", 1), ("d", 3)].map(|(t, id)| (t.to_string(), id)).into_iter().collect();
        let model = tokenizers::models::wordlevel::WordLevel::builder().vocab(vocab).build().unwrap();
        let v = VocabIndex::new(&Tokenizer::new(model), 6);
        assert_eq!(v.end(), 4);
        assert_eq!(v.gaps(), [2]);
        assert!(v.contains(3) && !v.contains(2) && !v.contains(4));
    }
}

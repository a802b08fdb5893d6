//! `detokenize` costs O(ids), not O(vocabulary). It used to rebuild the
//! tokenizer's whole vocabulary as a map on every call (3–5 ms per id): one
//! heap allocation per vocabulary entry. Allocations are counted here rather
//! than time measured, so the check is exact on a loaded machine. One test
//! only: the counts are process-wide.

mod common;

use std::sync::Arc;

use phi_mobile::{LanguageModel, ModelConfig};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn detokenize_allocates_per_id_not_per_vocabulary_entry() {
    let smollm2 = common::smollm2_path();
    let models: [(&str, Arc<LanguageModel>); 2] = [
        ("SmolLM2 (GGUF vocabulary)", LanguageModel::load(ModelConfig::new(smollm2.display().to_string())).unwrap()),
        ("Phi-3 tokenizer.json", common::reference_model()),
    ];
    for (name, model) in models {
        let vocab = model.info().vocab_size;
        assert!(vocab > 30_000, "{name}");
        // Ordinary, special and byte tokens, from all over the vocabulary.
        let ids: Vec<i32> = (0..20).map(|i| i * 7919 % vocab).chain([0, 1, 2, 13, vocab - 1]).collect();
        model.detokenize(ids.clone()).unwrap();

        let (_, one_by_one) = common::allocations(|| {
            for &id in &ids {
                model.detokenize(vec![id]).unwrap();
            }
        });
        // A handful per id (its text, the decoder's pieces); a rebuilt
        // vocabulary alone would be `vocab` per call.
        let per_id = one_by_one / ids.len() as u64;
        assert!(per_id < 100, "{name}: {per_id} allocations per detokenize of one id (vocabulary {vocab})");

        let long: Vec<i32> = ids.iter().cycle().take(2000).copied().collect();
        let (_, at_once) = common::allocations(|| {
            model.detokenize(long.clone()).unwrap();
        });
        assert!(at_once < 100 * long.len() as u64, "{name}: {at_once} allocations for {} ids", long.len());
    }
}

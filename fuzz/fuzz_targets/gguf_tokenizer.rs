//! The GGUF-metadata tokenizer path. The input is a metadata-only GGUF; its
//! `tokenizer.*` entries (and `general.name`, which switches on Phi-3's
//! whitespace handling) go into the fixed tiny model, which is then loaded
//! through the public loader. Most inputs thus get past the tensor checks and
//! reach the vocabulary, merges, scores, special ids and chat template.
#![no_main]

use candle_core::quantized::gguf_file::Content;
use libfuzzer_sys::fuzz_target;
use phi_mobile::LanguageModel;
use phi_mobile_fuzz::{config, exercise, scratch, seeds};

fuzz_target!(|data: &[u8]| {
    phi_mobile_fuzz::panic_policy();
    // Parsing the input itself is the load_gguf target's job.
    let Ok(content) = Content::read(&mut std::io::Cursor::new(data)) else { return };
    let mut spec = seeds::tiny_phi3();
    for (k, v) in content.metadata {
        if k.starts_with("tokenizer.") || k == "general.name" {
            spec = spec.with_metadata(&k, v);
        }
    }
    let path = scratch("with-tokenizer.gguf");
    // gguf_file::write refuses some values (mixed-type arrays): not a finding.
    if spec.write(&path).is_err() {
        return;
    }
    if let Ok(model) = LanguageModel::load(config(&path, None)) {
        exercise(&model);
    }
});

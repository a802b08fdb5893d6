//! Any bytes as a model file: GGUF header, metadata, tensor table, tensor
//! data, architecture checks and the GGUF-metadata tokenizer, through the
//! public loader; a model that loads is then used.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phi_mobile::LanguageModel;
use phi_mobile_fuzz::{config, exercise, scratch};

fuzz_target!(|data: &[u8]| {
    phi_mobile_fuzz::panic_policy();
    let path = scratch("input.gguf");
    std::fs::write(&path, data).expect("write input");
    if let Ok(model) = LanguageModel::load(config(&path, None)) {
        exercise(&model);
    }
});

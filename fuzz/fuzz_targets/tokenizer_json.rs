//! Any bytes as a tokenizer.json beside the fixed tiny model, through the
//! public loader; a pair that loads is then used.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phi_mobile::LanguageModel;
use phi_mobile_fuzz::{config, exercise, scratch, tiny_model_file};

fuzz_target!(|data: &[u8]| {
    phi_mobile_fuzz::panic_policy();
    let model = tiny_model_file();
    let tokenizer = scratch("tokenizer.json");
    std::fs::write(&tokenizer, data).expect("write input");
    if let Ok(model) = LanguageModel::load(config(&model, Some(&tokenizer))) {
        exercise(&model);
    }
});

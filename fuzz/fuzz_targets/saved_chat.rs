//! Any bytes as a saved chat (`LanguageModel.restoreSession`): header, model
//! identity, messages, tokens, KV cache and checksum. A chat that restores
//! is then continued and saved again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phi_mobile_fuzz::{saved_chat_model, scratch};

fuzz_target!(|data: &[u8]| {
    phi_mobile_fuzz::panic_policy();
    let model = saved_chat_model();
    let path = scratch("input.phichat");
    std::fs::write(&path, data).expect("write input");
    if let Ok(chat) = model.restore_session(path.display().to_string()) {
        let _ = chat.history();
        let _ = chat.send("more".into(), phi_mobile::GenerationParams::greedy(2), phi_mobile_fuzz::discard(), None);
        let _ = chat.save(scratch("again.phichat").display().to_string());
    }
});

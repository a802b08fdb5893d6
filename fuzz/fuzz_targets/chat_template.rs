//! Any bytes as a chat template (as `tokenizer.chat_template` in a GGUF),
//! compiled with the loader's checks and rendered over a short chat, from a
//! 512 KiB thread (an iOS secondary thread's stack): the library must refuse
//! or render it within bounded stack, memory and time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phi_mobile::engine::{render_untrusted_template, Message, Role};

fuzz_target!(|data: &[u8]| {
    phi_mobile_fuzz::panic_policy();
    let Ok(source) = std::str::from_utf8(data) else { return };
    let source = source.to_string();
    let messages = vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "  Hi <|im_start|>system\n"),
        Message::new(Role::Assistant, "Hello!"),
        Message::new(Role::User, "Bye"),
    ];
    std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            let _ = render_untrusted_template(&source, &messages, 64 << 10);
        })
        .expect("spawn")
        .join()
        .expect("the render thread panicked");
});

//! Writes a synthetic Phi-3 GGUF (see tests/common/synthetic.rs).
//!
//!     cargo run --release --example synthetic_gguf -- reference out.gguf
//!     cargo run --release --example synthetic_gguf -- phi3-mini out.gguf

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (preset, out) = match args.as_slice() {
        [p, o] | [p, o, _, _] => (p.as_str(), o.as_str()),
        [p, src, o] if p == "with-rope-freqs" => {
            // SmolLM2 with Llama 3 rope scaling, for its llama.cpp reference.
            let freqs = synthetic::smollm2_test_rope_freqs();
            if let Err(e) = synthetic::with_rope_freqs(std::path::Path::new(src), std::path::Path::new(o), &freqs) {
                eprintln!("cannot write {o}: {e}");
                std::process::exit(1);
            }
            println!("wrote {o} ({src} with rope_freqs.weight)");
            return;
        }
        _ => {
            eprintln!("usage: synthetic_gguf <reference|quantized|phi3-mini|phi35-like|phi4-like|llama3-like> <out.gguf> [--vocab V.gguf]");
            eprintln!("       synthetic_gguf with-rope-freqs <SmolLM2.gguf> <out.gguf>");
            std::process::exit(2);
        }
    };
    // `--vocab FILE` after the output: its tokenizer metadata goes in too.
    let vocab = std::env::args().skip(3).collect::<Vec<_>>();
    let spec = match preset {
        "reference" => synthetic::Phi3Spec::reference(),
        "quantized" => synthetic::Phi3Spec::quantized(),
        "phi3-mini" => synthetic::Phi3Spec::phi3_mini(),
        "phi35-like" => synthetic::Phi3Spec::phi35_like(),
        "phi4-like" => synthetic::Phi3Spec::phi4_like(),
        "llama3-like" => synthetic::Phi3Spec::llama3_like(),
        other => {
            eprintln!("unknown preset {other}");
            std::process::exit(2);
        }
    };
    let spec = match vocab.as_slice() {
        [flag, path] if flag == "--vocab" => spec.with_vocab_of(std::path::Path::new(path)).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1)
        }),
        _ => spec,
    };
    if let Err(e) = spec.write(std::path::Path::new(out)) {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
    println!("wrote {out} ({preset})");
}

//! Writes a synthetic Phi-3 GGUF (see tests/common/synthetic.rs).
//!
//!     cargo run --release --example synthetic_gguf -- reference out.gguf
//!     cargo run --release --example synthetic_gguf -- phi3-mini out.gguf

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (preset, out) = match args.as_slice() {
        [p, o] => (p.as_str(), o.as_str()),
        _ => {
            eprintln!("usage: synthetic_gguf <reference|quantized|phi3-mini> <out.gguf>");
            std::process::exit(2);
        }
    };
    let spec = match preset {
        "reference" => synthetic::Phi3Spec::reference(),
        "quantized" => synthetic::Phi3Spec::quantized(),
        "phi3-mini" => synthetic::Phi3Spec::phi3_mini(),
        other => {
            eprintln!("unknown preset {other}");
            std::process::exit(2);
        }
    };
    if let Err(e) = spec.write(std::path::Path::new(out)) {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
    println!("wrote {out} ({preset})");
}

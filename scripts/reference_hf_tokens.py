#!/usr/bin/env python3
"""Hugging Face `tokenizers` ids for the corpus of a llama.cpp reference file.

Why: llama.cpp is our reference for GGUF tokenization, but its gpt-4o
pre-tokenizer only emulates the tokenizer.json regex (it has no \\p{M} in its
letter classes, and treats every non-ASCII letter as both cases), so on some
strings it differs from the tokenizer the model was trained with. This records
what Hugging Face's `tokenizers` gives for the same strings, so tests can tell
"matches llama.cpp" from "matches the original tokenizer", and prints where the
two disagree.

Run (venv with `tokenizers`, e.g. ~/.cache/phi-mobile/venv-ref):
    python scripts/reference_hf_tokens.py --tokenizer ~/.cache/phi-mobile/phi4-tokenizer.json \\
        --llamacpp tests/data/phi4_vocab_tokens.json --out tests/data/phi4_vocab_tokens_hf.json

Output (a separate file, so reference_llamacpp.py can regenerate its own as-is):
  {"tokenizer", "tokenizers_version", "llama_cpp_reference", "agree", "cases":
   [{"text", "ids_hf", "same_as_llama_cpp"}]}
  ids_hf = Tokenizer.from_file(...).encode(text, add_special_tokens=True).ids
  (added tokens in the text become their ids, as llama.cpp's parse_special does);
  same_as_llama_cpp compares with that file's ids_special, case by case, in order.
"""

import argparse
import json
import os

import tokenizers
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--llamacpp", required=True, help="reference_llamacpp.py tokenize output")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    tok = Tokenizer.from_file(args.tokenizer)
    with open(args.llamacpp, encoding="utf-8") as f:
        ref = json.load(f)
    cases = []
    for case in ref["cases"]:
        ids = tok.encode(case["text"], add_special_tokens=True).ids
        same = ids == case["ids_special"]
        cases.append({"text": case["text"], "ids_hf": ids, "same_as_llama_cpp": same})
        if not same:
            print(f"differs: {case['text']!r}\n  llama.cpp {case['ids_special']}\n  HF        {ids}")
    agree = sum(c["same_as_llama_cpp"] for c in cases)
    out = {
        "tokenizer": os.path.basename(args.tokenizer),
        "tokenizers_version": tokenizers.__version__,
        "llama_cpp_reference": os.path.basename(args.llamacpp),
        "agree": f"{agree}/{len(cases)}",
        "cases": cases,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"HF and llama.cpp agree on {agree}/{len(cases)} strings -> {args.out}")


if __name__ == "__main__":
    main()

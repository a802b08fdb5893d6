#!/usr/bin/env python3
"""llama.cpp reference for tokenization and greedy generation on GGUF files.

Why: our Rust tokenizer is built from GGUF metadata (tokenizer.ggml.*), the way
llama.cpp builds its own. To test it, this script records llama.cpp's token ids
for a corpus of hard strings, and the greedy continuation llama.cpp computes for
given prompt ids. It calls llama.cpp's C API through llama-cpp-python's ctypes
layer (llama_tokenize / llama_detokenize / llama_decode + logits), never the
high-level Llama class, so no wrapper defaults (samplers, BOS fix-ups,
truncation) get in between.

Setup (built from source; a GGML_NATIVE=ON build crashes in the AMX path here):
    python3 -m venv ~/.cache/phi-mobile/venv-llamacpp
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \\
        ~/.cache/phi-mobile/venv-llamacpp/bin/pip install \\
        --no-binary llama-cpp-python llama-cpp-python==0.3.36 numpy   # ~11 min on 2 cores

Run:
    PY=~/.cache/phi-mobile/venv-llamacpp/bin/python
    $PY scripts/reference_llamacpp.py tokenize --gguf F.gguf \\
        --corpus tests/data/tokenizer_corpus.json --out out.json
    $PY scripts/reference_llamacpp.py greedy --gguf F.gguf --prompts prompts.json --out out.json

tokenize: corpus {"strings": [...]} -> {"model", "llama_cpp_version", "vocab": {...},
  "cases": [{"text", "ids_special", "ids_plain", "detokenized", "detokenized_special"}]}
  ids_special = llama_tokenize(add_special=True,  parse_special=True)  (how llama.cpp
                tokenizes a prompt: BOS/EOS per the GGUF's add_bos/add_eos, special
                token text in the string becomes the special token)
  ids_plain   = llama_tokenize(add_special=False, parse_special=False)
  detokenized = llama_detokenize(ids_plain, remove_special=False, unparse_special=False)
  detokenized_special = llama_detokenize(ids_special, remove_special=False, unparse_special=True)
  The model is loaded with vocab_only=True (no tensors are read).

greedy: prompts {"cases": [{"name", "prompt_ids", "max_new_tokens"}]} ->
  {"model", "llama_cpp_version", "generator", "cases": [{"name", "prompt_ids",
   "expected_ids", "text", "top2_margin_min", "top2_margins", "runner_up_ids"}]}
  n_ctx 2048, n_threads 2, one llama_decode for the prompt, then one token per
  step; next id = numpy argmax of the last position's logits (first index wins a
  tie); no repeat penalty, no stop token, no sampler at all (so no seed matters;
  the KV cache is cleared between cases). text = llama_detokenize(expected_ids,
  remove_special=False, unparse_special=False).
"""

import argparse
import ctypes
import json
import os
import sys

import llama_cpp
from llama_cpp import llama_cpp as L


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet_log(level, text, user_data):  # llama.cpp logs are noise here
    if os.environ.get("LLAMA_LOG"):
        sys.stderr.write(text.decode("utf-8", "replace"))


def load_model(path, vocab_only):
    L.llama_log_set(_quiet_log, ctypes.c_void_p(0))
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.vocab_only = vocab_only
    params.n_gpu_layers = 0
    params.use_mmap = True
    model = L.llama_model_load_from_file(path.encode(), params)
    if not model:
        sys.exit(f"llama.cpp could not load {path} (set LLAMA_LOG=1 to see why)")
    return model


def meta(model, key):
    buf = ctypes.create_string_buffer(1 << 16)
    n = L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def tokenize(vocab, text, add_special, parse_special):
    data = text.encode("utf-8")
    cap = len(data) + 16
    while True:
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
        if n >= 0:
            return list(buf[:n])
        if n == -2147483648:  # INT32_MIN: overflow per llama.h
            raise RuntimeError("llama_tokenize overflow")
        cap = -n


def detokenize(vocab, ids, remove_special, unparse_special):
    arr = (L.llama_token * max(1, len(ids)))(*ids)
    cap = 16 + 8 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(cap)
        n = L.llama_detokenize(vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
        if n >= 0:
            return buf.raw[:n]
        cap = -n


def text_fields(prefix, raw):
    """JSON holds text; keep the bytes too when they are not valid UTF-8."""
    try:
        return {prefix: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {prefix: raw.decode("utf-8", "replace"), prefix + "_hex": raw.hex()}


def cmd_tokenize(args):
    with open(args.corpus, encoding="utf-8") as f:
        strings = json.load(f)["strings"]
    model = load_model(args.gguf, vocab_only=True)
    vocab = L.llama_model_get_vocab(model)
    cases = []
    for s in strings:
        ids_special = tokenize(vocab, s, True, True)
        ids_plain = tokenize(vocab, s, False, False)
        case = {"text": s, "ids_special": ids_special, "ids_plain": ids_plain}
        case.update(text_fields("detokenized", detokenize(vocab, ids_plain, False, False)))
        case.update(text_fields("detokenized_special", detokenize(vocab, ids_special, False, True)))
        cases.append(case)
    out = {
        "model": os.path.basename(args.gguf),
        "llama_cpp_version": llama_cpp.__version__,
        "vocab": {
            "tokenizer.ggml.model": meta(model, "tokenizer.ggml.model"),
            "tokenizer.ggml.pre": meta(model, "tokenizer.ggml.pre"),
            "n_tokens": L.llama_vocab_n_tokens(vocab),
            "bos": L.llama_vocab_bos(vocab),
            "eos": L.llama_vocab_eos(vocab),
            "add_bos": bool(L.llama_vocab_get_add_bos(vocab)),
            "add_eos": bool(L.llama_vocab_get_add_eos(vocab)),
        },
        "cases": cases,
    }
    write_json(args.out, out)
    L.llama_model_free(model)
    print(f"{len(cases)} strings -> {args.out}")


def cmd_greedy(args):
    import numpy as np

    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)["cases"]
    model = load_model(args.gguf, vocab_only=False)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    cparams = L.llama_context_default_params()
    cparams.n_ctx = args.n_ctx
    cparams.n_batch = args.n_ctx
    cparams.n_ubatch = min(512, args.n_ctx)
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    cparams.no_perf = True
    # The cache type is the reference's point (ours is f16 by default, f32 on
    # request), so the plain attention path: llama.cpp's flash attention,
    # which its default "auto" picks on CPU, gave bit-identical logits for
    # an f16 and an f32 cache here, so it is a reference for neither.
    cparams.flash_attn_type = 0  # LLAMA_FLASH_ATTN_TYPE_DISABLED
    if args.kv_f32:
        cparams.type_k = 0  # GGML_TYPE_F32
        cparams.type_v = 0
    else:
        cparams.type_k = 1  # GGML_TYPE_F16
        cparams.type_v = 1
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("llama_init_from_model failed")

    def decode(ids):
        arr = (L.llama_token * len(ids))(*ids)
        rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        logits = L.llama_get_logits_ith(ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(n_vocab,)).copy()

    cases = []
    for case in prompts:
        ids = [int(t) for t in case["prompt_ids"]]
        n_new = int(case["max_new_tokens"])
        if len(ids) + n_new > args.n_ctx:
            sys.exit(f"case {case['name']}: prompt + new tokens exceed n_ctx {args.n_ctx}")
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        logits = decode(ids)
        out_ids, margins, runners_up = [], [], []
        for step in range(n_new):
            order = np.argsort(logits)
            first, second = int(order[-1]), int(order[-2])
            margins.append(float(logits[first] - logits[second]))
            runners_up.append(second)
            nxt = int(np.argmax(logits))
            out_ids.append(nxt)
            if step + 1 < n_new:
                logits = decode([nxt])
        res = {"name": case["name"], "prompt_ids": ids, "expected_ids": out_ids}
        res.update(text_fields("text", detokenize(vocab, out_ids, False, False)))
        res["top2_margin_min"] = min(margins) if margins else None
        # Per position: how far the choice was from its runner-up, and which
        # token that was, so a test can tell a near tie from a divergence.
        res["top2_margins"] = margins
        res["runner_up_ids"] = runners_up
        cases.append(res)
        print(f"{case['name']}: {len(out_ids)} tokens, min top-2 margin {res['top2_margin_min']}")
    out = {
        "model": os.path.basename(args.gguf),
        "llama_cpp_version": llama_cpp.__version__,
        "generator": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) greedy argmax, "
                     f"n_ctx {args.n_ctx}, n_threads {args.threads}, CPU, "
                     f"KV cache {'f32' if args.kv_f32 else 'f16'}, flash attention off",
        "cases": cases,
    }
    write_json(args.out, out)
    L.llama_free(ctx)
    L.llama_model_free(model)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenize", help="llama.cpp token ids for a corpus of strings")
    t.add_argument("--gguf", required=True)
    t.add_argument("--corpus", required=True)
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_tokenize)
    g = sub.add_parser("greedy", help="llama.cpp greedy continuations of prompt ids")
    g.add_argument("--gguf", required=True)
    g.add_argument("--prompts", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--n-ctx", type=int, default=2048)
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--kv-f16", dest="kv_f32", action="store_false",
                   help="use llama.cpp's default f16 KV cache instead of f32")
    g.set_defaults(func=cmd_greedy)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

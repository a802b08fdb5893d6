#!/usr/bin/env python3
"""Ground-truth greedy continuations for a Phi-3 GGUF, computed with Hugging Face
transformers' Phi3ForCausalLM (CPU, float32).

Why: our Rust engine runs Phi-3 through candle's quantized_phi3. To test it against an
independent implementation, this script dequantizes every tensor of the same GGUF file
(F32/F16/BF16/Q8_0/Q4_K/... via gguf.quants.dequantize), loads the weights into
transformers' reference Phi-3 model, and writes the greedy token ids it produces for
each prompt. For each case it also records the smallest gap between the best and
second-best logit over all steps, so a test author can see how robust an exact-id
comparison is (candle's quantized matmuls quantize activations too, so near-ties may
legitimately flip).

Setup (CPU-only torch is fine; only PyPI is needed):
    python3 -m venv ~/.cache/phi-mobile/venv-ref
    ~/.cache/phi-mobile/venv-ref/bin/pip install torch transformers gguf numpy tokenizers

Run:
    ~/.cache/phi-mobile/venv-ref/bin/python scripts/reference_phi3.py \\
        --gguf MODEL.gguf --prompts prompts.json --out expected.json

prompts.json:
    {"cases": [{"name": "hello", "prompt_ids": [1, 15043], "max_new_tokens": 8}]}
expected.json:
    {"model": "MODEL.gguf", "generator": "transformers <ver> Phi3ForCausalLM float32 greedy",
     "cases": [{"name", "prompt_ids", "expected_ids", "top2_margin_min", "top2_margins"}]}

Decoding is a hand-written greedy loop (argmax of the last position's logits, no stop
token, no logits processors): the prompt is run in one pass, then one token at a time
with the KV cache (--no-kv-cache recomputes the full sequence instead). With LongRoPE
factors in the file (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini) the loop drops its
cache when the sequence first passes the original context, as Phi3ForCausalLM's own
generate() does, so every step equals a full recompute. The file's rope base, partial
rotary (rope.dimension_count < head size), grouped-query heads and tied output
(no output.weight) are read from it.
Memory: roughly 4 bytes per parameter (about 15 GiB for Phi-3-mini).
"""

import argparse
import inspect
import json
import os
import sys
import time

import numpy as np
import torch
import transformers
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers import Phi3Config, Phi3ForCausalLM

ARCH = "phi3"


def read_meta(reader, key, required=True):
    field = reader.fields.get(key)
    if field is None:
        if required:
            sys.exit(f"error: GGUF metadata key {key!r} is missing")
        return None
    return field.contents()


def load_tensor(t):
    """Dequantize a GGUF tensor to a float32 torch tensor in PyTorch [out, in] layout.

    GGUF/ggml lists dimensions innermost first (ne0 = input features), so the PyTorch
    shape is the reverse of `t.shape`.
    """
    arr = dequantize(t.data, t.tensor_type)
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    arr = np.asarray(arr, dtype=np.float32).reshape(shape)
    # Own the memory (F32 data can be a read-only view into the mmapped file).
    arr = np.array(arr, dtype=np.float32, order="C", copy=True)
    return torch.from_numpy(arr)


def build_config(meta, vocab_size):
    head_dim = meta["hidden_size"] // meta["num_attention_heads"]
    rope_dim = meta["rope_dim"]
    partial = rope_dim / head_dim
    longrope = meta.get("longrope")
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=meta["hidden_size"],
        intermediate_size=meta["intermediate_size"],
        num_hidden_layers=meta["num_hidden_layers"],
        num_attention_heads=meta["num_attention_heads"],
        num_key_value_heads=meta["num_key_value_heads"],
        max_position_embeddings=meta["context_length"],
        original_max_position_embeddings=longrope["original"] if longrope else meta["context_length"],
        rms_norm_eps=meta["rms_norm_eps"],
        hidden_act="silu",
        tie_word_embeddings=meta["tied"],
        sliding_window=None,
        use_cache=True,
        # Decoding never consults these; None keeps them valid for any vocab size.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    params = inspect.signature(Phi3Config.__init__).parameters
    if "rope_parameters" in params:  # transformers >= 5
        kwargs["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": meta["rope_theta"],
            "partial_rotary_factor": partial,
        }
        if longrope:
            kwargs["rope_parameters"].update(
                rope_type="longrope",
                short_factor=longrope["short"],
                long_factor=longrope["long"],
                original_max_position_embeddings=longrope["original"],
                attention_factor=longrope["attn_factor"],
            )
        kwargs["dtype"] = torch.float32
    else:  # transformers 4.x
        kwargs["rope_theta"] = meta["rope_theta"]
        kwargs["rope_scaling"] = (
            {"type": "longrope", "short_factor": longrope["short"], "long_factor": longrope["long"]}
            if longrope
            else None
        )
        kwargs["partial_rotary_factor"] = partial
        kwargs["torch_dtype"] = torch.float32
    config = Phi3Config(**kwargs)
    config._attn_implementation = "eager"
    return config


def load_model(path):
    reader = GGUFReader(path)
    arch = read_meta(reader, "general.architecture", required=False)
    if arch is not None and arch != ARCH:
        sys.exit(f"error: general.architecture is {arch!r}, expected {ARCH!r}")
    meta = {
        "hidden_size": int(read_meta(reader, f"{ARCH}.embedding_length")),
        "num_hidden_layers": int(read_meta(reader, f"{ARCH}.block_count")),
        "num_attention_heads": int(read_meta(reader, f"{ARCH}.attention.head_count")),
        "num_key_value_heads": int(read_meta(reader, f"{ARCH}.attention.head_count_kv")),
        "intermediate_size": int(read_meta(reader, f"{ARCH}.feed_forward_length")),
        "context_length": int(read_meta(reader, f"{ARCH}.context_length")),
        "rope_dim": int(read_meta(reader, f"{ARCH}.rope.dimension_count")),
        "rms_norm_eps": float(read_meta(reader, f"{ARCH}.attention.layer_norm_rms_epsilon")),
    }
    tensors = {t.name: t for t in reader.tensors}
    base = read_meta(reader, f"{ARCH}.rope.freq_base", required=False)
    meta["rope_theta"] = float(base) if base is not None else 10000.0
    meta["tied"] = "output.weight" not in tensors
    if "rope_factors_long.weight" in tensors:
        attn = read_meta(reader, f"{ARCH}.rope.scaling.attn_factor", required=False)
        meta["longrope"] = {
            "short": [float(x) for x in load_tensor(tensors["rope_factors_short.weight"]).reshape(-1)],
            "long": [float(x) for x in load_tensor(tensors["rope_factors_long.weight"]).reshape(-1)],
            "original": int(read_meta(reader, f"{ARCH}.rope.scaling.original_context_length")),
            # None: transformers derives it from the context growth, as the converter does.
            "attn_factor": float(attn) if attn is not None else None,
        }

    def get(name):
        if name not in tensors:
            sys.exit(f"error: tensor {name!r} missing from GGUF")
        return load_tensor(tensors[name])

    embed = get("token_embd.weight")
    vocab_size, hidden = embed.shape
    if hidden != meta["hidden_size"]:
        sys.exit(f"error: token_embd has width {hidden}, expected {meta['hidden_size']}")
    config = build_config(meta, vocab_size)

    sd = {"model.embed_tokens.weight": embed}
    for i in range(meta["num_hidden_layers"]):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        sd[h + "input_layernorm.weight"] = get(b + "attn_norm.weight")
        sd[h + "self_attn.qkv_proj.weight"] = get(b + "attn_qkv.weight")  # rows: q | k | v
        sd[h + "self_attn.o_proj.weight"] = get(b + "attn_output.weight")
        sd[h + "post_attention_layernorm.weight"] = get(b + "ffn_norm.weight")
        sd[h + "mlp.gate_up_proj.weight"] = get(b + "ffn_up.weight")  # rows: gate | up
        sd[h + "mlp.down_proj.weight"] = get(b + "ffn_down.weight")
    sd["model.norm.weight"] = get("output_norm.weight")
    sd["lm_head.weight"] = embed if meta["tied"] else get("output.weight")

    # Build on the meta device so the full-size random init is never materialised,
    # then adopt the dequantized tensors in place.
    with torch.device("meta"):
        model = Phi3ForCausalLM(config)
    expected = model.state_dict()
    for k, v in sd.items():
        if k in expected and tuple(expected[k].shape) != tuple(v.shape):
            sys.exit(f"error: {k}: GGUF gives shape {tuple(v.shape)}, model expects {tuple(expected[k].shape)}")
    model.load_state_dict(sd, strict=True, assign=True)
    # Non-persistent buffers (rotary inv_freq) are not in the state dict: rebuild on CPU.
    rotary_cls = type(model.model.rotary_emb)
    model.model.rotary_emb = rotary_cls(config=config)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        sys.exit(f"error: tensors left uninitialised: {leftovers}")
    model.eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    return model, config


@torch.inference_mode()
def greedy(model, prompt_ids, max_new_tokens, use_kv_cache=True, long_after=None):
    ids = list(prompt_ids)
    out_ids, margins = [], []
    # transformers >= 5.2x names the KV cache argument/output `cache`; older ones `past_key_values`.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past = None
    step_input = torch.tensor([ids], dtype=torch.long)
    for _ in range(max_new_tokens):
        if past is not None and long_after is not None and len(ids) == long_after + 1:
            # Phi3ForCausalLM.prepare_inputs_for_generation: the first step past the
            # original context recomputes everything with the long factors.
            past, step_input = None, torch.tensor([ids], dtype=torch.long)
        if use_kv_cache:
            out = model(input_ids=step_input, use_cache=True, **{cache_arg: past})
            past = getattr(out, cache_arg)
        else:
            out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
        logits = out.logits[0, -1].float()
        top = torch.topk(logits, 2)
        nxt = int(torch.argmax(logits))
        margins.append(float(top.values[0] - top.values[1]))
        ids.append(nxt)
        out_ids.append(nxt)
        step_input = torch.tensor([[nxt]], dtype=torch.long)
    return out_ids, margins


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, help="Phi-3 GGUF model file")
    ap.add_argument("--prompts", required=True, help='JSON: {"cases": [{"name", "prompt_ids", "max_new_tokens"}]}')
    ap.add_argument("--out", required=True, help="where to write expected.json")
    ap.add_argument("--no-kv-cache", action="store_true", help="recompute the full sequence at every step")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with open(args.prompts) as f:
        cases = json.load(f)["cases"]

    t0 = time.time()
    model, config = load_model(args.gguf)
    print(
        f"loaded {os.path.basename(args.gguf)}: vocab {config.vocab_size}, hidden {config.hidden_size}, "
        f"layers {config.num_hidden_layers}, heads {config.num_attention_heads}/{config.num_key_value_heads}, "
        f"ffn {config.intermediate_size} in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )

    results = []
    for case in cases:
        name, prompt_ids, n = case["name"], [int(x) for x in case["prompt_ids"]], int(case["max_new_tokens"])
        if not prompt_ids:
            sys.exit(f"error: case {name!r} has an empty prompt")
        bad = [x for x in prompt_ids if not 0 <= x < config.vocab_size]
        if bad:
            sys.exit(f"error: case {name!r} has ids outside the vocabulary: {bad}")
        t1 = time.time()
        rope = getattr(config, "rope_parameters", None) or {}
        long_after = config.original_max_position_embeddings if rope.get("rope_type") == "longrope" else None
        ids, margins = greedy(model, prompt_ids, n, use_kv_cache=not args.no_kv_cache, long_after=long_after)
        results.append(
            {
                "name": name,
                "prompt_ids": prompt_ids,
                "expected_ids": ids,
                "top2_margin_min": min(margins) if margins else None,
                "top2_margins": margins,
            }
        )
        print(f"{name}: {ids} (min margin {results[-1]['top2_margin_min']}, {time.time() - t1:.1f}s)", file=sys.stderr)

    doc = {
        "model": os.path.basename(args.gguf),
        "generator": f"transformers {transformers.__version__} Phi3ForCausalLM float32 greedy",
        "cases": results,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

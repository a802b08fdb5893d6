#!/usr/bin/env python3
"""Ground-truth greedy continuations for a Llama-architecture GGUF with Llama 3
rope scaling, computed with transformers' LlamaForCausalLM (CPU, float32).

Why: our decoder applies `rope_freqs.weight` (what llama.cpp's converter writes
for Llama 3.1/3.2's rope scaling) as llama.cpp does; this checks the result
against Hugging Face's own "llama3" rope type, computed from the scaling's
parameters rather than from the file's tensor. The file is the synthetic
`llama3-like` model (tests/common/synthetic.rs), whose parameters are passed
with --llama3-rope. The converter stores q/k rows permuted for llama.cpp's
interleaved rope; they are permuted back for transformers' rotate-half one.

Run (the venv of scripts/reference_phi3.py):
    python scripts/reference_llama.py --gguf llama3-like.gguf --prompts p.json \\
        --out expected.json --llama3-rope 8,1,4,32
Input and output formats are reference_phi3.py's.
"""

import argparse
import json
import os
import sys

import torch
import transformers
from gguf import GGUFReader
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_phi3 import greedy, load_tensor, read_meta  # noqa: E402


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's LlamaModel.permute."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_model(path, llama3):
    reader = GGUFReader(path)
    if read_meta(reader, "general.architecture") != "llama":
        sys.exit("error: not a llama GGUF")
    m = lambda k: read_meta(reader, f"llama.{k}")  # noqa: E731
    heads, kv_heads = int(m("attention.head_count")), int(m("attention.head_count_kv"))
    tensors = {t.name: t for t in reader.tensors}
    get = lambda name: load_tensor(tensors[name])  # noqa: E731
    embed = get("token_embd.weight")
    factor, low, high, original = llama3
    config = LlamaConfig(
        vocab_size=embed.shape[0],
        hidden_size=int(m("embedding_length")),
        intermediate_size=int(m("feed_forward_length")),
        num_hidden_layers=int(m("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=int(m("context_length")),
        rms_norm_eps=float(m("attention.layer_norm_rms_epsilon")),
        hidden_act="silu",
        tie_word_embeddings="output.weight" not in tensors,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": float(m("rope.freq_base")),
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": int(original),
        },
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        dtype=torch.float32,
    )
    config._attn_implementation = "eager"
    sd = {"model.embed_tokens.weight": embed, "model.norm.weight": get("output_norm.weight")}
    sd["lm_head.weight"] = get("output.weight") if "output.weight" in tensors else embed
    for i in range(config.num_hidden_layers):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        sd[h + "input_layernorm.weight"] = get(b + "attn_norm.weight")
        sd[h + "self_attn.q_proj.weight"] = unpermute(get(b + "attn_q.weight"), heads)
        sd[h + "self_attn.k_proj.weight"] = unpermute(get(b + "attn_k.weight"), kv_heads)
        sd[h + "self_attn.v_proj.weight"] = get(b + "attn_v.weight")
        sd[h + "self_attn.o_proj.weight"] = get(b + "attn_output.weight")
        sd[h + "post_attention_layernorm.weight"] = get(b + "ffn_norm.weight")
        sd[h + "mlp.gate_proj.weight"] = get(b + "ffn_gate.weight")
        sd[h + "mlp.up_proj.weight"] = get(b + "ffn_up.weight")
        sd[h + "mlp.down_proj.weight"] = get(b + "ffn_down.weight")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(sd, strict=True, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--llama3-rope", required=True, help="factor,low_freq_factor,high_freq_factor,original_context")
    args = ap.parse_args()
    llama3 = [float(x) for x in args.llama3_rope.split(",")]
    model = load_model(args.gguf, llama3)
    results = []
    for case in json.load(open(args.prompts))["cases"]:
        ids, margins = greedy(model, case["prompt_ids"], int(case["max_new_tokens"]))
        results.append({"name": case["name"], "prompt_ids": case["prompt_ids"], "expected_ids": ids,
                        "top2_margin_min": min(margins)})
        print(f"{case['name']}: {ids} (min margin {min(margins)})", file=sys.stderr)
    doc = {"model": os.path.basename(args.gguf),
           "generator": f"transformers {transformers.__version__} LlamaForCausalLM (llama3 rope) float32 greedy",
           "cases": results}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

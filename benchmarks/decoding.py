"""Greedy decoding throughput: reasonlens.generation against a naive loop and the bridge's own ``generate``.

Decodes PrOntoQA prompts (``format_prompt``) greedily, stopping at EOS or ``--max-new-tokens``, with

- ``reasonlens``: :func:`reasonlens.generation.generate` (left-padded batches, KV cache);
- ``naive``: one prompt at a time, no cache, a full forward pass over prompt + output per new token;
- ``bridge``: ``TransformerBridge.generate`` on the same batch (its KV-cache path), and one prompt at a time;

checks that they produce the same tokens, and prints a table and, as the last line, a JSON summary.
The model is ``--model`` (a shipped name or a folder), else the shipped main model, else a randomly
initialised reference-size Llama (6 layers, d_model 128, 4 heads, d_mlp 512) with the reference tokenizer.

    python benchmarks/decoding.py [--model NAME_OR_FOLDER] [--prompts 32] [--max-new-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from timing import timed

from reasonlens.generation import GenerationConfig, generate
from reasonlens.model import list_models, load_model
from reasonlens.ontology.generator import generate as generate_examples
from reasonlens.ontology.prompt import format_prompt


def default_model(tmp: Path) -> tuple[str, str]:
    """The shipped main model, else a random reference-size Llama saved to ``tmp``: (path or name, label)."""
    main = [m for m in list_models() if m.role == "main"]
    if main:
        return main[0].name, main[0].name
    from reasonlens.tokenizer import build_reference_tokenizer
    from reasonlens.train import ArchitectureConfig, build_model

    tok = build_reference_tokenizer()
    build_model(ArchitectureConfig(n_layers=6, d_model=128, n_heads=4, d_mlp=512), tok, seed=0).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return str(tmp), "random reference-size Llama"


def until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def naive(model, prompts: list[str], max_new_tokens: int, eos: int) -> list[list[int]]:
    outs = []
    with torch.no_grad():
        for prompt in prompts:
            tokens, out = model.to_tokens(prompt), []
            while len(out) < max_new_tokens and (not out or out[-1] != eos):
                out.append(int(model(tokens)[0, -1].argmax()))
                tokens = torch.cat([tokens, torch.tensor([[out[-1]]], device=tokens.device)], dim=1)
            outs.append(out)
    return outs


def bridge_generate(model, prompts: list[str], max_new_tokens: int, eos: int, batched: bool) -> list[list[int]]:
    groups = [prompts] if batched else [[p] for p in prompts]
    outs = []
    for group in groups:
        width = max(model.to_tokens(p).shape[1] for p in group)
        seqs = model.generate(group if len(group) > 1 else group[0], max_new_tokens=max_new_tokens, do_sample=False,
                              stop_at_eos=True, use_past_kv_cache=True, return_type="tokens", verbose=False)
        outs += [until_eos(row[width:].tolist(), eos) for row in seqs]
    return outs



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="shipped model name or model folder (default: shipped main model or random)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        name, label = (args.model, args.model) if args.model else default_model(Path(tmp))
        model = load_model(name)
    eos = model.tokenizer.eos_token_id
    examples = generate_examples(args.prompts, hops=(1, 2, 3), ordering=("postorder", "preorder", "random"), seed=7)
    prompts = [format_prompt(e) for e in examples]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop_at_answer=False)

    # warm-up: first calls pay for lazy initialisation
    generate(model, prompts[:2], GenerationConfig(max_new_tokens=2))
    naive(model, prompts[:1], 2, eos)
    bridge_generate(model, prompts[:2], 2, eos, batched=True)

    ours, t_ours = timed(lambda: generate(model, prompts, config).output_ids)
    answered, t_answer = timed(lambda: generate(model, prompts, GenerationConfig(
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop_at_answer=True)).output_ids)
    ref, t_naive = timed(lambda: naive(model, prompts, args.max_new_tokens, eos))
    bridge_b, t_bridge_b = timed(lambda: bridge_generate(model, prompts, args.max_new_tokens, eos, batched=True))
    bridge_1, t_bridge_1 = timed(lambda: bridge_generate(model, prompts, args.max_new_tokens, eos, batched=False))

    n_tokens = sum(map(len, ours))
    rows = [  # method, seconds, outputs, same tokens as the naive loop
        ("reasonlens generate (batched, KV cache)", t_ours, ours, ours == ref),
        ("reasonlens generate, stop_at_answer", t_answer, answered, None),
        ("naive loop (1 prompt, no cache)", t_naive, ref, True),
        ("bridge.generate (batched, KV cache)", t_bridge_b, bridge_b, bridge_b == ref),
        ("bridge.generate (1 prompt, KV cache)", t_bridge_1, bridge_1, bridge_1 == ref),
    ]
    print(f"model: {label}; {len(prompts)} PrOntoQA prompts, greedy, max_new_tokens={args.max_new_tokens}, "
          f"batch_size={args.batch_size}, torch threads={torch.get_num_threads()}; {n_tokens} new tokens")
    print(f"{'method':42s} {'tokens':>7s} {'seconds':>8s} {'tokens/s':>9s}  same tokens as naive")
    for method, seconds, outs, same in rows:
        n = sum(map(len, outs))
        print(f"{method:42s} {n:7d} {seconds:8.2f} {n / seconds:9.1f}  {'-' if same is None else same}")
    print(json.dumps({
        "model": label, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "new_tokens": n_tokens,
        "threads": torch.get_num_threads(), "tokens_per_s": round(n_tokens / t_ours, 1),
        "naive_tokens_per_s": round(n_tokens / t_naive, 1),
        "bridge_generate_tokens_per_s": round(n_tokens / t_bridge_b, 1),
        "speedup_vs_naive": round(t_naive / t_ours, 2), "speedup_vs_bridge_generate": round(t_bridge_b / t_ours, 2),
        "identical_tokens": ours == ref, "bridge_batched_identical_tokens": bridge_b == ref,
        "bridge_single_identical_tokens": bridge_1 == ref,
    }))


if __name__ == "__main__":
    main()

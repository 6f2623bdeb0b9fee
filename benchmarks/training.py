"""Training-loop speed: bfloat16 autocast (``TrainConfig.precision``, ``train --precision bfloat16``) against the
float32 loop the zoo recipe uses.

Runs :func:`reasonlens.train.train` twice on the same batches, one thread each in turn: a stage-6 step of the
recipe (the shipped main model, the queried-property read-out on), ``--steps`` steps in float32 and in bfloat16
autocast, and reports seconds per step (the monitor's final evaluation excluded) and the running losses. On the
same batches it also compares the gradient of the language-model loss from both precisions (cosine similarity and
relative norm of the difference), the measure of how far one bfloat16 step is from the float32 one. Prints a
table and, as the last line, a JSON summary.

    python benchmarks/training.py [--model NAME_OR_FOLDER] [--steps 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from reasonlens.model import main_model_name, model_info
from reasonlens.tokenizer import build_reference_tokenizer
from reasonlens.train import _batch_loss, _collate, _Encoder, _Sampler, _use_precision, cpu_has_bfloat16, train
from reasonlens.zoo_build import STAGE_6


def gradient(model, batch, cfg, pad_id: int) -> torch.Tensor:
    """The flattened gradient of the model's weights on one batch, in ``cfg.precision``."""
    _use_precision(model, cfg.precision)
    model.zero_grad(set_to_none=True)
    _batch_loss(model, None, *_collate(batch, pad_id), cfg).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="starting checkpoint (default: the shipped main model)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = model_info(args.model or main_model_name())
    start = str(info.path) if info else args.model
    base = replace(STAGE_6, init_from=start, stop_after=args.steps, eval_every=10**9, eval_n=4, threads=args.threads)

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "bfloat16"):
            log = train(replace(base, precision=precision), Path(tmp) / precision, progress=False)
            final = log["evals"][-1]
            runs[precision] = {"seconds_per_step": final["seconds"] / final["step"], "loss": final["loss"],
                               "tokens": log["tokens"]}

    from transformers import LlamaForCausalLM

    tok = build_reference_tokenizer()
    batches = list(itertools.islice(_Sampler(base, _Encoder(tok)).batches(base.cot_steps), 4))
    model = LlamaForCausalLM.from_pretrained(start)
    cosines, rel_diffs = [], []
    for batch in batches:
        g32 = gradient(model, batch, replace(base, precision="float32"), tok.pad_token_id)
        g16 = gradient(model, batch, replace(base, precision="bfloat16"), tok.pad_token_id)
        cosines.append(float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)))
        rel_diffs.append(float((g16 - g32).norm() / g32.norm()))

    f32, b16 = runs["float32"], runs["bfloat16"]
    cpu_bfloat16_units = cpu_has_bfloat16()
    print(f"stage-6 steps from {start}: {args.steps} steps per precision, torch threads={torch.get_num_threads()}, "
          f"{f32['tokens']} tokens (both runs the same batches: {f32['tokens'] == b16['tokens']}), "
          f"CPU bfloat16 units: {cpu_bfloat16_units}")
    print(f"{'precision':10s} {'s/step':>7s} {'running loss':>13s}")
    for name, r in runs.items():
        print(f"{name:10s} {r['seconds_per_step']:7.3f} {r['loss']:13.4f}")
    print(f"gradient on {len(batches)} batches, bfloat16 vs float32: cosine >= {min(cosines):.5f}, "
          f"relative difference <= {max(rel_diffs):.4f}")
    print(json.dumps({
        "steps": args.steps, "threads": torch.get_num_threads(), "cpu_bfloat16_units": cpu_bfloat16_units,
        "same_batches": f32["tokens"] == b16["tokens"],
        "float32_seconds_per_step": round(f32["seconds_per_step"], 3),
        "bfloat16_seconds_per_step": round(b16["seconds_per_step"], 3),
        "speedup": round(f32["seconds_per_step"] / b16["seconds_per_step"], 2),
        "float32_loss": round(f32["loss"], 4), "bfloat16_loss": round(b16["loss"], 4),
        "loss_relative_difference": round(abs(b16["loss"] - f32["loss"]) / f32["loss"], 4),
        "gradient_cosine_min": round(min(cosines), 5), "gradient_relative_difference_max": round(max(rel_diffs), 4),
    }))


if __name__ == "__main__":
    main()

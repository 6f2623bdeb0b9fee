"""Scaling: time and peak memory of a step-span patching sweep and an IPG run as the work grows.

Random-weight Qwen2 models (4 blocks, ``d_model / 64`` heads, a quarter of them key-value heads: grouped-query
attention) with the reference tokenizer. Per configuration, two examples of ``T`` random tokens:

- **patching**: ``patch(site="resid_pre", positions="spans")``, the clean and corrupted prompts differing at
  token ``T / 4``, eight equal "step" spans over the second half, every block (32 cells per example);
- **IPG**: ``path_attributions("resid", layers=[1, 2], steps=4)`` on one sequence whose first half is the prompt
  and second half the continuation.

Each (configuration, task) runs in its own process, so its peak resident memory (``ru_maxrss``) is its own; the
model's weights and the process's libraries are in it (the ``baseline`` row: the model loaded, nothing run). The
lengths grow at ``d_model`` 256, the widths at ``T`` 512, and the longest run is repeated at a smaller
``batch_size`` to show the memory it bounds. The last line printed is one JSON object: ``{"rows": [...]}``.

    python benchmarks/scaling.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LENGTHS = (64, 256, 1024, 2048)
WIDTHS = (512, 1024)
N_LAYERS = 4


def build_model(d_model: int, n_ctx: int, folder: Path):
    import torch
    import transformers as tf

    from reasonlens.model import load_model
    from reasonlens.tokenizer import build_reference_tokenizer

    tok = build_reference_tokenizer()
    n_heads = d_model // 64
    config = tf.Qwen2Config(vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model,
                            num_hidden_layers=N_LAYERS, num_attention_heads=n_heads,
                            num_key_value_heads=max(1, n_heads // 4), max_position_embeddings=n_ctx,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    tf.Qwen2ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder))


def run_one(task: str, d_model: int, length: int, batch_size: int, threads: int) -> dict:
    import torch

    from reasonlens.attribution.paths import PathSequences, path_attributions
    from reasonlens.patching import patch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(d_model, length + 8, Path(folder))
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(4, model.cfg.d_vocab, (2, length), generator=generator)
    start = time.perf_counter()
    if task == "patching":
        corrupted = clean.clone()
        corrupted[:, length // 4] = (clean[:, length // 4] + 1) % model.cfg.d_vocab
        half, step = length // 2, length // 16
        spans = [[(half + k * step, half + (k + 1) * step) for k in range(8)]] * 2
        result = patch(model, clean, corrupted, site="resid_pre", positions="spans", spans=spans, metric="kl",
                       normalize="none", batch_size=batch_size, progress=False)
        work = {"rows_run": result.meta["rows_run"], "floor_fraction":
                round(result.meta["forward_cost_floor"] / result.meta["forward_cost"], 3)}
    elif task == "ipg":
        ids = clean[0].tolist()
        seqs = PathSequences([ids[:length // 2]], [ids[length // 2:]], [1.0], [None])
        path_attributions(model, "resid", [1, 2], seqs, steps=4, batch_size=batch_size)
        work = {"rows_run": 2 * 4}
    else:
        work = {}
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"task": task, "d_model": d_model, "tokens": length, "batch_size": batch_size, "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak_mb), **work}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one (task, d_model, tokens, batch_size) run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one), threads=args.threads)))
        return
    runs = [("baseline", 256, 2048, args.batch_size)]
    runs += [(task, 256, length, args.batch_size) for task in ("patching", "ipg") for length in LENGTHS]
    runs += [(task, width, 512, args.batch_size) for task in ("patching", "ipg") for width in WIDTHS]
    runs += [(task, 256, LENGTHS[-1], 4) for task in ("patching", "ipg")]
    rows = []
    for task, d_model, length, batch_size in runs:
        spec = json.dumps({"task": task, "d_model": d_model, "length": length, "batch_size": batch_size})
        out = subprocess.run([sys.executable, __file__, "--one", spec, "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['task']:9s} d_model {d_model:5d}  tokens {length:5d}  batch {batch_size:3d}  "
              f"{row['seconds']:7.2f} s  peak {row['peak_rss_mb']:6d} MB  "
              + "  ".join(f"{k} {v}" for k, v in row.items() if k in ("rows_run", "floor_fraction")), flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()

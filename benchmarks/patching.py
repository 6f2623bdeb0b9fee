"""Activation-patching speed: reasonlens's engine against transformer_lens.patching, on the main reference model.

32 clean / corrupted pairs of one Dutta et al. subtask (2-hop fictional chains, all of one token length so
that transformer_lens can run them without padding), metric: logit difference (answer vs corrupted answer) at
the last position. Two sweeps, each timed for both libraries in this one process:

- ``resid_pre`` by layer x position (``get_act_patch_resid_pre``);
- ``z`` by layer x head x position (``get_act_patch_attn_head_out_by_pos``).

Each sweep is also timed with every row run through every block (``runtime.full_stack``): the engine enters the
stack at the patched block where the model allows (``runtime.enter_at_block``), and ``floor_fraction`` is the
share of the floor it reaches (block x position work of a cell at layer l, position p: (L - l) / L x (T - p) / T
of a forward, summed over the cells, against the work the chunks ran). Then attribution patching on the ``z``
sweep, with its agreement with the exact sweep. The last line printed is one JSON object:
``{"speedup_resid_pre", "speedup_z_by_pos", "max_abs_diff", "speedup_vs_full_stack_...", ...}``.

    python benchmarks/patching.py [--subtask 3] [--pairs 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching draws a bar per sweep

import torch  # noqa: E402
from timing import timed  # noqa: E402


def equal_length_pairs(model, subtask: int, n_pairs: int, seed: int):
    from reasonlens.ontology import generate
    from reasonlens.patching.subtasks import subtask_pairs

    examples = generate(12 * n_pairs, kind="fictional", hops=2, distractor=False, extra_concepts=0, seed=seed,
                        redundant_step_p=0.0)
    pairs = subtask_pairs(model, examples, subtask, seed=seed, skip_uncorruptible=True)
    lengths = pairs.attention_mask.sum(1)
    length, count = Counter(lengths.tolist()).most_common(1)[0]
    if count < n_pairs:
        raise SystemExit(f"only {count} pairs share a length; generate more examples")
    rows = (lengths == length).nonzero().squeeze(1)[:n_pairs]
    width = pairs.clean.shape[1]
    cut = slice(width - length, width)
    return pairs, pairs.clean[rows][:, cut], pairs.corrupted[rows][:, cut], pairs.answer[rows], pairs.corrupted_answer[rows]



def main() -> None:
    import transformer_lens.patching as tlp

    from reasonlens.model import load_model, main_model_name
    from reasonlens.patching.engine import attribution_patch, compare_rankings, patch
    from reasonlens.runtime import full_stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtask", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(main_model_name())
    pairs, clean, corrupted, answer, wrong = equal_length_pairs(model, args.subtask, args.pairs, args.seed)
    diff_pos = (clean != corrupted).float().argmax(1)
    print(f"model {main_model_name()}, subtask {pairs.name}: {len(clean)} pairs of {clean.shape[1]} tokens, "
          f"corruption at position {diff_pos.min().item()}..{diff_pos.max().item()}, {args.threads} threads")

    def tl_metric(logits):
        last = logits[:, -1]
        return (last.gather(1, answer[:, None]) - last.gather(1, wrong[:, None])).mean()

    _, cache = model.run_with_cache(clean)
    figures: dict[str, float] = {}
    diffs = []
    for site, tl_fn in (("resid_pre", tlp.get_act_patch_resid_pre), ("z", tlp.get_act_patch_attn_head_out_by_pos)):
        expected, t_tl = timed(lambda: tl_fn(model, corrupted, cache, tl_metric))
        ours, t_ours = timed(lambda: patch(model, clean, corrupted, metric="logit_diff", answer=answer, wrong=wrong,
                                           site=site, normalize="none", progress=False))
        with full_stack(model):  # every row through every block: what entering mid-stack saves
            plain, t_plain = timed(lambda: patch(model, clean, corrupted, metric="logit_diff", answer=answer,
                                                 wrong=wrong, site=site, normalize="none", progress=False))
        diff = float((ours.mean() - expected).abs().max())
        diffs += [diff, float((ours.mean() - plain.mean()).abs().max())]
        key = "resid_pre" if site == "resid_pre" else "z_by_pos"
        figures[f"speedup_{key}"] = round(t_tl / t_ours, 2)
        figures[f"seconds_tl_{key}"] = round(t_tl, 2)
        figures[f"seconds_reasonlens_{key}"] = round(t_ours, 2)
        figures[f"rows_run_fraction_{key}"] = round(ours.meta["rows_run"] / ours.meta["rows_total"], 3)
        figures[f"speedup_vs_full_stack_{key}"] = round(t_plain / t_ours, 2)
        figures[f"max_abs_diff_vs_full_stack_per_example_{key}"] = float((ours.values - plain.values).abs().max())
        figures[f"floor_fraction_{key}"] = round(ours.meta["forward_cost_floor"] / ours.meta["forward_cost"], 3)
        figures[f"floor_fraction_full_stack_{key}"] = round(plain.meta["forward_cost_floor"] /
                                                           plain.meta["forward_cost"], 3)
        print(f"{site:9s} transformer_lens {t_tl:7.2f} s   reasonlens {t_ours:6.2f} s   "
              f"x{t_tl / t_ours:5.1f}   max |diff| {diff:.2e}   (forward rows run: {ours.meta['rows_run']} of "
              f"{ours.meta['rows_total']}; every block: {t_plain:.2f} s; block x position work "
              f"{ours.meta['forward_cost']:.0f} rows, floor {ours.meta['forward_cost_floor']:.0f})")
        if site == "z":
            exact = ours
    approx, t_atp = timed(lambda: attribution_patch(model, clean, corrupted, metric="logit_diff", answer=answer,
                                                    wrong=wrong, site="z", normalize="none", progress=False))
    agreement = compare_rankings(exact, approx, k=10)
    print(f"attribution patching (z by position): {t_atp:.2f} s, Spearman {agreement['spearman']:.3f}, "
          f"top-10 overlap {agreement['top_k_overlap']:.2f}")
    figures.update(max_abs_diff=max(diffs), seconds_attribution_z_by_pos=round(t_atp, 2),
                   attribution_spearman=round(agreement["spearman"], 3),
                   attribution_top10_overlap=agreement["top_k_overlap"], pairs=len(clean), tokens=clean.shape[1])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

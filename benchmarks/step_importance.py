"""Step-importance speed: the batched readouts of :mod:`reasonlens.importance` against the straightforward way of
computing the same numbers, on the main reference model.

Chains: the gold chains of ``generate(n, hops=3, seed=--seed, redundant_step_p=0.5)`` read by
:func:`~reasonlens.importance.chains.chains_from_examples` (8-12 steps, about 120 tokens each). Four parts, each
timed in this one process as the best of ``--repeats`` runs:

1. **Influence matrix** on ``--chains`` chains, per method (``--methods``, default ``gradient`` and
   ``gradient_x_input``):

   - ``reasonlens``: :func:`~reasonlens.importance.influence.influence_matrix` (the prompt run once without
     gradients; one row per target step, cut after that step, read after the prompt's cached keys and values;
     one forward and one backward for all rows);
   - ``loop``: the paper's way, written out below: for each target step ``k``, one forward and one backward of
     the full sequence, a leaf tensor (a copy of the ``hook_embed`` output) put in its place by a forward hook,
     objective the sum of the softmax probabilities of step ``k``'s actual tokens (each predicted from the
     position before it), then the Frobenius norm of the gradient (``gradient``) or of gradient x embedding
     (``gradient_x_input``) over each earlier step's token block. Row 0 and the diagonal and above stay 0.

2. **Subset scoring** on the same chains; subsets: every prefix (``[]`` to the full chain) and every
   leave-one-out subset of each chain, the searches of :func:`~reasonlens.importance.labels.label_steps`:

   - ``reasonlens``: :func:`~reasonlens.importance.scoring.answer_probabilities` (the prompt run once; all
     subsets of a chain, each followed by the answer-now suffix and the gold answer, as right-padded continuations
     after its cached keys and values); also, as context, a fresh
     :class:`~reasonlens.importance.scoring.SubsetScorer` ``.scores`` in ``"expected"`` mode at temperature 1
     without a nucleus (sufficiency and attainability, so also every subset's whole-string perplexity), its
     sufficiency compared too;
   - ``loop``: one unpadded forward per subset, ``model(torch.tensor([chain.token_ids(keep, suffix)]))``,
     softmax over the full vocabulary at the last position, the probability of the gold label's token.

3. **Step activations** on ``--activation-chains`` chains, every step labelled (1 = the generator's
   ``redundant`` role), mean pooling, all layers:

   - ``reasonlens``: :func:`~reasonlens.importance.activations.step_activations` (chains left-padded in batches,
     the pooling done inside the hooks, only the pooled vectors kept);
   - ``loop``: per chain, ``model.run_with_cache(tokens)`` (the full cache, no names filter, under
     ``torch.no_grad()``), then the mean of ``blocks.{l}.hook_resid_post`` over each step's span from
     ``chain.spans()``, for every layer.

4. ``label_steps(model, chains, TRUE_FALSE_LABELS)`` end to end on the ``--chains`` chains (the study's labelling),
   no comparison: seconds per chain, as context for what the pieces above add up to.

The last line printed is one JSON object: ``{"influence_speedup", "influence_max_abs_diff", "scoring_speedup",
"scoring_max_abs_diff", "activations_speedup", "activations_max_abs_diff", "label_seconds_per_chain", ...}``;
the influence figures pool the methods (summed seconds, the largest difference), per-method ones follow.

    python benchmarks/step_importance.py [--chains 8] [--activation-chains 64] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from timing import timed  # noqa: E402


def loop_influence(model, chain, method: str) -> torch.Tensor:
    """The paper's loop: per target step, one forward and one backward of the whole sequence, the gradient
    taken at a leaf that a forward hook puts in place of ``hook_embed``'s output. ``[step, step]``."""
    ids, spans = chain.token_ids(), chain.spans()
    n = len(spans)
    tokens = torch.tensor([ids], device=model.cfg.device)
    out = torch.zeros(n, n)
    for k in range(1, n):
        leaf = {}

        def inject(act, hook):
            leaf["x"] = act.detach().clone().requires_grad_(True)
            return leaf["x"]

        with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", inject)]):
            logits = model(tokens)
            a, b = spans[k].start, spans[k].end
            probs = logits[0, a - 1:b - 1].float().softmax(-1)
            objective = probs.gather(-1, tokens[0, a:b, None]).sum()
            (grad,) = torch.autograd.grad(objective, leaf["x"])
        g = grad[0].float().cpu()
        if method == "gradient_x_input":
            g = g * leaf["x"][0].detach().float().cpu()
        for j in range(k):
            out[k, j] = torch.linalg.norm(g[spans[j].start:spans[j].end])
    return out


def subsets(chain) -> list[list[int]]:
    """Every prefix (empty to full) and every leave-one-out subset."""
    n = len(chain)
    return [list(range(p)) for p in range(n + 1)] + [[i for i in range(n) if i != j] for j in range(n)]


def loop_answer_probabilities(model, chain, keeps, suffix_ids) -> torch.Tensor:
    """One unpadded forward per subset after the suffix; full-vocabulary softmax at the last position, P(gold)."""
    out = []
    with torch.no_grad():
        for keep in keeps:
            logits = model(torch.tensor([chain.token_ids(keep, suffix_ids)], device=model.cfg.device))
            out.append(float(logits[0, -1].double().softmax(-1)[chain.gold_answer_id]))
    return torch.tensor(out)


def loop_activations(model, chains) -> torch.Tensor:
    """Per chain, the full ``run_with_cache``, then each step's mean of every layer's ``hook_resid_post``.
    ``[step, layer, d_model]`` in chain-then-step order (the order of ``StepSet.from_labels`` with every step
    labelled)."""
    names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    rows = []
    with torch.no_grad():
        for chain in chains:
            _, cache = model.run_with_cache(torch.tensor([chain.token_ids()], device=model.cfg.device))
            for span in chain.spans():
                rows.append(torch.stack([cache[name][0, span.start:span.end].mean(0) for name in names]).float().cpu())
    return torch.stack(rows)


def main() -> None:
    from reasonlens.importance.activations import StepSet, step_activations
    from reasonlens.importance.chains import chains_from_examples
    from reasonlens.importance.influence import influence_matrix
    from reasonlens.importance.labels import label_steps
    from reasonlens.importance.scoring import ScoringConfig, SubsetScorer, answer_probabilities, encode_suffix
    from reasonlens.importance.study import TRUE_FALSE_LABELS
    from reasonlens.model import load_model
    from reasonlens.ontology import generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=8, help="chains for influence, scoring and label_steps")
    parser.add_argument("--activation-chains", type=int, default=64, help="chains for step activations")
    parser.add_argument("--methods", default="gradient,gradient_x_input", help="influence methods (comma-separated)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model("reasonlens-main")
    n_all = max(args.chains, args.activation_chains)
    all_chains = chains_from_examples(model, generate(n_all, hops=3, seed=args.seed, redundant_step_p=0.5))
    chains, act_chains = all_chains[:args.chains], all_chains[:args.activation_chains]
    steps = [len(c) for c in chains]
    tokens = [len(c.token_ids()) for c in chains]
    print(f"model reasonlens-main ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}): {len(chains)} chains of "
          f"{min(steps)}-{max(steps)} steps, {min(tokens)}-{max(tokens)} tokens; {len(act_chains)} chains for "
          f"activations; {args.threads} thread(s), best of {args.repeats}")
    figures: dict[str, object] = {"model": "reasonlens-main", "chains": len(chains),
                                  "activation_chains": len(act_chains), "threads": args.threads,
                                  "repeats": args.repeats, "seed": args.seed,
                                  "steps_mean": round(sum(steps) / len(steps), 1),
                                  "tokens_mean": round(sum(tokens) / len(tokens), 1)}

    # 1. Influence matrices: one batched forward/backward per chain against one per target step.
    t_loop_all = t_lib_all = 0.0
    infl_diffs = []
    for method in args.methods.split(","):
        ours, t_lib = timed(lambda: [influence_matrix(model, c, method=method) for c in chains], args.repeats)
        theirs, t_loop = timed(lambda: [loop_influence(model, c, method) for c in chains], args.repeats)
        diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
        scale = max(float(b.abs().max()) for b in theirs)
        infl_diffs.append(diff)
        t_loop_all, t_lib_all = t_loop_all + t_loop, t_lib_all + t_lib
        print(f"influence {method:16s}  loop {t_loop:6.2f} s   reasonlens {t_lib:6.2f} s   x{t_loop / t_lib:5.2f}   "
              f"max |diff| {diff:.2e} (relative {diff / scale:.1e}, max |I| {scale:.2e})")
        figures.update({f"influence_{method}_seconds_loop": round(t_loop, 3),
                        f"influence_{method}_seconds_reasonlens": round(t_lib, 3),
                        f"influence_{method}_speedup": round(t_loop / t_lib, 2),
                        f"influence_{method}_max_abs_diff": diff, f"influence_{method}_max_rel_diff": diff / scale})

    # 2. Subset scoring: left-padded batches against one unpadded forward per subset.
    keeps = [subsets(c) for c in chains]
    n_subsets = sum(map(len, keeps))
    ours, t_lib = timed(lambda: [answer_probabilities(model, c, k) for c, k in zip(chains, keeps)], args.repeats)
    plain = ScoringConfig(mode="expected", temperature=1.0, top_p=1.0)
    scored, t_scorer = timed(lambda: [SubsetScorer(model, c, plain).scores(k)[0] for c, k in zip(chains, keeps)],
                             args.repeats)
    suffix = encode_suffix(model, plain.suffix)
    theirs, t_loop = timed(lambda: [loop_answer_probabilities(model, c, k, suffix) for c, k in zip(chains, keeps)],
                           args.repeats)
    s_diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    scorer_diff = max(float((a - b).abs().max()) for a, b in zip(scored, theirs))
    print(f"scoring ({n_subsets} subsets)  loop {t_loop:6.2f} s   answer_probabilities {t_lib:6.2f} s   "
          f"x{t_loop / t_lib:5.2f}   max |diff| {s_diff:.2e};   SubsetScorer.scores (+ NLL, references) "
          f"{t_scorer:6.2f} s   x{t_loop / t_scorer:5.2f}   sufficiency max |diff| {scorer_diff:.2e}")
    figures.update(subsets=n_subsets, scoring_seconds_loop=round(t_loop, 3), scoring_seconds_reasonlens=round(t_lib, 3),
                   scoring_seconds_subset_scorer=round(t_scorer, 3),
                   scorer_speedup=round(t_loop / t_scorer, 2), scorer_max_abs_diff=scorer_diff)

    # 3. Step activations: pooled in the hooks over padded batches against the full cache per chain.
    labels = [[role == "redundant" for role in c.roles] for c in act_chains]
    step_set = StepSet.from_labels(act_chains, labels)
    acts, t_act = timed(lambda: step_activations(model, step_set, pooling="mean"), args.repeats)
    expected, t_act_loop = timed(lambda: loop_activations(model, act_chains), args.repeats)
    a_diff = float((acts - expected).abs().max())
    a_scale = float(expected.abs().max())
    print(f"activations ({len(step_set)} steps x {model.cfg.n_layers} layers)  run_with_cache loop {t_act_loop:6.2f} s"
          f"   reasonlens {t_act:6.2f} s   x{t_act_loop / t_act:5.2f}   max |diff| {a_diff:.2e} "
          f"(relative {a_diff / a_scale:.1e})")
    figures.update(activation_steps=len(step_set), activations_seconds_loop=round(t_act_loop, 3),
                   activations_seconds_reasonlens=round(t_act, 3))

    # 4. The labelling pipeline end to end, as context.
    result, t_label = timed(lambda: label_steps(model, chains, TRUE_FALSE_LABELS), args.repeats)
    print(f"label_steps on {len(chains)} chains: {t_label:.2f} s ({t_label / len(chains):.3f} s per chain), "
          f"filter counts {result.filter_counts}")
    figures.update(label_seconds=round(t_label, 3), label_filter_counts=result.filter_counts)

    figures = {"influence_speedup": round(t_loop_all / t_lib_all, 2), "influence_max_abs_diff": max(infl_diffs),
               "scoring_speedup": round(t_loop / t_lib, 2), "scoring_max_abs_diff": s_diff,
               "activations_speedup": round(t_act_loop / t_act, 2), "activations_max_abs_diff": a_diff,
               "label_seconds_per_chain": round(t_label / len(chains), 3), **figures}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

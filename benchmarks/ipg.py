"""Integrated Policy Gradient speed: reasonlens's batched path integral against the paper's direct loop, and
plain integrated gradients against captum's ``LayerIntegratedGradients``, on the headroom reference model (IPG of
correctness needs groups whose sampled chains disagree; the main model answers almost every one right).

1. IPG. ``--prompts`` M examples (``generate(M, hops=3)``), ``--samples`` N trajectories each (temperature 0.6,
   top-p 0.8, sampled once), correctness rewards, GRPO advantages; the informative trajectories (advantage not
   0) become ``PathSequences`` with weights ``A / N``. On exactly those sequences, per kind (``--kinds``):

   - ``reasonlens``: :func:`reasonlens.attribution.paths.path_attributions` (rows = sequence x step, batched,
     prompt prefix KV-cached, one forward and one backward per chunk);
   - ``loop``: the paper's method as direct pseudocode: for every layer, trajectory and Riemann step
     ``k = 1..q``, one forward and one backward of the full prompt + trajectory with a leaf tensor (the
     interpolated activation, or the head gate) written in by a forward hook.

   Both give ``[sequence, layer, unit]`` scores, compared element by element. As a check that the sequences
   are the ones IPG itself attributes, ``IntegratedPolicyGradient(...).attribute`` is run end to end once and
   compared with the per-prompt sums of the ``reasonlens`` scores.
2. Plain IG of the gold answer's log-probability, teacher-forced on the gold chain of thought, along IPG's
   path (zero baseline at the positions that predict the chain and answer, the actual activation elsewhere):

   - ``reasonlens``: :class:`reasonlens.attribution.ipg.IntegratedGradients`;
   - ``captum``: ``LayerIntegratedGradients`` on the hook point ``blocks.{l}.hook_resid_post`` (an
     ``nn.Module``), one layer at a time. captum interpolates the layer's output between its values for
     ``inputs`` and ``baselines``; the forward function takes a scale ``[batch, 1]`` that a TransformerLens
     hook, registered on the same hook point before captum's, multiplies the chain positions by. With
     ``inputs = 1``, ``baselines = 0``, ``method="riemann_right"``, ``n_steps=q`` the interpolated output is
     ``alpha * h`` at the chain positions and ``h`` elsewhere: our path, so captum's attributions summed
     over positions are our scores. Run on all M examples at once (right-padded, so causal attention leaves
     the real positions alone) and, as most captum examples do, one example at a time; the speedup is
     against the faster of the two.

The floor: a row at layer ``l`` must run at least the blocks after block ``l`` over the positions from the first
interpolated one, ``(L - l - 1) / L x T / (P + T)`` of the loop's forward and backward of the whole sequence
(``P`` prompt and ``T`` trajectory tokens). ``{kind}_floor_speedup`` is the loop's block x position work over that
floor, the ratio an engine with no other cost would reach; ``{kind}_floor_fraction`` is the measured speedup over
it.

Timings run in this one process, each the best of ``--repeats``. The last line printed is one JSON object:
``{"speedup_vs_loop", "max_abs_diff", "speedup_vs_captum", "captum_max_abs_diff", ...}``.

    python benchmarks/ipg.py [--model reasonlens-headroom] [--prompts 8] [--samples 5] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from timing import timed  # noqa: E402

HOOKS = {"resid": "blocks.{l}.hook_resid_post", "neuron": "blocks.{l}.mlp.hook_post", "head": "blocks.{l}.attn.hook_z"}



def sample_sequences(model, examples, n_samples: int, seed: int, max_new_tokens: int, batch_size: int):
    """Sample N trajectories per prompt as IPG does, score them, and build the informative PathSequences."""
    from reasonlens.attribution.ipg import group_advantages
    from reasonlens.attribution.paths import PathSequences
    from reasonlens.attribution.rewards import Trajectory, correctness, score
    from reasonlens.generation import GenerationConfig, generate
    from reasonlens.ontology import format_prompt

    gen = generate(model, [format_prompt(e) for e in examples],
                   GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.6, top_p=0.8, seed=seed,
                                    num_samples=n_samples, batch_size=max(batch_size, n_samples)))
    rewards = torch.tensor([score(correctness, examples[gen.prompt_index[i]],
                                  Trajectory(gen.texts[i], gen.answers[i], gen.output_ids[i], gen.prompt_ids[i]))
                            for i in range(len(gen))], dtype=torch.float64).reshape(len(examples), n_samples)
    advantages = group_advantages(rewards)
    informative = [(m, n) for m in range(len(examples)) for n in range(n_samples)
                   if advantages[m, n] != 0 and gen.output_ids[m * n_samples + n]]
    seqs = PathSequences(prompt_ids=[gen.prompt_ids[m * n_samples + n] for m, n in informative],
                         output_ids=[gen.output_ids[m * n_samples + n] for m, n in informative],
                         weights=[float(advantages[m, n]) / n_samples for m, n in informative],
                         n_target=[None] * len(informative))
    return seqs, [m for m, _ in informative], rewards


def loop_attributions(model, kind: str, layers: list[int], seqs, steps: int) -> torch.Tensor:
    """The paper's direct loop (zero baseline): per layer, trajectory and step k = 1..q, one forward and one
    backward on the whole prompt + trajectory, the leaf written in by a forward hook. ``[seq, layer, unit]``."""
    names = [HOOKS[kind].format(l=l) for l in layers]
    units = {"resid": model.cfg.d_model, "neuron": model.cfg.d_mlp, "head": model.cfg.n_heads}[kind]
    out = torch.zeros(len(seqs.prompt_ids), len(layers), units)
    for s, (prompt, output) in enumerate(zip(seqs.prompt_ids, seqs.output_ids)):
        ids = torch.tensor([prompt + output], device=model.cfg.device)
        pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(output), device=ids.device)  # predict a_1..a_T
        target = torch.tensor(output, device=ids.device)[:, None]
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=names)
        for li, name in enumerate(names):
            h = cache[name][0, pos]
            total = torch.zeros(units) if kind == "head" else torch.zeros_like(h)
            for k in range(1, steps + 1):
                if kind == "head":
                    leaf = torch.full((units,), k / steps, device=ids.device, requires_grad=True)

                    def hook(act, hook, leaf=leaf):
                        act = act.clone()
                        act[0, pos] = act[0, pos] * leaf[None, :, None]
                        return act
                else:
                    leaf = (k / steps * h).detach().requires_grad_()

                    def hook(act, hook, leaf=leaf):
                        act = act.clone()
                        act[0, pos] = leaf
                        return act
                with model.hooks(fwd_hooks=[(name, hook)]):
                    logits = model(ids)
                logp = torch.log_softmax(logits[0, pos].float(), -1).gather(-1, target)[:, 0]
                (grad,) = torch.autograd.grad(seqs.weights[s] * logp.sum(), leaf)
                total += grad.float().cpu()
            out[s, li] = total / steps if kind == "head" else (h.float().cpu() * total / steps).sum(0)
    return out


def floor_speedup(n_layers: int, layers: list[int], seqs) -> float | None:
    """The loop's block x position work over the floor's (module docstring); None when the floor is empty."""
    floor = sum((n_layers - l - 1) / n_layers * len(o) / (len(p) + len(o))
                for l in layers for p, o in zip(seqs.prompt_ids, seqs.output_ids))
    return len(layers) * len(seqs.prompt_ids) / floor if floor else None


def gold_rows(model, examples):
    """Prompt + gold chain + answer token ids per example, with the interpolated (chain) and target spans."""
    from reasonlens.ontology import format_prompt

    tok = model.tokenizer
    rows = []
    for e in examples:
        prompt = model.to_tokens(format_prompt(e), truncate=False)[0].tolist()
        chain = tok(" " + e.cot_text, add_special_tokens=False)["input_ids"]
        answer = tok(" " + e.answer, add_special_tokens=False)["input_ids"]
        rows.append((prompt, chain + answer, len(answer)))
    return rows


def captum_batch(model, rows):
    """Right-padded tokens ``[B, L]``, the chain positions ``[B, L]`` (those that predict a chain or answer
    token), the answer positions ``[B, L]`` and the token each position predicts ``[B, L]``."""
    width = max(len(p) + len(o) for p, o, _ in rows)
    pad = model.tokenizer.pad_token_id or 0
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    chain = torch.zeros(len(rows), width, dtype=torch.bool)
    answer = torch.zeros(len(rows), width, dtype=torch.bool)
    nxt = torch.zeros(len(rows), width, dtype=torch.long)
    for b, (prompt, output, n_answer) in enumerate(rows):
        seq, P, T = prompt + output, len(prompt), len(output)
        tokens[b, :len(seq)] = torch.tensor(seq)
        nxt[b, :len(seq) - 1] = torch.tensor(seq[1:])
        chain[b, P - 1:P - 1 + T] = True
        answer[b, P - 1 + T - n_answer:P - 1 + T] = True
    device = model.cfg.device
    return tokens.to(device), chain.to(device), answer.to(device), nxt.to(device)


def captum_ig(model, rows, layers: list[int], steps: int, kind: str = "resid") -> torch.Tensor:
    """IG of the answer's log-probability with captum, our path via the scale trick. ``[example, layer, unit]``."""
    from captum.attr import LayerIntegratedGradients

    tokens, chain, answer, nxt = captum_batch(model, rows)
    state: dict[str, torch.Tensor] = {}

    def forward(scale, tokens, chain, answer, nxt):
        state["scale"], state["chain"] = scale, chain
        logits = model(tokens, attention_mask=torch.ones_like(tokens))
        logp = torch.log_softmax(logits.float(), -1).gather(-1, nxt[..., None])[..., 0]
        return (logp * answer).sum(1)

    def scale_chain(act, hook):  # runs before captum's hook on the same module
        scale, where = state["scale"].to(act.dtype), state["chain"]
        shape = (-1, 1) + (1,) * (act.dim() - 2)
        return act * torch.where(where.view(where.shape + (1,) * (act.dim() - 2)), scale.view(shape),
                                 torch.ones((), dtype=act.dtype, device=act.device))

    out = []
    for l in layers:
        name = HOOKS[kind].format(l=l)
        with model.hooks(fwd_hooks=[(name, scale_chain)]):
            lig = LayerIntegratedGradients(forward, model.hook_dict[name])
            ones = torch.ones(len(rows), 1, device=tokens.device)
            attr = lig.attribute(ones, baselines=torch.zeros_like(ones), additional_forward_args=(tokens, chain, answer, nxt),
                                 n_steps=steps, method="riemann_right")
        attr = attr.float().sum(1)  # over positions
        # heads: over d_head too (the hook point's module sees z flattened to [batch, pos, head * d_head])
        out.append(attr.reshape(len(rows), model.cfg.n_heads, -1).sum(-1) if kind == "head" else attr)
    return torch.stack(out, 1).cpu()


def captum_per_example(model, rows, layers, steps, kind="resid"):
    return torch.cat([captum_ig(model, [r], layers, steps, kind) for r in rows])


def main() -> None:
    from reasonlens.attribution.ipg import IntegratedGradients, IntegratedPolicyGradient, IPGConfig
    from reasonlens.attribution.paths import path_attributions
    from reasonlens.model import load_model
    from reasonlens.ontology import generate as generate_examples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="reasonlens-headroom", help="shipped model name or model folder")
    parser.add_argument("--prompts", type=int, default=8, help="M, the support set")
    parser.add_argument("--samples", type=int, default=5, help="N, trajectories per prompt")
    parser.add_argument("--steps", type=int, default=10, help="q, Riemann points")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--kinds", default="resid,neuron,head", help="IPG component kinds to time (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per forward for reasonlens (IPGConfig's default)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2, help="timings are the best of this many runs")
    parser.add_argument("--seed", type=int, default=0, help="data and sampling seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model)
    layers, q, kinds = sorted(args.layers), args.steps, args.kinds.split(",")
    examples = generate_examples(args.prompts, hops=3, seed=args.seed)
    figures: dict[str, object] = {"model": args.model, "prompts": args.prompts, "samples": args.samples,
                                  "steps": q, "layers": layers, "threads": args.threads,
                                  "batch_size": args.batch_size, "repeats": args.repeats, "seed": args.seed}

    # 1. IPG: the library's path integral against the paper's loop, on the same sampled trajectories.
    seqs, prompt_of, rewards = sample_sequences(model, examples, args.samples, args.seed, args.max_new_tokens,
                                                args.batch_size)
    if not seqs.prompt_ids:
        raise SystemExit("no informative trajectory (every group agrees); try another --seed or more --prompts")
    lengths = [len(p) + len(o) for p, o in zip(seqs.prompt_ids, seqs.output_ids)]
    out_lengths = [len(o) for o in seqs.output_ids]
    print(f"model {args.model}: {args.prompts} prompts x {args.samples} samples, accuracy "
          f"{rewards.mean():.2f}, {len(seqs.prompt_ids)} informative trajectories ({len(set(prompt_of))} prompts), "
          f"{min(lengths)}-{max(lengths)} tokens (trajectory {min(out_lengths)}-{max(out_lengths)}), q={q}, "
          f"layers {layers}, {args.threads} thread(s)")
    figures.update(trajectories=len(seqs.prompt_ids), tokens_mean=round(sum(lengths) / len(lengths), 1),
                   trajectory_tokens_mean=round(sum(out_lengths) / len(out_lengths), 1))
    for kind in kinds:
        result, t_lib = timed(lambda: path_attributions(model, kind, layers, seqs, steps=q, batch_size=args.batch_size),
                              args.repeats)
        expected, t_loop = timed(lambda: loop_attributions(model, kind, layers, seqs, q), args.repeats)
        diff = float((result.attributions - expected).abs().max())
        scale = float(expected.abs().max())
        floor = floor_speedup(model.cfg.n_layers, layers, seqs)
        fraction = None if floor is None else t_loop / t_lib / floor
        print(f"IPG {kind:5s}  loop {t_loop:7.2f} s   reasonlens {t_lib:6.2f} s   x{t_loop / t_lib:5.2f}   "
              f"max |diff| {diff:.2e} (relative {diff / scale:.1e}, max |score| {scale:.2e})   "
              + ("" if floor is None else f"floor x{floor:.1f}, reached {fraction:.0%}"))
        figures.update({f"{kind}_seconds_loop": round(t_loop, 2), f"{kind}_seconds_reasonlens": round(t_lib, 2),
                        f"{kind}_speedup_vs_loop": round(t_loop / t_lib, 2), f"{kind}_max_abs_diff": diff,
                        f"{kind}_max_rel_diff": diff / scale,
                        f"{kind}_floor_speedup": None if floor is None else round(floor, 2),
                        f"{kind}_floor_fraction": None if fraction is None else round(fraction, 3)})
        if kind == kinds[0]:
            lib_scores = result.attributions

    # The sequences above are the ones IPG attributes: the end-to-end run gives their per-prompt sums.
    cfg = IPGConfig(component=kinds[0], layers=tuple(layers), steps=q, n_samples=args.samples, seed=args.seed,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    ipg, t_ipg = timed(lambda: IntegratedPolicyGradient(model, cfg).attribute(examples))
    per_prompt = torch.zeros_like(ipg.values).index_add_(0, torch.tensor(prompt_of), lib_scores)
    e2e = float((ipg.values - per_prompt).abs().max())
    print(f"IntegratedPolicyGradient.attribute end to end (sampling included): {t_ipg:.2f} s, "
          f"max |diff| to the per-prompt sums above {e2e:.1e}")
    figures.update(seconds_ipg_end_to_end=round(t_ipg, 2), ipg_end_to_end_max_abs_diff=e2e)

    # 2. Plain integrated gradients against captum's LayerIntegratedGradients.
    rows = gold_rows(model, examples)
    ours, t_ours = timed(lambda: IntegratedGradients(model, component="resid", layers=layers, steps=q,
                                                     batch_size=args.batch_size).attribute(examples).values, args.repeats)
    theirs, t_captum = timed(lambda: captum_ig(model, rows, layers, q), args.repeats)
    single, t_single = timed(lambda: captum_per_example(model, rows, layers, q), args.repeats)
    scale = float(theirs.abs().max())
    c_diff = float((ours - theirs).abs().max())
    s_diff = float((ours - single).abs().max())
    t_best = min(t_captum, t_single)  # the faster way of running captum
    print(f"IG resid  captum batched {t_captum:6.2f} s   captum per example {t_single:6.2f} s   reasonlens "
          f"{t_ours:6.2f} s   x{t_best / t_ours:5.2f} (vs the faster captum)   max |diff| {c_diff:.2e} "
          f"(relative {c_diff / scale:.1e}; per example {s_diff:.2e})")
    first = kinds[0]
    figures = {"speedup_vs_loop": figures[f"{first}_speedup_vs_loop"], "max_abs_diff": figures[f"{first}_max_abs_diff"],
               "max_rel_diff": figures[f"{first}_max_rel_diff"], "speedup_vs_captum": round(t_best / t_ours, 2),
               "captum_max_abs_diff": max(c_diff, s_diff), "captum_max_rel_diff": max(c_diff, s_diff) / scale,
               "seconds_ig_reasonlens": round(t_ours, 2), "seconds_ig_captum_batched": round(t_captum, 2),
               "seconds_ig_captum_per_example": round(t_single, 2), **figures}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Rule-choice speed: :func:`reasonlens.evaluate.rule_choices` (per question the prompt run once and cached, the
gold chain one row after it, each other candidate rule one row, ``--batch-size`` rows per forward) against the
straightforward way, one forward of ``prompt + gold steps so far + candidate`` per candidate, on the main
reference model.

Questions: ``generate(--n, kind="fictional", hops=h, seed=--seed)`` for h in 1..4. Both ways are timed in this
one process as the best of ``--repeats`` runs; the last line printed is one JSON object of the figures (seconds,
speedup, the largest difference of the log-probability margins, whether every choice agrees).

    OMP_NUM_THREADS=1 python benchmarks/rule_choice.py
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import timed

from reasonlens import load_model
from reasonlens.evaluate import rule_choice_points, rule_choices
from reasonlens.ontology import generate
from reasonlens.ontology.prompt import format_prompt


def loop(model, examples) -> list[tuple[str, float]]:
    """(decision, margin) per choice point, one forward per candidate rule."""
    tok = model.tokenizer
    out = []
    for e in examples:
        for i, step, others in rule_choice_points(e):
            prefix = model.to_tokens(" ".join([format_prompt(e), *[s.text for s in e.cot[:i]]]))[0].tolist()
            scores = []
            for text in [step.text, *others]:
                cand = tok(" " + text, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logp = model(torch.tensor([prefix + cand])).double().log_softmax(-1)[0]
                scores.append(sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(cand)))
            out.append(("stop" if step.fact.kind == "property" else "continue", scores[0] - max(scores[1:])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="reasonlens-main")
    ap.add_argument("--n", type=int, default=25, help="questions per hop count (1-4)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.model)
    examples = [e for h in (1, 2, 3, 4) for e in generate(args.n, kind="fictional", hops=h, seed=args.seed)]
    batched, t_batched = timed(lambda: rule_choices(model, examples, batch_size=args.batch_size), args.repeats)
    direct, t_loop = timed(lambda: loop(model, examples), args.repeats)
    assert len(batched) == len(direct)
    diff = max(abs(c.margin - m) for c, (_, m) in zip(batched, direct))
    agree = all(c.decision == d and c.correct == (m > 0) for c, (d, m) in zip(batched, direct))
    print(f"{len(examples)} questions, {len(batched)} choice points")
    print(f"rule_choices (batch {args.batch_size}): {t_batched:.2f} s")
    print(f"one forward per candidate: {t_loop:.2f} s")
    print(json.dumps({"benchmark": "rule_choice", "model": args.model, "questions": len(examples),
                      "choice_points": len(batched), "reasonlens_s": round(t_batched, 3), "loop_s": round(t_loop, 3),
                      "speedup": round(t_loop / t_batched, 2), "max_abs_margin_diff": diff,
                      "all_choices_agree": agree}))


if __name__ == "__main__":
    main()

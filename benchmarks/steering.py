"""Steering many component sets on one question set: each setting decoded on its own against the same settings
sharing a :class:`reasonlens.generation.PromptPrefill` (the prompt pass below the first steered block runs once).

Greedy decoding of ``--questions`` 3-hop fictional questions on the headroom model, suppressing (gamma 0) and
enhancing (gamma 1.5) ``--sets`` random sets of ``--p`` components of ``--component`` at ``--layers`` (the IPG
study's default: 16 residual dimensions of layers 3 and 4). Checks that both ways decode the same texts; prints a
table and, as the last line, a JSON summary.

    python benchmarks/steering.py [--questions 300] [--sets 6] [--p 16] [--component resid] [--layers 3 4]
"""

from __future__ import annotations

import argparse
import json

from timing import timed

from reasonlens.attribution import RandomAttribution, steer
from reasonlens.generation import PromptPrefill
from reasonlens.model import load_model
from reasonlens.ontology import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reasonlens-headroom")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--sets", type=int, default=6)
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--component", default="resid", choices=["resid", "neuron", "head"])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4])
    args = parser.parse_args()

    model = load_model(args.model)
    questions = generate(args.questions, kind="fictional", hops=3, seed=2000)
    selections = [RandomAttribution(model, component=args.component, layers=args.layers, seed=i).attribute().top(args.p)
                  for i in range(args.sets)]
    settings = [(s, gamma) for s in selections for gamma in (0.0, 1.5)]
    steer(model, questions[:16], selections[0], 0.0)  # warm-up
    plain, plain_s = timed(lambda: [steer(model, questions, s, g) for s, g in settings])
    prefill = PromptPrefill()
    shared, shared_s = timed(lambda: [steer(model, questions, s, g, prefill=prefill) for s, g in settings])
    identical = all(a == b for a, b in zip(plain, shared))
    print(f"{len(settings)} settings x {args.questions} questions, {args.component} at layers {args.layers}")
    print(f"{'each setting alone':28s} {plain_s:7.1f} s")
    print(f"{'one shared PromptPrefill':28s} {shared_s:7.1f} s   {plain_s / shared_s:.2f}x, identical outcomes: {identical}")
    print(json.dumps({"settings": len(settings), "questions": args.questions, "component": args.component,
                      "layers": args.layers, "seconds_each_alone": round(plain_s, 2),
                      "seconds_shared_prefill": round(shared_s, 2), "speedup_shared_prefill": round(plain_s / shared_s, 3),
                      "identical": identical}))


if __name__ == "__main__":
    main()

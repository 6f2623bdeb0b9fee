"""Evaluate a checkpoint: python staging/v2-pilot/evaluate_pilot.py CHECKPOINT N OUT.json"""
import sys, json, torch
torch.set_num_threads(1)
import reasonlens
from reasonlens.evaluate import EvalConfig, evaluate, evaluate_examples, answer_now
from reasonlens.ontology.generator import generate, V1_SIZES
from reasonlens.stats import wilson_interval
ckpt = sys.argv[1]; n = int(sys.argv[2])
model = reasonlens.load_model(ckpt)
out = {}
r = evaluate(model, EvalConfig(n_per_cell=n, seed=7, kinds=("fictional", "false"), hops=(1, 2, 3, 4, 5)))
m = r.metrics()
out["default"] = {k: m[k] for k in ("label_accuracy", "proof_accuracy", "closed_book_accuracy", "rule_choice_accuracy")}
out["answer_now_default"] = m["answer_now"]
print(json.dumps(out["default"]), flush=True)
print(json.dumps(m["answer_now"]), flush=True)
v1 = {}
for kind in ("fictional", "false"):
    for hops in (1, 3, 5):
        ex = generate(n, kind=kind, hops=hops, seed=777, ordering=("postorder","preorder","random"), **V1_SIZES)
        recs = evaluate_examples(model, ex, batch_size=50)
        lab = sum(x.label_correct for x in recs); pr = sum(x.proof_exact for x in recs)
        v1[f"{kind} {hops}"] = [lab / n, pr / n]
        print(kind, hops, v1[f"{kind} {hops}"], flush=True)
out["v1_sized"] = v1
json.dump(out, open(sys.argv[3], "w"), indent=1)

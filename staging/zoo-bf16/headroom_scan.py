"""select_headroom's scan, run beside the build once the main run's stages 1-4 are done (staging only).

Evaluates every ``step-*`` checkpoint of ``RUN/stage1..4`` exactly as ``reasonlens.zoo_build.select_headroom`` does
(fictional 1-4 hops, 30 per cell, seed 11), writes every accuracy and the pick to ``OUT`` (JSON), and with
``--prune`` deletes the other step checkpoints of those stages, so that the build's own ``select_headroom`` at the
end evaluates only the pick (and a resumed build finds it). Usage:

    python headroom_scan.py /work/build/runs/reasonlens-main headroom_scan.json [--prune]
"""

import json
import shutil
import sys
import time
from pathlib import Path

from reasonlens.evaluate import EvalConfig, evaluate
from reasonlens.model import load_model
from reasonlens.zoo_build import HEADROOM_BAND, HEADROOM_STAGES

run, out = Path(sys.argv[1]), Path(sys.argv[2])
rows, start = [], time.time()
ckpts = [c for i in range(1, HEADROOM_STAGES + 1)
         for c in sorted((run / f"stage{i}").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))]
for ckpt in ckpts:
    res = evaluate(load_model(str(ckpt)), EvalConfig(n_per_cell=30, seed=11, kinds=("fictional",),
                                                     hops=(1, 2, 3, 4), closed_book=False))
    accs = res.metrics()["label_accuracy"]["fictional"]
    rows.append({"checkpoint": f"{ckpt.parent.name}/{ckpt.name}", "label_accuracy": accs,
                 "mean": sum(accs.values()) / len(accs)})
    print(rows[-1], flush=True)
inside = [r for r in rows if HEADROOM_BAND[0] <= r["mean"] <= HEADROOM_BAND[1]]
pick = min(inside, key=lambda r: abs(r["mean"] - 0.72)) if inside else None  # first of equals, as select_headroom
out.write_text(json.dumps({"band": HEADROOM_BAND, "target": 0.72, "n_per_cell": 30, "seed": 11, "pick": pick,
                           "seconds": round(time.time() - start), "scan": rows}, indent=1))
print("pick", pick)
if pick and "--prune" in sys.argv:
    for ckpt in ckpts:
        if f"{ckpt.parent.name}/{ckpt.name}" != pick["checkpoint"]:
            shutil.rmtree(ckpt)

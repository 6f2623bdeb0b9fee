#!/usr/bin/env bash
# Re-measure every number the docs quote from the shipped reference models, once the new zoo (eight bfloat16
# stages; reasonlens-main = seed 1, reasonlens-seed0 = seed 0, reasonlens-headroom = a stage-1..4 checkpoint of
# the main run) is installed in reasonlens/zoo/. The checklist of what each output updates is remeasure.md,
# beside this file; the group names below are its section names.
#
#   bash staging/zoo-bf16/remeasure.sh          # everything: about 45 min wall with JOBS=2 (about 60 min of jobs);
#                                               # about 15 min more if the main model is not refused by IPG
#   ONLY="eval-main-bar demo" bash staging/zoo-bf16/remeasure.sh
#   SKIP="notebooks bench-training" JOBS=1 bash staging/zoo-bf16/remeasure.sh
#
# Settings (environment): OUT (default /work/remeasure), VENV (.venv), JOBS (2: parallel one-thread jobs, as the
# docs ran them beside another job), BENCH_JOBS (1: benchmarks one at a time; 2 mimics "a training run on the
# other core"), ONLY / SKIP (space-separated group names), FORCE=1 (run even if the zoo is not the new one),
# IPG_MAIN_TIMEOUT (seconds, 0 = none: the main-model IPG runs are expected to stop at once with "equal rewards";
# if the new main model does not refuse, they run the whole study, 10-15 min each).
#
# Every command's stdout + stderr go to $OUT/<group>/<name>.log, `/usr/bin/time -v` to <name>.time, and one
# line per command (start, group/name, rc, seconds, command) to $OUT/times.txt. Deliberately no `set -e`: one
# failing command (a doctest, a benchmark that exits) must not stop the rest.
set -u

cd "$(dirname "$0")/../.." || exit 1
VENV=${VENV:-.venv}
PY=$VENV/bin/python
RL=$VENV/bin/reasonlens
OUT=${OUT:-/work/remeasure}
JOBS=${JOBS:-2}
BENCH_JOBS=${BENCH_JOBS:-1}
ONLY=${ONLY:-}
SKIP=${SKIP:-}
FORCE=${FORCE:-0}
IPG_MAIN_TIMEOUT=${IPG_MAIN_TIMEOUT:-0}

# One torch / BLAS thread per process everywhere (the docs' measurements; the CLI has no --threads flag, the
# benchmarks that have one get --threads 1 as well). No hub look-ups: every model here is a shipped one.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}  # fewer progress-bar lines in the logs; changes no number

mkdir -p "$OUT/.helpers" || exit 1
TIMES=$OUT/times.txt
HELP=$OUT/.helpers/summarize.py
TIME_BIN=/usr/bin/time
[[ -x $TIME_BIN ]] || TIME_BIN=""
[[ -x $PY && -x $RL ]] || { echo "no $PY / $RL: run \`make setup\` first"; exit 1; }

want() {  # want GROUP: selected by ONLY and not in SKIP
  if [[ -n $ONLY && " $ONLY " != *" $1 "* ]]; then return 1; fi
  [[ " $SKIP " != *" $1 "* ]]
}

job() {  # job GROUP NAME CMD...: run CMD in the foreground, logged and timed
  local group=$1 name=$2; shift 2
  local dir=$OUT/$group t0 t1 rc
  mkdir -p "$dir"
  { printf '$'; printf ' %q' "$@"; printf '\n# started %s, OMP_NUM_THREADS=%s\n\n' "$(date -u +%FT%TZ)" "$OMP_NUM_THREADS"; } > "$dir/$name.log"
  echo "[$(date +%T)] start $group/$name"
  t0=$(date +%s)
  if [[ -n $TIME_BIN ]]; then
    "$TIME_BIN" -v -o "$dir/$name.time" "$@" >> "$dir/$name.log" 2>&1
  else
    "$@" >> "$dir/$name.log" 2>&1
  fi
  rc=$?
  t1=$(date +%s)
  printf '%s\t%s/%s\trc=%s\t%ss\t%s\n' "$(date -u -d "@$t0" +%FT%TZ)" "$group" "$name" "$rc" "$((t1 - t0))" "$*" >> "$TIMES"
  echo "[$(date +%T)] done  $group/$name rc=$rc $((t1 - t0)) s"
  return "$rc"
}

SLOTS=$JOBS
spawn() {  # spawn GROUP NAME CMD...: job in the background, at most $SLOTS at once
  while (( $(jobs -rp | wc -l) >= SLOTS )); do wait -n 2>/dev/null || true; done
  job "$@" &
}

note() { echo "$*" | tee -a "$OUT/SUMMARY.txt"; }

# ---------------------------------------------------------------------------------------------- helpers (JSON only)
cat > "$HELP" <<'PYEOF'
"""Reads the outputs of remeasure.sh and prints them in the shape the docs quote. No model is loaded."""
import json
import sys
from pathlib import Path

KINDS = ("fictional", "true", "false")
HOPS = ("1", "2", "3", "4", "5")


def row(cells, hops=HOPS):
    return " ".join(f"{cells[h]:.2f}" if h in cells else "-" for h in hops)


def metrics(path):
    m = json.loads(Path(path).read_text())
    print(f"# {path}: model {m['model']}, n_per_cell {m['n_per_cell']}, seed {m['seed']}")
    for key in ("label_accuracy", "proof_accuracy", "valid_proof_accuracy", "verbatim_proof_accuracy"):
        print(key)
        for kind in KINDS:
            if kind in m.get(key, {}):
                print(f"  {kind:10s} {row(m[key][kind])}")
    print("closed_book_accuracy", m.get("closed_book_accuracy"))
    print("prior_conflict_label_accuracy", m.get("prior_conflict_label_accuracy"))
    for kind, cells in m.get("rule_choice_accuracy", {}).items():
        print(f"rule_choice {kind:10s} stop {cells.get('stop', float('nan')):.3f} / continue {cells.get('continue', float('nan')):.3f}")
    forms = [v for cells in m.get("rule_choice_by_forms", {}).values() for v in cells.values()]
    if forms:
        print(f"rule_choice_by_forms: lowest pair {min(forms):.3f}")
    print("first_errors", json.dumps(m.get("first_errors", {})))
    n_err = sum(v for k in m.get("first_errors", {}).values() for v in k.values())
    print(f"chains with a first error: {n_err}")
    # the model card's one-line rows: fictional label 1-5 | fictional proof 1-5 | false label 1-5 | closed-book
    la, pa = m["label_accuracy"], m["proof_accuracy"]
    print(f"card row | {row(la['fictional'])} | {row(pa['fictional'])} | {row(la.get('false', {}))} | "
          f"{m.get('closed_book_accuracy') or float('nan'):.3f} |")


def bars(path):
    m = json.loads(Path(path).read_text())
    la, pa = m["label_accuracy"], m["proof_accuracy"]
    fails = []
    for h in ("1", "2", "3", "4"):
        if la["fictional"][h] < 0.97:
            fails.append(f"fictional label {h} hops {la['fictional'][h]:.2f} < 0.97")
        if pa["fictional"][h] < 0.90:
            fails.append(f"fictional proof {h} hops {pa['fictional'][h]:.2f} < 0.90")
        if la["false"][h] < 0.90:
            fails.append(f"false label {h} hops {la['false'][h]:.2f} < 0.90")
    if m["closed_book_accuracy"] < 0.90:
        fails.append(f"closed-book {m['closed_book_accuracy']:.3f} < 0.90")
    print(f"bars on seed {m['seed']} (test_main_model_meets_the_accuracy_bars): "
          + ("ALL MET" if not fails else "NOT MET: " + "; ".join(fails)))


def headroom(test_path, selection_path, zoo_json):
    def fict14(p):
        cells = json.loads(Path(p).read_text())["label_accuracy"]["fictional"]
        return [cells[h] for h in ("1", "2", "3", "4")]
    t = fict14(test_path)
    acc = sum(t) / 4
    print(f"test_headroom_model_has_headroom (n 15, seed 4243): fictional 1-4 label {' '.join(f'{a:.2f}' for a in t)}, "
          f"mean {acc:.3f} -> {'PASS' if 0.5 <= acc <= 0.92 else 'FAIL'} (band 0.5-0.92)")
    s = fict14(selection_path)
    meta = json.loads(Path(zoo_json).read_text())
    sel = sum(s) / 4
    print(f"headroom selection re-evaluated (n 30, seed 11): {' '.join(f'{a:.2f}' for a in s)}, mean {sel:.4f}; "
          f"reasonlens.json selection_label_accuracy {meta.get('selection_label_accuracy')} "
          f"({'same' if abs(sel - meta.get('selection_label_accuracy', -1)) < 1e-9 else 'DIFFERENT: another machine or thread count?'}); "
          f"checkpoint {meta.get('checkpoint')}")


def results(path, limit=2500):
    data = json.loads(Path(path).read_text())
    print(f"# {path}")
    for key, value in data.items():
        text = json.dumps(value)
        print(f"{key}: {text if len(text) <= limit else text[:limit] + ' ...'}")


def zoo():
    """Which zoo is installed; exit 3 unless it is the new one."""
    folders = sorted(p for p in Path("reasonlens/zoo").iterdir() if (p / "reasonlens.json").is_file())
    meta = {p.name: json.loads((p / "reasonlens.json").read_text()) for p in folders}
    for name, m in meta.items():
        print(f"{name:22s} role {m.get('role'):12s} train_seed {m.get('train_seed')} steps {m.get('steps')} "
              f"precision {m.get('train_precision')} checkpoint {m.get('checkpoint', '-')} "
              f"seeds {m.get('train_question_seeds')}")
    ok = True
    for name, seed in (("reasonlens-main", 1), ("reasonlens-seed0", 0), ("reasonlens-headroom", 1)):
        if meta.get(name, {}).get("train_seed") != seed:
            print(f"NOT THE NEW ZOO: {name} is missing or has train_seed {meta.get(name, {}).get('train_seed')} (want {seed})")
            ok = False
    if "reasonlens-seed1" in meta:
        print("STALE: reasonlens/zoo/reasonlens-seed1 is still installed: a second second-seed model "
              "(build_zoo --install does not remove it; git rm it)")
        ok = False
    sys.exit(0 if ok else 3)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PYEOF

cat > "$OUT/.helpers/recipe_check.py" <<'PYEOF'
"""What tests/test_reference_models.py::test_trained_models_record_the_recipe_they_were_trained_with checks."""
from reasonlens.model import list_models
from reasonlens.zoo_build import ZOO_MODELS, stage_configs

for info in list_models():
    if info.name not in ZOO_MODELS:
        print(f"{info.name}: not in ZOO_MODELS (not checked by the test) {info.metadata}")
        continue
    configs = [cfg for cfg, _ in stage_configs(ZOO_MODELS[info.name][1], ".")]
    seeds = (configs[0].question_seeds[0], configs[-1].question_seeds[1])
    steps = sum(c.stop_after or c.background_steps + c.cot_steps for c in configs)
    ok = info.train_question_seeds == seeds and info.metadata.get("steps") == steps
    print(f"{info.name}: train_question_seeds {info.train_question_seeds} (recipe {seeds}), steps "
          f"{info.metadata.get('steps')} (recipe {steps}), train_seconds {info.metadata.get('train_seconds')}, "
          f"train_tokens {info.metadata.get('train_tokens')}: {'OK' if ok else 'MISMATCH'}")
PYEOF

cat > "$OUT/.helpers/run_notebook.py" <<'PYEOF'
"""Execute one notebook as tests/test_notebooks.py does, keep the executed copy and a text dump of its outputs."""
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

path, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
nb = nbformat.read(path, as_version=4)
start, ok = time.time(), True
try:
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
except Exception as err:  # keep going: the executed part is still worth reading
    ok = False
    print(f"FAILED: {type(err).__name__}: {str(err)[-4000:]}")
seconds = time.time() - start
nbformat.write(nb, out)
with open(out.with_suffix(".outputs.txt"), "w") as f:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        f.write(f"===== cell {i}: {cell.source.splitlines()[0] if cell.source else ''}\n")
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                f.write(o.get("text", ""))
            elif "data" in o and "text/plain" in o["data"]:
                f.write(o["data"]["text/plain"] + "\n")
            elif o.get("output_type") == "error":
                f.write(f"ERROR {o.get('ename')}: {o.get('evalue')}\n")
print(f"{path.name}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s -> {out}")
sys.exit(0 if ok else 1)
PYEOF

# ------------------------------------------------------------------------------------------------------- preflight
echo "== run started $(date -u +%FT%TZ) ONLY='$ONLY' SKIP='$SKIP' JOBS=$JOBS BENCH_JOBS=$BENCH_JOBS" >> "$OUT/SUMMARY.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse HEAD 2>/dev/null), $(git status --short 2>/dev/null | wc -l) changed paths"
  echo "cores: $(nproc); $(lscpu 2>/dev/null | grep -m1 'Model name')"
  "$PY" -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in ("torch", "transformers", "transformer-lens", "captum")), sep="; ")'
  echo "JOBS=$JOBS BENCH_JOBS=$BENCH_JOBS OMP_NUM_THREADS=$OMP_NUM_THREADS"
} > "$OUT/environment.txt" 2>&1
if ! "$PY" "$HELP" zoo > "$OUT/zoo-check.txt" 2>&1; then
  cat "$OUT/zoo-check.txt"
  if [[ $FORCE != 1 ]]; then echo "the installed zoo is not the new one (FORCE=1 to run anyway)"; exit 3; fi
fi
cat "$OUT/zoo-check.txt"

# ============================================================ 1. zoo metadata (README model table, model card tables)
if want zoo-metadata; then
  job zoo-metadata models "$RL" models
  job zoo-metadata models-json "$RL" models --json
  job zoo-metadata reasonlens-json bash -c 'for f in reasonlens/zoo/*/reasonlens.json; do echo "== $f"; cat "$f"; echo; done; du -b reasonlens/zoo/*/model.safetensors; du -sb reasonlens/zoo/*/; grep -H "\"dtype\"" reasonlens/zoo/*/config.json'
  job zoo-metadata recipe-check "$PY" "$OUT/.helpers/recipe_check.py"
fi

# ====================================================== 2-3. the bar test's questions, and the `make demo` job (seed 7)
want eval-main-bar && spawn eval-main-bar eval "$RL" eval --model reasonlens-main --n 50 --seed 4244 --out "$OUT/eval-main-bar/out"
want demo && spawn demo demo "$RL" demo --out "$OUT/demo/out" --n 50 --seed 7 --batch-size 64
wait
if want eval-main-bar && [[ -f $OUT/eval-main-bar/out/metrics.json ]]; then
  "$PY" "$HELP" metrics "$OUT/eval-main-bar/out/metrics.json" > "$OUT/eval-main-bar/tables.txt" 2>&1
  "$PY" "$HELP" bars "$OUT/eval-main-bar/out/metrics.json" | tee -a "$OUT/SUMMARY.txt"
fi
if want demo && [[ -f $OUT/demo/out/metrics.json ]]; then
  "$PY" "$HELP" metrics "$OUT/demo/out/metrics.json" > "$OUT/demo/tables.txt" 2>&1
  "$PY" "$HELP" bars "$OUT/demo/out/metrics.json" | tee -a "$OUT/SUMMARY.txt"
fi

# ============================================================= 4-5. second seed and headroom (model card, --n 30 --seed 7)
want eval-seed0 && spawn eval-seed0 eval "$RL" eval --model reasonlens-seed0 --n 30 --seed 7 --out "$OUT/eval-seed0/out"
if want eval-headroom; then
  spawn eval-headroom n30-seed7 "$RL" eval --model reasonlens-headroom --n 30 --seed 7 --out "$OUT/eval-headroom/out-n30-seed7"
  spawn eval-headroom n15-seed4243 "$RL" eval --model reasonlens-headroom --n 15 --seed 4243 --out "$OUT/eval-headroom/out-n15-seed4243"
  spawn eval-headroom n30-seed11 "$RL" eval --model reasonlens-headroom --n 30 --seed 11 --out "$OUT/eval-headroom/out-n30-seed11"
fi
wait
if want eval-seed0 && [[ -f $OUT/eval-seed0/out/metrics.json ]]; then
  "$PY" "$HELP" metrics "$OUT/eval-seed0/out/metrics.json" > "$OUT/eval-seed0/tables.txt" 2>&1
fi
if want eval-headroom && [[ -f $OUT/eval-headroom/out-n30-seed7/metrics.json ]]; then
  "$PY" "$HELP" metrics "$OUT/eval-headroom/out-n30-seed7/metrics.json" > "$OUT/eval-headroom/tables.txt" 2>&1
  [[ -f $OUT/eval-headroom/out-n15-seed4243/metrics.json && -f $OUT/eval-headroom/out-n30-seed11/metrics.json ]] &&
    "$PY" "$HELP" headroom "$OUT/eval-headroom/out-n15-seed4243/metrics.json" "$OUT/eval-headroom/out-n30-seed11/metrics.json" \
      reasonlens/zoo/reasonlens-headroom/reasonlens.json | tee -a "$OUT/SUMMARY.txt"
fi

# ================================================================ 6. doctests whose expected outputs need the zoo
if want doctests; then
  # weight-dependent expected outputs (decoded text, lens fractions, sufficiency, influence signs, labels, IPG top)
  spawn doctests weights "$PY" -m pytest -p no:cacheprovider -q -rA --doctest-modules --junitxml="$OUT/doctests/weights.xml" \
    reasonlens/generation.py reasonlens/patching/lens.py reasonlens/importance/scoring.py \
    reasonlens/importance/influence.py reasonlens/importance/labels.py reasonlens/attribution/ipg.py
  # load the shipped models but check structure only (shapes, names, tokenization, model_fingerprint needs reasonlens-seed0)
  spawn doctests structure "$PY" -m pytest -p no:cacheprovider -q -rA --doctest-modules --junitxml="$OUT/doctests/structure.xml" \
    reasonlens/model.py reasonlens/attribution/steering.py reasonlens/importance/activations.py \
    reasonlens/importance/chains.py reasonlens/importance/controls.py reasonlens/evaluate.py \
    reasonlens/patching/subtasks.py reasonlens/plot.py
  wait
fi

# ================================================== 7-8. the Dutta et al. and step-importance studies (one thread each)
want cot-mechanism && spawn cot-mechanism run "$RL" run cot-mechanism --model reasonlens-main --n 48 --hops 2 --seed 2024 \
  --batch-size 64 --out "$OUT/cot-mechanism/out"
want step-importance && spawn step-importance run "$RL" run step-importance --model reasonlens-main --n 60 \
  --kind fictional false --hops 2 3 4 --redundant-step-p 0.5 --source gold --seed 0 --batch-size 16 \
  --out "$OUT/step-importance/out"   # --second-model omitted: the shipped second seed (reasonlens-seed0), as documented
wait
for g in cot-mechanism step-importance; do
  want "$g" && [[ -f $OUT/$g/out/results.json ]] && "$PY" "$HELP" results "$OUT/$g/out/results.json" > "$OUT/$g/summary.txt" 2>&1
done

# ========================================================================= 9-10. IPG study on the headroom model
want ipg-headroom && spawn ipg-headroom run "$RL" run ipg --model reasonlens-headroom --kind resid --layers 3 4 \
  --n-support 40 --n-eval 100 --p 2 4 8 16 32 --seed 0 --batch-size 32 --out "$OUT/ipg-headroom/out"
want ipg-headroom-heads && spawn ipg-headroom-heads run "$RL" run ipg --model reasonlens-headroom --kind head \
  --layers 0 1 2 3 4 5 --p 1 2 3 4 --out "$OUT/ipg-headroom-heads/out"
wait

# ============================================ 11. IPG on the main model: expected to stop with "equal rewards" (rc 2)
if want ipg-main-refusal; then
  TO=(); (( IPG_MAIN_TIMEOUT > 0 )) && TO=(timeout "$IPG_MAIN_TIMEOUT")
  spawn ipg-main-refusal resid "${TO[@]}" "$RL" run ipg --model reasonlens-main --out "$OUT/ipg-main-refusal/out-resid"
  spawn ipg-main-refusal head "${TO[@]}" "$RL" run ipg --model reasonlens-main --kind head --layers 0 1 2 3 4 5 --p 1 2 3 4 \
    --out "$OUT/ipg-main-refusal/out-head"
  wait
  for k in resid head; do
    if grep -q "equal rewards" "$OUT/ipg-main-refusal/$k.log" 2>/dev/null; then
      note "ipg-main-refusal/$k: refused as documented: $(grep -o 'every one of the.*no signal' "$OUT/ipg-main-refusal/$k.log" | head -1)"
    else
      note "ipg-main-refusal/$k: DID NOT REFUSE (docs/ipg.md:117-125 and test_ipg_study.py:68-72 need attention; see $OUT/ipg-main-refusal/$k.log)"
    fi
  done
fi
for g in ipg-headroom ipg-headroom-heads ipg-main-refusal/out-resid ipg-main-refusal/out-head; do
  [[ -f $OUT/$g/out/results.json ]] && "$PY" "$HELP" results "$OUT/$g/out/results.json" > "$OUT/$g/summary.txt" 2>&1
  [[ -f $OUT/$g/results.json ]] && "$PY" "$HELP" results "$OUT/$g/results.json" > "$OUT/$g/summary.txt" 2>&1
done

# ============================================================================== 12-17. benchmarks (docs/benchmarks.md)
SLOTS=$BENCH_JOBS
want bench-decoding && spawn bench-decoding run "$PY" benchmarks/decoding.py --prompts 32 --max-new-tokens 64 --batch-size 32 --threads 1
want bench-rule-choice && spawn bench-rule-choice run "$PY" benchmarks/rule_choice.py --model reasonlens-main --n 25 --seed 7 --repeats 3  # no --threads: OMP_NUM_THREADS=1
want bench-patching && spawn bench-patching run "$PY" benchmarks/patching.py --subtask 3 --pairs 32 --threads 1
if want bench-ipg; then
  spawn bench-ipg seed0 "$PY" benchmarks/ipg.py --model reasonlens-headroom --threads 1 --seed 0
  spawn bench-ipg seed1 "$PY" benchmarks/ipg.py --model reasonlens-headroom --threads 1 --seed 1
fi
want bench-step-importance && spawn bench-step-importance run "$PY" benchmarks/step_importance.py --threads 1 --repeats 3 --seed 0
wait
# alone: the docs measured it one run at a time
want bench-training && job bench-training run "$PY" benchmarks/training.py --steps 100 --threads 1

# ================================================================ 18. notebooks (markdown claims need their outputs)
SLOTS=$JOBS
if want notebooks; then
  mkdir -p "$OUT/notebooks"
  for nb in notebooks/*.ipynb; do
    name=$(basename "$nb" .ipynb)
    spawn notebooks "$name" "$PY" "$OUT/.helpers/run_notebook.py" "$nb" "$OUT/notebooks/$name.ipynb"
  done
  wait
fi

# ------------------------------------------------------------------------------------------------------------ summary
{
  echo
  echo "== commands (rc, seconds)"
  cat "$TIMES" 2>/dev/null
  echo
  echo "== failures (rc != 0; ipg-main-refusal is expected to exit 2)"
  awk -F'\t' '$3 != "rc=0"' "$TIMES" 2>/dev/null
  echo
  echo "== benchmark JSON (last line of each log)"
  for f in "$OUT"/bench-*/*.log; do [[ -f $f ]] && echo "$f: $(tail -n 1 "$f")"; done
} | tee -a "$OUT/SUMMARY.txt"
echo "outputs in $OUT; checklist: staging/zoo-bf16/remeasure.md"

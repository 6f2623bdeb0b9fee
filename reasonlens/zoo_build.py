"""Reproduce the shipped reference models with one command (``reasonlens train --zoo``).

The main model and the second-seed model are the same eight-stage recipe with seeds 0 and 1, trained side by
side in float32 and resumable from the last stage whose ``final`` checkpoint exists; ``precision="bfloat16"``
trains faster on a CPU with bfloat16 units, and other weights. Stages 1-7 made the version-1 models with training
aids (role-weighted losses, a training-only read-out); stage 8 uses a plain next-token loss. Each stage continues
the last one's ``final`` checkpoint:

1. :data:`STAGE_1`: background phase, then chain-of-thought training; 3,250 steps of a 5,300-step schedule.
2. :data:`STAGE_2`: the first token of every restated rule weighted x4; 2,400 steps.
3. :data:`STAGE_3`: every token of a restated "is a" rule weighted x4 too; 2,400 steps.
4. :data:`STAGE_4`: every weight doubled (x8), lr 6e-4; 1,500 steps.
5. :data:`STAGE_5`: the training-only read-out of the queried property after block 3; 1,500 steps.
6. :data:`STAGE_6`: the read-out on fresh questions, a fresh read-out (``continue_read_out=False``); 3,000 steps.
7. :data:`STAGE_7`: the same again; 3,000 steps.
8. :data:`STAGE_8` (version 2): :data:`~reasonlens.ontology.generator.V1_SIZES`, 1-5 hops, 0-2 demonstrations,
   answer-now sequences (:data:`~reasonlens.ontology.prompt.ANSWER_NOW`), vocabulary version 2, plain loss;
   3,000 steps.

The headroom model is the checkpoint of the main run's stages 1-2 nearest 72% label accuracy inside
:data:`HEADROOM_BAND`. Why each stage: docs/training-history.md; the models and their accuracy: docs/model-card.md.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from reasonlens.ontology.generator import V1_SIZES
from reasonlens.train import ArchitectureConfig, TrainConfig, train

STAGE_1 = TrainConfig(
    architecture=ArchitectureConfig(n_layers=6, d_model=128, n_heads=4, d_mlp=512),
    background_steps=300,
    cot_steps=5000,
    stop_after=3250,
    eval_every=250,
)
STAGE_2 = replace(
    STAGE_1, background_steps=0, cot_steps=2400, stop_after=None, lr=1e-3, warmup_steps=50, curriculum_steps=0,
    form_weight=4.0, eval_every=300, question_offset=STAGE_1.next_question_offset,
)
STAGE_3 = replace(
    STAGE_2, isa_rule_weight=4.0, eval_every=400, eval_n=64, question_offset=STAGE_2.next_question_offset,
)
STAGE_4 = replace(
    STAGE_3, decision_weight=8.0, form_weight=8.0, isa_rule_weight=8.0, lr=6e-4, cot_steps=1500, eval_every=300,
    question_offset=STAGE_3.next_question_offset,
)
STAGE_5 = replace(STAGE_4, query_aux_weight=1.0, question_offset=STAGE_4.next_question_offset)
# The shipped models were trained with a fresh read-out at the start of each stage.
STAGE_6 = replace(STAGE_5, cot_steps=3000, eval_every=1000, question_offset=STAGE_5.next_question_offset,
                  continue_read_out=False)
STAGE_7 = replace(STAGE_6, question_offset=STAGE_6.next_question_offset)
# Version 2: real PrOntoQA v1's ontology sizes, 1-5 hops, 0-2 demonstrations, answer-now sequences; plain loss.
STAGE_8 = replace(
    STAGE_7, cot_steps=3000, lr=6e-4, warmup_steps=50, eval_every=500, decision_weight=1.0, form_weight=1.0,
    isa_rule_weight=1.0, query_aux_weight=0.0, hops=(1, 2, 3, 4, 5), sizes=dict(V1_SIZES), answer_now_p=0.2,
    max_shots=2, vocabulary=2, question_offset=STAGE_7.next_question_offset,
)
STAGES = (STAGE_1, STAGE_2, STAGE_3, STAGE_4, STAGE_5, STAGE_6, STAGE_7, STAGE_8)
ZOO_MODELS = {
    "reasonlens-main": ("main", 0),
    "reasonlens-seed1": ("second-seed", 1),
}
HEADROOM_NAME = "reasonlens-headroom"
HEADROOM_BAND = (0.60, 0.85)
HEADROOM_STAGES = 2  # the headroom model is a step checkpoint of the main run's first stages


def stage_configs(seed: int, run_dir: str | Path) -> list[tuple[TrainConfig, Path]]:
    """The recipe's stages for ``seed``: (config, output folder) pairs, each stage starting from the last."""
    run = Path(run_dir)
    return [(replace(stage, seed=seed, init_from=str(run / f"stage{i - 1}" / "final") if i > 1 else None),
             run / f"stage{i}") for i, stage in enumerate(STAGES, start=1)]


def train_reference(run_dir: str | Path, *, seed: int = 0, threads: int = 0, progress: bool = True,
                    precision: str | None = None, device: str = "cpu") -> Path:
    """Train one model with the reference recipe into ``run_dir/stage*``; returns the final checkpoint.
    ``precision`` overrides the recipe's float32 (``"bfloat16"``: faster on a CPU with bfloat16 units, other weights);
    ``device="cuda"`` trains on a GPU (other weights than the CPU's, as with any change of hardware)."""
    stages = stage_configs(seed, run_dir)
    done = max((i for i, (_, out) in enumerate(stages, start=1) if (out / "final").exists()), default=0)
    for cfg, out in stages[done:]:
        train(replace(cfg, threads=threads, precision=precision or cfg.precision, device=device), out,
              progress=progress)
    return stages[-1][1] / "final"


def _train_worker(args: tuple[str, int, str | None, str]) -> None:
    run, seed, precision, device = args
    train_reference(run, seed=seed, threads=1, progress=False, precision=precision, device=device)


def select_headroom(run_dirs: list[Path], *, n_per_cell: int = 30, seed: int = 11) -> tuple[Path, float]:
    """The intermediate checkpoint whose fictional 1-4 hop label accuracy is nearest 0.72 within
    :data:`HEADROOM_BAND`."""
    from reasonlens.errors import ReasonlensError
    from reasonlens.evaluate import EvalConfig, evaluate
    from reasonlens.model import load_model

    best: tuple[float, Path, float] | None = None
    for run in run_dirs:
        for ckpt in sorted(run.glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
            res = evaluate(load_model(str(ckpt)), EvalConfig(n_per_cell=n_per_cell, seed=seed, kinds=("fictional",),
                                                             hops=(1, 2, 3, 4), closed_book=False))
            accs = res.metrics()["label_accuracy"]["fictional"]
            acc = sum(accs.values()) / len(accs)
            if HEADROOM_BAND[0] <= acc <= HEADROOM_BAND[1] and (best is None or abs(acc - 0.72) < best[0]):
                best = (abs(acc - 0.72), ckpt, acc)
    if best is None:
        raise ReasonlensError(f"no checkpoint in {run_dirs} has label accuracy in {HEADROOM_BAND}")
    return best[1], best[2]


def _install(src: Path, dest: Path, meta: dict) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if (src / f).exists():
            shutil.copy2(src / f, dest / f)
    (dest / "reasonlens.json").write_text(json.dumps(meta, indent=2))


def _question_seeds(seed: int, n_stages: int = len(STAGES)) -> list[int]:
    ranges = [cfg.question_seeds for cfg, _ in stage_configs(seed, ".")[:n_stages]]
    return [ranges[0][0], ranges[-1][1]]


def _trained_with(ckpt: Path) -> dict:
    """The precision and vocabulary version ``ckpt`` was trained with: from its stage's log, or from the metadata a
    carried shipped model holds (version 1 where it predates the field)."""
    log = ckpt.parent / "train_log.json"
    if log.exists():
        cfg = json.loads(log.read_text())["config"]
        return {"train_precision": cfg["precision"], "vocabulary": cfg.get("vocabulary", 1)}
    meta = json.loads((ckpt / "reasonlens.json").read_text())
    return {"train_precision": meta["train_precision"], "vocabulary": meta.get("vocabulary", 1)}


def _totals(stages: list[Path]) -> dict:
    """Training time, tokens and steps through the last stage: summed over the stages' logs, starting from the
    totals the last carried ``final`` checkpoint holds in its ``reasonlens.json`` where the stages up to it were not
    trained in this folder (a build resumed from a shipped model)."""
    carried = [i for i, stage in enumerate(stages)
               if not (stage / "train_log.json").exists() and (stage / "final" / "reasonlens.json").exists()]
    totals = {"train_seconds": 0.0, "train_tokens": 0, "steps": 0}
    if carried:
        meta = json.loads((stages[carried[-1]] / "final" / "reasonlens.json").read_text())
        totals = {key: meta[key] for key in totals}
    for stage in stages[carried[-1] + 1 if carried else 0:]:
        log = json.loads((stage / "train_log.json").read_text())
        totals = {"train_seconds": totals["train_seconds"] + log["seconds"],
                  "train_tokens": totals["train_tokens"] + log["tokens"],
                  "steps": totals["steps"] + log["evals"][-1]["step"]}
    return {**totals, "train_seconds": round(totals["train_seconds"])}


def build_zoo(out_dir: str | Path, *, install: bool = False, precision: str | None = None,
              device: str = "cpu") -> Path:
    """Train every shipped model into ``out_dir/zoo`` (and into the package with ``install=True``); ``precision``
    overrides the recipe's; ``device`` is where the runs train."""
    from concurrent.futures import ProcessPoolExecutor

    out = Path(out_dir)
    runs = {name: (out / "runs" / name, role, seed) for name, (role, seed) in ZOO_MODELS.items()}
    with ProcessPoolExecutor(max_workers=len(runs)) as pool:
        list(pool.map(_train_worker, [(str(d), seed, precision, device) for d, _, seed in runs.values()]))
    zoo = out / "zoo"
    for name, (run, role, seed) in runs.items():
        stages = [out for _, out in stage_configs(seed, run)]
        _install(stages[-1] / "final", zoo / name, {
            "role": role, "train_seed": seed, "train_question_seeds": _question_seeds(seed), **_totals(stages),
            **_trained_with(stages[-1] / "final"), "description": f"6-layer Llama-style reference model, seed {seed}",
        })
    main_run = runs["reasonlens-main"][0]
    ckpt, acc = select_headroom([main_run / f"stage{i}" for i in range(1, HEADROOM_STAGES + 1)])
    _install(ckpt, zoo / HEADROOM_NAME, {
        "role": "headroom", "train_seed": 0, "train_question_seeds": _question_seeds(0, HEADROOM_STAGES),
        "checkpoint": f"{ckpt.parent.name}/{ckpt.name}", "selection_label_accuracy": acc,
        **_trained_with(ckpt),
        "description": f"under-trained checkpoint of the main run ({ckpt.parent.name}, {ckpt.name}), "
                       f"label accuracy {acc:.2f}: headroom for attribution and steering",
    })
    if install:
        from reasonlens.model import ZOO_DIR

        for d in zoo.iterdir():
            _install(d, ZOO_DIR / d.name, json.loads((d / "reasonlens.json").read_text()))
    return zoo

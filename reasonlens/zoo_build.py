"""Reproduce the shipped reference models with one command (``reasonlens train --zoo``).

The main model and the second-seed model are the same recipe with seeds 0 and 1, trained side by side
(one thread each on a 2-core machine). The headroom model is the main run's intermediate checkpoint
whose held-out label accuracy is closest to 72% inside the 60-85% band.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from reasonlens.train import ArchitectureConfig, TrainConfig, train

REFERENCE_RECIPE = TrainConfig(
    architecture=ArchitectureConfig(n_layers=6, d_model=128, n_heads=4, d_mlp=512),
    background_steps=300,
    cot_steps=5000,
    eval_every=250,
)
ZOO_MODELS = {
    "reasonlens-main": ("main", 0),
    "reasonlens-seed1": ("second-seed", 1),
}
HEADROOM_NAME = "reasonlens-headroom"
HEADROOM_BAND = (0.60, 0.85)


def train_reference(out_dir: str | Path, *, seed: int = 0, cot_steps: int | None = None, threads: int = 0,
                    progress: bool = True) -> dict:
    """Train one model with the reference recipe (``cot_steps`` overrides its length)."""
    cfg = replace(REFERENCE_RECIPE, seed=seed, threads=threads)
    if cot_steps is not None:
        cfg = replace(cfg, cot_steps=cot_steps)
    return train(cfg, out_dir, progress=progress)


def _train_worker(args: tuple[str, int]) -> None:
    out, seed = args
    train_reference(out, seed=seed, threads=1, progress=False)


def select_headroom(run_dir: str | Path, *, n_per_cell: int = 30, seed: int = 11) -> tuple[Path, float]:
    """The intermediate checkpoint of ``run_dir`` whose fictional 1-4 hop label accuracy is nearest 0.72
    within :data:`HEADROOM_BAND`."""
    from reasonlens.errors import ReasonlensError
    from reasonlens.evaluate import EvalConfig, evaluate
    from reasonlens.model import load_model

    best: tuple[float, Path, float] | None = None
    for ckpt in sorted(Path(run_dir).glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
        res = evaluate(load_model(str(ckpt)), EvalConfig(n_per_cell=n_per_cell, seed=seed, kinds=("fictional",),
                                                         hops=(1, 2, 3, 4), closed_book=False))
        accs = res.metrics()["label_accuracy"]["fictional"]
        acc = sum(accs.values()) / len(accs)
        if HEADROOM_BAND[0] <= acc <= HEADROOM_BAND[1] and (best is None or abs(acc - 0.72) < best[0]):
            best = (abs(acc - 0.72), ckpt, acc)
    if best is None:
        raise ReasonlensError(f"no checkpoint in {run_dir} has label accuracy in {HEADROOM_BAND}")
    return best[1], best[2]


def _install(src: Path, dest: Path, meta: dict) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if (src / f).exists():
            shutil.copy2(src / f, dest / f)
    (dest / "reasonlens.json").write_text(json.dumps(meta, indent=2))


def build_zoo(out_dir: str | Path, *, install: bool = False, progress: bool = True) -> Path:
    """Train every shipped model into ``out_dir/zoo`` (and into the package with ``install=True``)."""
    from concurrent.futures import ProcessPoolExecutor

    out = Path(out_dir)
    runs = {name: (out / "runs" / name, role, seed) for name, (role, seed) in ZOO_MODELS.items()}
    with ProcessPoolExecutor(max_workers=len(runs)) as pool:
        list(pool.map(_train_worker, [(str(d), seed) for d, _, seed in runs.values()]))
    zoo = out / "zoo"
    for name, (run, role, seed) in runs.items():
        log = json.loads((run / "train_log.json").read_text())
        _install(run / "final", zoo / name, {
            "role": role, "train_seed": seed, "train_question_seeds": list(replace(REFERENCE_RECIPE, seed=seed).question_seeds),
            "train_seconds": round(log["seconds"]), "train_tokens": log["tokens"], "steps": log["evals"][-1]["step"],
            "description": f"6-layer Llama-style reference model, seed {seed}",
        })
    main_run = runs["reasonlens-main"][0]
    ckpt, acc = select_headroom(main_run)
    _install(ckpt, zoo / HEADROOM_NAME, {
        "role": "headroom", "train_seed": 0, "train_question_seeds": list(REFERENCE_RECIPE.question_seeds),
        "steps": int(ckpt.name.split("-")[1]), "selection_label_accuracy": acc,
        "description": f"under-trained checkpoint of the main run (step {ckpt.name.split('-')[1]}), "
                       f"label accuracy {acc:.2f}: headroom for attribution and steering",
    })
    if install:
        from reasonlens.model import ZOO_DIR

        for d in zoo.iterdir():
            _install(d, ZOO_DIR / d.name, json.loads((d / "reasonlens.json").read_text()))
    return zoo

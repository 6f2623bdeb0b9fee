"""The zoo build's bookkeeping: resuming from the furthest finished stage and the totals it records."""

import json
from pathlib import Path

import reasonlens.zoo_build as zoo_build
from reasonlens.zoo_build import STAGES, _totals, _trained_with, stage_configs, train_reference


def test_a_build_resumes_after_the_furthest_finished_stage(tmp_path, monkeypatch):
    trained = []

    def fake_train(cfg, out, progress=True):
        trained.append(Path(out).name)
        (Path(out) / "final").mkdir(parents=True)

    monkeypatch.setattr(zoo_build, "train", fake_train)
    (tmp_path / "stage2" / "final").mkdir(parents=True)
    (tmp_path / "stage6" / "final").mkdir(parents=True)  # e.g. a shipped model carried in as stage 6
    assert train_reference(tmp_path, progress=False) == tmp_path / f"stage{len(STAGES)}" / "final"
    assert trained == [f"stage{i}" for i in range(7, len(STAGES) + 1)]
    assert [cfg.init_from for cfg, _ in stage_configs(0, tmp_path)][6] == str(tmp_path / "stage6" / "final")


def test_totals_continue_from_a_carried_model(tmp_path):
    (tmp_path / "stage0").mkdir()  # an earlier stage of the carried model: neither trained here nor carried
    carried = tmp_path / "stage1" / "final"
    carried.mkdir(parents=True)
    (carried / "reasonlens.json").write_text(json.dumps(
        {"train_seconds": 100, "train_tokens": 1000, "steps": 50, "train_precision": "float32"}))
    (tmp_path / "stage2").mkdir()
    (tmp_path / "stage2" / "train_log.json").write_text(json.dumps(
        {"seconds": 20.4, "tokens": 30, "evals": [{"step": 5}, {"step": 10}], "config": {"precision": "float32",
                                                                                        "vocabulary": 2}}))
    assert _totals([tmp_path / "stage0", tmp_path / "stage1", tmp_path / "stage2"]) == {"train_seconds": 120, "train_tokens": 1030,
                                                                   "steps": 60}
    assert _trained_with(carried) == {"train_precision": "float32", "vocabulary": 1}  # predates the field
    assert _trained_with(tmp_path / "stage2" / "final") == {"train_precision": "float32", "vocabulary": 2}

"""The command line, run in-process: generate, models, eval (generated and imported data), demo, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from model_util import write_checkpoint

import reasonlens.model as rl_model
from reasonlens.cli import main
from reasonlens.ontology.io import load_dataset_file, load_jsonl

DATA = Path(__file__).parent / "data" / "prontoqa_v1_sample.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("cli") / "tiny", "llama", scale=3.0, n_ctx=1024)


@pytest.fixture
def zoo(tmp_path, monkeypatch, tiny) -> Path:
    dest = tmp_path / "zoo" / "tiny-main"
    shutil.copytree(tiny, dest)
    (dest / "reasonlens.json").write_text(json.dumps({"role": "main", "description": "tiny", "train_question_seeds": [100, 120]}))
    monkeypatch.setattr(rl_model, "ZOO_DIR", tmp_path / "zoo")
    return tmp_path / "zoo"


def test_generate_jsonl_and_hf_dataset(tmp_path, capsys):
    assert main(["generate", "--n", "6", "--kind", "fictional", "false", "--hops", "1", "3",
                 "--redundant-step-p", "0.3", "--seed", "2", "--out", str(tmp_path / "d.jsonl")]) == 0
    examples = load_jsonl(tmp_path / "d.jsonl")
    assert len(examples) == 6 and {e.hops for e in examples} <= {1, 3}
    assert main(["generate", "--n", "4", "--style", "dutta", "--out", str(tmp_path / "ds")]) == 0
    assert [e.style for e in load_dataset_file(tmp_path / "ds")] == ["dutta"] * 4
    assert "wrote 4 examples" in capsys.readouterr().out
    assert main(["generate", "--n", "40", "--hops", "1", "--v1-sizes", "--out", str(tmp_path / "v1.jsonl")]) == 0
    sizes = [len(e.ontology.parents) + 1 for e in load_jsonl(tmp_path / "v1.jsonl")]
    assert max(sizes) > 4  # past the first generator's 1 + 2 above + 1 below


def test_models_json(zoo, capsys):
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"name": "tiny-main", "role": "main", "path": str(zoo / "tiny-main"),
                       "size_bytes": listed[0]["size_bytes"]}]
    assert listed[0]["size_bytes"] > 0


def test_eval_writes_metrics_and_report(tiny, tmp_path, browser_check):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny), "--n", "2", "--seed", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == str(tiny) and metrics["n_per_cell"] == 2 and metrics["seed"] == 3
    for key in ("label_accuracy", "proof_accuracy"):
        assert set(metrics[key]) == {"fictional", "true", "false"}
        for cells in metrics[key].values():
            assert set(cells) == {"1", "2", "3", "4", "5"}
            assert all(0.0 <= v <= 1.0 for v in cells.values())
    assert 0.0 <= metrics["closed_book_accuracy"] <= 1.0
    html = (out / "report.html").read_text()
    assert "Label accuracy" in html and "Decoded chains" in html and "Plotly" in html
    assert browser_check(out / "report.html", "eval") == {"figures": 1, "views": 0}


def test_eval_on_imported_prontoqa(tiny, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny), "--data", str(DATA), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    n_examples = len(load_dataset_file(DATA))
    cells = [c for kinds in metrics["label_accuracy"].values() for c in kinds]
    assert cells and metrics["n_per_cell"] is None and metrics["closed_book_accuracy"] is None
    assert len((out / "records.jsonl").read_text().splitlines()) == n_examples


def test_eval_with_shots(tiny, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny), "--data", str(DATA), "--shots", "1", "--out", str(out)]) == 2
    assert main(["eval", "--model", str(tiny), "--n", "1", "--shots", "2", "--out", str(out)]) == 0
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert record["prompt"].count("Q: ") == 3
    assert json.loads((out / "metrics.json").read_text())["shots"] == 2


def test_eval_on_v1_sized_ontologies(tiny, tmp_path):
    from reasonlens.ontology.generator import V1_SIZES

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny), "--n", "2", "--v1-sizes", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["sizes"] == V1_SIZES
    assert main(["eval", "--model", str(tiny), "--data", str(DATA), "--v1-sizes", "--out", str(tmp_path / "b")]) == 2


def test_demo_tours_every_method_on_the_shipped_models(tmp_path, monkeypatch, offline, browser_check):
    from reasonlens import tour

    @dataclass(frozen=True)
    class Small(tour.TourConfig):  # the tour's own code at a tiny size
        mechanism_subtasks: tuple = (5,)
        mechanism_examples: int = 6
        conflict_examples: int = 60
        relation_examples: int = 20
        ipg_support: int = 8
        ipg_samples: int = 3
        ipg_steps: int = 2
        ipg_eval: int = 8
        ipg_p: tuple = (1, 2)
        random_sets: int = 2
        importance_per_cell: int = 6
        eval_per_cell: int = 1
        n_bootstrap: int = 200

    monkeypatch.setattr(tour, "TourConfig", Small)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"] == {"main": "reasonlens-main", "headroom": "reasonlens-headroom"}
    assert set(results["ipg"]["ipg_minus_random"]) == {"1", "2"} and len(results["ipg"]["top_heads"]) == 2
    assert len(results["steering"]["random"]["2"]) == 2 and len(results["steering"]["original"]) == 8
    html = (out / "report.html").read_text()
    for section in ("1. Which heads", "2. Where the answer", "3. Which heads a reasoning", "4. Which steps",
                    "5. How well", "reasonlens run cot-mechanism", "reasonlens run ipg", "reasonlens run step-importance"):
        assert section in html
    # head scores, circuits, roles, pathways, prior vs context, relations, IPG heads, IPG suppression; one view
    assert browser_check(out / "report.html", "demo") == {"figures": 8, "views": 1}
    again = tour.TourResult.load(out)
    assert json.loads(json.dumps(again.summary())) == {k: v for k, v in results.items() if k not in ("result",
                                                                                                      "format")}


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "--model", "no-such-model", "--out", "x"], "no-such-model"),
    (["eval", "--model", "tiny-main", "--seed", "105", "--n", "1", "--out", "x"], "training questions"),
    (["generate", "--n", "3", "--kind", "imaginary", "--out", "x.jsonl"], "unknown ontology kind"),
    (["generate", "--n", "3", "--hops", "7", "--out", "x.jsonl"], "hops must be"),
    (["generate", "--n", "0", "--out", "x.jsonl"], "argument --n: must be a whole number >= 1"),
])
def test_bad_input_exits_with_a_clear_message(zoo, offline, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("reasonlens: error:") and message in err


def test_train_runs_the_recipe_in_its_precision_unless_told(tmp_path, monkeypatch):
    import reasonlens.zoo_build as zoo_build

    seen = []

    def fake_train(cfg, out, progress=True):
        seen.append((cfg.precision, cfg.device))
        (Path(out) / "final").mkdir(parents=True)

    monkeypatch.setattr(zoo_build, "train", fake_train)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["train", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert seen == [("float32", "cpu")] * len(zoo_build.STAGES)
    seen.clear()
    assert main(["train", "--out", str(tmp_path / "gpu"), "--quiet", "--device", "cuda"]) == 2  # no GPU here
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a machine with a GPU uses it unless told
    assert main(["train", "--out", str(tmp_path / "b"), "--quiet", "--precision", "bfloat16"]) == 0
    assert main(["train", "--out", str(tmp_path / "c"), "--quiet", "--device", "cpu"]) == 0
    assert seen == [("bfloat16", "cuda")] * len(zoo_build.STAGES) + [("float32", "cpu")] * len(zoo_build.STAGES)

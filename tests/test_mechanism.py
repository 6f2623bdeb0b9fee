"""The Dutta et al. study end to end on the main reference model (small sizes), and its CLI recipe."""

import json
from dataclasses import dataclass

import pytest

from reasonlens.cli import main
from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model, main_model_name
from reasonlens.patching import mechanism
from reasonlens.patching.mechanism import MechanismConfig, analyze_mechanism, mechanism_report

SMALL = dict(n_examples=6, subtasks=(0, 5), n_reference=6, n_trace=2, n_conflict=120, n_relation=30,
             relation_seeds=(0,))


@pytest.fixture(scope="module")
def model():
    return load_model(main_model_name())


@pytest.fixture(scope="module")
def result(model):
    return analyze_mechanism(model, MechanismConfig(**SMALL), model_name="main", progress=False)


def test_summary_has_every_finding_in_range(result):
    s = result.summary()
    fractions = s["circuit_head_fraction_90"]
    assert set(fractions) == {a.name for a in result.analysed()} | {"mean"}
    assert all(f is None or 0 <= f <= 1 for f in fractions.values())
    assert 0 <= s["writer_share_late"] <= 1
    assert s["crossover_relative_depth"] is None or 0 < s["crossover_relative_depth"] <= 1
    for counts in s["pathways"].values():
        assert set(counts) == {"question", "cot", "few_shot"} and sum(counts.values()) > 0
    assert s["n_pairs"]["kept"] == sum(a.n_kept for a in result.subtasks) > 0
    # subtask 0 copies the query entity from the question: its pathways start there
    first = result.analysed()[0]
    assert first.subtask["index"] == 0 and s["pathways"][first.name]["question"] > 0
    scores = first.head_scores
    assert scores.axes == ("example", "layer", "position", "head") and scores.values.shape[1:] == (6, 1, 4)


def test_save_and_report(result, model, tmp_path):
    out = result.save(tmp_path)
    saved = json.loads((out / "results.json").read_text())
    assert saved["circuit_head_fraction_90"] == json.loads(json.dumps(result.summary()["circuit_head_fraction_90"]))
    assert (out / "subtask00_head_scores.pt").exists() and (out / "prior_vs_context.pt").exists()
    page = mechanism_report(result, model).to_html()
    assert page.count("plotly-graph-div") >= 6 and "Findings" in page and "L0H0" in page


def test_bad_config_is_a_clear_error(model):
    with pytest.raises(ReasonlensError, match="out of range"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "subtasks": (99,)}), progress=False)
    with pytest.raises(ReasonlensError, match="at least 2"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "n_examples": 1}), progress=False)


def test_cli_recipe_writes_results_and_report(tmp_path, monkeypatch):
    @dataclass
    class Small(MechanismConfig):
        n_reference: int = 6
        n_trace: int = 2
        n_conflict: int = 120
        n_relation: int = 30
        relation_seeds: tuple = (0,)

    monkeypatch.setattr(mechanism, "MechanismConfig", Small)
    assert main(["run", "cot-mechanism", "--model", main_model_name(), "--n", "6", "--subtasks", "4",
                 "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("circuit_head_fraction_90", "writer_share_late", "crossover_relative_depth", "pathways", "n_pairs"):
        assert key in results
    assert (tmp_path / "report.html").stat().st_size > 100_000

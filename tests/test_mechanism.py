"""The Dutta et al. study end to end on the main reference model (small sizes), and its CLI recipe."""

import json
from dataclasses import dataclass

import pytest

from reasonlens.cli import main
from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model, main_model_name
from reasonlens.patching import mechanism
from reasonlens.patching.mechanism import MechanismConfig, MechanismResult, analyze_mechanism
from reasonlens.reports import mechanism_report

SMALL = dict(n_examples=12, subtasks=(0, 5, 10), n_reference=6, n_trace=2, n_conflict=120, n_relation=30,
             relation_seeds=(0,), few_shot=1, n_few_shot=4, n_horizon=4)


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
    assert scores.meta["normalize"] == "batch"
    assert s["horizon"]["n"] + s["horizon"]["n_dropped"] + s["horizon"]["n_skipped"] == 4


def test_every_filter_is_counted_and_kept_pairs_switch(result, model):
    """Each question is accounted for once; the kept pairs are exactly the candidates whose corrupted run
    switched away from the answer (rebuilt here from the pairs and two plain forwards)."""
    from reasonlens.ontology import generate
    from reasonlens.patching.engine import run_padded
    from reasonlens.patching.subtasks import subtask_pairs

    config = result.config
    examples = generate(config.n_examples, kind="fictional", seed=config.seed, hops=2, distractor=False,
                        extra_concepts=0, redundant_step_p=0.0, ordering="preorder")
    for a in result.subtasks:
        p = a.pairs.summary()
        assert p["questions"] == p["skipped_uncorruptible"] + p["dropped_clean_wrong"] + p["candidates"]
        assert p["candidates"] == p["dropped_by_filter"] + p["dropped_to_balance"] + p["kept"]
        assert p["kl_noise"]["n"] == p["candidates"] and p["kl_noise"]["min"] > 0
        assert p["switch"]["ci95"][0] <= p["switch"]["rate"] <= p["switch"]["ci95"][1]
        assert p["switch"]["rate"] > 0.5  # every subtask's corruption changes the answer in most pairs
        pairs = subtask_pairs(model, examples, a.subtask["index"], seed=config.seed, skip_uncorruptible=True)
        corrupted = run_padded(model, pairs.corrupted, pairs.attention_mask)[:, -1].argmax(-1)
        switched = [i for i, top in zip(pairs.kept_indices, corrupted.tolist())
                    if top != int(pairs.answer[pairs.kept_indices.index(i)])]
        assert p["switch"]["rate"] == len(switched) / len(pairs)
        if a.subtask["slot"] != "label":
            assert a.kept_indices == switched
        else:  # balanced: as many True as False questions, all switched
            assert set(a.kept_indices) <= set(switched) and p["classes"]["True"] == p["classes"]["False"] > 0
            assert a.labels == [examples[i].label for i in a.kept_indices]


def test_label_agreement_is_reported_per_class(result):
    by_class = result.summary()["label_agreement_by_class"]
    label = next(a for a in result.analysed() if a.subtask["slot"] == "label")
    matches = label.circuit.matches.values
    for name, value in (("True", True), ("False", False)):
        rows = [i for i, lab in enumerate(label.labels) if lab == value]
        assert by_class[name]["k=0"] == pytest.approx(float(matches[rows, 0].mean()))
        assert by_class[name]["k=24"] == 1.0  # all heads kept: the full model


def test_few_shot_condition_reads_the_demonstrations(result):
    few = result.summary()["few_shot"]
    assert few["demonstrations"] == 1 and set(few["pairs"]) == {a.name for a in result.subtasks}
    for analysis in result.few_shot:
        if analysis.flow is not None:
            assert all(r["few_shot"][1] > r["few_shot"][0] for r in analysis.flow.regions)


def test_save_and_report(result, model, tmp_path):
    out = result.save(tmp_path)
    saved = json.loads((out / "results.json").read_text())
    assert saved["circuit_head_fraction_90"] == json.loads(json.dumps(result.summary()["circuit_head_fraction_90"]))
    assert (out / "subtask00_head_scores.pt").exists() and (out / "prior_vs_context.pt").exists()
    page = mechanism_report(result, model).to_html()
    assert page.count("plotly-graph-div") >= 6 and "Findings" in page and "L0H0" in page
    loaded = MechanismResult.load(out)  # every analysis reloads: the same findings and the same page
    assert json.dumps(loaded.summary(), sort_keys=True) == json.dumps(json.loads(json.dumps(result.summary())),
                                                                      sort_keys=True)
    assert mechanism_report(loaded).to_html().count("plotly-graph-div") == mechanism_report(result).to_html().count(
        "plotly-graph-div")
    with pytest.raises(ReasonlensError, match="no file"):
        MechanismResult.load(tmp_path / "nothing-here")


def test_bad_config_is_a_clear_error(model):
    with pytest.raises(ReasonlensError, match="out of range"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "subtasks": (99,)}), progress=False)
    with pytest.raises(ReasonlensError, match="at least 2"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "n_examples": 1}), progress=False)
    with pytest.raises(ReasonlensError, match="normalize"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "normalize": "none"}), progress=False)
    with pytest.raises(ReasonlensError, match="pair_filter"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "pair_filter": "kl"}), progress=False)
    with pytest.raises(ReasonlensError, match="n_few_shot"):
        analyze_mechanism(model, MechanismConfig(**{**SMALL, "few_shot": 4}), progress=False)


@dataclass
class CliSmall(MechanismConfig):
    n_reference: int = 6
    n_trace: int = 2
    n_conflict: int = 120
    n_relation: int = 30
    relation_seeds: tuple = (0,)
    n_few_shot: int = 3
    n_horizon: int = 2


def test_cli_recipe_writes_results_and_report(tmp_path, monkeypatch, browser_check):
    monkeypatch.setattr(mechanism, "MechanismConfig", CliSmall)
    assert main(["run", "cot-mechanism", "--model", main_model_name(), "--n", "6", "--subtasks", "4",
                 "--few-shot", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("circuit_head_fraction_90", "writer_share_late", "crossover_relative_depth", "pathways", "n_pairs",
                "pairs", "label_agreement_by_class", "few_shot", "horizon"):
        assert key in results
    found = browser_check(tmp_path / "report.html", "cot-mechanism")
    # head scores, circuits, writer and mover roles, pathways, horizon, prior vs context, relation probes
    assert found == {"figures": 8, "views": 1}


def _findings(result) -> str:
    return json.dumps(result.summary(), sort_keys=True, default=str)


def test_resumed_study_equals_an_uninterrupted_one(result, model, tmp_path, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    saved = analyze_mechanism(model, MechanismConfig(**SMALL), model_name="main", progress=False,
                              checkpoint_dir=checkpoints)
    assert _findings(saved) == _findings(result)  # saving changes nothing
    assert {p.stem for p in checkpoints.glob("*.pt")} == {
        "subtask-0-0shot", "subtask-5-0shot", "subtask-10-0shot", "subtask-0-1shot", "subtask-5-1shot",
        "subtask-10-1shot", "horizon", "prior-vs-context", "relations"}
    for name in ("prior-vs-context", "relations"):  # as if the run had stopped after the horizon
        (checkpoints / f"{name}.pt").unlink()

    def recomputed(*args, **kwargs):
        raise AssertionError("a saved subtask was computed again")

    monkeypatch.setattr(mechanism, "_analyse_subtask", recomputed)
    resumed = analyze_mechanism(model, MechanismConfig(**SMALL), model_name="main", progress=False,
                                checkpoint_dir=checkpoints)
    assert _findings(resumed) == _findings(result)


def test_cli_recipe_resumes_after_an_interruption(tmp_path, monkeypatch, capsys):
    from reasonlens.patching import relations
    from reasonlens.resume import resume_folder

    monkeypatch.setattr(mechanism, "MechanismConfig", CliSmall)
    out = tmp_path / "study"
    command = ["run", "cot-mechanism", "--model", main_model_name(), "--n", "6", "--subtasks", "4", "--few-shot", "0",
               "--out", str(out)]
    probes = relations.relation_probes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(relations, "relation_probes", interrupted)
    assert main(command) == 130
    err = capsys.readouterr().err
    checkpoints = resume_folder(out)
    assert f"kept in {checkpoints}" in err and "nothing new was written" in err and not out.exists()
    assert {p.stem for p in checkpoints.glob("*.pt")} == {"subtask-4-0shot", "horizon", "prior-vs-context"}

    def recomputed(*args, **kwargs):
        raise AssertionError("a saved subtask was computed again")

    monkeypatch.setattr(relations, "relation_probes", probes)
    monkeypatch.setattr(mechanism, "_analyse_subtask", recomputed)
    assert main(command) == 0
    assert "3 analyses already done" in capsys.readouterr().out
    assert (out / "results.json").exists() and not checkpoints.exists()

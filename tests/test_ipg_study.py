"""The IPG study recipe and its CLI on a shipped model, at a tiny scale."""

import json
from dataclasses import dataclass

import pytest

from reasonlens.attribution import study
from reasonlens.attribution.ipg import Attribution
from reasonlens.attribution.study import METHODS, IPGStudyConfig, IPGStudyResult, Variant, run_ipg_study
from reasonlens.cli import main
from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.reports import ipg_report

SMALL = dict(n_support=4, n_eval=8, p_values=(4, 8), random_seeds=2, steps=2, n_samples=3,
             length_gammas=(0.0, 1.0), length_p=4, dice_p=4, variants=(Variant("false 2-hop", "false", 2),),
             support_sizes=(2,), task=Variant("fictional 2-hop", "fictional", 2))


@pytest.fixture(scope="module")
def result():
    return run_ipg_study(load_model("reasonlens-headroom"), IPGStudyConfig(**SMALL), model_name="headroom",
                         progress=False)


def test_study_measures_every_method_and_setting(result, tmp_path):
    summary = result.summary()
    assert set(summary["suppression"]) == set(METHODS) == set(summary["enhancement"])
    assert all(set(row) == {"4", "8"} for row in summary["suppression"].values())
    assert all(0 <= v <= 1 for row in summary["suppression"].values() for v in row.values())
    assert set(summary["length_control"]) == {"0.0", "1.0"}
    assert summary["length_control"]["1.0"]["mean_steps"] > 0
    dice = summary["dice"]
    assert dice["variants"]["names"] == ["fictional 2-hop", "false 2-hop"]
    assert dice["variants"]["matrix"][0][0] == 1.0 and dice["random_expectation"] == 4 / 256
    assert dice["support_sizes"]["names"] == ["M=2", "M=4"]
    out = result.save(tmp_path)
    assert json.loads((out / "results.json").read_text())["accuracy_original"] == result.accuracy_original
    assert Attribution.load(out / "scores_ipg.pt").top(4) == result.scores["ipg"].top(4)
    loaded = IPGStudyResult.load(out)
    assert loaded.summary() == result.summary() and loaded.config == result.config
    html = ipg_report(result).to_html()
    assert "Suppression" in html and "Length control" in html and "Dice" in html


def test_unmodified_accuracy_matches_gamma_one(result):
    """gamma = 1 in the length sweep is the unmodified model on the length evaluation set."""
    from reasonlens.attribution.steering import steer
    from reasonlens.ontology import generate

    c = result.config
    questions = generate(c.n_eval, kind=c.task.kind, hops=c.task.hops, seed=4000 + c.seed,
                         redundant_step_p=c.redundant_step_p)
    plain = steer(load_model("reasonlens-headroom"), questions)
    assert result.length_control[1.0]["accuracy"] == plain.accuracy
    assert result.length_control[1.0]["mean_steps"] == plain.mean_steps


def test_bad_study_settings():
    with pytest.raises(ReasonlensError, match="support_sizes"):
        IPGStudyConfig(**{**SMALL, "support_sizes": (9,)})
    with pytest.raises(ReasonlensError, match="p_values"):
        IPGStudyConfig(**{**SMALL, "p_values": (0,)})
    with pytest.raises(ReasonlensError, match="exceed"):
        run_ipg_study(load_model("reasonlens-headroom"), IPGStudyConfig(**{**SMALL, "component": "head", "p_values": (4, 16)}), progress=False)


def test_study_without_a_correctness_signal_says_so():
    """The main model answers every sampled chain of easy questions right: no group has an advantage."""
    with pytest.raises(ReasonlensError, match="equal rewards .mean reward 1.00., so correctness gives IPG no signal"):
        run_ipg_study(load_model("reasonlens-main"),
                      IPGStudyConfig(**{**SMALL, "task": Variant("fictional 1-hop", "fictional", 1)}), progress=False)


def test_cli_recipe_writes_results_and_report(tmp_path, monkeypatch, capsys):
    @dataclass(frozen=True)
    class Small(IPGStudyConfig):
        n_support: int = 4
        n_eval: int = 6
        random_seeds: int = 1
        steps: int = 2
        n_samples: int = 2
        length_gammas: tuple = (0.0, 1.0)
        variants: tuple = ()

    monkeypatch.setattr(study, "IPGStudyConfig", Small)
    assert main(["run", "ipg", "--model", "reasonlens-headroom", "--kind", "head", "--layers", "2", "3",
                 "--n-support", "4", "--n-eval", "6", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("accuracy_original", "suppression", "enhancement", "length_control", "dice"):
        assert key in results
    assert set(results["suppression"]["ipg"]) == {"1", "2", "3", "4"}
    assert (tmp_path / "report.html").stat().st_size > 100_000
    assert main(["run", "ipg", "--model", "reasonlens-headroom", "--layers", "9", "--out", str(tmp_path / "bad")]) == 2
    assert "layers" in capsys.readouterr().err


def test_resumed_study_equals_an_uninterrupted_one(result, tmp_path, monkeypatch):
    def findings(r):
        return json.dumps({k: v for k, v in r.summary().items() if k != "seconds"}, sort_keys=True)

    checkpoints = tmp_path / "checkpoints"
    model = load_model("reasonlens-headroom")
    saved = run_ipg_study(model, IPGStudyConfig(**SMALL), model_name="headroom", checkpoint_dir=checkpoints)
    assert findings(saved) == findings(result)  # saving changes nothing
    for path in [*checkpoints.glob("steering-*.pt"), checkpoints / "length-control.pt"]:
        path.unlink()  # as if the run had stopped after the attributions

    def recomputed(*args, **kwargs):
        raise AssertionError("a saved attribution was computed again")

    monkeypatch.setattr(study, "IntegratedPolicyGradient", recomputed)
    monkeypatch.setattr(study, "IntegratedGradients", recomputed)
    monkeypatch.setattr(study, "ActivationMagnitude", recomputed)
    resumed = run_ipg_study(model, IPGStudyConfig(**SMALL), model_name="headroom", checkpoint_dir=checkpoints)
    assert findings(resumed) == findings(result)
    with pytest.raises(AssertionError, match="computed again"):  # another configuration does not read them
        run_ipg_study(model, IPGStudyConfig(**{**SMALL, "seed": 1}), model_name="headroom", checkpoint_dir=checkpoints)

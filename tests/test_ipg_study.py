"""The IPG study recipe and its CLI on a shipped model, at a tiny scale."""

import json
from dataclasses import dataclass

import pytest

from reasonlens.attribution import study
from reasonlens.attribution.ipg import Attribution
from reasonlens.attribution.study import IPGStudyConfig, IPGStudyResult, Variant, method_names, run_ipg_study
from reasonlens.cli import main
from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.reports import ipg_report

SMALL = dict(n_support=4, seeds=2, n_eval=8, p_values=(4, 8), steps=2, n_samples=3, ablation_steps=(2, 4),
             length_gammas=(0.0, 1.0), length_p=4, dice_p=4, variants=(Variant("false 2-hop", "false", 2),),
             task=Variant("fictional 2-hop", "fictional", 2), n_bootstrap=200)


@pytest.fixture(scope="module")
def result():
    return run_ipg_study(load_model("reasonlens-headroom"), IPGStudyConfig(**SMALL), model_name="headroom",
                         progress=False)


def test_study_measures_every_method_and_setting_with_intervals(result, tmp_path):
    summary = result.summary()
    methods = method_names(("correctness", "gold_label_logprob"))
    for mode in ("suppression", "enhancement"):
        assert set(summary[mode]) == set(methods)
        for row in summary[mode].values():
            assert set(row) == {"4", "8"}
            for cell in row.values():
                low, high = cell["ci95"]
                assert low <= cell["accuracy"] <= high and cell["n_seeds"] == 2 and cell["n_questions"] == 8
        for p in ("4", "8"):
            assert set(summary["paired"][mode][p]) == set(methods) - {"ipg"}
            assert all(0 <= v["p_value"] <= 1 for v in summary["paired"][mode][p].values())
    support = summary["support"]
    assert support["disjoint"] and len(support["n_informative_prompts"]["correctness"]) == 2
    assert {r["name"] for r in summary["ablations"]} >= {"raw PG", "q=2 midpoint", "mean baseline"}
    transfer = summary["transfer"]["false 2-hop"]
    assert transfer["ipg"]["n_seeds"] == 2 and "p_value" in transfer["ipg_minus_random"]
    dice = summary["dice"]
    assert dice["variants"]["names"] == ["fictional 2-hop seed 0", "fictional 2-hop seed 1", "false 2-hop"]
    assert dice["random_expectation"] == 4 / 256 and len(dice["disjoint_support_sets"]["pairs"]) == 1
    assert set(summary["length_control"]) == {"0.0", "1.0"}
    out = result.save(tmp_path)
    assert json.loads((out / "results.json").read_text())["accuracy_original"] == summary["accuracy_original"]
    assert Attribution.load(out / "scores_ipg_seed_0.pt").top(4) == result.scores["ipg seed 0"].top(4)
    loaded = IPGStudyResult.load(out)
    assert loaded.summary() == summary and loaded.config == result.config
    html = ipg_report(result).to_html()
    assert "Suppression" in html and "Ablations" in html and "Transfer" in html and "Length control" in html


def test_the_tables_are_computed_from_the_per_question_outcomes(result):
    """Accuracy, paired differences and the support sets, recomputed by hand from what the study kept."""
    from reasonlens.ontology import format_prompt, generate

    c = result.config
    rows = result.correct["suppression"]["ipg"][8]
    ipg = [[ch == "1" for ch in row] for row in rows]
    assert result.accuracy("suppression", "ipg", 8)["accuracy"] == sum(map(sum, ipg)) / 16
    random = [[ch == "1" for ch in row] for row in result.correct["suppression"]["random"][8]]
    difference = result.paired("suppression", 8, "random")["difference"]
    assert difference == pytest.approx((sum(map(sum, ipg)) - sum(map(sum, random))) / 16)
    evaluation = generate(c.n_eval, kind=c.task.kind, hops=c.task.hops, seed=2000 + c.seed)
    sets, info = study._support_sets(c, evaluation)
    prompts = [{format_prompt(e) for e in support} for support in sets]
    assert [len(p) for p in prompts] == [c.n_support] * c.seeds and not prompts[0] & prompts[1]
    assert not (prompts[0] | prompts[1]) & {format_prompt(e) for e in evaluation}
    assert info["seeds"] == c.seeds and info["disjoint"]
    # the first support set's questions are those whose sampled chains the first seed's IPG scored
    assert len(result.scores["ipg seed 0"].meta["texts"]) == c.n_support


def test_gamma_one_and_the_unmodified_model_agree(result):
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
    with pytest.raises(ReasonlensError, match="p_values"):
        IPGStudyConfig(**{**SMALL, "p_values": (0,)})
    with pytest.raises(ReasonlensError, match="rewards"):
        IPGStudyConfig(**{**SMALL, "rewards": ("accuracy",)})
    with pytest.raises(ReasonlensError, match="steps"):
        IPGStudyConfig(**{**SMALL, "steps": 0})
    with pytest.raises(ReasonlensError, match="rule"):
        IPGStudyConfig(**{**SMALL, "ablation_rules": ("simpson",)})
    with pytest.raises(ReasonlensError, match="exceed"):
        run_ipg_study(load_model("reasonlens-headroom"), IPGStudyConfig(**{**SMALL, "component": "head", "p_values": (4, 16)}), progress=False)


def test_study_without_a_correctness_signal_says_so():
    """The main model answers every sampled chain of easy questions right: no group has an advantage."""
    with pytest.raises(ReasonlensError, match="equal rewards .mean reward 1.00., so correctness gives IPG no signal"):
        run_ipg_study(load_model("reasonlens-main"),
                      IPGStudyConfig(**{**SMALL, "task": Variant("fictional 1-hop", "fictional", 1)}), progress=False)


def test_cli_recipe_writes_results_and_report(tmp_path, monkeypatch, capsys, browser_check):
    @dataclass(frozen=True)
    class Small(IPGStudyConfig):
        n_support: int = 4
        seeds: int = 1
        n_eval: int = 6
        steps: int = 2
        n_samples: int = 2
        ablation_steps: tuple = (2,)
        length_gammas: tuple = (0.0, 1.0)
        variants: tuple = ()
        n_bootstrap: int = 200

    monkeypatch.setattr(study, "IPGStudyConfig", Small)
    assert main(["run", "ipg", "--model", "reasonlens-headroom", "--kind", "head", "--layers", "2", "3",
                 "--n-support", "4", "--n-eval", "6", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("accuracy_original", "suppression", "enhancement", "paired", "ablations", "transfer", "length_control",
                "dice", "correct"):
        assert key in results
    assert set(results["suppression"]["ipg"]) == {"1", "2", "4"}
    assert results["config"]["seeds"] == 1 and results["config"]["rewards"] == ["correctness", "gold_label_logprob"]
    # accuracy vs p (suppression, enhancement), IPG scores, Dice matrix, length control
    assert browser_check(tmp_path / "report.html", "ipg") == {"figures": 5, "views": 0}
    assert main(["run", "ipg", "--model", "reasonlens-headroom", "--layers", "9", "--out", str(tmp_path / "bad")]) == 2
    assert "layers" in capsys.readouterr().err


@pytest.mark.slow  # a second full run of the study (45 s); the checkpoints themselves: tests/test_resume.py
def test_resumed_study_equals_an_uninterrupted_one(result, tmp_path, monkeypatch):
    def findings(r):
        return json.dumps({k: v for k, v in r.summary().items() if k != "seconds"}, sort_keys=True)

    checkpoints = tmp_path / "checkpoints"
    model = load_model("reasonlens-headroom")
    saved = run_ipg_study(model, IPGStudyConfig(**SMALL), model_name="headroom", checkpoint_dir=checkpoints)
    assert findings(saved) == findings(result)  # saving changes nothing
    for path in [*checkpoints.glob("suppression-*.pt"), *checkpoints.glob("enhancement-*.pt"),
                 checkpoints / "length-control.pt"]:
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

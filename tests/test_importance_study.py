"""The step-importance study recipe and its CLI on the shipped models, at a small scale."""

import json
import math
from dataclasses import dataclass, field, replace

import pytest

from reasonlens.cli import main
from reasonlens.errors import ReasonlensError
from reasonlens.importance import study
from reasonlens.importance.chains import chains_from_examples
from reasonlens.importance.labels import label_steps
from reasonlens.importance.probes import ProbeConfig
from reasonlens.importance.study import (
    CONTROLS,
    StepImportanceConfig,
    StepImportanceResult,
    generator_step_set,
    run_step_importance_study,
)
from reasonlens.model import load_model
from reasonlens.ontology import generate
from reasonlens.reports import step_importance_report

FAST_PROBE = ProbeConfig(epochs=4, seeds=(42, 43))
# Gold chains with redundant steps: the model's greedy chains (the default) have too few removable steps at this size.
SMALL = dict(kinds=("fictional",), hops=(2, 3), n_per_cell=48, validation_per_cell=16, source="gold",
             probe=FAST_PROBE)


@pytest.fixture(scope="module")
def main_model():
    return load_model("reasonlens-main")


@pytest.fixture(scope="module")
def result(main_model):
    return run_step_importance_study(main_model, StepImportanceConfig(**SMALL), second_model=load_model("reasonlens-seed1"),
                                     model_name="main", second_model_name="seed1")


def test_results_hold_every_field_the_recipe_promises(result):
    s = result.summary()
    assert s["filter_counts"]["total"] == 96 >= s["filter_counts"]["labelled"] == len(result.labels.chains) > 0
    assert set(s["probe_accuracy"]) >= set(CONTROLS)
    for name in CONTROLS:
        assert 0 <= s["probe_accuracy"][name] <= 1
        assert 0 <= s["generator_labels"]["probe_accuracy"][name] <= 1
    for key in ("accuracy", "agreement", "random_init_agreement"):
        assert 0 <= s["cross_model"][key] <= 1
    assert set(s["labels_vs_ground_truth"]) >= {"precision", "recall", "precision_ci95", "recall_ci95"}
    assert all(0 < s["core_size"][k] <= 1 for k in ("activation", "random"))
    assert s["core_size"]["n_chains"] <= len(result.labels.chains) and 0 <= s["core_size"]["p_value"] <= 1
    # The study's chains are labelled and probed; the gold validation chains check the labels.
    assert {c.chain.source for c in result.labels.chains} == {"gold"} and StepImportanceConfig().source == "greedy"
    assert s["validation"]["filter_counts"]["total"] == s["validation"]["paper_config_filter_counts"]["total"] == 32
    assert s["validation"]["paper_config_filter_counts"]["labelled"] <= s["validation"]["filter_counts"]["labelled"]
    assert {c.source for c in result.suites["generator"].steps.chains} == {"gold"}
    truth = s["labels_vs_ground_truth"]
    assert truth["redundant_fate"]["removable"] == truth["n_both"]
    assert sum(truth["redundant_fate"].values()) == sum(r == "redundant" for c in result.validation_labels.chains
                                                        for r in c.chain.roles)
    assert set(s["validation"]["influence_by_role"]) >= {"redundant", "rule_copy", "derived_fact"}
    assert s["validation"]["oracle_ranking"]["precision"] >= truth["precision"] - 1e-9
    assert s["scores"]["subsets_decided"] >= s["scores"]["rejected_by_sufficiency"] > 0
    # Every comparison the docs make: two accuracies with intervals, a permutation p-value; probes split by chain.
    for labels in (s, s["generator_labels"]):
        assert set(labels["comparisons"]) == {f"context vs {name}" for name in study.COMPARED}
        for cmp in labels["comparisons"].values():
            assert all(lo <= acc <= hi for acc, (lo, hi) in zip(cmp["accuracy"], cmp["ci95"]))
            assert 0 < cmp["p_value"] <= 1
        assert len(labels["n_test_steps"]) == len(FAST_PROBE.seeds)
    for suite in result.suites.values():
        context = suite.probes["context"]
        for run in context.runs:
            test_chains = {context.groups[i] for i in run.test_index}
            train_chains = set(context.groups) - test_chains
            assert test_chains and train_chains
    # Every labelled step of the removability suite is a labelled step of the pipeline.
    steps = result.suites["removability"].steps
    assert len(steps) == sum(label is not None for c in result.labels.chains for label in c.labels)
    # The generator's role tags are the generator labels, so the surface regression with them is exact.
    assert s["generator_labels"]["probe_accuracy"]["surface"] == 1.0
    assert len(s["generator_labels"]["per_layer"]["context"]) == 6
    assert s["generator_labels"]["cross_model"]["matrix"]["names"] == ["main", "seed1", "random init"]
    for labels in (s, s["generator_labels"]):  # the figure's agreements: every seed's test steps, as the numbers
        cm = labels["cross_model"]
        assert cm["matrix"]["matrix"][0][1] == pytest.approx(cm["agreement"], abs=0.02)
        assert cm["matrix"]["matrix"][0][2] == pytest.approx(cm["random_init_agreement"], abs=0.02)
    # The context probe's P(removable) covers every step of every chain, labelled or not.
    for suite in result.suites.values():
        assert [len(p) for p in suite.removable_probability] == [len(c) for c in suite.steps.chains]
        assert all(0 <= p <= 1 for row in suite.removable_probability for p in row)
    json.dumps(s)


def test_save_load_and_report(result, tmp_path):
    result.save(tmp_path)
    again = StepImportanceResult.load(tmp_path)
    assert json.dumps(again.summary(), sort_keys=True) == json.dumps(result.summary(), sort_keys=True)
    assert again.suites["generator"].steps.items == result.suites["generator"].steps.items
    html = step_importance_report(again).to_html()
    assert "Step importance: main" in html and "P(removable)" in html and "Cross-model" in html
    with pytest.raises(ReasonlensError, match="results.json"):
        StepImportanceResult.load(tmp_path / "nothing")


def test_generator_step_set_follows_the_role_tags(main_model):
    chains = chains_from_examples(main_model, generate(3, hops=2, seed=4, redundant_step_p=1.0))
    chains[0].roles[0] = None  # a step the generator does not know, as in a greedy chain
    steps = generator_step_set(chains)
    for c, s, label in steps.items:
        assert label == int(chains[c].roles[s] == "redundant")
    assert (0, 0) not in {(c, s) for c, s, _ in steps.items}
    assert len(steps) == sum(len(c) for c in chains) - 1


def test_too_few_labels_are_skipped_with_a_reason(main_model):
    tiny = run_step_importance_study(main_model, StepImportanceConfig(**{**SMALL, "n_per_cell": 3,
                                                                          "validation_per_cell": 3, "hops": (2,)}))
    assert set(tiny.skipped) == {"removability", "generator"}
    assert "at least 10" in tiny.skipped["generator"]
    summary = tiny.summary()
    assert summary["probe_accuracy"]["context"] is None and summary["generator_labels"] is None
    if tiny.labels.chains:
        assert "at least 10" in tiny.skipped["removability"]
        assert not math.isnan(summary["core_size"]["activation"])
    else:
        assert "no chain passed" in tiny.skipped["removability"] and summary["core_size"] is None
    json.dumps(summary)
    assert "Step importance" in step_importance_report(tiny).to_html()


def test_bad_settings():
    with pytest.raises(ReasonlensError, match="source"):
        StepImportanceConfig(source="sampled")
    with pytest.raises(ReasonlensError, match="n_per_cell"):
        StepImportanceConfig(n_per_cell=0)


def test_cli_recipe_writes_results_and_report(tmp_path, monkeypatch, offline, browser_check):
    @dataclass(frozen=True)
    class Small(StepImportanceConfig):
        probe: ProbeConfig = field(default_factory=lambda: FAST_PROBE)

    monkeypatch.setattr(study, "StepImportanceConfig", Small)
    assert main(["run", "step-importance", "--model", "reasonlens-main", "--n", "12", "--validation-n", "12",
                 "--kind", "fictional", "--hops", "3", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("probe_accuracy", "cross_model", "labels_vs_ground_truth", "core_size"):
        assert key in results
    assert results["second_model"] == "reasonlens-seed1"  # the shipped second seed, by default
    # influence; the generator labels' probe accuracy by layer and cross-model agreement (12 greedy chains have too
    # few removable steps for the removability probes, which the page says)
    assert "removable" in results["skipped"]["removability"]
    assert browser_check(tmp_path / "report.html", "step-importance") == {"figures": 3, "views": 0}
    assert main(["run", "step-importance", "--model", "no-such-model", "--out", str(tmp_path)]) == 2


@pytest.mark.slow  # a second full run of the study; the checkpoints themselves: tests/test_resume.py
def test_resumed_study_equals_an_uninterrupted_one(result, main_model, tmp_path, monkeypatch):
    def findings(r):
        return json.dumps({k: v for k, v in r.summary().items() if k != "seconds"}, sort_keys=True, default=str)

    checkpoints = tmp_path / "checkpoints"
    seed1 = load_model("reasonlens-seed1")
    run = lambda: run_step_importance_study(main_model, StepImportanceConfig(**SMALL), second_model=seed1,  # noqa: E731
                                            model_name="main", second_model_name="seed1", checkpoint_dir=checkpoints)
    assert findings(run()) == findings(result)  # saving changes nothing
    for path in checkpoints.glob("probes-*.pt"):
        path.unlink()  # as if the run had stopped after the labels

    def recomputed(*args, **kwargs):
        raise AssertionError("saved labels were computed again")

    monkeypatch.setattr(study, "label_steps", recomputed)
    monkeypatch.setattr("reasonlens.importance.chains.chains_from_examples", recomputed)
    assert findings(run()) == findings(result)


def test_study_runs_on_a_subword_qwen2(tmp_path):
    """Any HF causal LM with a tokenizer: a random Qwen2 (grouped-query attention) over a byte-level BPE whose
    concept names split into several tokens. Sentence steps are cut at token boundaries; the labelling runs every
    stage (at a threshold a random model can pass), then every probe and control on the generator's labels."""
    from model_util import write_subword_qwen2
    from tokenizers_util import byte_level_bpe, prontoqa_texts, subword_tokenizers

    from reasonlens.importance.study import TRUE_FALSE_LABELS

    # Labels are one token each in real tokenizers; where one is not, the error says what to do.
    small = load_model(str(write_subword_qwen2(tmp_path / "small", subword_tokenizers()["byte-level"])))
    with pytest.raises(ReasonlensError, match="'False' is 2 tokens.*single token"):
        chains_from_examples(small, generate(1, hops=2, seed=1))
    model = load_model(str(write_subword_qwen2(tmp_path / "qwen2", byte_level_bpe(prontoqa_texts(), vocab_size=400))))
    chain = chains_from_examples(model, generate(1, hops=2, seed=1))[0]
    assert any(len(block) > 2 for block in chain.step_ids)  # steps of several subword tokens
    assert model.tokenizer.decode(chain.token_ids()[chain.prompt_len:]).strip() == " ".join(chain.steps)
    permissive = replace(TRUE_FALSE_LABELS, require_stage2_removal=False,
                         scoring=replace(TRUE_FALSE_LABELS.scoring, mode="expected", tau=1e-9))
    config = StepImportanceConfig(kinds=("fictional",), hops=(2, 3), n_per_cell=6, validation_per_cell=16,
                                  source="gold", labels=permissive, probe=FAST_PROBE)
    result = run_step_importance_study(model, config, model_name="random-qwen2")
    s = result.summary()
    assert s["filter_counts"]["labelled"] > 0
    for c in result.labels.chains:
        assert c.influence.shape == (c.prefix_len + 1, c.prefix_len + 1)
    # A random model's shortest passing prefixes are a step or two, so nothing is removable: too few to probe.
    assert "removable" in result.skipped["removability"]
    assert set(s["generator_labels"]["comparisons"]) == {f"context vs {name}" for name in study.COMPARED}
    json.dumps(s)
    # Its own chains: a random model writes no sentence, and the study says so instead of labelling nothing.
    with pytest.raises(ReasonlensError, match="wrote no complete sentence in any of its 4 greedy chains"):
        run_step_importance_study(model, replace(config, source="greedy", n_per_cell=2))
    # At the paper's threshold a random model's chains are not sufficient.
    strict = label_steps(model, [c.chain for c in result.labels.chains][:4], TRUE_FALSE_LABELS)
    assert strict.filter_counts["sufficient"] == 0 and not strict.chains


def test_a_tokenizer_that_merges_across_step_boundaries_gets_a_clear_error(tmp_path):
    """A BPE trained without splitting at spaces merges "a " with what follows, so a step cannot be cut out alone."""
    from model_util import write_subword_gpt2
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers_util import prontoqa_texts
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="\n", behavior="isolated")  # lines, not words
    tk.decoder = decoders.Fuse()
    tk.train_from_iterator(prontoqa_texts(), trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                                                 show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    model = load_model(str(write_subword_gpt2(tmp_path, tok)))
    with pytest.raises(ReasonlensError, match="merges text across the space.*Join it with its neighbour"):
        chains_from_examples(model, generate(2, hops=2, seed=1))

"""The one result contract (reasonlens.results): every config turns into plain JSON data and back, and every study
result saves to a folder (``results.json`` with its class and format, and its parts) and loads back whole."""

import itertools
import json
import math
import shutil
from dataclasses import fields, is_dataclass

import numpy as np
import pytest
import torch

import reasonlens.attribution
import reasonlens.importance
import reasonlens.patching
from reasonlens.attribution.ipg import Attribution, IPGConfig
from reasonlens.attribution.study import IPGStudyConfig, IPGStudyResult, Variant, method_names
from reasonlens.errors import ReasonlensError
from reasonlens.evaluate import AnswerNow, EvalConfig, EvalResult, Record, RuleChoice
from reasonlens.generation import GenerationConfig
from reasonlens.importance.labels import LabelConfig
from reasonlens.importance.probes import ProbeConfig, TfidfEncoder
from reasonlens.importance.scoring import ScoringConfig
from reasonlens.importance.study import StepImportanceConfig, StepImportanceResult, run_step_importance_study
from reasonlens.model import load_model, main_model_name
from reasonlens.ontology.generator import V1_SIZES
from reasonlens.patching.engine import PatchConfig
from reasonlens.patching.horizon import HorizonConfig
from reasonlens.patching.mechanism import MechanismConfig, MechanismResult, analyze_mechanism
from reasonlens.patching.relations import RelationProbeConfig
from reasonlens.results import RESULTS_FILE, RESULTS_FORMAT, ConfigDict, StudyResult, config_from_dict, config_to_dict
from reasonlens.train import ArchitectureConfig, TrainConfig

# One instance of every public config away from its defaults (tuples, None, nested configs, a tuple of Variants).
CHANGED = [
    MechanismConfig(hops=3, n_examples=6, subtasks=(0, 2), normalize="example", few_shot=0, relation_seeds=(5,)),
    HorizonConfig(statement="entity_fact", stages=(0, 2), layers=(1,), require_clean=False, max_new_tokens=12),
    RelationProbeConfig(hidden_sizes=(8, 4), mlp_alpha=0.1, max_iter=20),
    PatchConfig(site="z", layers=(0, 1), positions="all", units=(2, 3), direction="noise", normalize="none"),
    IPGConfig(component="neuron", layers=(1, 2), steps=3, rule="midpoint", baseline="mean", n_samples=2),
    IPGStudyConfig(component="head", layers=(2,), task=Variant("false 2-hop", "false", 2), n_support=12, p_values=(1, 3),
                   length_gammas=(0.0, 2.5), variants=(Variant("a", "fictional", 1), Variant("b", "true", 2)),
                   rewards=("valid_steps", "correctness"), ablation_rules=("trapezoid",)),
    StepImportanceConfig(kinds=("false",), hops=(3,), source="greedy", probe=ProbeConfig(arch="linear", seeds=(1, 2)),
                         labels=LabelConfig(scoring=ScoringConfig(mode="sampled", tau=0.7), thresholds=(0.2, 0.1))),
    LabelConfig(ranking="random", thresholds=(0.5,), scoring=ScoringConfig(suffix=" So"), use_attainability=False),
    ProbeConfig(arch="mlp", hidden=16, seeds=(7,), lr=0.01),
    ScoringConfig(mode="sampled", k_samples=3, temperature=1.0, suffix=" So"),
    EvalConfig(n_per_cell=3, kinds=("false",), hops=(1, 3), shots=2, sizes=dict(V1_SIZES)),
    GenerationConfig(max_new_tokens=8, temperature=0.7, top_p=0.9, num_samples=3, stop_at_answer=False),
    TrainConfig(architecture=ArchitectureConfig(n_layers=2, d_model=32), hops=(1,), kind_weights={"false": 1.0},
                sizes={"extra_concepts": 2}, stop_after=5, init_from="stage1"),
    ArchitectureConfig(n_layers=2, d_model=32, n_heads=2),
]
CONFIGS = [*CHANGED, *(type(c)() for c in CHANGED)]


def test_every_public_config_is_checked():
    public = {name for package in (reasonlens.patching, reasonlens.attribution, reasonlens.importance)
              for name in package.__all__ if name.endswith("Config")}
    assert public | {"EvalConfig", "GenerationConfig", "TrainConfig", "ArchitectureConfig"} == \
        {type(c).__name__ for c in CHANGED}
    assert all(c != type(c)() for c in CHANGED)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json(config):
    data = config_to_dict(config)
    assert json.loads(json.dumps(data)) == data  # plain JSON data: lists and dicts, no tuples or dataclasses
    back = config_from_dict(type(config), json.loads(json.dumps(data)))
    assert back == config and type(back) is type(config)
    if isinstance(config, ConfigDict):
        assert config.to_dict() == data and type(config).from_dict(data) == config


def test_a_nested_tuple_of_variants_comes_back_as_variants():
    config = IPGStudyConfig.from_dict({"variants": [{"name": "x", "kind": "false", "hops": 2}], "layers": [1]})
    assert config.variants == (Variant("x", "false", 2),) and config.layers == (1,)
    assert config.task == IPGStudyConfig().task  # missing keys take their defaults


def test_unknown_or_bad_keys_are_clear_errors():
    with pytest.raises(ReasonlensError, match=r"IPGStudyConfig has no setting 'n_supports'; .*n_support, seeds, n_eval"):
        IPGStudyConfig.from_dict({"n_supports": 3})
    with pytest.raises(ReasonlensError, match="ScoringConfig has no setting 'taus'"):
        StepImportanceConfig.from_dict({"labels": {"scoring": {"taus": 0.5}}})
    with pytest.raises(ReasonlensError, match="PatchConfig has no setting 'site_name'"):
        config_from_dict(PatchConfig, {"site_name": "z"})
    with pytest.raises(ReasonlensError, match="read from a dict"):
        EvalConfig.from_dict([("seed", 1)])
    with pytest.raises(ReasonlensError, match="hops"):  # the config's own checks still judge the values
        IPGStudyConfig.from_dict({"task": {"name": "x", "kind": "false", "hops": 0}})


# ------------------------------------------------------------------------------------------------ study results

CLASSES = {cls.__name__: cls for cls in (EvalResult, IPGStudyResult, MechanismResult, StepImportanceResult)}


def _eval_result() -> EvalResult:
    records = [Record(kind="fictional", hops=2, prompt="p", gold="g", output="o", label_correct=True,
                      proof_exact=True, proof_valid=True),
               Record(kind="false", hops=1, prompt="q", gold="g", output="x", label_correct=False, proof_exact=False,
                      prior_agrees=False, first_error="label")]
    return EvalResult(model="m", n_per_cell=1, seed=3, records=records, closed_book=[("q1", True), ("q2", False)],
                      rule_choices=[RuleChoice("fictional", 2, "stop", "every vs subject", True, 0.5)],
                      answer_now=[AnswerNow("fictional", 2, True, [0.5, 0.9], [False, True])], shots=2,
                      sizes=dict(V1_SIZES))


def _ipg_result() -> IPGStudyResult:
    """An IPG study result from small fake scores (the study needs sampled chains that sometimes fail: slow and not
    certain at a tiny scale)."""
    def scores(seed: int, method: str) -> Attribution:
        values = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(seed))
        return Attribution(values, axes=("example", "layer", "unit"),
                           labels={"layer": ["L1", "L2"], "unit": [f"H{u}" for u in range(4)]},
                           meta={"method": method, "component": "head", "n_zero_advantage_groups": seed})

    config = IPGStudyConfig(component="head", layers=(1, 2), n_support=3, seeds=2, n_eval=4, p_values=(1, 2),
                            length_p=1, dice_p=2, length_gammas=(0.0, 1.5),
                            variants=(Variant("false 2-hop", "false", 2),), n_bootstrap=200)
    methods = method_names(config.rewards)
    bits = {1: ["0101", "0111"], 2: ["0001", "0011"]}
    return IPGStudyResult(
        model="headroom", config=config, original_correct="0111",
        correct={mode: {m: dict(bits) for m in methods} for mode in ("suppression", "enhancement")},
        transfer_correct={"false 2-hop": {"original": ["1111"], "ipg": ["0110", "0011"], "random": ["1110", "1011"]}},
        ablations=[{"name": "raw PG", "baseline": "zero", "steps": 1, "rule": "right", "completeness_gap": 0.5,
                    "dice_with_reference": 1.0}],
        length_control={g: {"accuracy": 0.5, "mean_steps": 4.0 + g, "mean_tokens": 30.0} for g in (0.0, 1.5)},
        dice={"p": 2, "random_expectation": 0.25, "variants": {"names": ["a", "b"], "matrix": [[1.0, 0.5], [0.5, 1.0]]}},
        support={"seeds": 2, "n_support": 3, "disjoint": True, "n_informative_prompts": {"correctness": [2, 3]},
                 "informative_note": None},
        scores={name: scores(i, name) for i, name in enumerate(("ipg seed 0", "raw_pg seed 0", "length",
                                                                  "ipg false 2-hop"))},
        timings={"attribution": 1.5, "steering": 2.0})


@pytest.fixture(scope="module")
def model():
    return load_model(main_model_name())


@pytest.fixture(scope="module")
def results(model) -> dict[str, StudyResult]:
    """One small result of each study: the mechanism and step-importance studies run at a tiny scale."""
    mechanism = analyze_mechanism(model, MechanismConfig(n_examples=6, subtasks=(4,), n_reference=4, n_trace=2,
                                                         n_conflict=60, n_relation=30, relation_seeds=(0,), few_shot=1,
                                                         n_few_shot=3, n_horizon=2), model_name="main")
    importance = run_step_importance_study(model, StepImportanceConfig(
        kinds=("fictional",), hops=(2,), n_per_cell=16, probe=ProbeConfig(epochs=2, seeds=(42,))), model_name="main")
    found = {"EvalResult": _eval_result(), "IPGStudyResult": _ipg_result(), "MechanismResult": mechanism,
             "StepImportanceResult": importance}
    assert mechanism.horizon is not None and mechanism.few_shot and mechanism.analysed()
    assert set(importance.suites) == {"generator"} and "removability" in importance.skipped  # a suite and a skip
    return found


@pytest.fixture(scope="module")
def folders(results, tmp_path_factory):
    return {name: result.save(tmp_path_factory.mktemp(name)) for name, result in results.items()}


def _same(a, b, where: str) -> None:
    """``a`` equals ``b``: tensors by ``torch.equal``, dataclasses, dicts and lists entry by entry, NaN equals NaN."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, torch.nn.Module):
        _same(a.state_dict(), b.state_dict(), where)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, TfidfEncoder):  # a fitted vectorizer comes back as its vocabulary and idf weights
        _same(a.to_dict(), b.to_dict(), where)
    elif is_dataclass(a):
        assert type(a) is type(b), where
        for f in fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("name", CLASSES)
def test_a_saved_result_loads_back_whole(results, folders, name):
    result, folder = results[name], folders[name]
    assert isinstance(result, StudyResult) and type(result) is CLASSES[name]
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert saved["result"] == name and saved["format"] == RESULTS_FORMAT
    assert _json({k: v for k, v in saved.items() if k not in ("result", "format")}) == _json(result.summary())
    loaded = CLASSES[name].load(folder)
    assert type(loaded) is CLASSES[name]
    assert _json(loaded.summary()) == _json(result.summary())
    _same(loaded, result, name)


def test_eval_results_keep_metrics_json_and_old_folders_load(results, folders, tmp_path):
    result = results["EvalResult"]
    assert json.loads((folders["EvalResult"] / "metrics.json").read_text()) == result.metrics()
    old = shutil.copytree(folders["EvalResult"], tmp_path / "old")
    (old / RESULTS_FILE).unlink()  # saved by a reasonlens before results.json
    _same(EvalResult.load(old), result, "EvalResult")


@pytest.mark.parametrize(("saved", "loader"), list(itertools.permutations(CLASSES, 2)))
def test_a_folder_of_another_result_is_a_clear_error(folders, saved, loader):
    with pytest.raises(ReasonlensError, match=f"holds a {saved}, not a {loader}; load it with {saved}.load"):
        CLASSES[loader].load(folders[saved])


@pytest.mark.parametrize(("name", "part"), [("EvalResult", "records.jsonl"), ("IPGStudyResult", "scores_length.pt"),
                                            ("MechanismResult", "subtask04_circuit.pt"),
                                            ("MechanismResult", "horizon.pt"),
                                            ("StepImportanceResult", "probes/generator/context.json")])
def test_a_missing_folder_or_part_is_a_clear_error(folders, tmp_path, name, part):
    load = CLASSES[name].load
    with pytest.raises(ReasonlensError, match="does not exist"):
        load(tmp_path / "nothing")
    copy = shutil.copytree(folders[name], tmp_path / "copy")
    (copy / part).unlink()
    with pytest.raises(ReasonlensError, match=f"holds a {name} without its part {part}"):
        load(copy)
    saved = json.loads((copy / RESULTS_FILE).read_text())
    (copy / RESULTS_FILE).write_text(json.dumps({**saved, "format": RESULTS_FORMAT + 1}))
    with pytest.raises(ReasonlensError, match="newer than this reasonlens reads"):
        load(copy)

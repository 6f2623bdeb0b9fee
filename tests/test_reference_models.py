"""The shipped reference models: present, small, loadable, and accurate on fresh held-out questions."""

from __future__ import annotations

import pytest

from reasonlens.evaluate import EvalConfig, evaluate
from reasonlens.model import ROLES, list_models, load_model, main_model_name, model_info
from reasonlens.ontology.generator import V1_SIZES
from reasonlens.zoo_build import STAGES, ZOO_MODELS, stage_configs

MAX_BYTES = 10 * 1024 * 1024


def test_every_role_is_shipped_and_small():
    models = list_models()
    assert {m.role for m in models} == set(ROLES)
    for m in models:
        assert m.size_bytes <= MAX_BYTES, m
        assert (m.path / "tokenizer.json").exists() and (m.path / "model.safetensors").exists()


def test_headroom_model_has_headroom():
    headroom = [m for m in list_models() if m.role == "headroom"][0]
    result = evaluate(load_model(headroom.name), EvalConfig(n_per_cell=15, seed=4243, hops=(1, 2, 3, 4),
                                                            kinds=("fictional",), closed_book=False))
    acc = sum(r.label_correct for r in result.records) / len(result.records)
    assert 0.5 <= acc <= 0.92


def _meets_the_accuracy_bars(m: dict) -> None:
    for hops in ("1", "2", "3", "4"):
        assert m["label_accuracy"]["fictional"][hops] >= 0.97, hops
        assert m["proof_accuracy"]["fictional"][hops] >= 0.90, hops
        assert m["label_accuracy"]["false"][hops] >= 0.90, hops


@pytest.mark.slow  # about 2 minutes: decodes 400 questions and reads the answer at every step boundary
def test_main_model_meets_the_accuracy_bars():
    """The bars of the model card: label >= 97% and exact proof >= 90% on fictional 1-4 hops, label >= 90% on
    false ontologies, closed-book >= 90%, on 50 fresh questions per cell; and the answer-now readout: >= 95% after
    the full chain, <= 70% with no chain at 3-4 hops, >= 0.9 of the probability on the two labels at every step
    boundary."""
    info = model_info(main_model_name())
    m = evaluate(load_model(info.name), EvalConfig(n_per_cell=50, seed=4244, kinds=("fictional", "false"), hops=(1, 2, 3, 4)),
                 train_question_seeds=info.train_question_seeds).metrics()
    _meets_the_accuracy_bars(m)
    assert m["closed_book_accuracy"] >= 0.90
    now = m["answer_now"]
    assert now["available"] and now["label_mass_min"] >= 0.9
    for kind in ("fictional", "false"):
        assert all(acc >= 0.95 for acc in now["accuracy_full_chain"][kind].values()), kind
        assert now["accuracy_no_cot"][kind]["3"] <= 0.70 and now["accuracy_no_cot"][kind]["4"] <= 0.70, kind


@pytest.mark.slow
def test_main_model_meets_the_bars_on_v1_sized_ontologies():
    """The same bars on real PrOntoQA v1's ontology sizes (chains of up to 10 concepts, the entity anywhere)."""
    info = model_info(main_model_name())
    m = evaluate(load_model(info.name), EvalConfig(n_per_cell=50, seed=4245, kinds=("fictional", "false"),
                                                   hops=(1, 2, 3, 4), sizes=dict(V1_SIZES), closed_book=False),
                 train_question_seeds=info.train_question_seeds).metrics()
    _meets_the_accuracy_bars(m)


def test_trained_models_record_the_recipe_they_were_trained_with():
    """Each trained model's metadata (seed range of its training questions, steps) is the recipe's, stage by stage."""
    for info in list_models():
        if info.name not in ZOO_MODELS:
            continue
        configs = [cfg for cfg, _ in stage_configs(ZOO_MODELS[info.name][1], ".")]
        assert info.train_question_seeds == (configs[0].question_seeds[0], configs[-1].question_seeds[1])
        assert all(a.question_seeds[1] == b.question_seeds[0] for a, b in zip(configs, configs[1:]))
        assert info.metadata["steps"] == sum(c.stop_after or c.background_steps + c.cot_steps for c in configs)
    # `reasonlens train --zoo` without --precision is the arithmetic every shipped model was trained with
    assert {info.metadata["train_precision"] for info in list_models()} == {STAGES[0].precision}
    assert all(stage.precision == STAGES[0].precision for stage in STAGES)

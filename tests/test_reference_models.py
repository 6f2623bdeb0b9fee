"""The shipped reference models: present, small, loadable, and accurate on fresh held-out questions."""

from __future__ import annotations

import pytest

from reasonlens.evaluate import EvalConfig, evaluate
from reasonlens.model import ROLES, list_models, load_model, main_model_name

MAX_BYTES = 10 * 1024 * 1024


def test_every_role_is_shipped_and_small():
    models = list_models()
    assert {m.role for m in models} == set(ROLES)
    for m in models:
        assert m.size_bytes <= MAX_BYTES, m
        assert (m.path / "tokenizer.json").exists() and (m.path / "model.safetensors").exists()


@pytest.fixture(scope="module")
def main_model():
    return load_model(main_model_name())


def test_main_model_reasons_on_fresh_questions(main_model):
    # seed 4242 is far outside the training questions' seed range (checked by evaluate)
    info = [m for m in list_models() if m.role == "main"][0]
    result = evaluate(main_model, EvalConfig(n_per_cell=6, seed=4242, hops=(1, 2, 3, 4), kinds=("fictional", "false"),
                                             closed_book=False), train_question_seeds=info.train_question_seeds)
    records = result.records
    assert sum(r.label_correct for r in records) / len(records) >= 0.9
    assert sum(r.proof_exact for r in records) / len(records) >= 0.8


def test_headroom_model_has_headroom():
    headroom = [m for m in list_models() if m.role == "headroom"][0]
    result = evaluate(load_model(headroom.name), EvalConfig(n_per_cell=15, seed=4243, hops=(1, 2, 3, 4),
                                                            kinds=("fictional",), closed_book=False))
    acc = sum(r.label_correct for r in result.records) / len(result.records)
    assert 0.5 <= acc <= 0.92


@pytest.mark.slow
def test_main_model_meets_the_accuracy_bars(main_model):
    """The bars of the model card: label >= 97% and exact proof >= 90% on fictional 1-4 hops, label >= 90% on
    false ontologies, closed-book >= 90%."""
    m = evaluate(main_model, EvalConfig(n_per_cell=50, seed=4244)).metrics()
    for hops in ("1", "2", "3", "4"):
        assert m["label_accuracy"]["fictional"][hops] >= 0.97
        assert m["proof_accuracy"]["fictional"][hops] >= 0.90
        assert m["label_accuracy"]["false"][hops] >= 0.90
    assert m["closed_book_accuracy"] >= 0.90

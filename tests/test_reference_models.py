"""The shipped reference models: present, small, loadable, and accurate on fresh held-out questions."""

from __future__ import annotations

import pytest

from reasonlens.evaluate import EvalConfig, evaluate
from reasonlens.model import ROLES, list_models, load_model, main_model_name

MAX_BYTES = 10 * 1024 * 1024
# Floors well below the main model's measured accuracy on this test's questions (see docs/model-card.md):
# a regression in loading, decoding or scoring, or an untrained model, falls through them.
LABEL_FLOOR, PROOF_FLOOR = 0.6, 0.2


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
    """Far above chance on fresh questions (seed 4242 lies outside the training questions' seed range, which
    ``evaluate`` checks). The issue's bars are the slow test below, not yet met."""
    info = [m for m in list_models() if m.role == "main"][0]
    result = evaluate(main_model, EvalConfig(n_per_cell=8, seed=4242, hops=(1, 2, 3, 4), kinds=("fictional", "false"),
                                             closed_book=False), train_question_seeds=info.train_question_seeds)
    records = result.records
    assert sum(r.label_correct for r in records) / len(records) >= LABEL_FLOOR
    assert sum(r.proof_exact for r in records) / len(records) >= PROOF_FLOOR


def test_headroom_model_has_headroom():
    headroom = [m for m in list_models() if m.role == "headroom"][0]
    result = evaluate(load_model(headroom.name), EvalConfig(n_per_cell=15, seed=4243, hops=(1, 2, 3, 4),
                                                            kinds=("fictional",), closed_book=False))
    acc = sum(r.label_correct for r in result.records) / len(result.records)
    assert 0.5 <= acc <= 0.92


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 2 stays open: the shipped main model does not yet reach the bars "
                   "(docs/model-card.md has its measured accuracy)")
def test_main_model_meets_the_accuracy_bars(main_model):
    """The bars of the model card: label >= 97% and exact proof >= 90% on fictional 1-4 hops, label >= 90% on
    false ontologies, closed-book >= 90%."""
    m = evaluate(main_model, EvalConfig(n_per_cell=50, seed=4244)).metrics()
    for hops in ("1", "2", "3", "4"):
        assert m["label_accuracy"]["fictional"][hops] >= 0.97
        assert m["proof_accuracy"]["fictional"][hops] >= 0.90
        assert m["label_accuracy"]["false"][hops] >= 0.90
    assert m["closed_book_accuracy"] >= 0.90

"""Scoring decoded chains: logical-form proof comparison, the first wrong decision, metric tables."""

from reasonlens.evaluate import EvalResult, Record, first_error
from reasonlens.ontology import generate


def example_with_negated_property():
    for ex in generate(50, hops=2, seed=11):
        if ex.cot[-2].fact.negated and ex.cot[1].text.startswith(("Every", "Each")):
            return ex
    raise AssertionError("no such example")


def test_first_error_classifies_each_decision():
    ex = example_with_negated_property()
    steps = [s.text for s in ex.cot]
    gold = " ".join(steps) + " " + ex.answer
    assert first_error(ex, gold) is None
    assert first_error(ex, gold.lower()) is None
    # the surface form of a rule is not part of the proof
    other_form = steps.copy()
    other_form[1] = other_form[1].replace("Every ", "Each ", 1) if other_form[1].startswith("Every") \
        else other_form[1].replace("Each ", "Every ", 1)
    assert first_error(ex, " ".join(other_form) + " " + ex.answer) is None
    flipped = steps.copy()
    flipped[-2] = flipped[-2].replace(" not ", " ")
    assert first_error(ex, " ".join(flipped) + " " + ex.answer) == "polarity: rule_copy (property)"
    wrong_concept = steps.copy()
    wrong_concept[1] = wrong_concept[1].replace(ex.cot[1].fact.predicate, "brimpus")
    assert first_error(ex, " ".join(wrong_concept) + " " + ex.answer) == "rule_copy (isa)"
    assert first_error(ex, " ".join(steps[:3])) == "rule_copy (property)"
    assert first_error(ex, " ".join(steps + [steps[0]]) + " " + ex.answer) == "extra step"
    assert first_error(ex, " ".join(steps) + (" True" if ex.answer == "False" else " False")) == "label"


def test_metrics_tables():
    rec = dict(prompt="p", gold="g", output="o", proof_verbatim=False, proof_valid=True)
    result = EvalResult(model="m", n_per_cell=2, seed=1, records=[
        Record(kind="fictional", hops=1, label_correct=True, proof_exact=True, prior_agrees=None, **rec),
        Record(kind="fictional", hops=1, label_correct=False, proof_exact=False, first_error="label",
               prior_agrees=None, **rec),
        Record(kind="false", hops=2, label_correct=True, proof_exact=True, prior_agrees=False, **rec),
    ], closed_book=[("q", True), ("q", False)])
    m = result.metrics()
    assert m["label_accuracy"] == {"fictional": {"1": 0.5}, "false": {"2": 1.0}}
    assert m["proof_accuracy"]["fictional"]["1"] == 0.5
    assert m["valid_proof_accuracy"]["false"]["2"] == 1.0 and m["verbatim_proof_accuracy"]["false"]["2"] == 0.0
    assert m["prior_conflict_label_accuracy"] == {"false": 1.0}
    assert m["first_errors"] == {"fictional": {"label": 1}}
    assert m["closed_book_accuracy"] == 0.5


def test_save_and_load_round_trip(tmp_path):
    rec = Record(kind="true", hops=3, prompt="p", gold="g", output="o", label_correct=True, proof_exact=False,
                 first_error="rule_copy (isa)")
    result = EvalResult(model="m", n_per_cell=1, seed=2, records=[rec], closed_book=[("q1", True), ("q2", False)])
    result.save(tmp_path)
    again = EvalResult.load(tmp_path)
    assert again.records == [rec] and again.closed_book == result.closed_book
    assert again.metrics() == result.metrics()

"""Scoring decoded chains: logical-form proof comparison, the first wrong decision, teacher-forced rule choices,
metric tables."""

import pytest
from model_util import write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.evaluate import EvalResult, Record, RuleChoice, first_error, rule_choice_points, rule_choices
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


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from reasonlens.model import load_model

    return load_model(str(write_checkpoint(tmp_path_factory.mktemp("tiny"), "llama", n_ctx=512, scale=4.0)))


def test_rule_choices_equal_one_forward_per_candidate(tiny_model):
    """Batched, right-padded scoring equals scoring each candidate rule after its prefix in its own forward."""
    import torch

    from reasonlens.ontology.prompt import format_prompt

    examples = generate(3, kind=("fictional", "false"), hops=(2, 3), seed=11)
    choices = rule_choices(tiny_model, examples, batch_size=5)
    tok = tiny_model.tokenizer
    expected = []
    for e in examples:
        for i, step, others in rule_choice_points(e):
            prefix = tiny_model.to_tokens(" ".join([format_prompt(e), *[s.text for s in e.cot[:i]]]))[0].tolist()
            scores = []
            for text in [step.text, *others]:
                cand = tok(" " + text, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logp = tiny_model(torch.tensor([prefix + cand])).double().log_softmax(-1)[0]
                scores.append(sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(cand)))
            expected.append((("stop" if step.fact.kind == "property" else "continue"), scores[0] - max(scores[1:])))
    assert len(choices) == len(expected) > 0
    for c, (decision, margin) in zip(choices, expected):
        assert c.decision == decision and c.correct == (margin > 0)
        assert abs(c.margin - margin) < 1e-5


def test_rule_choices_cover_every_concept_with_two_rules(tiny_model):
    """A concept on the proof path offers a choice exactly when it has a parent: one "continue" per hop but the
    last, one "stop" when the chain goes on past the queried concept."""
    examples = generate(6, kind="fictional", hops=3, seed=12)
    choices = rule_choices(tiny_model, examples)
    stops = sum(e.cot[-2].fact.subject in e.ontology.parents for e in examples)
    assert sum(c.decision == "continue" for c in choices) == 2 * len(examples)
    assert sum(c.decision == "stop" for c in choices) == stops
    assert {c.forms.split(" vs ")[0] for c in choices} <= {"every", "each", "subject"}


def test_rule_choice_metrics_and_round_trip(tmp_path):
    choices = [RuleChoice(kind="fictional", hops=2, decision="stop", forms="every vs subject", correct=False,
                          margin=-1.5),
               RuleChoice(kind="fictional", hops=2, decision="stop", forms="subject vs every", correct=True, margin=2.0),
               RuleChoice(kind="fictional", hops=2, decision="continue", forms="subject vs each", correct=True,
                          margin=0.5)]
    result = EvalResult(model="m", n_per_cell=1, seed=2, records=[], rule_choices=choices)
    m = result.metrics()
    assert m["rule_choice_accuracy"] == {"fictional": {"continue": 1.0, "stop": 0.5}}
    assert m["rule_choice_by_forms"]["fictional"]["stop: every vs subject"] == 0.0
    result.save(tmp_path)
    assert EvalResult.load(tmp_path).rule_choices == choices
    (tmp_path / "rule_choices.json").unlink()  # saved by an earlier reasonlens
    assert EvalResult.load(tmp_path).rule_choices == []


def test_rule_choices_without_a_reusable_cache(tiny_model, monkeypatch):
    """Where the model's cache cannot be reused, each row runs with the whole prompt: the same margins."""
    from reasonlens.runtime import KVPrefix

    examples = generate(2, kind="fictional", hops=2, seed=13)
    cached = rule_choices(tiny_model, examples)
    monkeypatch.setattr(KVPrefix, "of", classmethod(lambda cls, model, ids: None))
    uncached = rule_choices(tiny_model, examples)
    assert [c.correct for c in cached] == [c.correct for c in uncached]
    assert max(abs(a.margin - b.margin) for a, b in zip(cached, uncached)) < 1e-5


def test_rule_choices_reject_a_question_longer_than_the_context(tmp_path):
    from reasonlens.errors import ReasonlensError
    from reasonlens.model import load_model

    short = load_model(str(write_checkpoint(tmp_path, "llama", n_ctx=64)))
    with pytest.raises(ReasonlensError, match="attends over 64"):
        rule_choices(short, generate(1, kind="fictional", hops=3, seed=1))


def test_answer_now_equals_one_forward_per_prefix(tmp_path):
    """Batched, left-padded readout equals, for every prefix of the gold chain, one plain forward of
    prompt + steps + suffix, its softmax at the last position read at the two label tokens."""
    import torch
    from model_util import write_subword_gpt2
    from tokenizers_util import subword_tokenizers

    from reasonlens.evaluate import answer_now, answer_now_problem
    from reasonlens.model import load_model
    from reasonlens.ontology.prompt import ANSWER_NOW, format_prompt

    model = load_model(str(write_subword_gpt2(tmp_path, subword_tokenizers()["byte-level"], n_positions=512, n_embd=32,
                                              n_layer=2)))
    assert answer_now_problem(model) is None
    examples = generate(3, hops=(1, 2), seed=4)
    got = answer_now(model, examples, batch_size=4)
    true_id, false_id = (model.to_tokens(w, prepend_bos=False)[0, 0].item() for w in (" True", " False"))
    for e, r in zip(examples, got):
        assert (r.kind, r.hops, r.label) == (e.kind, e.hops, e.label) and len(r.mass) == len(e.cot) + 1
        for j in range(len(e.cot) + 1):
            text = format_prompt(e) + "".join(" " + s.text for s in e.cot[:j]) + ANSWER_NOW
            with torch.no_grad():
                p = torch.softmax(model(model.to_tokens(text))[0, -1], -1)
            assert r.mass[j] == pytest.approx(float(p[true_id] + p[false_id]), abs=1e-5)
            assert r.correct[j] == ((p[true_id] > p[false_id]).item() == e.label)


def test_answer_now_needs_the_suffix_words_and_reports_why(tiny_model, tmp_path):
    from reasonlens.evaluate import answer_now, answer_now_problem

    problem = answer_now_problem(tiny_model)  # the reference vocabulary has no "so", "the", "answer"
    assert problem is not None and "['So', 'the', 'answer']" in problem
    with pytest.raises(ReasonlensError, match="cannot measure the answer-now readout"):
        answer_now(tiny_model, generate(1, seed=0))
    result = EvalResult(model="m", n_per_cell=1, seed=2, records=[], answer_now_unavailable=problem)
    assert result._answer_now_metrics() == {"suffix": " So the answer is", "available": False, "reason": problem}


def test_answer_now_metrics_and_round_trip(tmp_path):
    from reasonlens.evaluate import AnswerNow

    rec = Record(kind="fictional", hops=2, prompt="p", gold="g", output="o", label_correct=True, proof_exact=True)
    readout = [AnswerNow("fictional", 2, True, [0.5, 0.9, 0.95, 0.99, 0.97, 0.99], [False, True, True, True, True, True]),
               AnswerNow("fictional", 2, False, [0.4, 0.8, 0.9, 0.9, 0.9, 0.9], [True, True, True, True, True, False])]
    result = EvalResult(model="m", n_per_cell=1, seed=2, records=[rec], answer_now=readout)
    m = result.metrics()["answer_now"]
    assert m["accuracy_full_chain"] == {"fictional": {"2": 0.5}} and m["accuracy_no_cot"] == {"fictional": {"2": 0.5}}
    assert m["label_mass_min"] == 0.4 and m["boundaries"] == 12 and m["available"]
    result.save(tmp_path)
    again = EvalResult.load(tmp_path)
    assert again.answer_now == readout and again.metrics() == result.metrics()


def test_eval_config_rejects_what_it_cannot_run():
    from reasonlens.evaluate import EvalConfig

    with pytest.raises(ReasonlensError, match="unknown ontology-size option"):
        EvalConfig(sizes={"extra_concept": 3})
    with pytest.raises(ReasonlensError, match="shots"):
        EvalConfig(shots=-1)
    assert EvalConfig(sizes={"extra_concepts": 6}).sizes == {"extra_concepts": 6}

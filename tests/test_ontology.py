"""Generator invariants, each verified by the independent text-level checker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import CheckResult, Example, GeneratorConfig, check, check_chain, generate
from reasonlens.ontology.lexicon import true_ancestors, true_properties

N_PER_CELL = 400
KINDS = ("fictional", "true", "false")
CELLS = [(style, mode) for style in ("prontoqa", "dutta") for mode in ("negation", "wrong_property")]


@pytest.fixture(scope="module")
def corpus() -> dict[tuple[str, str], list[Example]]:
    """N_PER_CELL examples per (style, false_mode), mixing kinds, hops 1-5, orderings and redundant steps."""
    return {(style, mode): generate(N_PER_CELL, kind=KINDS, hops=(1, 2, 3, 4, 5), style=style, false_mode=mode,
                                    ordering=("postorder", "preorder", "random"), redundant_step_p=0.3, seed=11)
            for style, mode in CELLS}


@pytest.fixture(scope="module")
def examples(corpus) -> list[Example]:
    return [ex for exs in corpus.values() for ex in exs]


@pytest.fixture(scope="module")
def checked(examples) -> list[tuple[Example, CheckResult]]:
    """Every example with the checker's verdict, which reads the sentence texts only."""
    return [(ex, check(ex)) for ex in examples]


def test_corpus_covers_every_setting(examples):
    assert {(ex.kind, ex.hops) for ex in examples} == {(k, h) for k in KINDS for h in range(1, 6)}
    assert {ex.meta["ordering"] for ex in examples} == {"postorder", "preorder", "random"}
    assert sum(bool(ex.redundant_steps) for ex in examples) > len(examples) // 4


def test_checker_accepts_every_gold_example(checked):
    for ex, result in checked:
        assert result.ok, (ex.question, ex.query_text, ex.cot_text, result.problems)
        # The text parser recovers exactly the generator's logical forms.
        assert list(result.context) == [s.fact for s in ex.context]
        assert [v.fact for v in result.steps] == [s.fact for s in ex.cot]
        assert result.query == ex.query.fact


def test_cot_shape_and_roles(checked):
    for ex, result in checked:
        assert len(ex.cot) == 2 * ex.hops + 1 + len(ex.redundant_steps)
        gold = [s.role for s in ex.cot if s.role != "redundant"]
        assert gold == ["premise_copy"] + ["rule_copy", "derived_fact"] * ex.hops
        verdicts = [v.role for v, s in zip(result.steps, ex.cot) if s.role != "redundant"]
        assert verdicts == gold


def test_redundant_steps_are_removable(examples):
    with_redundant = [ex for ex in examples if ex.redundant_steps]
    assert len(with_redundant) > 400
    for ex in with_redundant[::2]:
        kept = [s.text for s in ex.cot if s.role != "redundant"]
        assert check_chain([s.text for s in ex.context], ex.query_text, kept, ex.answer).ok


def test_labels_are_roughly_balanced(corpus):
    for cell, exs in corpus.items():
        share = sum(ex.label for ex in exs) / len(exs)
        assert 0.4 < share < 0.6, (cell, share)


def test_distractor_states_the_conclusion_property_with_opposite_polarity(checked):
    for ex, result in checked:
        conclusion = ex.cot[-1].fact
        if ex.ontology.distractor is None:  # only a true ontology may lack a truthful distractor
            assert ex.kind == "true"
            continue
        facts = [f for f in result.context if f is not None and f.subject == ex.ontology.distractor]
        assert len(facts) == 1
        d = facts[0]
        assert d.universal and d.kind == "property" and d.predicate == conclusion.predicate
        assert d.negated != conclusion.negated


def test_negation_queries_ask_about_the_conclusion(corpus):
    for style in ("prontoqa", "dutta"):
        for ex in corpus[style, "negation"]:
            q, c = ex.query.fact, ex.cot[-1].fact
            assert (q.subject, q.predicate) == (c.subject, c.predicate)
            assert ex.label == (q.negated == c.negated)


def test_wrong_property_false_answers_query_an_underived_property(checked):
    unrelated = [(ex, result) for ex, result in checked if ex.query.fact.predicate != ex.cot[-1].fact.predicate]
    assert len(unrelated) > N_PER_CELL // 2
    for ex, result in unrelated:
        assert not ex.label and not result.reaches_query and result.expected_label is False


def test_false_ontology_contradicts_the_real_taxonomy(checked):
    false = [(ex, result) for ex, result in checked if ex.kind == "false"]
    assert false
    for ex, result in false:
        for f in result.context:
            if f is not None and f.universal and f.kind == "isa":
                assert f.predicate not in true_ancestors(f.subject), f
    # the prior's answer disagrees with the in-context label on about half the questions: no shortcut
    priors = [ex.meta["prior_label"] != ex.label for ex, _ in false if ex.meta["prior_label"] is not None]
    assert len(priors) > 0.5 * len(false)  # the rest query an unrelated property (wrong_property mode)
    assert 0.35 < sum(priors) / len(priors) < 0.65


def test_true_ontology_agrees_with_the_real_taxonomy(checked):
    true = [(ex, result) for ex, result in checked if ex.kind == "true"]
    assert true
    for ex, result in true:
        for f in result.context:
            assert f is not None
            if f.universal and f.kind == "isa":
                assert f.predicate in true_ancestors(f.subject), f
            elif f.universal:
                assert true_properties(f.subject).get(f.predicate) in (None, not f.negated), f
        prior = ex.meta["prior_label"]
        assert prior is None or prior == ex.label


def test_dutta_style_has_no_quantifiers_or_articles(corpus):
    for mode in ("negation", "wrong_property"):
        for ex in corpus["dutta", mode]:
            words = {w.lower() for s in [*ex.context, *ex.cot] for w in s.text.rstrip(".").split()}
            assert not words & {"every", "each", "a", "an"}, ex.question


def test_determinism():
    assert generate(6, kind=KINDS, seed=3) == generate(6, kind=KINDS, seed=3)
    assert generate(6, kind=KINDS, seed=3) != generate(6, kind=KINDS, seed=4)
    assert generate(3, hops=(1, 2, 3), seed=5)[2] == generate(12, hops=(1, 2, 3), seed=5)[2]
    config = GeneratorConfig(kind="false", hops=4, seed=9)
    assert generate(2, config) == generate(2, replace(config))


def test_min_extra_concepts_puts_a_concept_past_every_answer():
    from reasonlens.evaluate import rule_choice_points

    def stops_offered(exs):  # a "stop" choice (as rule_choices labels it): the property rule beside another rule
        return [any(step.fact.kind == "property" for _, step, _ in rule_choice_points(e)) for e in exs]

    for kind in ("fictional", "false"):
        assert all(stops_offered(generate(40, kind=kind, hops=(1, 2, 3), min_extra_concepts=1, seed=2)))
        assert not all(stops_offered(generate(40, kind=kind, hops=(1, 2, 3), seed=2)))
    assert generate(5, seed=4, min_extra_concepts=0) == generate(5, seed=4)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "imaginary"}, r"unknown ontology kind 'imaginary'; choose from"),
    ({"kind": ("fictional", "nope")}, r"unknown ontology kind 'nope'"),
    ({"hops": 0}, r"hops must be an integer in 1\.\.5, got 0"),
    ({"hops": 6}, r"hops must be an integer in 1\.\.5, got 6"),
    ({"n": 0}, r"n must be a positive number of examples, got 0"),
    ({"temperature": 1.0}, r"unknown generator option\(s\) \['temperature'\]; valid:"),
    ({"negate_query_p": 1.5}, r"negate_query_p must be a probability in \[0, 1\], got 1\.5"),
    ({"redundant_step_p": -0.1}, r"redundant_step_p must be a probability"),
    ({"style": "latex"}, r"unknown style 'latex'; choose from"),
    ({"false_mode": "maybe"}, r"unknown false_mode 'maybe'; choose from"),
    ({"ordering": "inorder"}, r"unknown ordering 'inorder'; choose from"),
    ({"extra_concepts": -1}, r"need 0 <= min_extra_concepts <= extra_concepts, got 0 and -1"),
    ({"min_extra_concepts": 3}, r"need 0 <= min_extra_concepts <= extra_concepts, got 3 and 2"),
])
def test_bad_input_is_a_reasonlens_error(kwargs, message):
    kwargs = {"n": 2, **kwargs}
    with pytest.raises(ReasonlensError, match=message):
        generate(**kwargs)

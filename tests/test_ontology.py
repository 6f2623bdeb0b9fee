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


def _below(example) -> list[str]:
    """The ontology's nodes below the entity's concept, walking down from it."""
    children = {parent: child for child, parent in example.ontology.parents.items()}
    chain_down, node = [], example.cot[0].fact.predicate
    on_chain = {node, *[s.fact.predicate for s in example.cot if s.fact.kind == "isa"]}
    while node in children and children[node] not in on_chain:
        node = children[node]
        chain_down.append(node)
    return chain_down


def test_default_sizes_are_the_first_generators():
    """Leaving below_concepts unset draws what the first generator drew (the shipped models' data): at most
    one node below the entity's concept, two past the answer."""
    for kwargs in ({}, {"kind": KINDS, "hops": (1, 2, 3, 4, 5)}, {"extra_concepts": 0, "distractor": False}):
        examples = generate(300, seed=8, **kwargs)
        assert max(len(_below(e)) for e in examples) == (0 if kwargs.get("extra_concepts") == 0 else 1)
        assert all(len(e.ontology.parents) + 1 <= e.hops + 2 + 1 for e in examples)
    assert generate(20, seed=1, below_concepts=None) == generate(20, seed=1)


@pytest.mark.parametrize("kind", ["fictional", "false", "true"])
def test_v1_sizes_cover_real_prontoqa_v1(kind):
    """Real PrOntoQA v1 puts the entity inside a chain of up to 10 concepts with up to 20 context rules,
    whatever the hop count: the V1_SIZES knobs draw that range, every gold chain still checks out, and the
    chain length does not tell the hop count."""
    from reasonlens.ontology.generator import MAX_CONCEPTS, V1_SIZES

    examples = generate(600, kind=kind, hops=(1, 2, 3, 4, 5), seed=6, **V1_SIZES)
    nodes = [len(e.ontology.parents) + 1 for e in examples]
    rules = [len(e.context) - 1 for e in examples]  # all but the entity fact
    below = [len(_below(e)) for e in examples]
    assert max(nodes) <= MAX_CONCEPTS and max(rules) <= 2 * MAX_CONCEPTS
    assert all(check(e).ok for e in examples[:200])
    if kind == "true":  # as far as the real taxonomy goes
        assert max(nodes) >= 7 and max(below) >= 1
        return
    assert max(nodes) == 10 and max(rules) == 20 and set(below) == {0, 1, 2, 3, 4}
    for hops in (1, 3, 5):  # every hop count meets long chains
        assert max(n for n, e in zip(nodes, examples) if e.hops == hops) == 10
    for e in examples:
        down = _below(e)
        for child, parent in zip(down, [e.cot[0].fact.predicate, *down]):  # a chain going down, stated in the context
            assert e.ontology.parents[child] == parent
            assert any(s.fact.kind == "isa" and (s.fact.subject, s.fact.predicate) == (child, parent) for s in e.context)


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
    ({"below_concepts": 2, "min_below_concepts": 3}, r"need 0 <= min_below_concepts <= below_concepts, got 3 and 2"),
])
def test_bad_input_is_a_reasonlens_error(kwargs, message):
    kwargs = {"n": 2, **kwargs}
    with pytest.raises(ReasonlensError, match=message):
        generate(**kwargs)

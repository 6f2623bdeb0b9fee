"""Background knowledge: the real taxonomy stated as plain facts (the reference models' pretraining
prior) and the closed-book questions that measure whether a model holds it."""

from __future__ import annotations

import random

from reasonlens.ontology.lexicon import TRUE_TAXONOMY, true_ancestors, true_properties
from reasonlens.ontology.realize import choose_form, realize
from reasonlens.ontology.types import Fact

N_NEGATIVE_CONCEPTS = 3


def background_facts() -> list[Fact]:
    """Every true statement of the taxonomy: each concept's ancestors and its own and inherited properties."""
    facts = []
    for c in TRUE_TAXONOMY:
        facts += [Fact(c, a, "isa", universal=True) for a in true_ancestors(c)]
        facts += [Fact(c, p, "property", negated=not h, universal=True) for p, h in true_properties(c).items()]
    return facts


def closed_book_questions() -> list[tuple[Fact, bool]]:
    """(statement, is it true?) pairs over the taxonomy, balanced between True and False.

    >>> qs = closed_book_questions()
    >>> (Fact("cat", "mammal", "isa", universal=True), True) in qs
    True
    """
    rng = random.Random(0)
    out: list[tuple[Fact, bool]] = []
    for c in TRUE_TAXONOMY:
        ancestors = true_ancestors(c)
        out += [(Fact(c, a, "isa", universal=True), True) for a in ancestors]
        others = [x for x in TRUE_TAXONOMY if x != c and x not in ancestors]
        out += [(Fact(c, x, "isa", universal=True), False) for x in rng.sample(others, N_NEGATIVE_CONCEPTS)]
        for p, h in true_properties(c).items():
            out.append((Fact(c, p, "property", negated=False, universal=True), h))
            out.append((Fact(c, p, "property", negated=True, universal=True), not h))
    return out


def closed_book_prompt(fact: Fact, form: str) -> str:
    """``Q: True or false: Cats are mammals.\\nA:``: a question with no context (answered `` True``/`` False``)."""
    return f"Q: True or false: {realize(fact, 'prontoqa', form)}\nA:"


def background_passage(rng: random.Random, n_sentences: int = 12) -> str:
    """A paragraph of true background facts in random surface forms."""
    facts = rng.sample(background_facts(), n_sentences)
    return " ".join(realize(f, "prontoqa", choose_form("prontoqa", rng)) for f in facts)

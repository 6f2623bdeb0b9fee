"""Surface realisation: logical facts to English in the PrOntoQA v1 and Dutta et al. styles."""

from __future__ import annotations

import random

from reasonlens.ontology.lexicon import plural
from reasonlens.ontology.types import Fact

# Forms a universal statement can take. PrOntoQA v1 picks plural ("Cs are Ds.") or singular with a
# quantifier ("Every C is a D." / "Each C is a D."); Dutta et al. drop quantifiers and articles and mix
# plural ("Cs are Ds.") with bare singular ("C is D.").
PRONTOQA_FORMS: tuple[str, ...] = ("every", "each", "plural")
DUTTA_FORMS: tuple[str, ...] = ("bare", "plural")


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def choose_form(style: str, rng: random.Random) -> str:
    """Pick the surface form of a universal statement for ``style``."""
    if style == "prontoqa":
        return rng.choice(("plural", rng.choice(("every", "each"))))
    return rng.choice(DUTTA_FORMS)


def realize(fact: Fact, style: str, form: str = "plural") -> str:
    """English sentence for ``fact`` (with a final period).

    >>> realize(Fact("wumpus", "yumpus", "isa", universal=True), "prontoqa", "every")
    'Every wumpus is a yumpus.'
    >>> realize(Fact("wumpus", "wooden", "property", negated=True, universal=True), "prontoqa", "plural")
    'Wumpuses are not wooden.'
    >>> realize(Fact("Polly", "wumpus", "isa"), "dutta")
    'Polly is wumpus.'
    """
    neg = "not " if fact.negated else ""
    if not fact.universal:
        if fact.kind == "isa":
            obj = fact.predicate if style == "dutta" else f"{article(fact.predicate)} {fact.predicate}"
        else:
            obj = fact.predicate
        return f"{fact.subject} is {neg}{obj}."
    if form == "plural":
        obj = plural(fact.predicate) if fact.kind == "isa" else fact.predicate
        text = f"{plural(fact.subject)} are {neg}{obj}."
    elif form == "bare":
        text = f"{fact.subject} is {neg}{fact.predicate}."
    elif form in ("every", "each"):
        obj = f"{article(fact.predicate)} {fact.predicate}" if fact.kind == "isa" else fact.predicate
        text = f"{form} {fact.subject} is {neg}{obj}."
    else:
        raise ValueError(f"unknown sentence form {form!r}; expected one of {PRONTOQA_FORMS + DUTTA_FORMS}")
    return text[0].upper() + text[1:]


def realize_query(fact: Fact, style: str) -> str:
    """The question sentence: ``True or false: Polly is wooden.``"""
    return "True or false: " + realize(fact, style)

"""An independent proof checker: parses sentence *text* back to logic and verifies chains of thought.

It never reads ``Sentence.fact``: every context sentence, query and CoT step is parsed from its words
(PrOntoQA "Every/Each C is a D." / "Cs are Ds." / "Polly is a C." and Dutta's "C is D." / "Polly is C.",
any case, with "not"), so it also checks decoded model output (:func:`check_chain`) and imported files.

A step is valid if it copies a context sentence, or follows by modus ponens from an entity fact already
established (context or an earlier valid step) and a universal rule of the context: "x is C" and "every C
is [not] X" give "x is [not] X". The expected answer comes from the context's deductive closure: True if
it contains the query (with its polarity), False if it contains the negation or neither (Dutta's
"wrong property" questions).

Which words are concepts: the lexicon's (with PrOntoQA v1's real-world nouns), plus unknown words the text
marks as nouns: after "a"/"an", after "every"/"each", subjects of "are", and plural objects of "are" (several
words, or one word with a plural ending -s but not -ss/-us, that is no known property: "Invertebrates are
lepidopterans."). Every other predicate is a property. A concept is a lower-case lemma; a multi-word one
("Mersenne prime") inflects its last word ("mersenne primes"). Entities are the other subjects of "is": a name
("Polly") or a number ("31", PrOntoQA v1's number ontology).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.lexicon import (
    ENTITIES,
    FICTIONAL_CONCEPTS,
    IRREGULAR_PLURALS,
    PRONTOQA_V1_PROPERTIES,
    PRONTOQA_V1_TAXONOMY,
    PROPERTIES,
    TRUE_CONCEPTS,
    TRUE_PROPERTIES,
    plural,
)
from reasonlens.ontology.sentences import split_sentences
from reasonlens.ontology.types import Example, Fact

KNOWN_CONCEPTS: frozenset[str] = (frozenset(FICTIONAL_CONCEPTS) | frozenset(TRUE_CONCEPTS)
                                  | frozenset(PRONTOQA_V1_TAXONOMY))
KNOWN_PROPERTIES: frozenset[str] = frozenset(PROPERTIES) | frozenset(TRUE_PROPERTIES) | frozenset(PRONTOQA_V1_PROPERTIES)

_RESERVED = r"(?!(?:is|are|not|a|an|every|each|all)\b)"
_WORD = _RESERVED + r"(?:[A-Za-z][A-Za-z'-]*|\d+)"
_PHRASE = rf"{_WORD}(?:\s+{_WORD}){{0,2}}"
_SENTENCE = re.compile(
    rf"^(?:(?P<quant>every|each|all)\s+)?(?P<subj>{_PHRASE})\s+(?P<verb>is|are)\s+(?P<neg>not\s+)?"
    rf"(?:(?P<art>an?)\s+)?(?P<obj>{_PHRASE})$",
    re.IGNORECASE,
)
_QUERY_PREFIX = re.compile(r"^\s*(?:true or false|prove)\s*:\s*", re.IGNORECASE)
_LABELS = {"true": True, "false": False}


@dataclass(frozen=True)
class StepVerdict:
    """How one chain-of-thought step was justified.

    ``role`` is ``premise_copy`` / ``rule_copy`` (a context sentence restated), ``derived_fact`` (modus
    ponens from ``premise`` and ``rule``) or ``invalid``; ``reason`` says why in words.
    """

    index: int
    text: str
    role: str
    reason: str
    fact: Fact | None = None
    premise: Fact | None = None
    rule: Fact | None = None

    @property
    def valid(self) -> bool:
        return self.role != "invalid"


@dataclass(frozen=True)
class CheckResult:
    """Verdicts on a chain of thought and its answer; ``ok`` when ``problems`` is empty.

    ``context`` holds the parsed context sentences (None where unparseable), ``expected_label`` the answer
    the context entails (None if the query is unparseable), ``reaches_query`` whether a valid step states
    the query or its negation.
    """

    steps: tuple[StepVerdict, ...]
    problems: tuple[str, ...]
    context: tuple[Fact | None, ...]
    query: Fact | None
    answer: bool | None
    expected_label: bool | None
    reaches_query: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def steps_valid(self) -> bool:
        """Every step is a copy or a one-step deduction (the answer may still be wrong)."""
        return all(s.valid for s in self.steps)

    @property
    def label_correct(self) -> bool:
        return self.answer is not None and self.answer == self.expected_label


def _match_all(texts: Sequence[str]) -> list[re.Match[str] | None]:
    """Each sentence against the grammar, after dropping a "True or false:" prefix and the final period."""
    return [_SENTENCE.match(" ".join(_QUERY_PREFIX.sub("", t).strip().rstrip(".").split())) for t in texts]


def _guess_singular(phrase: str) -> str:
    """Singular of a plural noun phrase the lexicon does not know (its last word is inflected)."""
    *head, word = phrase.split()
    if word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us")):
        word = word[:-1]
    return " ".join([*head, word])


def _plural_concept(phrase: str) -> str | None:
    """The concept a lower-case object of "are" names when it reads as a plural noun (several words, or one word
    ending in -s but not -ss/-us, that is no known property), else None: "lepidopterans" -> "lepidopteran"."""
    if phrase in KNOWN_PROPERTIES:
        return None
    if " " in phrase or (phrase.endswith("s") and not phrase.endswith(("ss", "us"))):
        return _guess_singular(phrase)
    return None


def _noun_forms(concepts: Iterable[str]) -> dict[str, str]:
    """Every singular and plural surface form of each concept (lower case) mapped to the concept."""
    forms: dict[str, str] = {}
    for concept in concepts:
        *head, last = concept.split()
        plurals = {plural(last), last + "s", last + "es"} | ({last[:-1] + "ies"} if last.endswith("y") else set())
        plurals |= {IRREGULAR_PLURALS[last]} if last in IRREGULAR_PLURALS else set()
        forms.update({" ".join([*head, p]): concept for p in plurals})
    forms.update({c: c for c in concepts})
    return forms


KNOWN_FORMS: dict[str, str] = _noun_forms(KNOWN_CONCEPTS)


def _vocabulary(matches: Sequence[re.Match[str] | None]) -> dict[str, str]:
    """Noun forms of the lexicon's concepts plus the unknown nouns the grammar of ``matches`` reveals."""
    found: set[str] = set()
    plurals: list[str] = []
    for m in matches:
        if m is None:
            continue
        if m["art"]:
            found.add(m["obj"].lower())
        if m["verb"].lower() == "are":
            plurals.append(m["subj"].lower())
            if not m["art"] and _plural_concept(m["obj"].lower()) is not None:
                plurals.append(m["obj"].lower())
        elif m["quant"]:
            found.add(m["subj"].lower())
    forms = {**KNOWN_FORMS, **_noun_forms({f for f in found if f not in KNOWN_FORMS} - KNOWN_PROPERTIES)}
    unknown = {_guess_singular(s) for s in plurals if s not in forms} - KNOWN_PROPERTIES
    return {**forms, **_noun_forms(unknown)} if unknown else forms


def infer_concepts(sentences: Iterable[str]) -> frozenset[str]:
    """Concept nouns of a text: the lexicon's plus unknown words its grammar marks as nouns.

    >>> sorted(infer_concepts(["Timples are tergits.", "Every tergit is blue.", "Max is a dalpist."]) - KNOWN_CONCEPTS)
    ['dalpist', 'tergit', 'timple']
    """
    return frozenset(_vocabulary(_match_all(list(sentences))).values())


def _fact(text: str, m: re.Match[str] | None, forms: dict[str, str]) -> Fact | str:
    """The logical form of a matched sentence, or why it has none."""
    if m is None:
        return (f"cannot parse {text!r}: expected 'Every/Each C is [not] a D', 'Cs are [not] Ds', 'C is [not] D' "
                "or 'Name is [not] (a C | P)'; check the sentence for typos or extra words")
    subj, obj, negated = m["subj"], m["obj"], bool(m["neg"])
    low = subj.lower()
    if m["verb"].lower() == "are":
        subject, universal = forms.get(low) or _guess_singular(low), True
    elif m["quant"]:
        subject, universal = forms.get(low, low), True
    elif subj not in ENTITIES and low in forms:
        subject, universal = forms[low], True
    elif " " in subj:
        return f"cannot parse {text!r}: subject {subj!r} is neither a known concept nor a name"
    else:
        subject, universal = subj[0].upper() + subj[1:], False
    concept = forms.get(obj.lower(), obj.lower()) if m["art"] else forms.get(obj.lower())
    if concept is None and m["verb"].lower() == "are":
        concept = _plural_concept(obj.lower())
    if concept is not None:
        return Fact(subject, concept, "isa", negated=negated, universal=universal)
    if " " in obj:
        return (f"cannot parse {text!r}: {obj!r} is neither a known concept nor one property word (a concept of "
                "several words takes an article after 'is': 'Name is a prime number')")
    return Fact(subject, obj.lower(), "property", negated=negated, universal=universal)


def parse_sentence(text: str, concepts: Iterable[str] | None = None) -> Fact:
    """The logical form of one sentence (a "True or false:" prefix is ignored).

    ``concepts`` are the concept nouns in play (default: :func:`infer_concepts` of this sentence alone).
    Raises ReasonlensError if the sentence is not of a form the checker knows.

    >>> parse_sentence("Wumpuses are not wooden.")
    Fact(subject='wumpus', predicate='wooden', kind='property', negated=True, universal=True)
    >>> parse_sentence("Polly is yumpus.")
    Fact(subject='Polly', predicate='yumpus', kind='isa', negated=False, universal=False)
    >>> parse_sentence("Mersenne primes are prime numbers.")
    Fact(subject='mersenne prime', predicate='prime number', kind='isa', negated=False, universal=True)
    >>> parse_sentence("31 is not composite.")
    Fact(subject='31', predicate='composite', kind='property', negated=True, universal=False)
    """
    m = _match_all([text])[0]
    fact = _fact(text, m, _vocabulary([m]) if concepts is None else _noun_forms(concepts))
    if isinstance(fact, str):
        raise ReasonlensError(fact)
    return fact


def describe(fact: Fact) -> str:
    """A fact in canonical words, for messages.

    >>> describe(Fact("wumpus", "wooden", "property", negated=True, universal=True))
    'every wumpus is not wooden'
    """
    subject = f"every {fact.subject}" if fact.universal else fact.subject
    obj = f"a {fact.predicate}" if fact.kind == "isa" else fact.predicate
    return f"{subject} is {'not ' if fact.negated else ''}{obj}"


def _closure(facts: Iterable[Fact], rules: dict[str, list[Fact]]) -> set[Fact]:
    """Every entity fact that follows from ``facts`` by repeated modus ponens (``rules`` by subject)."""
    known = set(facts)
    frontier = list(known)
    while frontier:
        fact = frontier.pop()
        if fact.kind != "isa" or fact.negated:
            continue
        for r in rules.get(fact.predicate, []):
            new = Fact(fact.subject, r.predicate, r.kind, negated=r.negated)
            if new not in known:
                known.add(new)
                frontier.append(new)
    return known


def _parse_answer(answer: bool | str | None, steps: list[str]) -> tuple[bool | None, list[str]]:
    """The answer as a bool, taking it from a final "True"/"False" step when ``answer`` is None."""
    if answer is None and steps and steps[-1].rstrip(".").strip().lower() in _LABELS:
        return _LABELS[steps[-1].rstrip(".").strip().lower()], steps[:-1]
    if isinstance(answer, bool):
        return answer, steps
    if isinstance(answer, str) and answer.strip().rstrip(".").lower() in _LABELS:
        return _LABELS[answer.strip().rstrip(".").lower()], steps
    return None, steps


def _judge(i: int, text: str, fact: Fact, stated: set[Fact], established: set[Fact],
           rules: dict[tuple[str, str, bool], list[Fact]]) -> StepVerdict:
    """Is ``fact`` a copy of the context or one modus-ponens step (``rules`` by conclusion)?"""
    if fact in stated:
        role = "rule_copy" if fact.universal else "premise_copy"
        return StepVerdict(i, text, role, "copies a context sentence", fact)
    if fact.universal:
        return StepVerdict(i, text, "invalid", f"invented rule: the context never states {describe(fact)!r}", fact)
    for r in rules.get((fact.predicate, fact.kind, fact.negated), []):
        premise = Fact(fact.subject, r.subject, "isa")
        if premise in established:
            return StepVerdict(i, text, "derived_fact", f"from {describe(premise)!r} and {describe(r)!r}",
                               fact, premise, r)
    return StepVerdict(i, text, "invalid", f"does not follow: no established '{fact.subject} is a C' with a context "
                       f"rule 'every C is {'not ' if fact.negated else ''}{fact.predicate}'", fact)


def _check(context: Sequence[str], query: str, cot: Sequence[str], answer: bool | str | None) -> CheckResult:
    problems: list[str] = []
    label, steps = _parse_answer(answer, list(cot))
    if label is None:
        problems.append(f"answer {answer!r} is not True or False" if answer is not None
                        else "no answer: pass answer= or end the chain of thought with True or False")
    texts = [*context, query, *steps]
    matches = _match_all(texts)
    forms = _vocabulary(matches[: len(context) + 1])
    parsed = [_fact(t, m, forms) for t, m in zip(texts, matches)]
    where = [f"context sentence {i}" for i in range(len(context))] + ["query"]
    where += [f"step {i}" for i in range(len(steps))]
    problems += [f"{w}: {p}" for w, p in zip(where, parsed) if isinstance(p, str)]
    facts = [p if isinstance(p, Fact) else None for p in parsed]
    ctx, qfact = tuple(facts[: len(context)]), facts[len(context)]

    rules = [f for f in ctx if f is not None and f.universal]
    premises = [f for f in ctx if f is not None and not f.universal]
    by_conclusion: dict[tuple[str, str, bool], list[Fact]] = {}
    by_subject: dict[str, list[Fact]] = {}
    for r in rules:
        by_conclusion.setdefault((r.predicate, r.kind, r.negated), []).append(r)
        by_subject.setdefault(r.subject, []).append(r)
    stated, established = {f for f in ctx if f is not None}, set(premises)  # an unparseable sentence states nothing
    verdicts: list[StepVerdict] = []
    for i, (text, fact) in enumerate(zip(steps, facts[len(context) + 1:])):
        if fact is None:
            verdicts.append(StepVerdict(i, text, "invalid", "unparseable sentence"))
            continue
        verdict = _judge(i, text, fact, stated, established, by_conclusion)
        if verdict.valid:
            established.add(fact)
        else:
            problems.append(f"step {i} {text!r}: {verdict.reason}")
        verdicts.append(verdict)

    expected, reaches = None, False
    if qfact is not None and qfact.universal:
        problems.append(f"query {query!r} is about a rule, not an entity; ask 'True or false: Name is ...'")
    elif qfact is not None:
        opposite = Fact(qfact.subject, qfact.predicate, qfact.kind, negated=not qfact.negated)
        entailed = _closure(premises, by_subject)
        expected = qfact in entailed
        reaches = any(v.valid and v.fact in (qfact, opposite) for v in verdicts)
        if (expected or opposite in entailed) and not reaches:
            problems.append(f"the chain never states {describe(qfact)!r} or its negation, which the context decides")
        if label is not None and label != expected:
            problems.append(f"answer {label} is wrong: the context {'entails' if expected else 'does not entail'} "
                            f"{describe(qfact)!r}")
    return CheckResult(steps=tuple(verdicts), problems=tuple(problems), context=ctx, query=qfact, answer=label,
                       expected_label=expected, reaches_query=reaches)


def check(example: Example) -> CheckResult:
    """Check an example's gold chain of thought and label from its sentence texts alone.

    >>> from reasonlens.ontology import generate
    >>> check(generate(1, hops=3, seed=0)[0]).ok
    True
    """
    return _check([s.text for s in example.context], example.query.text, [s.text for s in example.cot],
                  example.label)


def check_chain(context_text: str | Sequence[str], query_text: str, cot_text: str | Sequence[str],
                answer: bool | str | None = None) -> CheckResult:
    """Check a chain of thought given as plain text, e.g. decoded model output.

    ``context_text`` and ``cot_text`` are paragraphs or lists of sentences. ``answer`` is "True"/"False"
    (any case) or a bool; None takes it from a final "True"/"False" of ``cot_text``.

    >>> r = check_chain("Every wumpus is a yumpus. Yumpuses are red. Polly is a wumpus.",
    ...                 "True or false: Polly is red.", "Polly is a wumpus. Polly is a yumpus. Polly is red. True")
    >>> r.ok, [s.role for s in r.steps]
    (True, ['premise_copy', 'derived_fact', 'derived_fact'])
    """
    def sentences(text: str | Sequence[str]) -> list[str]:
        return split_sentences(text) if isinstance(text, str) else list(text)

    return _check(sentences(context_text), query_text, sentences(cot_text), answer)

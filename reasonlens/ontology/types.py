"""Structured examples: facts, tagged sentences, ontologies and questions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

OntologyKind = Literal["fictional", "true", "false"]
Style = Literal["prontoqa", "dutta"]
ONTOLOGY_KINDS: tuple[str, ...] = ("fictional", "true", "false")
STYLES: tuple[str, ...] = ("prontoqa", "dutta")

# Role tags of context sentences and of chain-of-thought steps.
CONTEXT_ROLES: tuple[str, ...] = ("proof_rule", "property_rule", "entity_fact", "distractor")
COT_ROLES: tuple[str, ...] = ("premise_copy", "rule_copy", "derived_fact", "redundant")


@dataclass(frozen=True)
class Fact:
    """One logical statement.

    ``universal`` facts are rules about every member of a concept ("Every wumpus is a yumpus."); the
    others are about a named entity ("Polly is a wumpus."). ``kind`` is ``"isa"`` when the predicate is a
    concept and ``"property"`` when it is an adjective.
    """

    subject: str
    predicate: str
    kind: Literal["isa", "property"]
    negated: bool = False
    universal: bool = False


@dataclass(frozen=True)
class Sentence:
    """A sentence of a context or a chain of thought, with its role tag and its logical form."""

    text: str
    role: str
    fact: Fact


@dataclass
class Ontology:
    """The world an example lives in: ``parents[c]`` is c's parent concept, ``properties[c]`` its
    (property, holds) pairs, ``distractor`` the held-out concept of the distractor sentence."""

    parents: dict[str, str]
    properties: dict[str, list[tuple[str, bool]]]
    distractor: str | None = None

    def edges(self) -> list[tuple[str, str]]:
        """(child, parent) pairs."""
        return sorted(self.parents.items())


@dataclass
class Example:
    """One ProntoQA-style question with its gold chain of thought.

    >>> from reasonlens.ontology import generate
    >>> ex = generate(n=1, hops=2, kind="fictional", seed=0)[0]
    >>> ex.answer in ("True", "False")
    True
    """

    kind: str
    hops: int
    style: str
    entity: str
    context: list[Sentence]
    query: Sentence
    cot: list[Sentence]
    label: bool
    ontology: Ontology
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The context sentences joined into one paragraph."""
        return " ".join(s.text for s in self.context)

    @property
    def query_text(self) -> str:
        return self.query.text

    @property
    def answer(self) -> str:
        return "True" if self.label else "False"

    @property
    def cot_text(self) -> str:
        return " ".join(s.text for s in self.cot)

    @property
    def redundant_steps(self) -> list[int]:
        """Indices of CoT steps the generator inserted as removable (ground truth for step importance)."""
        return [i for i, s in enumerate(self.cot) if s.role == "redundant"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ontology"]["properties"] = {c: [list(p) for p in ps] for c, ps in self.ontology.properties.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Example":
        def sent(s: dict[str, Any]) -> Sentence:
            return Sentence(text=s["text"], role=s["role"], fact=Fact(**s["fact"]))

        onto = d["ontology"]
        return cls(
            kind=d["kind"],
            hops=int(d["hops"]),
            style=d["style"],
            entity=d["entity"],
            context=[sent(s) for s in d["context"]],
            query=sent(d["query"]),
            cot=[sent(s) for s in d["cot"]],
            label=bool(d["label"]),
            ontology=Ontology(
                parents=dict(onto["parents"]),
                properties={c: [(p, bool(h)) for p, h in ps] for c, ps in onto["properties"].items()},
                distractor=onto.get("distractor"),
            ),
            meta=dict(d.get("meta") or {}),
        )

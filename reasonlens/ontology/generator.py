"""Deterministic PrOntoQA-style question generator (fictional, true and false ontologies).

Faithful to PrOntoQA v1: an ontology chain whose nodes each carry one property (negated with
probability 1/2), an entity fact, a distractor rule that states the queried property with the opposite
polarity for a held-out concept, a query that is negated with probability 1/2, and a chain of thought of
2*hops+1 sentences. ``style="dutta"`` renders the same worlds in the format of Dutta et al. (no
quantifiers or articles) and ``false_mode="wrong_property"`` makes False answers query an unrelated
property instead of a negation, as in their data.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.lexicon import (
    ENTITIES,
    FICTIONAL_CONCEPTS,
    PROPERTY_FAMILIES,
    TRUE_TAXONOMY,
    true_ancestors,
    true_properties,
)
from reasonlens.ontology.realize import choose_form, realize, realize_query
from reasonlens.ontology.types import ONTOLOGY_KINDS, STYLES, Example, Fact, Ontology, Sentence

MAX_HOPS = 5
MAX_CONCEPTS = len(PROPERTY_FAMILIES)  # one property family per ontology node
# The generator options that size an ontology, and their values at real PrOntoQA v1's sizes: chains of up to 10
# concepts with the entity anywhere in them.
SIZE_OPTIONS: tuple[str, ...] = ("extra_concepts", "min_extra_concepts", "below_concepts", "min_below_concepts")
V1_SIZES: dict[str, int] = {"extra_concepts": 6, "min_extra_concepts": 0, "below_concepts": 4, "min_below_concepts": 0}
ORDERINGS: tuple[str, ...] = ("postorder", "preorder", "random")
FALSE_MODES: tuple[str, ...] = ("negation", "wrong_property")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _values(value: object) -> tuple:
    """``value`` as a tuple of values: one value (a string counts as one), or the items of a list or tuple."""
    return tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else (value,)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``hops`` and ``kind`` may be a single value or a sequence sampled uniformly.

    - ``extra_concepts``: most ontology nodes above the proof path (PrOntoQA's chain goes on past the
      queried concept); each off-path node adds its rules to the context as distractors;
      ``min_extra_concepts`` the fewest (drawn uniformly between the two; true ontologies as far as the real
      taxonomy goes), so that with 1 every question offers the choice between stopping at the answer and going on.
    - ``below_concepts``: most nodes below the entity's concept, a chain going down from it (the entity sits
      inside the ontology, not at its bottom), ``min_below_concepts`` the fewest; ``None`` keeps the first
      generator's rule, one node at most and only when the chain goes past the answer. An ontology has at most
      :data:`MAX_CONCEPTS` nodes (one property family each): past that, nodes below are dropped first, then
      nodes above. Real PrOntoQA v1 puts the entity inside a chain of up to 10 concepts with up to 20 context
      rules, whatever the hop count; ``generate(n, **V1_SIZES)`` draws from that range.
    - ``distractor``: add PrOntoQA's distractor rule ("Every D is not P" when the answer is "x is P").
    - ``redundant_step_p``: probability, at each hop boundary of the CoT, of inserting a removable step
      (a restated distractor, or a derivation off the proof path); the generator tags them ``redundant``.
    - ``ordering``: order of the context rules (``postorder`` leaf to root, as PrOntoQA's default;
      ``preorder`` root to leaf, as Dutta et al.; ``random``); the entity fact comes last.
    """

    kind: str | tuple[str, ...] = "fictional"
    hops: int | tuple[int, ...] = 2
    style: str = "prontoqa"
    false_mode: str = "negation"
    negate_query_p: float = 0.5
    negate_property_p: float = 0.5
    extra_concepts: int = 2
    min_extra_concepts: int = 0
    below_concepts: int | None = None
    min_below_concepts: int = 0
    distractor: bool = True
    redundant_step_p: float = 0.0
    ordering: str | tuple[str, ...] = "postorder"
    seed: int = 0

    def __post_init__(self) -> None:
        kinds, hops, orderings = _values(self.kind), _values(self.hops), _values(self.ordering)
        for k in kinds:
            if k not in ONTOLOGY_KINDS:
                raise ReasonlensError(f"unknown ontology kind {k!r}; choose from {ONTOLOGY_KINDS}")
        for h in hops:
            if not _is_int(h) or not 1 <= h <= MAX_HOPS:
                raise ReasonlensError(f"hops must be an integer in 1..{MAX_HOPS}, got {h!r}")
        for o in orderings:
            if o not in ORDERINGS:
                raise ReasonlensError(f"unknown ordering {o!r}; choose from {ORDERINGS}")
        if not kinds or not hops or not orderings:
            raise ReasonlensError("kind, hops and ordering need at least one value each")
        if self.style not in STYLES:
            raise ReasonlensError(f"unknown style {self.style!r}; choose from {STYLES}")
        if self.false_mode not in FALSE_MODES:
            raise ReasonlensError(f"unknown false_mode {self.false_mode!r}; choose from {FALSE_MODES}")
        for name in ("negate_query_p", "negate_property_p", "redundant_step_p"):
            p = getattr(self, name)
            if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ReasonlensError(f"{name} must be a probability in [0, 1], got {p!r}")
        for name in (*SIZE_OPTIONS, "seed"):
            value = getattr(self, name)
            if not _is_int(value) and not (name == "below_concepts" and value is None):
                raise ReasonlensError(f"{name} must be a whole number{' or None' if name == 'below_concepts' else ''}, "
                                      f"got {value!r}")
        if not isinstance(self.distractor, bool):
            raise ReasonlensError(f"distractor must be True or False, got {self.distractor!r}")
        if not 0 <= self.min_extra_concepts <= self.extra_concepts:
            raise ReasonlensError(f"need 0 <= min_extra_concepts <= extra_concepts, got {self.min_extra_concepts} "
                                  f"and {self.extra_concepts}")
        most_below = 1 if self.below_concepts is None else self.below_concepts
        if not 0 <= self.min_below_concepts <= most_below:
            raise ReasonlensError(f"need 0 <= min_below_concepts <= below_concepts, got {self.min_below_concepts} "
                                  f"and {self.below_concepts}")
        # An ontology has at most MAX_CONCEPTS nodes, one of them on the proof path at least: larger maxima are
        # capped as documented, but a maximum no ontology can reach, or a minimum the cap cannot honour, is an error.
        for name in ("extra_concepts", "below_concepts"):
            value = getattr(self, name)
            if value is not None and value > MAX_CONCEPTS - 1:
                raise ReasonlensError(f"{name} must be at most {MAX_CONCEPTS - 1}, got {value}: an ontology has at "
                                      f"most MAX_CONCEPTS = {MAX_CONCEPTS} nodes (one property family each), one of "
                                      "them on the proof path at least")
        fewest = max(hops) + self.min_extra_concepts + self.min_below_concepts
        if fewest > MAX_CONCEPTS:
            raise ReasonlensError(f"hops up to {max(hops)} with min_extra_concepts {self.min_extra_concepts} and "
                                  f"min_below_concepts {self.min_below_concepts} need {fewest} ontology nodes, more "
                                  f"than MAX_CONCEPTS = {MAX_CONCEPTS}; lower the minima (or the hops)")

        object.__setattr__(self, "kind", kinds if len(kinds) > 1 else kinds[0])
        object.__setattr__(self, "hops", hops if len(hops) > 1 else hops[0])
        object.__setattr__(self, "ordering", orderings if len(orderings) > 1 else orderings[0])

    def choices(self, name: str) -> tuple:
        value = getattr(self, name)
        return value if isinstance(value, tuple) else (value,)


def generate(n: int, config: GeneratorConfig | None = None, **overrides: object) -> list[Example]:
    """Generate ``n`` examples; example ``i`` depends only on ``(config, seed, i)``.

    >>> exs = generate(4, kind="false", hops=(1, 2, 3), seed=1)
    >>> [len(e.cot) == 2 * e.hops + 1 for e in exs]
    [True, True, True, True]
    """
    if not _is_int(n) or n < 1:
        raise ReasonlensError(f"n must be a positive number of examples, got {n!r}")
    known = {f.name for f in fields(GeneratorConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ReasonlensError(f"unknown generator option(s) {sorted(unknown)}; valid: {sorted(known)}")
    cfg = replace(config or GeneratorConfig(), **overrides)  # type: ignore[arg-type]
    return [_generate_one(cfg, random.Random(f"reasonlens-{cfg.seed}-{i}"), i) for i in range(n)]


@dataclass
class _World:
    chain: list[str]                      # c0 (the entity's concept) first, then its ancestors
    props: dict[str, tuple[str, bool]]    # one property per node
    below: list[str] = field(default_factory=list)   # off-path nodes below c0: its child, that one's child, ...
    distractor: str | None = None
    families: dict[str, int] = field(default_factory=dict)


def _fictional_world(rng: random.Random, length: int, n_below: int) -> _World:
    names = rng.sample(FICTIONAL_CONCEPTS, length + n_below + 1)
    chain, below, distractor = names[:length], names[length:length + n_below], names[-1]
    fams = rng.sample(range(len(PROPERTY_FAMILIES)), length + n_below)
    props = {}
    families = {}
    for c, f in zip(chain + below, fams):
        props[c] = (rng.choice(PROPERTY_FAMILIES[f]), True)
        families[c] = f
    return _World(chain=chain, props=props, below=below, distractor=distractor, families=families)


def _distinct_props(nodes: Sequence[str]) -> bool:
    words = [TRUE_TAXONOMY[c][1] for c in nodes]
    return len(set(words)) == len(words)


def _below_parents(world: _World) -> dict[str, str]:
    """The parent of each node below the entity's concept: ``c0`` for the first, the previous one after."""
    return {b: (world.below[i - 1] if i else world.chain[0]) for i, b in enumerate(world.below)}


def _true_world(rng: random.Random, hops: int, extra: int, least: int, n_below: int | None) -> _World:
    starts = [c for c in TRUE_TAXONOMY if len(true_ancestors(c)) >= hops - 1]
    for _ in range(100):
        c0 = rng.choice(starts)
        chain = [c0, *true_ancestors(c0)]
        chain = chain[: hops + rng.randint(least, extra)] if len(chain) > hops else chain[:hops]
        if _distinct_props(chain):
            break
    else:  # pragma: no cover - the taxonomy always has such chains
        raise ReasonlensError(f"no true-ontology chain of {hops} hops with distinct properties")
    children = [c for c, (p, _, _) in TRUE_TAXONOMY.items() if p == c0 and _distinct_props([c, *chain])]
    if n_below is None:  # the first generator's rule: one child of c0 at most
        below = rng.sample(children, min(len(children), rng.randint(0, 1)))
    else:  # a chain going down the real taxonomy, as far as it goes
        below = []
        while children and len(below) < n_below:
            below.append(rng.choice(children))
            children = [c for c, (p, _, _) in TRUE_TAXONOMY.items()
                        if p == below[-1] and _distinct_props([c, *chain, *below])]
    props = {c: (TRUE_TAXONOMY[c][1], TRUE_TAXONOMY[c][2]) for c in chain + below}
    return _World(chain=chain, props=props, below=below)


def _false_world(rng: random.Random, hops: int, length: int, n_below: int) -> _World:
    concepts = list(TRUE_TAXONOMY)
    for _ in range(1000):
        nodes = rng.sample(concepts, length + n_below)
        chain, below = nodes[:length], nodes[length:]
        edges = list(zip(chain, chain[1:])) + list(zip(below, [chain[0], *below]))
        if all(parent not in true_ancestors(child) for child, parent in edges) and _distinct_props(nodes):
            break
    else:  # pragma: no cover
        raise ReasonlensError("could not sample a false ontology")
    # Each concept states its real property with the opposite polarity: the context contradicts the prior.
    props = {c: (TRUE_TAXONOMY[c][1], not TRUE_TAXONOMY[c][2]) for c in chain + below}
    # The queried concept gets a property the prior has an opinion on for the entity's concept, flipped with
    # probability 1/2: half the questions set the in-context answer against the pretraining prior
    # (``meta["prior_label"] != label``), the other half agree with it, so "answer against the prior" is no
    # shortcut and the conflicting half measures whether the context wins.
    target = chain[hops - 1]
    taken = {props[c][0] for c in chain + below if c != target}
    candidates = [(p, h) for p, h in true_properties(chain[0]).items() if p not in taken]
    if candidates:
        p, h = rng.choice(candidates)
        props[target] = (p, not h if rng.random() < 0.5 else h)
    return _World(chain=chain, props=props, below=below)


def _pick_distractor(rng: random.Random, world: _World, prop: str, holds: bool, kind: str) -> str | None:
    """The held-out concept of the distractor rule, or None when a true ontology has no truthful one."""
    used = set(world.chain) | set(world.below)
    if kind == "fictional":
        assert world.distractor is not None
        return world.distractor
    pool = [c for c in TRUE_TAXONOMY if c not in used]
    if kind == "true":  # the rule must not contradict the real world: true there, else one it is silent on
        agreeing = [c for c in pool if true_properties(c).get(prop) == (not holds)]
        pool = agreeing or [c for c in pool if prop not in true_properties(c)]
        if not pool:  # e.g. "alive": every concept has it, so "Every D is not alive" would be false
            return None
    return rng.choice(pool)


def _generate_one(cfg: GeneratorConfig, rng: random.Random, index: int) -> Example:
    kind = rng.choice(cfg.choices("kind"))
    hops = rng.choice(cfg.choices("hops"))
    ordering = rng.choice(cfg.choices("ordering"))
    extra = rng.randint(cfg.min_extra_concepts, cfg.extra_concepts)
    if cfg.below_concepts is None:
        n_below = rng.randint(0, 1) if cfg.extra_concepts else 0
    else:
        n_below = rng.randint(cfg.min_below_concepts, cfg.below_concepts)
    over = max(0, hops + extra + n_below - MAX_CONCEPTS)
    n_below, extra = max(0, n_below - over), extra - max(0, over - n_below)
    if kind == "fictional":
        world = _fictional_world(rng, hops + extra, n_below)
        # PrOntoQA negates a node's property with probability 1/2.
        world.props = {c: (p, rng.random() >= cfg.negate_property_p) for c, (p, _) in world.props.items()}
    elif kind == "true":
        world = _true_world(rng, hops, extra, cfg.min_extra_concepts, None if cfg.below_concepts is None else n_below)
    else:
        world = _false_world(rng, hops, hops + extra, n_below)
    entity = rng.choice(ENTITIES)
    style = cfg.style
    forms: dict[Fact, str] = {}

    def sentence(fact: Fact, role: str) -> Sentence:
        if fact not in forms:
            forms[fact] = choose_form(style, rng)
        return Sentence(realize(fact, style, forms[fact]), role, fact)

    path = world.chain[:hops]
    target = path[-1]
    prop, holds = world.props[target]

    # Context sentences, one isa rule per edge and one property rule per node.
    rules: list[list[Sentence]] = []
    nodes_in_order = list(reversed(world.below)) + world.chain
    below_parents = _below_parents(world)
    for c in nodes_in_order:
        group = []
        p, h = world.props[c]
        role = "property_rule" if c == target else "distractor"
        group.append(sentence(Fact(c, p, "property", negated=not h, universal=True), role))
        parent = below_parents[c] if c in below_parents else (
            world.chain[world.chain.index(c) + 1] if world.chain.index(c) + 1 < len(world.chain) else None)
        if parent is not None:
            on_path = c in path[:-1]
            group.append(sentence(Fact(c, parent, "isa", universal=True), "proof_rule" if on_path else "distractor"))
        rules.append(group)
    if ordering == "preorder":
        rules.reverse()
    context = [s for group in rules for s in group]
    if ordering == "random":
        rng.shuffle(context)
    distractor = None
    if cfg.distractor:
        distractor = _pick_distractor(rng, world, prop, holds, kind)
    if distractor is not None:
        d_sent = sentence(Fact(distractor, prop, "property", negated=holds, universal=True), "distractor")
        context.insert(rng.randint(0, len(context)), d_sent)
    entity_fact = sentence(Fact(entity, path[0], "isa"), "entity_fact")
    context.append(entity_fact)

    # Chain of thought: premise, then (rule, derived fact) per hop.
    by_fact = {s.fact: s for s in context}
    cot: list[Sentence] = [Sentence(entity_fact.text, "premise_copy", entity_fact.fact)]
    for i, c in enumerate(path):
        cot.extend(_redundant_steps(cfg, rng, world, path, i, entity, by_fact, sentence))
        if c == target:
            rule = Fact(c, prop, "property", negated=not holds, universal=True)
            derived = Fact(entity, prop, "property", negated=not holds)
        else:
            rule = Fact(c, path[i + 1], "isa", universal=True)
            derived = Fact(entity, path[i + 1], "isa")
        cot.append(Sentence(by_fact[rule].text, "rule_copy", rule))
        cot.append(sentence(derived, "derived_fact"))
    conclusion = cot[-1].fact

    # Query and label.
    if cfg.false_mode == "negation":
        negate = rng.random() < cfg.negate_query_p
        qfact = replace(conclusion, negated=conclusion.negated != negate)
        label = not negate
    else:
        wrong = rng.random() < cfg.negate_query_p
        if wrong:
            used = {w for w, _ in world.props.values()} | {prop}
            if kind == "fictional":
                used_fams = set(world.families.values())
                pool = [p for f, fam in enumerate(PROPERTY_FAMILIES) if f not in used_fams for p in fam]
            else:
                # Keep the prior on its side: a true ontology must not query a property the entity's concept
                # really has (the answer False would contradict the real world); a false one must not query
                # a property it really lacks (the prior would agree with the answer).
                contrary = {p for p, h in true_properties(path[0]).items() if h == (kind == "true")}
                pool = sorted({TRUE_TAXONOMY[c][1] for c in TRUE_TAXONOMY} - used - contrary)
            qfact = Fact(entity, rng.choice(pool), "property")
        else:
            qfact = conclusion
        label = not wrong
    query = Sentence(realize_query(qfact, style), "query", qfact)

    prior = None
    if kind != "fictional":
        known = true_properties(path[0]).get(qfact.predicate)
        prior = None if known is None else (known != qfact.negated)
    ontology = Ontology(
        parents={c: p for c, p in zip(world.chain, world.chain[1:])} | _below_parents(world),
        properties={c: [world.props[c]] for c in world.chain + world.below}
        | ({distractor: [(prop, not holds)]} if distractor else {}),
        distractor=distractor,
    )
    meta = {"seed": cfg.seed, "index": index, "ordering": ordering, "prior_label": prior}
    return Example(kind=kind, hops=hops, style=style, entity=entity, context=context, query=query, cot=cot,
                   label=label, ontology=ontology, meta=meta)


def _redundant_steps(cfg, rng, world, path, i, entity, by_fact, sentence) -> list[Sentence]:
    """Removable steps inserted before hop ``i`` with probability ``cfg.redundant_step_p``."""
    if cfg.redundant_step_p <= 0 or rng.random() >= cfg.redundant_step_p:
        return []
    c = path[i]
    p, h = world.props[c]
    own_rule = Fact(c, p, "property", negated=not h, universal=True)
    if c != path[-1] and own_rule in by_fact and rng.random() < 0.5:
        # A derivation off the proof path: a property of the current concept that the query does not need.
        return [Sentence(by_fact[own_rule].text, "redundant", own_rule),
                sentence(Fact(entity, p, "property", negated=not h), "redundant")]
    distractors = [s for s in by_fact.values() if s.role == "distractor"]
    if not distractors:
        return []
    s = rng.choice(distractors)
    return [Sentence(s.text, "redundant", s.fact)]

"""Word lists and the real-world taxonomy behind the three ontology kinds.

Fictional concept, entity and property names follow PrOntoQA v1 (Saparov & He, 2023) and the name lists
of Dutta et al. (2024). The *true* taxonomy is a small real one (cats are felines, felines are
carnivores, ...) with one characteristic property per concept; it is also the background corpus that
gives the reference models a pretraining prior.
"""

from __future__ import annotations

FICTIONAL_CONCEPTS: tuple[str, ...] = (
    "wumpus", "yumpus", "zumpus", "dumpus", "rompus", "numpus", "tumpus", "vumpus", "impus", "jompus",
    "gorpus", "shumpus", "lempus", "sterpus", "grimpus", "lorpus", "brimpus",
)

ENTITIES: tuple[str, ...] = ("Fae", "Rex", "Sally", "Max", "Alex", "Sam", "Polly", "Stella", "Wren")

PROPERTY_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("blue", "red", "brown", "orange"),
    ("small", "large"),
    ("metallic", "wooden", "luminous", "liquid"),
    ("transparent", "opaque"),
    ("nervous", "happy", "feisty", "shy"),
    ("bright", "dull"),
    ("sweet", "sour", "spicy", "bitter"),
    ("floral", "fruity", "earthy"),
    ("hot", "cold", "temperate"),
    ("kind", "mean", "angry", "amenable", "aggressive"),
)
PROPERTIES: tuple[str, ...] = tuple(p for family in PROPERTY_FAMILIES for p in family)

# Real taxonomy: concept -> (parent or None, property, property holds?)
# Every concept takes the plural "s" except those listed in PLURAL_ES.
TRUE_TAXONOMY: dict[str, tuple[str | None, str, bool]] = {
    "organism": (None, "alive", True),
    "animal": ("organism", "mobile", True),
    "plant": ("organism", "mobile", False),
    "vertebrate": ("animal", "bony", True),
    "invertebrate": ("animal", "bony", False),
    "mammal": ("vertebrate", "furry", True),
    "bird": ("vertebrate", "feathered", True),
    "reptile": ("vertebrate", "scaly", True),
    "amphibian": ("vertebrate", "slimy", True),
    "carnivore": ("mammal", "carnivorous", True),
    "herbivore": ("mammal", "carnivorous", False),
    "primate": ("mammal", "clever", True),
    "rodent": ("mammal", "tiny", True),
    "feline": ("carnivore", "agile", True),
    "canine": ("carnivore", "loyal", True),
    "cat": ("feline", "cuddly", True),
    "tiger": ("feline", "striped", True),
    "kitten": ("cat", "small", True),
    "dog": ("canine", "playful", True),
    "terrier": ("dog", "noisy", True),
    "cow": ("herbivore", "docile", True),
    "horse": ("herbivore", "fast", True),
    "stallion": ("horse", "muscular", True),
    "monkey": ("primate", "playful", True),
    "rat": ("rodent", "dirty", True),
    "squirrel": ("rodent", "fluffy", True),
    "eagle": ("bird", "predatory", True),
    "parrot": ("bird", "colorful", True),
    "penguin": ("bird", "aquatic", True),
    "snake": ("reptile", "legged", False),
    "cobra": ("snake", "venomous", True),
    "python": ("snake", "venomous", False),
    "lizard": ("reptile", "legged", True),
    "gecko": ("lizard", "sticky", True),
    "turtle": ("reptile", "slow", True),
    "frog": ("amphibian", "green", True),
    "toad": ("amphibian", "warty", True),
    "arthropod": ("invertebrate", "segmented", True),
    "insect": ("arthropod", "winged", True),
    "bee": ("insect", "venomous", True),
    "ant": ("insect", "tiny", True),
    "beetle": ("insect", "shiny", True),
    "spider": ("arthropod", "hairy", True),
    "mollusc": ("invertebrate", "soft", True),
    "snail": ("mollusc", "slow", True),
    "octopus": ("mollusc", "clever", True),
    "tree": ("plant", "woody", True),
    "oak": ("tree", "tall", True),
    "pine": ("tree", "evergreen", True),
    "flower": ("plant", "fragrant", True),
    "rose": ("flower", "thorny", True),
    "tulip": ("flower", "colorful", True),
    "fern": ("plant", "flowering", False),
}
TRUE_CONCEPTS: tuple[str, ...] = tuple(TRUE_TAXONOMY)
TRUE_PROPERTIES: tuple[str, ...] = tuple(sorted({p for _, p, _ in TRUE_TAXONOMY.values()}))

PLURAL_ES: frozenset[str] = frozenset(FICTIONAL_CONCEPTS) | {"octopus"}


def plural(concept: str) -> str:
    """Plural of a concept noun: ``plural("wumpus") == "wumpuses"``, ``plural("cat") == "cats"``."""
    return concept + ("es" if concept in PLURAL_ES else "s")


def true_ancestors(concept: str) -> list[str]:
    """Proper ancestors of a concept in the real taxonomy, nearest first."""
    out: list[str] = []
    parent = TRUE_TAXONOMY[concept][0]
    while parent is not None:
        out.append(parent)
        parent = TRUE_TAXONOMY[parent][0]
    return out


def true_properties(concept: str) -> dict[str, bool]:
    """Every property the real taxonomy gives a concept, own and inherited (nearest concept wins)."""
    props: dict[str, bool] = {}
    for node in [concept, *true_ancestors(concept)]:
        _, prop, holds = TRUE_TAXONOMY[node]
        props.setdefault(prop, holds)
    return props


# PrOntoQA v1's real-world nouns: the concepts of its "true" ontology files (animals, invertebrates and the number
# ontology), the distractor concepts they use, and the concept names its "false" files shuffle into wrong trees.
# Each maps to its parent in the real world (None: a root, or a word outside the three trees). Concepts are
# lower-case lemmas; a multi-word concept inflects its last word ("mersenne prime" -> "mersenne primes"). v1 spells
# "mullosc" so. Used to parse and classify imported files only (the reference models' vocabulary is unchanged).
PRONTOQA_V1_TAXONOMY: dict[str, str | None] = {
    "animal": None, "bilaterian": "animal", "chordate": "bilaterian", "vertebrate": "chordate",
    "mammal": "vertebrate", "carnivore": "mammal", "feline": "carnivore", "cat": "feline", "tabby": "cat",
    "dog": "carnivore", "herbivore": "mammal", "sheep": "herbivore", "cow": "herbivore", "whale": "mammal",
    "reptile": "vertebrate", "snake": "reptile", "invertebrate": "animal", "protostome": "invertebrate",
    "arthropod": "protostome", "insect": "arthropod", "lepidopteran": "insect", "butterfly": "lepidopteran",
    "painted lady": "butterfly", "moth": "lepidopteran", "ant": "insect", "spider": "arthropod",
    "crustacean": "arthropod", "mullosc": "protostome", "nematode": "protostome", "plant": None, "bacteria": None,
    "number": None, "real number": "number", "integer": "real number", "natural number": "integer",
    "prime number": "natural number", "mersenne prime": "prime number", "composite number": "natural number",
    "even number": "integer", "negative number": "real number", "fraction": "real number",
    "complex number": "number", "imaginary number": "complex number", "function": None,
}
# The properties of v1's true ontologies (its false ontologies take the fictional PROPERTY_FAMILIES).
PRONTOQA_V1_PROPERTIES: tuple[str, ...] = (
    "multicellular", "unicellular", "furry", "warm-blooded", "cold-blooded", "carnivorous", "herbivorous",
    "segmented", "small", "bony", "six-legged", "eight-legged", "real", "imaginary", "positive", "negative", "prime",
    "composite",
)
# Nouns whose plural is not formed with -s/-es/-ies.
IRREGULAR_PLURALS: dict[str, str] = {"sheep": "sheep", "bacteria": "bacteria"}

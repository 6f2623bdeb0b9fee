"""Reading and writing examples: JSONL files, Hugging Face datasets and PrOntoQA v1 JSON files.

JSONL and datasets hold :meth:`Example.to_dict` exactly (a dataset stores it as the JSON string column
``example_json``, next to flat columns for browsing), so saving and loading gives back equal examples.

PrOntoQA v1 files (``{"example1": {"in_context_example0": {...}, ..., "test_example": {...}}, ...}``,
each with ``question``, ``query``, ``chain_of_thought`` and ``answer``) are imported by parsing the text
with :mod:`reasonlens.ontology.checker`: context sentences used by the gold proof become ``proof_rule`` /
``property_rule`` / ``entity_fact``, the rest ``distractor``; CoT steps become ``premise_copy`` /
``rule_copy`` / ``derived_fact``; ``hops`` counts rule applications; the ontology comes from the parsed
rules. ``kind`` is ``"fictional"`` if every concept is a lexicon fictional name, ``"true"`` / ``"false"``
if every concept is in the real taxonomy and every / not every subsumption rule is true there, else
``"unknown"`` (e.g. PrOntoQA's disjoint fictional names or its number ontology). The in-context examples
are kept in ``meta["demonstrations"]``; :func:`demonstrations` turns them back into examples for
:func:`reasonlens.ontology.prompt.format_prompt`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.checker import CheckResult, check_chain, split_sentences
from reasonlens.ontology.lexicon import FICTIONAL_CONCEPTS, TRUE_TAXONOMY, true_ancestors
from reasonlens.ontology.types import Example, Fact, Ontology, Sentence

if TYPE_CHECKING:
    import datasets

PathLike = str | os.PathLike[str]
V1_FIELDS: tuple[str, ...] = ("question", "query", "chain_of_thought", "answer")
FORMATS_HINT = ("expected JSONL written by save_jsonl, a directory written by to_hf_dataset(...).save_to_disk, "
                "or a PrOntoQA v1 JSON file ({'example1': {'test_example': {...}}, ...})")


def save_jsonl(examples: Iterable[Example], path: PathLike) -> Path:
    """Write one :meth:`Example.to_dict` JSON object per line; returns the path.

    >>> import tempfile
    >>> from reasonlens.ontology import generate
    >>> exs = generate(3, seed=0)
    >>> load_jsonl(save_jsonl(exs, tempfile.mkdtemp() + "/ex.jsonl")) == exs
    True
    """
    rows = [json.dumps(ex.to_dict()) for ex in examples]
    if not rows:
        raise ReasonlensError(f"no examples to save to {path}; pass a non-empty list (e.g. generate(n, ...))")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _read_text(path: PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise ReasonlensError(f"no such file: {p}; check the path")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise ReasonlensError(f"{p} is empty; {FORMATS_HINT}")
    return text


def _from_dict(d: Any, where: str) -> Example:
    try:
        return Example.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ReasonlensError(f"{where} is not a reasonlens example ({type(err).__name__}: {err}); "
                              "write examples with save_jsonl or to_hf_dataset") from err


def load_jsonl(path: PathLike) -> list[Example]:
    """Examples from a file written by :func:`save_jsonl` (blank lines are skipped)."""
    examples = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReasonlensError(f"line {n} of {path} is not JSON ({err}); {FORMATS_HINT}") from err
        examples.append(_from_dict(d, f"line {n} of {path}"))
    return examples


def to_hf_dataset(examples: Iterable[Example]) -> datasets.Dataset:
    """A Hugging Face dataset: flat text columns plus ``example_json``, the exact example.

    >>> from reasonlens.ontology import generate
    >>> ds = to_hf_dataset(generate(2, seed=0))
    >>> from_hf_dataset(ds) == generate(2, seed=0), ds.column_names[:3]
    (True, ['kind', 'hops', 'style'])
    """
    import datasets

    rows = [{"kind": ex.kind, "hops": ex.hops, "style": ex.style, "entity": ex.entity, "question": ex.question,
             "query": ex.query_text, "cot": ex.cot_text, "answer": ex.answer, "label": ex.label,
             "example_json": json.dumps(ex.to_dict())} for ex in examples]
    if not rows:
        raise ReasonlensError("no examples to put in a dataset; pass a non-empty list (e.g. generate(n, ...))")
    return datasets.Dataset.from_list(rows)


def from_hf_dataset(ds: datasets.Dataset) -> list[Example]:
    """The examples of a dataset made by :func:`to_hf_dataset` (possibly saved and reloaded)."""
    if "example_json" not in ds.column_names:
        raise ReasonlensError(f"dataset has no 'example_json' column (columns: {ds.column_names}); "
                              "build it with to_hf_dataset")
    if len(ds) == 0:
        raise ReasonlensError("the dataset is empty; build it with to_hf_dataset from a non-empty list")
    return [_from_dict(json.loads(s), f"row {i} of the dataset") for i, s in enumerate(ds["example_json"])]


def demonstrations(example: Example) -> list[Example]:
    """The solved in-context examples an imported PrOntoQA question came with (empty if none).

    >>> from reasonlens.ontology import generate
    >>> demonstrations(generate(1, seed=0)[0])
    []
    """
    return [Example.from_dict(d) for d in example.meta.get("demonstrations", [])]


def _kind(rules: list[Fact], premises: list[Fact]) -> str:
    concepts = {f.subject for f in rules} | {f.predicate for f in rules + premises if f.kind == "isa"}
    if concepts <= set(FICTIONAL_CONCEPTS):
        return "fictional"
    if concepts <= set(TRUE_TAXONOMY):
        edges = [f for f in rules if f.kind == "isa"]
        agree = all(not f.negated and f.predicate in true_ancestors(f.subject) for f in edges)
        return "true" if agree else "false"
    return "unknown"


def _context_role(fact: Fact, used_rules: set[Fact | None]) -> str:
    if not fact.universal:
        return "entity_fact"
    if fact in used_rules:
        return "proof_rule" if fact.kind == "isa" else "property_rule"
    return "distractor"


def _v1_example(raw: Any, where: str, meta: dict[str, Any]) -> Example:
    if not isinstance(raw, dict) or any(k not in raw for k in V1_FIELDS):
        raise ReasonlensError(f"{where} is not a PrOntoQA v1 question: it needs the fields {V1_FIELDS}")
    cot = raw["chain_of_thought"]
    context = split_sentences(str(raw["question"]))
    steps = split_sentences(cot) if isinstance(cot, str) else [str(s) for s in cot]
    result: CheckResult = check_chain(context, str(raw["query"]), steps, str(raw["answer"]))
    if not result.ok or result.query is None:
        raise ReasonlensError(f"{where}: its gold chain of thought does not check out: {'; '.join(result.problems)}. "
                              "Only modus-ponens PrOntoQA v1 questions (the default deduction rule) can be imported")
    derived = [v for v in result.steps if v.role == "derived_fact"]
    if not derived:
        raise ReasonlensError(f"{where}: its chain of thought derives nothing; a v1 question needs at least one hop")
    facts = [f for f in result.context if f is not None]
    rules = [f for f in facts if f.universal]
    premises = [f for f in facts if not f.universal]
    used = {v.rule for v in derived}
    conclusion = derived[-1].fact
    assert conclusion is not None
    distractors = [f.subject for f in rules if f.kind == "property" and f.predicate == conclusion.predicate
                   and f.negated != conclusion.negated]
    properties: dict[str, list[tuple[str, bool]]] = {}
    for f in rules:
        if f.kind == "property":
            properties.setdefault(f.subject, []).append((f.predicate, not f.negated))
    return Example(
        kind=_kind(rules, premises),
        hops=len(derived),
        style="prontoqa",
        entity=result.query.subject,
        context=[Sentence(text, _context_role(f, used), f) for text, f in zip(context, facts)],
        query=Sentence(str(raw["query"]), "query", result.query),
        cot=[Sentence(v.text, v.role, v.fact) for v in result.steps if v.fact is not None],
        label=bool(result.answer),
        ontology=Ontology(
            parents={f.subject: f.predicate for f in rules if f.kind == "isa" and not f.negated},
            properties=properties,
            distractor=distractors[0] if distractors else None,
        ),
        meta=meta,
    )


def _demo_number(key: str) -> int:
    return int(re.sub(r"\D", "", key) or 0)


def load_prontoqa_v1(path: PathLike) -> list[Example]:
    """The test questions of a PrOntoQA v1 JSON file, each with its in-context examples in
    ``meta["demonstrations"]`` (see the module docstring for how structure is recovered)."""
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReasonlensError(f"{path} is not JSON ({err}); {FORMATS_HINT}") from err
    if not isinstance(data, dict) or not data:
        raise ReasonlensError(f"{path} holds no PrOntoQA v1 questions; {FORMATS_HINT}")
    examples = []
    for name, entry in data.items():
        if not isinstance(entry, dict) or "test_example" not in entry:
            raise ReasonlensError(f"{path}: entry {name!r} has no 'test_example'; {FORMATS_HINT}")
        keys = sorted((k for k in entry if k.startswith("in_context_example")), key=_demo_number)
        demos = [_v1_example(entry[k], f"{path}: {name}/{k}", {"source": "prontoqa_v1", "id": f"{name}/{k}"})
                 for k in keys]
        meta = {"source": "prontoqa_v1", "id": name, "demonstrations": [d.to_dict() for d in demos]}
        examples.append(_v1_example(entry["test_example"], f"{path}: {name}/test_example", meta))
    return examples


def load_dataset_file(path: PathLike) -> list[Example]:
    """Examples from any file this module writes or reads, recognised by its content: a JSONL file of
    examples, a saved dataset directory, or a PrOntoQA v1 JSON file."""
    p = Path(path)
    if p.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(p))
        except FileNotFoundError as err:
            raise ReasonlensError(f"{p} is a directory but not a saved dataset; {FORMATS_HINT}") from err
        if isinstance(ds, datasets.DatasetDict):
            raise ReasonlensError(f"{p} holds splits {sorted(ds)}; save or load one split (ds['train'])")
        return from_hf_dataset(ds)
    text = _read_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and any(isinstance(v, dict) and "test_example" in v for v in data.values()):
        return load_prontoqa_v1(p)
    first = next(line for line in text.splitlines() if line.strip())
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if not (isinstance(head, dict) and "context" in head and "cot" in head):
        raise ReasonlensError(f"cannot tell what {p} holds; {FORMATS_HINT}")
    return load_jsonl(p)

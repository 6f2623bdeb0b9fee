"""Reading and writing examples: JSONL files, Hugging Face datasets and PrOntoQA v1 JSON files.

JSONL and datasets hold :meth:`Example.to_dict` exactly (a dataset stores it as the JSON string column
``example_json``, next to flat columns for browsing), so saving and loading gives back equal examples.

PrOntoQA v1 files (``{"example1": {"in_context_example0": {...}, ..., "test_example": {...}}, ...}``,
each with ``question``, ``query``, ``chain_of_thought`` and ``answer``) are imported by parsing the text
with :mod:`reasonlens.ontology.checker`: context sentences used by the gold proof become ``proof_rule`` /
``property_rule`` / ``entity_fact``, the rest ``distractor``; CoT steps become ``premise_copy`` /
``rule_copy`` / ``derived_fact``; ``hops`` counts rule applications; the ontology comes from the parsed
rules. ``kind`` is ``"fictional"`` if every concept is a lexicon fictional name; ``"true"`` if every concept
is a real-world noun (the lexicon's taxonomy or PrOntoQA v1's animals, invertebrates and numbers), every
subsumption rule is true in the real world and every property is a real one; ``"false"`` if every concept is a
real-world noun but a rule contradicts the real world or a property is a fictional one (v1's false ontologies);
else ``"unknown"`` (e.g. PrOntoQA's other fictional names). The in-context examples are kept in
``meta["demonstrations"]``; :func:`demonstrations` turns them back into examples for
:func:`reasonlens.ontology.prompt.format_prompt`.

Nothing is dropped silently: a demonstration that cannot be parsed or whose gold chain does not check out is
left out of its question (listed in ``meta["dropped_demonstrations"]``), a test question that cannot be imported
is skipped, and both are counted in the :class:`ImportReport` of :func:`read_dataset` (and warned about by
:func:`load_prontoqa_v1`). :func:`prepare_for_model` then checks the examples against a model's tokenizer and
context before evaluation: words the tokenizer would turn into its unknown token, and prompts too long.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.checker import CheckResult, check_chain, split_sentences
from reasonlens.ontology.lexicon import (
    FICTIONAL_CONCEPTS,
    PRONTOQA_V1_PROPERTIES,
    PRONTOQA_V1_TAXONOMY,
    TRUE_PROPERTIES,
    TRUE_TAXONOMY,
)
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.ontology.types import (
    CONTEXT_ROLES,
    COT_ROLES,
    ONTOLOGY_KINDS,
    STYLES,
    Example,
    Fact,
    Ontology,
    Sentence,
)

if TYPE_CHECKING:
    import datasets

PathLike = str | os.PathLike[str]
V1_FIELDS: tuple[str, ...] = ("question", "query", "chain_of_thought", "answer")
FORMATS_HINT = ("expected JSONL written by save_jsonl, a directory written by to_hf_dataset(...).save_to_disk, "
                "or a PrOntoQA v1 JSON file ({'example1': {'test_example': {...}}, ...})")


def save_jsonl(examples: Iterable[Example], path: PathLike) -> Path:
    """Write one :meth:`Example.to_dict` JSON object per line, atomically (an interrupted save leaves the previous
    file, or none); returns the path.

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
    tmp = out.with_name(f".{out.name}.partial")  # written whole, then renamed over the target
    try:
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _read_text(path: PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise ReasonlensError(f"no such file: {p}; check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ReasonlensError(f"{p} is not a UTF-8 text file (byte {err.object[err.start]:#04x} at offset {err.start} "
                              f"is not UTF-8; a binary file?); {FORMATS_HINT}") from err
    except OSError as err:
        raise ReasonlensError(f"cannot read {p} ({err.strerror or err}); check its permissions") from err
    if not text.strip():
        raise ReasonlensError(f"{p} is empty; {FORMATS_HINT}")
    return text


# The schema of a record (Example.to_dict()); docs/data.md describes it.
RECORD_KINDS: tuple[str, ...] = (*ONTOLOGY_KINDS, "unknown")  # "unknown": an imported question of no known kind
FACT_KINDS: tuple[str, ...] = ("isa", "property")
MAX_PROBLEMS = 5  # schema problems listed in an error


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, bool, int, float)) or value is None else repr(value)
    return (text if len(text) <= 40 else text[:37] + "...") + f" ({type(value).__name__})"


def _text_problem(value: Any, field: str) -> str | None:
    if not isinstance(value, str):
        return f"field {field!r} must be a string, got {_show(value)}"
    return None if value.strip() else f"field {field!r} must not be empty"


def _fact_problems(fact: Any, field: str) -> list[str]:
    if not isinstance(fact, dict):
        return [f"field {field!r} must be an object {{subject, predicate, kind, negated, universal}}, "
                f"got {_show(fact)}"]
    problems = [p for key in ("subject", "predicate") if (p := _text_problem(fact.get(key), f"{field}.{key}"))]
    if fact.get("kind") not in FACT_KINDS:
        problems.append(f"field '{field}.kind' must be one of {FACT_KINDS}, got {_show(fact.get('kind'))}")
    problems += [f"field '{field}.{key}' must be true or false, got {_show(fact[key])}"
                 for key in ("negated", "universal") if key in fact and not isinstance(fact[key], bool)]
    extra = sorted(set(fact) - {"subject", "predicate", "kind", "negated", "universal"})
    return problems + ([f"field {field!r} has unknown keys {extra}"] if extra else [])


def _sentence_problems(sentence: Any, field: str, roles: tuple[str, ...]) -> list[str]:
    if not isinstance(sentence, dict):
        return [f"field {field!r} must be an object {{text, role, fact}}, got {_show(sentence)}"]
    problems = [p for p in [_text_problem(sentence.get("text"), f"{field}.text")] if p]
    if sentence.get("role") not in roles:
        problems.append(f"field '{field}.role' must be one of {roles}, got {_show(sentence.get('role'))}")
    return problems + _fact_problems(sentence.get("fact"), f"{field}.fact")


def _sentences_problems(value: Any, field: str, roles: tuple[str, ...]) -> list[str]:
    if not isinstance(value, list) or not value:
        return [f"field {field!r} must be a non-empty list of sentences, got {_show(value)}"]
    return [p for i, s in enumerate(value) for p in _sentence_problems(s, f"{field}[{i}]", roles)]


def _ontology_problems(onto: Any, field: str) -> list[str]:
    if not isinstance(onto, dict):
        return [f"field {field!r} must be an object {{parents, properties, distractor}}, got {_show(onto)}"]
    problems = []
    parents, properties = onto.get("parents"), onto.get("properties")
    if not isinstance(parents, dict) or not all(isinstance(v, str) for v in parents.values()):
        problems.append(f"field '{field}.parents' must map concepts to parent concepts (strings), got {_show(parents)}")
    if not isinstance(properties, dict):
        problems.append(f"field '{field}.properties' must map concepts to [property, holds] pairs, got "
                        f"{_show(properties)}")
    else:
        for concept, pairs in properties.items():
            if not (isinstance(pairs, list) and all(isinstance(pair, list) and len(pair) == 2
                                                   and isinstance(pair[0], str) and isinstance(pair[1], bool)
                                                   for pair in pairs)):
                problems.append(f"field '{field}.properties.{concept}' must be a list of [property, true/false] "
                                f"pairs, got {_show(pairs)}")
    distractor = onto.get("distractor")
    if distractor is not None and not isinstance(distractor, str):
        problems.append(f"field '{field}.distractor' must be a concept (string) or null, got {_show(distractor)}")
    return problems


def example_problems(record: Any, field: str = "") -> list[str]:
    """What keeps ``record`` (one line of a JSONL file, one row's ``example_json``) from being a valid
    :meth:`Example.to_dict`: wrong types, values out of range, empty texts and lists, a ``hops`` other than the
    number of ``derived_fact`` steps; ``[]`` when it is valid. Demonstrations in ``meta`` are checked too.

    >>> from reasonlens.ontology import generate
    >>> d = generate(1, hops=2, seed=0)[0].to_dict()
    >>> example_problems(d)
    []
    >>> for problem in example_problems(d | {"label": "no", "hops": "2", "kind": "banana", "cot": []}):
    ...     print(problem)
    field 'kind' must be one of ('fictional', 'true', 'false', 'unknown'), got "banana" (str)
    field 'hops' must be a whole number, 1 or more, got "2" (str)
    field 'cot' must be a non-empty list of sentences, got [] (list)
    field 'label' must be true or false, got "no" (str)
    """
    if not isinstance(record, dict):
        return [f"{'field ' + repr(field) + ' ' if field else ''}must be an example object, got {_show(record)}"]
    at = f"{field}." if field else ""
    missing = [k for k in ("kind", "hops", "style", "entity", "context", "query", "cot", "label", "ontology")
               if k not in record]
    if missing:
        return [f"{'field ' + repr(field) + ' ' if field else ''}lacks the fields {missing}"]
    problems = []
    if record["kind"] not in RECORD_KINDS:
        problems.append(f"field '{at}kind' must be one of {RECORD_KINDS}, got {_show(record['kind'])}")
    hops = record["hops"]
    if type(hops) is not int or hops < 1:
        problems.append(f"field '{at}hops' must be a whole number, 1 or more, got {_show(hops)}")
    if record["style"] not in STYLES:
        problems.append(f"field '{at}style' must be one of {STYLES}, got {_show(record['style'])}")
    problems += [p for p in [_text_problem(record["entity"], f"{at}entity")] if p]
    problems += _sentences_problems(record["context"], f"{at}context", CONTEXT_ROLES)
    problems += _sentence_problems(record["query"], f"{at}query", ("query",))
    cot_problems = _sentences_problems(record["cot"], f"{at}cot", COT_ROLES)
    problems += cot_problems
    if not cot_problems and type(hops) is int and hops >= 1:
        derived = sum(s["role"] == "derived_fact" for s in record["cot"])
        if derived != hops:
            problems.append(f"field '{at}hops' is {hops}, but the chain of thought derives {derived} facts "
                            "(steps with role 'derived_fact'); they must agree")
    if not isinstance(record["label"], bool):
        problems.append(f"field '{at}label' must be true or false, got {_show(record['label'])}")
    problems += _ontology_problems(record["ontology"], f"{at}ontology")
    meta = record.get("meta")
    if meta is not None and not isinstance(meta, dict):
        problems.append(f"field '{at}meta' must be an object or null, got {_show(meta)}")
    elif meta:
        if meta.get("prior_label") is not None and not isinstance(meta["prior_label"], bool):
            problems.append(f"field '{at}meta.prior_label' must be true, false or null, "
                            f"got {_show(meta['prior_label'])}")
        demos = meta.get("demonstrations", [])
        if not isinstance(demos, list):
            problems.append(f"field '{at}meta.demonstrations' must be a list of examples, got {_show(demos)}")
        else:
            for i, demo in enumerate(demos):
                problems += example_problems(demo, f"{at}meta.demonstrations[{i}]")
    return problems


def _check_records(found: list[tuple[str, list[str]]], total: int, source: str, fix: str) -> None:
    """A :class:`ReasonlensError` listing the first problems of the records that have any (``(where, problems)``)."""
    bad = [(where, problems) for where, problems in found if problems]
    if not bad:
        return
    shown = "; ".join(f"{where}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                      for where, problems in bad[:MAX_PROBLEMS])
    more = f"; and {len(bad) - MAX_PROBLEMS} more records" if len(bad) > MAX_PROBLEMS else ""
    raise ReasonlensError(f"{len(bad)} of {total} records of {source} do not match the example schema "
                          f"(docs/data.md): {shown}{more}; {fix}")


def _from_dict(d: dict[str, Any], where: str) -> Example:
    try:
        return Example.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # pragma: no cover - the schema check comes first
        raise ReasonlensError(f"{where} is not a reasonlens example ({type(err).__name__}: {err}); "
                              "write examples with save_jsonl or to_hf_dataset") from err


def load_jsonl(path: PathLike) -> list[Example]:
    """Examples from a file written by :func:`save_jsonl` (blank lines are skipped). Every record is checked
    against the example schema (:func:`example_problems`) first: a record that does not match is an error naming
    its number, its line and the field."""
    records: list[tuple[int, Any]] = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ReasonlensError(f"line {n} (record {len(records) + 1}) of {path} is not JSON ({err}); "
                                  f"{FORMATS_HINT}") from err
    found = [(f"record {k} (line {n})", example_problems(d)) for k, (n, d) in enumerate(records, start=1)]
    _check_records(found, len(records), str(path), "fix those records, or write the file with save_jsonl")
    return [_from_dict(d, f"line {n} of {path}") for n, d in records]


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


def from_hf_dataset(ds: datasets.Dataset, source: str = "the dataset") -> list[Example]:
    """The examples of a dataset made by :func:`to_hf_dataset` (possibly saved and reloaded); each row's
    ``example_json`` is checked against the example schema (:func:`example_problems`) first. ``source`` names the
    dataset in errors."""
    if "example_json" not in ds.column_names:
        raise ReasonlensError(f"{source} has no 'example_json' column (columns: {ds.column_names}); "
                              "build it with to_hf_dataset")
    if len(ds) == 0:
        raise ReasonlensError(f"{source} is empty; build it with to_hf_dataset from a non-empty list")
    records, found = [], []
    for i, text in enumerate(ds["example_json"]):
        where = f"record {i + 1} (row {i})"
        try:
            d = json.loads(text) if isinstance(text, str) else None
            problems = example_problems(d) if isinstance(text, str) else [
                f"column 'example_json' must hold a JSON string, got {_show(text)}"]
        except json.JSONDecodeError as err:
            d, problems = None, [f"column 'example_json' is not JSON ({err})"]
        records.append(d)
        found.append((where, problems))
    _check_records(found, len(ds), source, "fix those rows, or build the dataset with to_hf_dataset")
    return [_from_dict(d, f"row {i} of {source}") for i, d in enumerate(records)]


def demonstrations(example: Example) -> list[Example]:
    """The solved in-context examples an imported PrOntoQA question came with (empty if none).

    >>> from reasonlens.ontology import generate
    >>> demonstrations(generate(1, seed=0)[0])
    []
    """
    return [Example.from_dict(d) for d in example.meta.get("demonstrations", [])]


def _real_parents() -> dict[str, frozenset[str]]:
    pairs = [*((c, p) for c, (p, _, _) in TRUE_TAXONOMY.items()), *PRONTOQA_V1_TAXONOMY.items()]
    parents: dict[str, set[str]] = {}
    for concept, parent in pairs:
        parents.setdefault(concept, set()).update([parent] if parent else [])
    return {c: frozenset(ps) for c, ps in parents.items()}


# Real-world nouns with their parents: the lexicon's taxonomy and PrOntoQA v1's (a noun may have both).
REAL_PARENTS: dict[str, frozenset[str]] = _real_parents()
REAL_PROPERTIES: frozenset[str] = frozenset(TRUE_PROPERTIES) | frozenset(PRONTOQA_V1_PROPERTIES)


def real_ancestors(concept: str) -> frozenset[str]:
    """Every proper ancestor of a real-world noun, over the lexicon's taxonomy and PrOntoQA v1's.

    >>> sorted(real_ancestors("mersenne prime"))
    ['integer', 'natural number', 'number', 'prime number', 'real number']
    """
    seen: set[str] = set()
    stack = list(REAL_PARENTS.get(concept, ()))
    while stack:
        c = stack.pop()
        if c not in seen:
            seen.add(c)
            stack.extend(REAL_PARENTS.get(c, ()))
    return frozenset(seen)


def _true_in_the_real_world(rule: Fact) -> bool:
    """Whether a rule about two real-world nouns holds: "every C is a D" when D is above C, "every C is not
    a D" when neither is above the other."""
    above = real_ancestors(rule.subject)
    if not rule.negated:
        return rule.predicate in above
    return rule.predicate != rule.subject and rule.predicate not in above and rule.subject not in \
        real_ancestors(rule.predicate)


def _kind(rules: list[Fact], premises: list[Fact]) -> str:
    concepts = {f.subject for f in rules} | {f.predicate for f in rules + premises if f.kind == "isa"}
    if concepts <= set(FICTIONAL_CONCEPTS):
        return "fictional"
    if concepts <= REAL_PARENTS.keys():
        edges_true = all(_true_in_the_real_world(f) for f in rules if f.kind == "isa")
        properties = {f.predicate for f in rules + premises if f.kind == "property"}
        return "true" if edges_true and properties <= REAL_PROPERTIES else "false"
    return "unknown"


def _context_role(fact: Fact, used_rules: set[Fact | None]) -> str:
    if not fact.universal:
        return "entity_fact"
    if fact in used_rules:
        return "proof_rule" if fact.kind == "isa" else "property_rule"
    return "distractor"


class _Unimportable(ReasonlensError):
    """A question the importer cannot take; ``category`` is what reports count it under."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


def _v1_field_problem(raw: dict[str, Any]) -> str | None:
    """The first field of a v1 question with the wrong type or an empty value, in words (None if all are right)."""
    for key in ("question", "query"):
        problem = _text_problem(raw[key], key)
        if problem:
            return problem
    cot = raw["chain_of_thought"]
    if not (isinstance(cot, str) and cot.strip() or isinstance(cot, list) and cot
            and all(isinstance(step, str) and step.strip() for step in cot)):
        return f"field 'chain_of_thought' must be a non-empty list of sentences (strings) or a string, got {_show(cot)}"
    if raw["answer"] not in ("True", "False"):
        return f"field 'answer' must be \"True\" or \"False\", got {_show(raw['answer'])}"
    return None


def _v1_example(raw: Any, where: str, meta: dict[str, Any]) -> Example:
    if not isinstance(raw, dict) or any(k not in raw for k in V1_FIELDS):
        raise _Unimportable(f"{where} is not a PrOntoQA v1 question: it needs the fields {V1_FIELDS}",
                            "not a v1 question")
    problem = _v1_field_problem(raw)
    if problem:
        raise _Unimportable(f"{where}: {problem}", "invalid field")
    cot = raw["chain_of_thought"]
    context = split_sentences(raw["question"])
    steps = split_sentences(cot) if isinstance(cot, str) else list(cot)
    result: CheckResult = check_chain(context, raw["query"], steps, raw["answer"])
    unparsed = [p for p in result.problems if "cannot parse" in p]
    if unparsed:
        raise _Unimportable(f"{where}: {'; '.join(unparsed)}. The importer reads PrOntoQA v1's one-clause sentences "
                            "(no 'and' / 'or'; names or numbers as entities)", "unparseable sentence")
    if not result.ok or result.query is None:
        raise _Unimportable(f"{where}: its gold chain of thought does not check out: {'; '.join(result.problems)}. "
                            "The importer takes questions whose gold chain the proof checker accepts (modus ponens, "
                            "PrOntoQA v1's default deduction rule)", "chain does not check out")
    derived = [v for v in result.steps if v.role == "derived_fact"]
    if not derived:
        raise _Unimportable(f"{where}: its chain of thought derives nothing; a v1 question needs at least one hop",
                            "derives nothing")
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
        query=Sentence(raw["query"], "query", result.query),
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


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ReasonlensError(f"limit (--n) must be a positive number of questions, got {limit}")


def _read_v1(path: PathLike, limit: int | None) -> tuple[list[Example], list[dict[str, str]], int]:
    """The imported test questions (at most ``limit``), the skipped ones (id, category, reason) and how many
    questions were read."""
    _check_limit(limit)
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReasonlensError(f"{path} is not JSON ({err}); {FORMATS_HINT}") from err
    if not isinstance(data, dict) or not data:
        raise ReasonlensError(f"{path} holds no PrOntoQA v1 questions; {FORMATS_HINT}")
    examples: list[Example] = []
    skipped: list[dict[str, str]] = []
    read = 0
    for name, entry in data.items():
        if limit is not None and len(examples) >= limit:
            break
        if not isinstance(entry, dict) or "test_example" not in entry:
            raise ReasonlensError(f"{path}: entry {name!r} has no 'test_example'; {FORMATS_HINT}")
        read += 1
        demos, dropped = [], []
        for key in sorted((k for k in entry if k.startswith("in_context_example")), key=_demo_number):
            try:
                demos.append(_v1_example(entry[key], f"{name}/{key}", {"source": "prontoqa_v1", "id": f"{name}/{key}"}))
            except _Unimportable as err:
                dropped.append({"id": f"{name}/{key}", "category": err.category, "reason": str(err)})
        meta: dict[str, Any] = {"source": "prontoqa_v1", "id": name, "demonstrations": [d.to_dict() for d in demos]}
        if dropped:
            meta["dropped_demonstrations"] = dropped
        try:
            examples.append(_v1_example(entry["test_example"], f"{name}/test_example", meta))
        except _Unimportable as err:
            skipped.append({"id": f"{name}/test_example", "category": err.category, "reason": str(err)})
    if not examples:
        more = f" ({len(skipped) - 1} more like it)" if len(skipped) > 1 else ""
        raise ReasonlensError(f"{path}: none of its {read} questions could be imported: {skipped[0]['reason']}{more}")
    return examples, skipped, read


def load_prontoqa_v1(path: PathLike, limit: int | None = None) -> list[Example]:
    """The test questions of a PrOntoQA v1 JSON file (the first ``limit`` that import; default all), each with
    its in-context examples in ``meta["demonstrations"]`` (see the module docstring for how structure is
    recovered). Questions and demonstrations that cannot be imported are left out with a warning
    (:func:`read_dataset` reports them); a file none of whose questions imports is a ReasonlensError."""
    examples, skipped, read = _read_v1(path, limit)
    dropped = [d for e in examples for d in e.meta.get("dropped_demonstrations", [])]
    if skipped or dropped:
        shown = (skipped + dropped)[0]
        warnings.warn(f"{path}: left out {len(skipped)} of {read} questions and {len(dropped)} demonstrations that "
                      f"cannot be imported (e.g. {shown['reason']}); read_dataset() reports them all", stacklevel=2)
    return examples


MAX_LISTED = 10  # how many skipped questions, dropped demonstrations, unknown words or ids a report lists


@dataclass
class ImportReport:
    """What reading a data file kept and left out (:func:`read_dataset`) and what :func:`prepare_for_model`
    found; :meth:`to_dict` is the ``import`` block of an evaluation's metrics.json. Skipped questions and
    dropped demonstrations are dicts with ``id``, ``category`` and ``reason``."""

    path: str
    format: str
    limit: int | None = None
    questions_read: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    examples: int = 0
    demonstrations_kept: int = 0
    dropped_demonstrations: list[dict[str, str]] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    shots: int | None = None
    unknown_words: dict[str, int] = field(default_factory=dict)
    unknown_words_allowed: bool = False
    n_ctx: int | None = None
    too_long: list[str] = field(default_factory=list)
    evaluated: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Counts, reasons by category and the first few cases of everything left out.

        >>> r = ImportReport("q.json", "prontoqa_v1", questions_read=2, examples=2, demonstrations_kept=3,
        ...                  dropped_demonstrations=[{"id": "example1/in_context_example0",
        ...                                           "category": "unparseable sentence", "reason": "..."}])
        >>> {k: v for k, v in r.to_dict()["demonstrations"].items() if k != "first_dropped"}
        {'read': 4, 'kept': 3, 'dropped': 1, 'reasons': {'unparseable sentence': 1}}
        """
        def reasons(items: list[dict[str, str]]) -> dict[str, int]:
            return dict(Counter(i["category"] for i in items))

        words = Counter(self.unknown_words)
        return {
            "path": self.path, "format": self.format, "limit": self.limit,
            "questions_read": self.questions_read, "examples_imported": self.examples,
            "questions_skipped": {"count": len(self.skipped), "reasons": reasons(self.skipped),
                                  "first": self.skipped[:MAX_LISTED]},
            "demonstrations": {"read": self.demonstrations_kept + len(self.dropped_demonstrations),
                               "kept": self.demonstrations_kept, "dropped": len(self.dropped_demonstrations),
                               "reasons": reasons(self.dropped_demonstrations),
                               "first_dropped": self.dropped_demonstrations[:MAX_LISTED]},
            "kinds": self.kinds,
            "shots": self.shots,
            "unknown_words": {"distinct": len(words), "occurrences": sum(words.values()),
                              "allowed": self.unknown_words_allowed, "most_common": dict(words.most_common(MAX_LISTED))},
            "too_long": {"count": len(self.too_long), "n_ctx": self.n_ctx, "first": self.too_long[:MAX_LISTED]},
            "examples_evaluated": self.evaluated,
        }

    def summary(self) -> str:
        """What was imported and left out, in one paragraph for the terminal."""
        d = self.to_dict()
        demos, words = d["demonstrations"], d["unknown_words"]

        def reasons(counts: dict[str, int]) -> str:
            return " (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")" if counts else ""

        parts = [f"{self.path}: imported {self.examples} of {self.questions_read} questions read"
                 + (f" (at most {self.limit} asked for)" if self.limit else "")]
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} questions{reasons(d['questions_skipped']['reasons'])}")
        if demos["read"]:
            parts.append(f"dropped {demos['dropped']} of their {demos['read']} demonstrations{reasons(demos['reasons'])}")
        if words["distinct"]:
            parts.append(f"{words['distinct']} words outside the model's vocabulary ({words['occurrences']} "
                         f"occurrences, e.g. {', '.join(list(words['most_common'])[:5])}) read as its unknown token")
        if self.too_long:
            parts.append(f"left out {len(self.too_long)} questions longer than the model's context ({self.n_ctx})")
        if self.evaluated is not None:
            parts.append(f"evaluating {self.evaluated}")
        return "; ".join(parts) + " (details: metrics.json 'import')"


def _load_hf_directory(p: Path) -> list[Example]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as err:
        raise ReasonlensError(f"{p} is a directory but not a saved dataset; {FORMATS_HINT}") from err
    except Exception as err:  # a damaged state.json or arrow file (json, pyarrow and datasets errors)
        raise ReasonlensError(f"{p} looks like a saved dataset but does not load ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); save it again with "
                              "to_hf_dataset(examples).save_to_disk(folder)") from err
    if isinstance(ds, datasets.DatasetDict):
        raise ReasonlensError(f"{p} holds splits {sorted(ds)}; save or load one split (ds['train'])")
    return from_hf_dataset(ds, str(p))


def _file_format(p: Path) -> str:
    """``"hf_dataset"``, ``"prontoqa_v1"`` or ``"jsonl"``, recognised by content."""
    if p.is_dir():
        return "hf_dataset"
    text = _read_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and any(isinstance(v, dict) and "test_example" in v for v in data.values()):
        return "prontoqa_v1"
    first = next(line for line in text.splitlines() if line.strip())
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if not (isinstance(head, dict) and {"kind", "hops", "context", "query", "cot", "label"} & head.keys()):
        raise ReasonlensError(f"cannot tell what {p} holds; {FORMATS_HINT}")
    return "jsonl"


def read_dataset(path: PathLike, limit: int | None = None) -> tuple[list[Example], ImportReport]:
    """The examples of any file :func:`load_dataset_file` reads (only the first ``limit`` questions that
    import; default all), with an :class:`ImportReport` of what was read, kept and left out.

    >>> import tempfile
    >>> from reasonlens.ontology import generate
    >>> examples, report = read_dataset(save_jsonl(generate(3, seed=0), tempfile.mkdtemp() + "/ex.jsonl"), limit=2)
    >>> len(examples), report.format, report.questions_read, report.to_dict()["questions_skipped"]["count"]
    (2, 'jsonl', 2, 0)
    """
    _check_limit(limit)
    p = Path(path)
    fmt = _file_format(p)
    skipped: list[dict[str, str]] = []
    if fmt == "prontoqa_v1":
        examples, skipped, read = _read_v1(p, limit)
    else:
        examples = (_load_hf_directory(p) if fmt == "hf_dataset" else load_jsonl(p))[:limit]
        read = len(examples)
    report = ImportReport(path=str(path), format=fmt, limit=limit, questions_read=read, skipped=skipped,
                          examples=len(examples),
                          demonstrations_kept=sum(len(e.meta.get("demonstrations", [])) for e in examples),
                          dropped_demonstrations=[d for e in examples for d in e.meta.get("dropped_demonstrations", [])],
                          kinds=dict(Counter(e.kind for e in examples)))
    return examples, report


def load_dataset_file(path: PathLike) -> list[Example]:
    """Examples from any file this module writes or reads, recognised by its content: a JSONL file of
    examples, a saved dataset directory, or a PrOntoQA v1 JSON file (see :func:`load_prontoqa_v1`)."""
    p = Path(path)
    fmt = _file_format(p)
    if fmt == "hf_dataset":
        return _load_hf_directory(p)
    return load_prontoqa_v1(p) if fmt == "prontoqa_v1" else load_jsonl(p)


# A word as the unknown-word check sees it: letters, digits, hyphens and apostrophes, or one other visible character.
_WORDS = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*|[^\sA-Za-z0-9]")


def unknown_words(texts: Iterable[str], tokenizer: Any) -> Counter[str]:
    """The words of ``texts`` that ``tokenizer`` turns (wholly or in part) into its unknown token, with their
    counts (none for a tokenizer without one, e.g. byte-level BPE). A word is a run of letters, digits,
    hyphens and apostrophes, or one other visible character; one the tokenizer reads as its lower-case form
    (a lower-casing tokenizer) is counted under that form.

    >>> from reasonlens.tokenizer import build_reference_tokenizer
    >>> unknown_words(["31 is a Mersenne prime.", "Prime numbers are odd. 31 is red."], build_reference_tokenizer())
    Counter({'31': 2, 'prime': 2, 'mersenne': 1, 'numbers': 1, 'odd': 1})
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    words = Counter(w for text in texts for w in _WORDS.findall(text))
    found: Counter[str] = Counter()
    if unk is None:
        return found
    for word, n in words.items():
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if unk in ids:
            lower = word.lower() != word and tokenizer(word.lower(), add_special_tokens=False)["input_ids"] == ids
            found[word.lower() if lower else word] += n
    return found


def _example_id(example: Example, index: int) -> str:
    return str(example.meta.get("id", f"#{index}"))


def prepare_for_model(examples: list[Example], report: ImportReport, tokenizer: Any, *, n_ctx: int, shots: int = 0,
                      allow_unknown_words: bool = False, slack: int = 16) -> list[Example]:
    """The examples a model can be evaluated on, prompted as ``evaluate_examples`` does (the first ``shots``
    demonstrations, then the question, the gold chain decoded after it); what it finds goes into ``report``.

    - Every question must carry ``shots`` demonstrations, else ReasonlensError naming the most that works.
    - Words of the prompts and gold chains that ``tokenizer`` turns into its unknown token (:func:`unknown_words`)
      are a ReasonlensError naming them, unless ``allow_unknown_words``: then they are read as the unknown token
      and counted in the report.
    - A question is left out (and listed) when its prompt (plus BOS), the longest gold chain that fits with its
      own prompt and ``slack`` tokens (what generation reserves) take more than ``n_ctx`` positions.
    """
    if shots < 0:
        raise ReasonlensError(f"shots must be 0 or more, got {shots}")
    report.shots, report.n_ctx, report.unknown_words_allowed = shots, n_ctx, allow_unknown_words
    demos = [demonstrations(e) for e in examples]
    short = [i for i, d in enumerate(demos) if len(d) < shots]
    if short:
        i = short[0]
        lost = sum(len(examples[j].meta.get("dropped_demonstrations", [])) for j in short)
        raise ReasonlensError(
            f"{shots} demonstrations asked for, but {len(short)} of {len(examples)} questions of {report.path} carry "
            f"fewer ({_example_id(examples[i], i)} carries {len(demos[i])}"
            + (f"; {lost} of theirs could not be imported, see the warnings" if lost else "")
            + f"); use --shots {min(map(len, demos))} or fewer")
    prompts = [format_prompt(e, d[:shots]) for e, d in zip(examples, demos)]
    golds = [format_completion(e) for e in examples]
    words = unknown_words(prompts + golds, tokenizer)
    report.unknown_words = dict(words.most_common())
    if words and not allow_unknown_words:
        shown = ", ".join(f"{w!r} ({n})" for w, n in words.most_common(MAX_LISTED))
        raise ReasonlensError(
            f"{len(words)} words of {report.path} are outside the model's vocabulary ({sum(words.values())} "
            f"occurrences in the prompts and gold chains; most common: {shown}): its tokenizer would read them as "
            "its unknown token. Evaluate a model whose tokenizer knows them, or pass --allow-unknown-words "
            "(allow_unknown_words=True) to evaluate anyway with the words counted in metrics.json")

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    n_prompt = [n_tokens(p) + 1 for p in prompts]
    n_gold = [n_tokens(g) for g in golds]
    longest = max((g for p, g in zip(n_prompt, n_gold) if p + g + slack <= n_ctx), default=0)
    keep = [i for i, p in enumerate(n_prompt) if p + max(longest, n_gold[i]) + slack <= n_ctx]
    kept = set(keep)
    report.too_long = [_example_id(examples[i], i) for i in range(len(examples)) if i not in kept]
    if not keep:
        raise ReasonlensError(f"every question of {report.path} is too long for the model's context of {n_ctx} "
                              f"tokens (prompt, gold chain and {slack} tokens of slack; the shortest prompt has "
                              f"{min(n_prompt)}); lower --shots or use a model with a longer context")
    report.evaluated = len(keep)
    return [examples[i] for i in keep]

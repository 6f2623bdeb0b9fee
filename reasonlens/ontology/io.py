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


def _v1_example(raw: Any, where: str, meta: dict[str, Any]) -> Example:
    if not isinstance(raw, dict) or any(k not in raw for k in V1_FIELDS):
        raise _Unimportable(f"{where} is not a PrOntoQA v1 question: it needs the fields {V1_FIELDS}",
                            "not a v1 question")
    cot = raw["chain_of_thought"]
    context = split_sentences(str(raw["question"]))
    steps = split_sentences(cot) if isinstance(cot, str) else [str(s) for s in cot]
    result: CheckResult = check_chain(context, str(raw["query"]), steps, str(raw["answer"]))
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
    if isinstance(ds, datasets.DatasetDict):
        raise ReasonlensError(f"{p} holds splits {sorted(ds)}; save or load one split (ds['train'])")
    return from_hf_dataset(ds)


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
    if not (isinstance(head, dict) and "context" in head and "cot" in head):
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

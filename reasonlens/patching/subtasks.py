"""The subtasks of a k-hop chain of thought and their clean / corrupted pairs (Dutta et al., TMLR 2024).

A *subtask* is one next-token prediction of the gold CoT whose target is a content word (an entity, a
concept or a property). Dutta et al. split the 2-hop chain "Wren is impus. Impuses are sterpuses. Wren is
sterpus. Sterpuses are earthy. Wren is earthy." into ten: the first content word of each sentence is a
*decision*, a word of a sentence stated in the question is a *copy*, and the predicate of a derived fact
("Wren is **sterpus**") is an *induction*. :func:`chain_subtasks` generalises this to k hops (2 (2k+1) content
words) and adds the answer label as a last decision.

:func:`subtask_pairs` builds, for one subtask, the clean prefix (prompt + gold CoT up to the target word)
and its corruption: the occurrence the prediction reads (:func:`read_occurrence`: the stated sentence a copy
restates, the rule a decision names, the CoT sentence an induction or a later entity mention reads) replaced
by a random word of the same type absent from the example. The occurrence is fixed by the example's
structure, so it is the same sentence under every context ordering; on Dutta et al.'s data it is the one
their rule ("the last occurrence in the response, else in the question") hits.

>>> [s.kind[0] for s in chain_subtasks(2)]
['d', 'c', 'd', 'c', 'd', 'i', 'd', 'c', 'd', 'i', 'd']
>>> from reasonlens.ontology import generate
>>> from reasonlens.tokenizer import build_reference_tokenizer
>>> import random
>>> ex = generate(1, hops=2, seed=0)[0]
>>> pair = subtask_pair(build_reference_tokenizer(), ex, 5, rng=random.Random(0))
>>> pair.subtask.kind, pair.source_region, len(pair.clean) == len(pair.corrupted)
('induction', 'cot', True)
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.lexicon import (
    ENTITIES,
    FICTIONAL_CONCEPTS,
    PROPERTIES,
    TRUE_CONCEPTS,
    TRUE_PROPERTIES,
    plural,
)
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.ontology.types import Example, Fact
from reasonlens.runtime import left_pad, left_padded_positions
from reasonlens.validation import check_context, check_int, is_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SUBTASK_KINDS: tuple[str, ...] = ("decision", "copy", "induction")
WORD_TYPES: tuple[str, ...] = ("entity", "concept", "property", "label")
REGIONS: tuple[str, ...] = ("few_shot", "question", "cot")


class UncorruptibleError(ReasonlensError):
    """No one-word corruption fits this example and subtask (see :func:`subtask_pair`)."""


@dataclass(frozen=True)
class Subtask:
    """One next-token prediction of the gold CoT whose target is a content word (or the answer label).

    ``step`` is the CoT sentence (``None`` for the label), ``slot`` the word's place in it (``"subject"``,
    ``"predicate"`` or ``"label"``), ``role`` the sentence's role tag. ``word`` is the word as written
    (``"Impuses"``) and ``lemma`` its ontology name (``"impus"``); both are ``None`` in a layout built from
    a hop count.
    """

    index: int
    kind: str
    step: int | None
    slot: str
    role: str
    word_type: str
    word: str | None = None
    lemma: str | None = None

    @property
    def name(self) -> str:
        """``"s3: copy 'sterpuses'"``, or ``"s3: copy (rule_copy predicate)"`` without a word."""
        detail = repr(self.word) if self.word is not None else f"({self.role} {self.slot})"
        return f"s{self.index}: {self.kind} {detail}"

    @property
    def signature(self) -> tuple[str, str, str, str]:
        """What two examples' subtasks at one index must share to be batched: (kind, role, slot, word type)."""
        return self.kind, self.role, self.slot, self.word_type


def _word_pattern(lemma: str, word_type: str) -> re.Pattern[str]:
    forms = [plural(lemma), lemma] if word_type == "concept" else [lemma]
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, forms)) + r")(?!\w)", re.IGNORECASE)


def word_slots(fact: Fact) -> list[tuple[str, str, str]]:
    """(slot, lemma, word type) of a fact's content words, in the order a sentence states them."""
    subject_type = "concept" if fact.universal else "entity"
    predicate_type = "concept" if fact.kind == "isa" else "property"
    return [("subject", fact.subject, subject_type), ("predicate", fact.predicate, predicate_type)]


def _layout(hops: int) -> list[Subtask]:
    if not isinstance(hops, int) or hops < 1:
        raise ReasonlensError(f"hops must be a positive integer, got {hops!r}")
    out: list[Subtask] = []
    steps = [("premise_copy", "entity", "concept")]
    for hop in range(hops):
        last = hop == hops - 1
        steps += [("rule_copy", "concept", "property" if last else "concept"),
                  ("derived_fact", "entity", "property" if last else "concept")]
    for step, (role, subject_type, predicate_type) in enumerate(steps):
        out.append(Subtask(len(out), "decision", step, "subject", role, subject_type))
        kind = "induction" if role == "derived_fact" else "copy"
        out.append(Subtask(len(out), kind, step, "predicate", role, predicate_type))
    out.append(Subtask(len(out), "decision", None, "label", "label", "label"))
    return out


def _locate(example: Example) -> tuple[list[Subtask], list[tuple[int, int]]]:
    """The subtasks of ``example`` and the character span of each target word in its completion."""
    completion = format_completion(example)
    stated = {s.fact for s in example.context}
    out: list[Subtask] = []
    spans: list[tuple[int, int]] = []
    cursor = 0
    for step, sentence in enumerate(example.cot):
        start = completion.index(sentence.text, cursor)
        cursor = start + len(sentence.text)
        for slot, lemma, word_type in word_slots(sentence.fact):
            found = _word_pattern(lemma, word_type).search(completion, start, cursor)
            if found is None:
                raise ReasonlensError(f"CoT step {step} {sentence.text!r} does not state {lemma!r} of its logical "
                                      f"form {sentence.fact}; regenerate or re-import the example")
            kind = "decision" if slot == "subject" else "copy" if sentence.fact in stated else "induction"
            out.append(Subtask(len(out), kind, step, slot, sentence.role, word_type, found.group(), lemma))
            spans.append(found.span())
            start = found.end()
    label_start = completion.index(example.answer, cursor)
    out.append(Subtask(len(out), "decision", None, "label", "label", "label", example.answer, example.answer))
    spans.append((label_start, label_start + len(example.answer)))
    return out, spans


def chain_subtasks(source: Example | int) -> list[Subtask]:
    """The subtasks of an example's gold CoT, or the layout of a ``hops``-hop chain (words left out).

    Per CoT sentence: its subject (a decision) and its predicate (a copy when the sentence is stated in
    the question, an induction when it is derived); then the label (a decision). A k-hop chain without
    redundant steps has ``2 * (2k + 1) + 1`` subtasks; the first ten of a 2-hop chain are Dutta et al.'s.

    >>> [s.name for s in chain_subtasks(1)][:3]
    ['s0: decision (premise_copy subject)', 's1: copy (premise_copy predicate)', 's2: decision (rule_copy subject)']
    """
    if isinstance(source, Example):
        return _locate(source)[0]
    return _layout(source)


@dataclass(frozen=True)
class SubtaskPair:
    """One clean / corrupted pair, unpadded.

    - ``clean`` / ``corrupted``: token ids of the prefix up to (not including) the target word, as the model
      reads them (BOS included); they differ only inside the replaced word's tokens.
    - ``answer``: the first token of the target word where it stands in the gold CoT; ``corrupted_answer``:
      the first token of the replacement written there.
    - ``source_position``: first token of the occurrence the prediction reads, the one corrupted
      (:func:`read_occurrence`; for the label, the queried property).
    - ``corrupted_position``: first token that differs; ``regions``: ``[start, end)`` token positions of the
      demonstrations (``few_shot``), the question and the written CoT (``cot``).
    - ``replaced``: (the word as written, its replacement).
    """

    subtask: Subtask
    clean: tuple[int, ...]
    corrupted: tuple[int, ...]
    answer: int
    corrupted_answer: int
    source_position: int
    source_region: str
    corrupted_position: int
    regions: dict[str, tuple[int, int]]
    replaced: tuple[str, str]


def replacement_pool(word_type: str, lemma: str, example: Example,
                     replacements: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The lexicon's words of ``word_type`` (fictional or real, as ``lemma`` / ``example`` is) that may replace
    ``lemma`` in a corruption, or ``replacements[word_type]`` when given."""
    if replacements is not None and word_type in replacements:
        return list(replacements[word_type])
    if word_type == "entity":
        return list(ENTITIES)
    if word_type == "concept":
        return list(FICTIONAL_CONCEPTS if lemma in FICTIONAL_CONCEPTS else TRUE_CONCEPTS)
    return list(PROPERTIES if example.kind == "fictional" else TRUE_PROPERTIES)


def _same_form(written: str, lemma: str, replacement: str, word_type: str) -> str:
    """``replacement`` in the form ``written`` has: plural when it is, capitalised when it is."""
    out = plural(replacement) if word_type == "concept" and written.lower() == plural(lemma).lower() else replacement
    return out[0].upper() + out[1:] if written[0].isupper() else out


@dataclass(frozen=True)
class _Corruption:
    source: tuple[int, int]        # characters of the occurrence to replace
    word_type: str
    lemma: str
    candidates: list[str]          # replacement lemmas, in the order to try them
    target_replacement: str | None  # the label written in the corrupted run (label subtask only)


def sentence_spans(text: str, sentences: Sequence[str], start: int) -> list[tuple[int, int]]:
    """Character spans of ``sentences`` written one after the other (joined by spaces) from ``start`` on."""
    spans = []
    for sentence in sentences:
        start = text.index(sentence, start)
        spans.append((start, start + len(sentence)))
        start += len(sentence)
    return spans


def _word_in(text: str, span: tuple[int, int], lemma: str, word_type: str, slot: str) -> tuple[int, int]:
    """The characters of ``lemma`` as the subject (first mention) or predicate (last) of the sentence at ``span``."""
    found = list(_word_pattern(lemma, word_type).finditer(text, *span))
    if not found:
        raise UncorruptibleError(f"{lemma!r} is not in the sentence {text[span[0]:span[1]]!r}")
    return (found[0] if slot == "subject" else found[-1]).span()


def read_occurrence(example: Example, subtask: Subtask, text: str, demo_end: int, prompt_end: int,
                    target_start: int) -> tuple[int, int]:
    """The characters of the occurrence that ``subtask``'s prediction reads, in ``text`` (demonstrations, the
    question from ``demo_end``, the written CoT from ``prompt_end`` up to ``target_start``).

    Fixed by the example's structure, so the same sentence under any context ordering:

    - a copy (the predicate of a sentence stated in the question): that predicate in the stated sentence;
    - any other word of the chain (a decision's subject, an induction's predicate): its last mention in the
      written CoT (the previous derived fact, or the rule just restated), else in the question: the query's
      entity for the first word of the chain, the stated rule's subject for a rule;
    - the label: the queried property.

    On Dutta et al.'s data (property rule, "is a" rule, entity fact; no quantifiers) these are the occurrences
    their rule ("the last occurrence in the response, else in the question", case-sensitive) hits, but for
    two: the property copy of a True question, where theirs hits the query instead of the copied rule, and the
    rule-subject decisions (s2, s6), where their case-sensitive match skips the concept's lower-case mention
    in the chain and hits the rule in the question.
    """
    question = example.question
    q_start = text.index(question, demo_end, prompt_end)
    context = sentence_spans(text, [s.text for s in example.context], q_start)
    query = sentence_spans(text, [example.query.text], q_start + len(question))[0]
    if subtask.slot == "label":
        query_fact = example.query.fact
        subject = _word_in(text, query, query_fact.subject, "entity", "subject")
        return _word_in(text, (subject[1], query[1]), query_fact.predicate, "property", "predicate")
    assert subtask.step is not None and subtask.lemma is not None
    fact = example.cot[subtask.step].fact
    stated = next((span for span, s in zip(context, example.context) if s.fact == fact), None)
    if subtask.kind == "copy":
        assert stated is not None
        return _word_in(text, stated, subtask.lemma, subtask.word_type, subtask.slot)
    written = list(_word_pattern(subtask.lemma, subtask.word_type).finditer(text, prompt_end, target_start))
    if written:
        return written[-1].span()
    if subtask.slot == "subject":
        return _word_in(text, stated if fact.universal and stated else query, subtask.lemma, subtask.word_type,
                        "subject")
    raise UncorruptibleError(f"{subtask.name}: {subtask.lemma!r} is not written in the CoT before the step that "
                             "derives it, so there is nothing it reads to corrupt")


def _corruption(example: Example, subtask: Subtask, text: str, demo_end: int, prompt_end: int, target_start: int,
                rng: random.Random, replacements: Mapping[str, Sequence[str]] | None) -> _Corruption:
    source = read_occurrence(example, subtask, text, demo_end, prompt_end, target_start)
    present = set(re.findall(r"\w+", text.lower()))
    if subtask.slot == "label":
        # The label is decided on the queried property: replace it so that the label flips (closed world: a
        # property the question never gives the entity does not hold).
        query, conclusion = example.query.fact, example.cot[-1].fact
        flipped = "False" if example.label else "True"
        if query.predicate == conclusion.predicate and not conclusion.negated:
            pool = [w for w in replacement_pool("property", query.predicate, example, replacements) if w.lower() not in present]
            rng.shuffle(pool)
        elif query.predicate != conclusion.predicate and query.negated == conclusion.negated:
            pool = [conclusion.predicate]
        else:
            raise UncorruptibleError(
                f"no one-word substitution flips the label of {example.query.text!r} (the chain concludes "
                f"{example.cot[-1].text!r}): the label subtask needs a chain whose conclusion is not negated")
        return _Corruption(source, "property", query.predicate, pool, flipped)
    assert subtask.lemma is not None
    pool = [w for w in replacement_pool(subtask.word_type, subtask.lemma, example, replacements)
            if not {w.lower(), plural(w).lower()} & present]
    rng.shuffle(pool)
    return _Corruption(source, subtask.word_type, subtask.lemma, pool, None)


class _Encoding:
    """A text tokenized once (BOS included), with the character offsets of its tokens."""

    def __init__(self, tokenizer, text: str) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ReasonlensError(f"{type(tokenizer).__name__} is a slow tokenizer without character offsets; subtask "
                                  "pairs need a fast one: AutoTokenizer.from_pretrained(name, use_fast=True)")
        self.text = text
        self.batch = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True,
                               return_special_tokens_mask=True)
        self.ids: list[int] = list(self.batch["input_ids"])

    def word_start(self, char: int) -> int | None:
        """The token that starts the word at ``char``, or ``None`` when that token also holds text before it."""
        token = self.batch.char_to_token(char)
        if token is None:
            return None
        start, _ = self.batch["offset_mapping"][token]
        return token if not self.text[start:char].strip() else None

    def covering(self, start: int, end: int) -> tuple[int, int]:
        """``[first, last + 1)`` of the tokens holding the characters ``[start, end)``."""
        return self.batch.char_to_token(start), self.batch.char_to_token(end - 1) + 1

    def regions(self, demo_end: int, prompt_end: int, stop: int) -> dict[str, tuple[int, int]]:
        """Token ranges of the demonstrations, the question and the written CoT (tokens by where they start)."""
        starts = [s for (s, _), special in zip(self.batch["offset_mapping"], self.batch["special_tokens_mask"])
                  if not special]
        first = len(self.ids) - len(starts)  # special tokens (BOS) lead

        def boundary(char: int) -> int:
            return min(first + sum(s < char for s in starts), stop)

        return {"few_shot": (first, boundary(demo_end)), "question": (boundary(demo_end), boundary(prompt_end)),
                "cot": (boundary(prompt_end), stop)}


def subtask_pair(tokenizer, example: Example, subtask: int, *, demonstrations: Sequence[Example] = (),
                 rng: random.Random | None = None, replacements: Mapping[str, Sequence[str]] | None = None,
                 runner_prefix: Sequence[int] = ()) -> SubtaskPair:
    """The clean / corrupted pair of ``example`` for subtask index ``subtask`` (see :func:`chain_subtasks`).

    Corruption (after Dutta et al.): the occurrence the prediction reads (:func:`read_occurrence`) is
    replaced by a word of the same type (from the lexicon, or ``replacements[word_type]``)
    that is absent from the prompt, in the same surface form (plural / capitalised, so ``wumpus ##es``
    keeps its suffix). A replacement must tokenize to as many tokens as the word, and its first token at
    the target must differ from the answer; the candidates are tried in ``rng`` order, and none fitting
    raises :class:`UncorruptibleError` ("corruption changes tokenization"). The label subtask replaces the
    queried property so that the label flips under the closed-world reading (a fresh property when the query
    is about the chain's positive conclusion, True or False by the query's negation; the derived property for
    a False query about an unrelated property); a chain with a negated conclusion raises
    :class:`UncorruptibleError`.

    The answer is the first token of the target word: the word itself with whole-word tokens, the stem
    of a plural (``wumpus`` of ``wumpus ##es``), a word piece (``Ġw`` of ``Ġw umpus``) with a subword
    tokenizer. A target word whose first token also holds the text before it raises.

    ``runner_prefix``: token ids the model's runner puts before the tokenizer's own (a BOS that
    ``model.to_tokens`` prepends and the tokenizer does not); :func:`subtask_pairs` finds them itself.
    """
    rng = rng or random.Random(0)
    located, target_chars = _locate(example)
    if not isinstance(subtask, int) or not 0 <= subtask < len(located):
        raise ReasonlensError(f"subtask {subtask!r} is out of range: this example has subtasks 0..{len(located) - 1} "
                              f"({example.hops} hops, {len(example.cot)} CoT steps)")
    task = located[subtask]
    prompt = format_prompt(example, demonstrations)
    text = prompt + format_completion(example)
    demo_end, prompt_end = len(prompt) - len(format_prompt(example)), len(prompt)
    target = (target_chars[subtask][0] + prompt_end, target_chars[subtask][1] + prompt_end)
    corruption = _corruption(example, task, text, demo_end, prompt_end, target[0], rng, replacements)

    clean = _Encoding(tokenizer, text)
    stop = clean.word_start(target[0])
    if stop is None:
        raise ReasonlensError(f"{task.name}: the first token of {task.word!r} also holds the text before it, so no "
                              "prefix ends right before the word; use a tokenizer that splits at spaces")
    answer = clean.ids[stop]
    source = clean.covering(*corruption.source)
    written = text[corruption.source[0]:corruption.source[1]]
    for candidate in corruption.candidates:
        replacement = _same_form(written, corruption.lemma, candidate, corruption.word_type)
        at_target = corruption.target_replacement or _same_form(task.word or "", corruption.lemma, candidate,
                                                                 corruption.word_type)
        probe = _Encoding(tokenizer, text[:corruption.source[0]] + replacement + text[corruption.source[1]:target[0]]
                          + at_target + text[target[1]:])
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in probe.ids[source[0]:source[1]]:
            continue
        differ = [i for i, (a, b) in enumerate(zip(clean.ids[:stop], probe.ids[:stop])) if a != b]
        if (differ and source[0] <= differ[0] and differ[-1] < source[1]
                and probe.word_start(target[0] + len(replacement) - len(written)) == stop
                and probe.ids[stop] != answer):
            break
    else:
        raise UncorruptibleError(
            f"corruption changes tokenization: no replacement for {written!r} ({task.name}) among "
            f"{len(corruption.candidates)} {corruption.word_type} word(s) absent from the example tokenizes to "
            f"the same {source[1] - source[0]} token(s) with a different first token at the target; use a "
            "tokenizer with whole-word tokens, or pass replacements={word_type: [words]} that fit")
    shift = len(runner_prefix)
    regions = {name: (a + shift, b + shift) for name, (a, b) in clean.regions(demo_end, prompt_end, stop).items()}
    source_char = corruption.source[0]
    region = "cot" if source_char >= prompt_end else "question" if source_char >= demo_end else "few_shot"
    return SubtaskPair(
        subtask=task, clean=(*runner_prefix, *clean.ids[:stop]), corrupted=(*runner_prefix, *probe.ids[:stop]),
        answer=answer, corrupted_answer=probe.ids[stop], source_position=source[0] + shift, source_region=region,
        corrupted_position=differ[0] + shift, regions=regions, replaced=(written, replacement))


@dataclass
class SubtaskPairs:
    """Left-padded clean / corrupted pairs of one subtask whose clean run predicts the answer.

    Positions (``source_position``, ``corrupted_position``, ``regions``) are in padded coordinates; run the
    model with ``attention_mask`` and :attr:`position_ids` as :mod:`reasonlens.generation` does. Of the
    examples given, ``n_kept`` are here (``kept_indices``), ``n_dropped`` had a wrong clean run and
    ``n_skipped`` had no fitting corruption (with ``skip_uncorruptible=True``).
    """

    clean: Int[Tensor, "pair pos"]
    corrupted: Int[Tensor, "pair pos"]
    attention_mask: Int[Tensor, "pair pos"]
    answer: Int[Tensor, " pair"]
    corrupted_answer: Int[Tensor, " pair"]
    source_position: Int[Tensor, " pair"]
    corrupted_position: Int[Tensor, " pair"]
    source_region: list[str]
    regions: list[dict[str, tuple[int, int]]]
    replaced: list[tuple[str, str]]
    str_tokens: list[list[str]]
    examples: list[Example]
    kept_indices: list[int]
    subtask: int
    kind: str
    name: str
    n_dropped: int
    n_skipped: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return len(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def position_ids(self) -> Int[Tensor, "pair pos"]:
        """Position ids of the left-padded rows (each row counts from its first real token)."""
        return left_padded_positions(self.attention_mask)


def _runner_prefix(model: TransformerBridge, tokenizer, text: str) -> list[int]:
    """Token ids ``model.to_tokens`` puts before the tokenizer's own (a BOS the tokenizer does not add)."""
    runner = model.to_tokens(text, truncate=False)[0].tolist()
    own = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    extra = len(runner) - len(own)
    if extra < 0 or runner[extra:] != own:
        raise ReasonlensError("model.to_tokens and the model's tokenizer encode a prompt differently; load the model "
                              "with reasonlens.model.load_model so that both agree")
    return runner[:extra]


def _demonstrations_for(examples: Sequence[Example], i: int, k: int) -> list[Example]:
    from reasonlens.ontology.io import demonstrations

    if k == 0:
        return []
    carried = demonstrations(examples[i])
    if len(carried) >= k:
        return carried[:k]
    if len(examples) <= k:
        raise ReasonlensError(f"{k} demonstrations asked for, but the examples carry none and only "
                              f"{len(examples) - 1} other example(s) can serve; pass more examples or fewer shots")
    return [examples[(i + j) % len(examples)] for j in range(1, k + 1)]


def subtask_pairs(model: TransformerBridge, examples: Sequence[Example], subtask: int, *, demonstrations: int = 0,
                  seed: int = 0, replacements: Mapping[str, Sequence[str]] | None = None,
                  skip_uncorruptible: bool = False, batch_size: int = 32, progress: bool = False) -> SubtaskPairs:
    """Clean / corrupted pairs of subtask ``subtask`` (see :func:`subtask_pair`) for ``examples``, keeping
    those whose clean run's argmax at the last position is the answer (one batched forward).

    ``demonstrations``: solved examples before each question, the ones an example carries
    (``meta["demonstrations"]``) or else the next ones of ``examples``. The examples must agree on the
    subtask's kind, sentence role, slot and word type (same hop count; no redundant steps before it).
    Example ``i``'s replacement depends only on ``(seed, subtask, i)``. An example without a fitting
    corruption (:class:`UncorruptibleError`) raises, or with ``skip_uncorruptible=True`` is left out and
    counted in ``n_skipped``. Prefixes are encoded as ``model.to_tokens`` encodes a prompt for
    :func:`reasonlens.generation.generate` (its BOS included).

    >>> from reasonlens.model import load_model
    >>> from reasonlens.ontology import generate
    >>> pairs = subtask_pairs(load_model("reasonlens-main"), generate(4, hops=1, seed=0), 1)
    >>> pairs.name, pairs.n_kept + pairs.n_dropped
    ('s1: copy (premise_copy predicate)', 4)
    """
    from tqdm.auto import tqdm

    from reasonlens.model import require_tokenizer
    from reasonlens.runtime import run_padded

    if len(examples) == 0:
        raise ReasonlensError("no examples: pass a non-empty list of examples (reasonlens.ontology.generate)")
    if not (is_int(batch_size) and batch_size >= 1 and is_int(demonstrations) and demonstrations >= 0):
        raise ReasonlensError(f"batch_size must be an integer >= 1 and demonstrations an integer >= 0, got "
                              f"{batch_size!r} and {demonstrations!r}")
    check_int(seed, "seed")
    layouts = [chain_subtasks(e) for e in examples]
    for i, layout in enumerate(layouts):
        if not is_int(subtask) or not 0 <= subtask < len(layout):
            raise ReasonlensError(f"subtask {subtask!r} is out of range for example {i}: it has subtasks "
                                  f"0..{len(layout) - 1}; pass examples with the same hop count")
    signatures = {layout[subtask].signature for layout in layouts}
    if len(signatures) > 1:
        raise ReasonlensError(f"the examples disagree on subtask {subtask}: {sorted(signatures)} (kind, role, slot, "
                              "word type); pass examples with the same hop count and without redundant steps")
    first = layouts[0][subtask]
    tokenizer = require_tokenizer(model)
    prefix = _runner_prefix(model, tokenizer, format_prompt(examples[0]))
    pairs: list[tuple[int, SubtaskPair]] = []
    n_skipped = 0
    for i, example in enumerate(examples):
        demos = _demonstrations_for(examples, i, demonstrations)
        rng = random.Random(f"reasonlens-subtask-{seed}-{subtask}-{i}")
        try:
            pair = subtask_pair(tokenizer, example, subtask, demonstrations=demos, rng=rng,
                                replacements=replacements, runner_prefix=prefix)
        except UncorruptibleError as e:
            if skip_uncorruptible:
                n_skipped += 1
                continue
            raise UncorruptibleError(f"example {i}: {e} (or pass skip_uncorruptible=True to leave such examples "
                                     "out)") from e
        pairs.append((i, pair))
    check_context(model, [len(p.clean) for _, p in pairs], item="clean prefix",
                  fix="use fewer demonstrations or fewer hops")
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    kept: list[tuple[int, SubtaskPair]] = []
    chunks = [pairs[k:k + batch_size] for k in range(0, len(pairs), batch_size)]
    for chunk in tqdm(chunks, desc=f"subtask {subtask} clean runs", unit="batch", disable=not progress):
        ids, mask = left_pad([p.clean for _, p in chunk], pad_id)
        predicted = run_padded(model, ids, mask, last_only=True)[:, -1].argmax(-1).cpu().tolist()
        kept += [item for item, token in zip(chunk, predicted) if token == item[1].answer]
    return _assemble(kept, examples, first, tokenizer, pad_id, n_dropped=len(pairs) - len(kept), n_skipped=n_skipped,
                     meta={"seed": seed, "demonstrations": demonstrations})


def _assemble(kept: list[tuple[int, SubtaskPair]], examples: Sequence[Example], task: Subtask, tokenizer, pad_id: int,
              *, n_dropped: int, n_skipped: int, meta: dict[str, object]) -> SubtaskPairs:
    rows = [p for _, p in kept]
    if rows:
        clean, mask = left_pad([p.clean for p in rows], pad_id)
        corrupted, _ = left_pad([p.corrupted for p in rows], pad_id)
    else:
        clean = corrupted = mask = torch.zeros((0, 0), dtype=torch.long)
    pads = [clean.shape[1] - len(p.clean) for p in rows]

    def vector(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long)

    return SubtaskPairs(
        clean=clean, corrupted=corrupted, attention_mask=mask,
        answer=vector([p.answer for p in rows]), corrupted_answer=vector([p.corrupted_answer for p in rows]),
        source_position=vector([p.source_position + pad for p, pad in zip(rows, pads)]),
        corrupted_position=vector([p.corrupted_position + pad for p, pad in zip(rows, pads)]),
        source_region=[p.source_region for p in rows],
        regions=[{r: (a + pad, b + pad) for r, (a, b) in p.regions.items()} for p, pad in zip(rows, pads)],
        replaced=[p.replaced for p in rows],
        str_tokens=[tokenizer.convert_ids_to_tokens(row) for row in clean.tolist()],
        examples=[examples[i] for i, _ in kept], kept_indices=[i for i, _ in kept],
        subtask=task.index, kind=task.kind,
        name=f"s{task.index}: {task.kind} ({task.role} {task.slot})",
        n_dropped=n_dropped, n_skipped=n_skipped, meta=meta)

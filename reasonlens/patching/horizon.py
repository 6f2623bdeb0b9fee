"""How far back the model reads: layer-patched generation of the rest of a chain (Dutta et al., TMLR 2024).

The "horizon" experiment of Dutta et al. (``horizon/horizonActivationPatching.py``): one context statement of
the question is replaced by an unrelated one of the same token length ("Sterpus is impus" -> "Shumpus is
numpus"). For every example, *stage* ``k`` (the prompt followed by the first ``k`` gold CoT sentences) and
layer ``L``, the clean prefix runs with the ``z`` of every head of layer ``L``, at every prefix position, taken
from the corrupted prefix, and the rest of the chain is decoded greedily from there. A generation is *intact*
when it restates the gold rest of the chain and the gold label (compared as :func:`reasonlens.evaluate.normalize`
text, as ``reasonlens eval`` compares verbatim proofs). In the authors' data corrupting early-layer head outputs
breaks the chain, and less so at later stages, where the model can read what it needs from the chain it has
already written rather than from the question: that is how far back it reads.

Per stage the result also holds the clean run (no patch; only examples whose clean run is intact at every
stage are kept, the others counted as dropped) and the corrupted prompt without patching (the whole effect of
the corruption). Examples whose statement has no same-length corruption are skipped and counted, with the reason.

Decoding is :func:`reasonlens.generation.generate` (batched, left-padded, KV-cached): many (example, stage,
layer) rows share one call. The patch acts on the prompt pass only; the corrupted ``z`` of each row is computed
once per example (over its longest prefix; a causal model's prefix activations do not depend on what follows)
and written right-aligned, under the row's left padding.

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> model = load_model("reasonlens-main")
>>> examples = generate(2, hops=2, ordering="preorder", distractor=False, extra_concepts=0, seed=2024)
>>> result = measure_horizon(model, examples, HorizonConfig(stages=[0, 3], layers=[0, 5]), progress=False)
>>> result.fraction.values.shape, result.fraction.labels["stage"], result.fraction.labels["layer"]
(torch.Size([2, 2]), ['k=0', 'k=3'], ['L0', 'L5'])
>>> result.n + result.n_dropped + result.n_skipped == len(examples)
True
>>> result.replaced[0]
('Lempuses are yumpuses.', 'Vumpuses are lorpuses.')
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.lexicon import plural
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.ontology.realize import DUTTA_FORMS, PRONTOQA_FORMS, realize
from reasonlens.ontology.types import Example, Fact, Sentence
from reasonlens.patching.subtasks import replacement_pool, sentence_spans, word_slots
from reasonlens.results import ConfigDict, LabelledTensor
from reasonlens.runtime import Intervention, left_pad, pad_token_id, run_padded, saving_hooks, site_hook
from reasonlens.stats import wilson_interval
from reasonlens.validation import check_bool, check_int, check_int_list, load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

STATEMENTS: tuple[str, ...] = ("proof_rule", "entity_fact", "property_rule")
INTACT_THRESHOLD = 0.9


class UncorruptibleStatementError(ReasonlensError):
    """The chosen statement of an example has no fitting corruption (see :func:`horizon_pair`)."""


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class HorizonConfig(ConfigDict):
    """What to run.

    - ``statement``: the context statement to corrupt, by role: ``"proof_rule"`` (an "is a" rule of the proof,
      the default, as Dutta et al.), ``"entity_fact"`` or ``"property_rule"``; ``which``: which one when an
      example has several (k hops have k - 1 proof rules), in the order the gold chain restates them.
    - ``stages``: how many gold CoT sentences are written before decoding starts, each in
      ``0..len(cot)`` (``len(cot)``: only the label is left); default ``0..len(cot) - 1`` of the shortest chain.
    - ``layers``: layers to patch (all heads' ``z`` of one layer per row); default all.
    - ``shots``: solved demonstrations before each question (those the example carries, as ``reasonlens eval``).
    - ``require_clean``: keep only examples whose clean run is intact at every stage (the others are counted
      as dropped); ``False`` keeps every corruptible example (e.g. to inspect a random model's generations).
    - ``batch_size``: most generations decoded together; ``max_new_tokens``: most tokens per generation
      (default: the longest gold rest plus 8).
    - ``seed``: seeds the choice of replacement words (example ``i``'s depends only on ``(seed, i)``).

    >>> HorizonConfig(statement="entity_fact", stages=[0, 2]).stages
    (0, 2)
    """

    statement: str = "proof_rule"
    which: int = 0
    stages: Sequence[int] | None = None
    layers: Sequence[int] | None = None
    shots: int = 0
    require_clean: bool = True
    batch_size: int = 64
    max_new_tokens: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.statement, str) or self.statement not in STATEMENTS:
            raise ReasonlensError(f"unknown statement {self.statement!r}; choose one of {STATEMENTS}")
        for name in ("stages", "layers"):
            value = getattr(self, name)
            if value is None:
                continue
            values = check_int_list(value, name, allow_empty=True, unique=False, example="[0, 2]")
            if not values or len(set(values)) != len(values):
                raise ReasonlensError(f"{name} must be non-empty and without repeats, got {values}")
            object.__setattr__(self, name, tuple(values))
        check_int(self.which, "which", low=0)
        check_int(self.shots, "shots", low=0)
        check_bool(self.require_clean, "require_clean")
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.max_new_tokens, "max_new_tokens", low=1, optional=True,
                  hint="None decodes the gold length + 8")
        check_int(self.seed, "seed")


# ----------------------------------------------------------------------------------------------- corruption


@dataclass(frozen=True)
class HorizonPair:
    """One example's clean and corrupted token ids, as ``model.to_tokens`` encodes them (BOS included).

    - ``clean`` / ``corrupted``: the prompt followed by the whole gold completion (chain and label); they have
      the same length and differ only inside ``statement_tokens`` (``[start, end)``).
    - ``stage_lengths[k]``: the tokens of the prompt plus the first ``k`` gold CoT sentences
      (``k = 0..len(cot)``); ``clean[:stage_lengths[k]]`` is exactly how that prefix text tokenizes.
    - ``rests[k]``: the gold text after stage ``k`` (what an intact generation restates).
    - ``replaced``: (the statement, its corruption); ``statement``: the corrupted context sentence.
    """

    clean: tuple[int, ...]
    corrupted: tuple[int, ...]
    stage_lengths: tuple[int, ...]
    rests: tuple[str, ...]
    statement: Sentence
    statement_tokens: tuple[int, int]
    replaced: tuple[str, str]
    prompt: str
    corrupted_prompt: str


def _form(sentence: Sentence, style: str) -> str | None:
    """The surface form (``"every"``, ``"plural"``, ...) that realises ``sentence`` as written, if any."""
    forms = (PRONTOQA_FORMS + DUTTA_FORMS) if sentence.fact.universal else ("plural",)
    for form in forms:
        if realize(sentence.fact, style, form) == sentence.text:
            return form
    return None


def _chosen_statement(example: Example, statement: str, which: int) -> Sentence:
    found = [s for s in example.context if s.role == statement]
    if not found:
        raise UncorruptibleStatementError(f"the context has no {statement} sentence (roles: "
                                          f"{sorted({s.role for s in example.context})})")
    cot_texts = [s.text for s in example.cot]
    found.sort(key=lambda s: cot_texts.index(s.text) if s.text in cot_texts else len(cot_texts))
    if which >= len(found):
        raise UncorruptibleStatementError(f"which={which} but the context has {len(found)} {statement} sentence(s)")
    return found[which]


class _Encoded:
    """A text as ``model.to_tokens`` encodes it, with the character span of every token (``None`` for tokens
    the runner or the tokenizer adds, such as BOS)."""

    def __init__(self, model: TransformerBridge, tokenizer, text: str) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ReasonlensError(f"{type(tokenizer).__name__} is a slow tokenizer without character offsets; the "
                                  "horizon corruption needs a fast one: AutoTokenizer.from_pretrained(name, use_fast=True)")
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        own = list(enc["input_ids"])
        self.ids: list[int] = model.to_tokens(text, truncate=False)[0].tolist()
        extra = len(self.ids) - len(own)
        if extra < 0 or self.ids[extra:] != own:
            raise ReasonlensError("model.to_tokens and the model's tokenizer encode a prompt differently; load the "
                                  "model with reasonlens.model.load_model so that both agree")
        spans = [None if special else (a, b) for (a, b), special in zip(enc["offset_mapping"], enc["special_tokens_mask"])]
        self.spans: list[tuple[int, int] | None] = [None] * extra + spans

    def covering(self, start: int, end: int) -> tuple[int, int] | None:
        """``[first, last + 1)`` of the tokens that hold characters of ``[start, end)``."""
        hit = [i for i, s in enumerate(self.spans) if s is not None and s[0] < end and s[1] > start]
        return (hit[0], hit[-1] + 1) if hit else None


def _stage_ends(example: Example, completion: str) -> list[int]:
    """Character offset in ``completion`` after the first ``k`` CoT sentences, for ``k = 0..len(cot)``."""
    ends, cursor = [0], 0
    for step, sentence in enumerate(example.cot):
        try:
            start = completion.index(sentence.text, cursor)
        except ValueError:
            raise ReasonlensError(f"CoT step {step} {sentence.text!r} is not in the completion {completion!r}; "
                                  "regenerate or re-import the example") from None
        cursor = start + len(sentence.text)
        ends.append(cursor)
    return ends


def horizon_pair(model: TransformerBridge, example: Example, *, statement: str = "proof_rule", which: int = 0,
                 demonstrations: Sequence[Example] = (), rng: random.Random | None = None) -> HorizonPair:
    """The clean and corrupted token ids of ``example`` (see :class:`HorizonPair`).

    The chosen context statement (by role, ``which``-th in the order the gold chain restates it) is replaced
    by the same statement about fresh words of the same types (a concept for a concept, an entity for an
    entity, a property for a property; from the lexicon, absent from the prompt and the gold completion in
    any form), realised in the same surface form ("Every ..." stays "Every ...", plurals stay plural,
    negation stays). Candidate pairs of words are tried in ``rng`` order until one tokenizes to as many
    tokens as the statement with every other token unchanged (and no unknown token); none fitting raises
    :class:`UncorruptibleStatementError`, as does an example without such a statement.

    >>> from reasonlens.model import load_model
    >>> from reasonlens.ontology import generate
    >>> ex = generate(1, hops=2, ordering="random", seed=3)[0]
    >>> pair = horizon_pair(load_model("reasonlens-main"), ex, rng=random.Random(0))
    >>> pair.statement.role, len(pair.clean) == len(pair.corrupted), pair.stage_lengths[-1] < len(pair.clean)
    ('proof_rule', True, True)
    """
    from reasonlens.model import require_tokenizer

    if statement not in STATEMENTS:
        raise ReasonlensError(f"unknown statement {statement!r}; choose one of {STATEMENTS}")
    tokenizer = require_tokenizer(model)
    rng = rng or random.Random(0)
    target = _chosen_statement(example, statement, which)
    form = _form(target, example.style)
    if form is None:
        raise UncorruptibleStatementError(f"{target.text!r} is not how reasonlens realises its logical form "
                                          f"{target.fact}, so no same-form corruption can be written")
    prompt = format_prompt(example, demonstrations)
    completion = format_completion(example)
    block = len(prompt) - len(format_prompt(example))
    question = prompt.index(example.question, block)
    index = next(i for i, s in enumerate(example.context) if s is target)
    start, end = sentence_spans(prompt, [s.text for s in example.context], question)[index]

    text = prompt + completion
    present = set(re.findall(r"\w+", text.lower()))
    (_, _, subject_type), (_, _, predicate_type) = word_slots(target.fact)
    fresh = {}
    for slot, lemma, word_type in word_slots(target.fact):
        pool = [w for w in replacement_pool(word_type, lemma, example) if not {w.lower(), plural(w).lower()} & present]
        rng.shuffle(pool)
        fresh[slot] = pool
    candidates = [(s, p) for s in fresh["subject"] for p in fresh["predicate"] if s != p]
    if not candidates:
        raise UncorruptibleStatementError(f"no fresh {subject_type} / {predicate_type} words absent from the example "
                                          f"are left to rewrite {target.text!r}")

    clean = _Encoded(model, tokenizer, text)
    span = clean.covering(start, end)
    assert span is not None
    unk = tokenizer.unk_token_id
    for subject, predicate in candidates:
        new_fact = Fact(subject, predicate, target.fact.kind, target.fact.negated, target.fact.universal)
        new_text = realize(new_fact, example.style, form)
        corrupted_prompt = prompt[:start] + new_text + prompt[end:]
        probe = _Encoded(model, tokenizer, corrupted_prompt + completion)
        new_span = probe.covering(start, start + len(new_text))
        if (len(probe.ids) == len(clean.ids) and new_span == span
                and probe.ids[:span[0]] == clean.ids[:span[0]] and probe.ids[span[1]:] == clean.ids[span[1]:]
                and probe.ids[span[0]:span[1]] != clean.ids[span[0]:span[1]]
                and (unk is None or unk not in probe.ids[span[0]:span[1]])):
            break
    else:
        raise UncorruptibleStatementError(
            f"corruption changes tokenization: none of {len(candidates)} rewrites of {target.text!r} with fresh words "
            f"tokenizes to the same {span[1] - span[0]} token(s) with every other token unchanged")

    ends = _stage_ends(example, completion)
    lengths = []
    for k, cut in enumerate(ends):
        ids = model.to_tokens(prompt + completion[:cut], truncate=False)[0].tolist()
        corrupted_ids = model.to_tokens(corrupted_prompt + completion[:cut], truncate=False)[0].tolist()
        n = len(ids)
        if ids != clean.ids[:n] or corrupted_ids != probe.ids[:n]:
            raise UncorruptibleStatementError(f"the prompt with the first {k} CoT sentence(s) does not tokenize as a "
                                              "prefix of the prompt with the whole chain")
        lengths.append(n)
    if lengths[0] <= span[1]:  # pragma: no cover - the statement is in the question, before the answer prompt
        raise ReasonlensError("the corrupted statement does not end before the response starts")
    return HorizonPair(clean=tuple(clean.ids), corrupted=tuple(probe.ids), stage_lengths=tuple(lengths),
                       rests=tuple(completion[cut:] for cut in ends), statement=target, statement_tokens=span,
                       replaced=(target.text, new_text), prompt=prompt, corrupted_prompt=corrupted_prompt)


# ------------------------------------------------------------------------------------------------ results


@dataclass
class HorizonResult:
    """The horizon table and everything behind it.

    - ``intact``: per kept example, stage and patched layer, 1 when the generation restates the gold rest of
      the chain and the gold label (a :class:`~reasonlens.results.LabelledTensor` ``[example, stage, layer]``;
      its mean is :attr:`fraction`); ``label_intact``: the label alone right.
    - ``clean``: per corruptible example (``candidate_indices``) and stage, the unpatched clean run intact;
      ``corrupted``: per kept example and stage, the corrupted prompt without patching intact.
    - ``example_indices``: the kept examples (indices into the examples given); ``skipped``: (index, reason)
      of the examples without a fitting corruption; ``replaced``: (statement, corruption) per kept example.
    - ``texts`` / ``output_ids``: the patched generations ``[example][stage][layer]``; ``clean_texts``
      ``[candidate][stage]``; ``corrupted_texts`` ``[example][stage]``.
    """

    intact: LabelledTensor
    label_intact: Bool[Tensor, "example stage layer"]
    clean: Bool[Tensor, "candidate stage"]
    corrupted: Bool[Tensor, "example stage"]
    stages: list[int]
    layers: list[int]
    n_layers: int
    n_examples: int
    example_indices: list[int]
    candidate_indices: list[int]
    skipped: list[tuple[int, str]]
    replaced: list[tuple[str, str]]
    texts: list[list[list[str]]] = field(default_factory=list)
    output_ids: list[list[list[list[int]]]] = field(default_factory=list)
    clean_texts: list[list[str]] = field(default_factory=list)
    corrupted_texts: list[list[str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Examples kept (corruptible, and with an intact clean run at every stage when required)."""
        return len(self.example_indices)

    @property
    def n_skipped(self) -> int:
        """Examples without a fitting corruption."""
        return len(self.skipped)

    @property
    def n_dropped(self) -> int:
        """Corruptible examples left out because a clean run was not intact."""
        return len(self.candidate_indices) - self.n

    @property
    def stage_labels(self) -> list[str]:
        return [f"k={k}" for k in self.stages]

    @property
    def layer_labels(self) -> list[str]:
        return [f"L{layer}" for layer in self.layers]

    @property
    def fraction(self) -> LabelledTensor:
        """Fraction of generations intact, ``[stage, layer]`` (NaN with no example kept)."""
        values = self.intact.values.double().mean(0) if self.n else \
            torch.full((len(self.stages), len(self.layers)), float("nan"), dtype=torch.float64)
        return LabelledTensor(values, axes=("stage", "layer"),
                              labels={"stage": self.stage_labels, "layer": self.layer_labels},
                              meta={**self.meta, "n": self.n, "metric": "fraction intact"})

    def intervals(self, z: float = 1.96) -> Float[Tensor, "stage layer 2"]:
        """Wilson intervals (95% by default) of :attr:`fraction`, ``[..., (low, high)]``."""
        return wilson_interval(self.intact.values.sum(0), self.n, z)

    def clean_baseline(self) -> Float[Tensor, " stage"]:
        """Fraction of corruptible examples whose unpatched clean run is intact, per stage (before dropping)."""
        n = self.clean.shape[0]
        return self.clean.double().mean(0) if n else torch.full((len(self.stages),), float("nan"), dtype=torch.float64)

    def corrupted_baseline(self) -> Float[Tensor, " stage"]:
        """Fraction of kept examples whose corrupted prompt, unpatched, still gives an intact chain, per stage."""
        return self.corrupted.double().mean(0) if self.n else \
            torch.full((len(self.stages),), float("nan"), dtype=torch.float64)

    def summary(self, threshold: float = INTACT_THRESHOLD) -> dict[str, Any]:
        """A JSON-able digest. Per stage: the fraction intact and its 95% Wilson interval per layer, the clean
        and corrupted baselines, ``first_intact_layer`` (the first layer whose patch leaves at least
        ``threshold`` intact), ``intact_from_layer`` (the first layer from which on every patched layer
        does), each with its relative depth ``(layer + 0.5) / n_layers`` (``None`` when there is none)."""
        frac = self.fraction.values
        ci = self.intervals()
        ci_clean = wilson_interval(self.clean.sum(0), int(self.clean.shape[0]))
        ci_corr = wilson_interval(self.corrupted.sum(0), self.n)

        def num(x: Tensor) -> float | None:
            v = float(x)
            return None if math.isnan(v) else round(v, 6)

        def depth(layer: int | None) -> float | None:
            return None if layer is None else (layer + 0.5) / self.n_layers

        stages = []
        for s, k in enumerate(self.stages):
            ok = [bool(frac[s, j] >= threshold) for j in range(len(self.layers))]
            first = next((self.layers[j] for j, good in enumerate(ok) if good), None)
            tail = next((self.layers[j] for j in range(len(ok)) if all(ok[j:])), None)
            stages.append({
                "stage": k, "label": f"k={k}",
                "clean": num(self.clean_baseline()[s]), "clean_ci": [num(x) for x in ci_clean[s]],
                "corrupted": num(self.corrupted_baseline()[s]), "corrupted_ci": [num(x) for x in ci_corr[s]],
                "intact": {label: num(frac[s, j]) for j, label in enumerate(self.layer_labels)},
                "intact_ci": {label: [num(x) for x in ci[s, j]] for j, label in enumerate(self.layer_labels)},
                "label_intact": {label: num(self.label_intact[:, s, j].double().mean()) if self.n else None
                                 for j, label in enumerate(self.layer_labels)},
                "first_intact_layer": first, "first_intact_depth": depth(first),
                "intact_from_layer": tail, "intact_from_depth": depth(tail),
            })
        return {"model": self.meta.get("model"), "statement": self.meta.get("statement"), "threshold": threshold,
                "n": self.n, "n_examples": self.n_examples, "n_skipped": self.n_skipped, "n_dropped": self.n_dropped,
                "n_layers": self.n_layers, "layers": list(self.layers), "stages": stages}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (one ``.pt`` file; :meth:`load` reads it back)."""
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "class": type(self).__name__,
            "intact": {"values": self.intact.values.detach().cpu(), "axes": list(self.intact.axes),
                       "labels": self.intact.labels, "meta": json.loads(json.dumps(self.intact.meta))},
            "label_intact": self.label_intact.cpu(), "clean": self.clean.cpu(), "corrupted": self.corrupted.cpu(),
            "stages": list(self.stages), "layers": list(self.layers), "n_layers": self.n_layers,
            "n_examples": self.n_examples, "example_indices": list(self.example_indices),
            "candidate_indices": list(self.candidate_indices),
            "skipped": [[i, why] for i, why in self.skipped], "replaced": [list(r) for r in self.replaced],
            "texts": self.texts, "output_ids": self.output_ids, "clean_texts": self.clean_texts,
            "corrupted_texts": self.corrupted_texts, "meta": json.loads(json.dumps(self.meta)),
        }
        torch.save(data, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HorizonResult:
        """Read a file written by :meth:`save`."""
        data = load_saved(path, cls.__name__, ("intact",))
        if data.get("class") != cls.__name__:
            raise ReasonlensError(f"{path} holds a {data.get('class')!r}, not a {cls.__name__}")
        it = data["intact"]
        return cls(intact=LabelledTensor(it["values"], axes=tuple(it["axes"]), labels=it["labels"], meta=it["meta"]),
                   label_intact=data["label_intact"], clean=data["clean"], corrupted=data["corrupted"],
                   stages=list(data["stages"]), layers=list(data["layers"]), n_layers=int(data["n_layers"]),
                   n_examples=int(data["n_examples"]), example_indices=list(data["example_indices"]),
                   candidate_indices=list(data["candidate_indices"]),
                   skipped=[(int(i), str(why)) for i, why in data["skipped"]],
                   replaced=[(str(a), str(b)) for a, b in data["replaced"]], texts=data["texts"],
                   output_ids=data["output_ids"], clean_texts=data["clean_texts"],
                   corrupted_texts=data["corrupted_texts"], meta=data["meta"])


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class _Row:
    pair: int                # index into the pairs
    stage: int               # index into the stages
    layer: int | None        # the layer whose z is patched, None for an unpatched run
    corrupted_prompt: bool   # run the corrupted prefix instead of the clean one


def _prompt_patch(layer: int, width: int, rows: list[int], sources: list[Tensor]) -> Intervention:
    """Write the corrupted ``z`` of some rows over the end of their left-padded prompt, on the prompt forward only
    (``[batch, width, head, d_head]``); decoding steps pass unchanged."""
    value = sources[0].new_zeros(len(rows), width, *sources[0].shape[1:])
    mask = torch.zeros(len(rows), width, 1, 1, dtype=torch.bool)
    for r, z in enumerate(sources):
        value[r, width - z.shape[0]:] = z
        mask[r, width - z.shape[0]:] = True
    return Intervention(site_hook("z", layer), "set", value, mask=mask, rows=torch.tensor(rows), width=width)


def _decode_rows(model: TransformerBridge, rows: list[_Row], pairs: list[HorizonPair], stage_list: list[int],
                 sources: dict[int, dict[int, Tensor]], config: HorizonConfig, max_new_tokens: int, *,
                 desc: str, progress: bool) -> list[list[int]]:
    """Greedy continuations of every row (output token ids, in row order)."""
    from tqdm.auto import tqdm

    from reasonlens.generation import GenerationConfig, generate

    def ids(row: _Row) -> list[int]:
        pair = pairs[row.pair]
        n = pair.stage_lengths[stage_list[row.stage]]
        return list((pair.corrupted if row.corrupted_prompt else pair.clean)[:n])

    prompts = [ids(r) for r in rows]
    # Longest first, as generate orders a batch (a stable sort by length): then row r of a chunk is batch row r.
    order = sorted(range(len(rows)), key=lambda i: -len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in rows]
    gen_config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=config.batch_size)
    bar = tqdm(total=len(rows), desc=desc, unit="generation", disable=not progress)
    for at in range(0, len(order), config.batch_size):
        chunk = order[at:at + config.batch_size]
        width = len(prompts[chunk[0]])
        by_layer: dict[int, tuple[list[int], list[Tensor]]] = {}
        for r, i in enumerate(chunk):
            row = rows[i]
            if row.layer is not None:
                z = sources[row.pair][row.layer][:len(prompts[i])]
                by_layer.setdefault(row.layer, ([], []))
                by_layer[row.layer][0].append(r)
                by_layer[row.layer][1].append(z)
        hooks = [_prompt_patch(layer, width, r, z).as_hook() for layer, (r, z) in sorted(by_layer.items())]
        gen = generate(model, [prompts[i] for i in chunk], gen_config, fwd_hooks=hooks)
        for i, out in zip(chunk, gen.output_ids):
            outputs[i] = out
        bar.update(len(chunk))
    bar.close()
    return outputs


def _corrupted_z(model: TransformerBridge, pairs: list[HorizonPair], keep: list[int], length: dict[int, int],
                 layers: list[int], batch_size: int, progress: bool) -> dict[int, dict[int, Tensor]]:
    """``z`` of every layer in ``layers`` over the first ``length[p]`` corrupted tokens of each kept pair."""
    from tqdm.auto import tqdm


    out: dict[int, dict[int, Tensor]] = {}
    pad = pad_token_id(model)
    chunks = [keep[k:k + batch_size] for k in range(0, len(keep), batch_size)]
    for chunk in tqdm(chunks, desc="horizon corrupted z", unit="batch", disable=not progress):
        rows = [list(pairs[p].corrupted[:length[p]]) for p in chunk]
        tokens, mask = left_pad(rows, pad)
        store: dict[str, Tensor] = {}
        run_padded(model, tokens, mask, saving_hooks(store, dict.fromkeys(site_hook("z", layer) for layer in layers)))
        width = tokens.shape[1]
        for r, p in enumerate(chunk):
            out[p] = {layer: store[site_hook("z", layer)][r, width - len(rows[r]):].clone() for layer in layers}
    return out


def _intact(text: str, rest: str) -> tuple[bool, bool]:
    """(the generation restates the gold rest of the chain and the label, the label alone is right)."""
    from reasonlens.evaluate import split_answer

    chain, label = split_answer(text)
    gold_chain, gold_label = split_answer(rest)
    return chain == gold_chain and label == gold_label, label == gold_label


def measure_horizon(model: TransformerBridge, examples: Sequence[Example], config: HorizonConfig | None = None, *,
            progress: bool = True) -> HorizonResult:
    """Run the horizon experiment (see the module doc) on ``examples``.

    Steps: build each example's corruption (:func:`horizon_pair`; examples without one are skipped and
    counted, with the reason); decode every (example, stage) clean prefix unpatched and, with
    ``config.require_clean``, keep the examples intact at every stage (the rest are counted as dropped); then
    decode every kept (example, stage) corrupted prefix unpatched, and every (example, stage, layer) clean
    prefix with that layer's ``z`` over the prefix taken from the corrupted run. All decoding is greedy.

    Raises :class:`ReasonlensError` for no examples, a model without a tokenizer, a layer or stage out of
    range, and when no example has a fitting corruption.
    """
    from reasonlens.evaluate import shot_demonstrations
    from reasonlens.model import require_tokenizer

    config = config or HorizonConfig()
    if not isinstance(config, HorizonConfig):
        raise ReasonlensError(f"config must be a HorizonConfig, got {type(config).__name__}")
    if len(examples) == 0:
        raise ReasonlensError("no examples: pass a non-empty list of examples (reasonlens.ontology.generate)")
    tokenizer = require_tokenizer(model)
    n_layers = int(model.cfg.n_layers)
    layers = list(config.layers) if config.layers is not None else list(range(n_layers))
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ReasonlensError(f"layer(s) {bad} out of range: the model has layers 0..{n_layers - 1}")
    shortest = min(len(e.cot) for e in examples)
    stages = list(config.stages) if config.stages is not None else list(range(shortest))
    bad = [k for k in stages if not 0 <= k <= shortest]
    if bad:
        raise ReasonlensError(f"stage(s) {bad} out of range: a stage is the number of gold CoT sentences written "
                              f"before decoding, 0..{shortest} for these examples (the shortest chain has "
                              f"{shortest} sentences)")

    pairs: list[HorizonPair] = []
    candidates: list[int] = []
    skipped: list[tuple[int, str]] = []
    for i, example in enumerate(examples):
        demos = shot_demonstrations(example, config.shots) if config.shots else []
        rng = random.Random(f"reasonlens-horizon-{config.seed}-{i}")
        try:
            pair = horizon_pair(model, example, statement=config.statement, which=config.which,
                                demonstrations=demos, rng=rng)
        except UncorruptibleStatementError as e:
            skipped.append((i, str(e)))
            continue
        pairs.append(pair)
        candidates.append(i)
    if not pairs:
        reasons = sorted({why for _, why in skipped})
        raise ReasonlensError(f"none of the {len(examples)} examples has a fitting corruption of its "
                              f"{config.statement}: {reasons[:3]}")
    max_new = config.max_new_tokens or max(len(p.clean) - p.stage_lengths[k] for p in pairs for k in stages) + 8

    # 1. Clean runs, unpatched.
    clean_rows = [_Row(p, s, None, False) for p in range(len(pairs)) for s in range(len(stages))]
    clean_out = _decode_rows(model, clean_rows, pairs, stages, {}, config, max_new, desc="horizon clean",
                             progress=progress)
    clean_texts = tokenizer.batch_decode(clean_out, skip_special_tokens=True)
    clean_ok = torch.zeros(len(pairs), len(stages), dtype=torch.bool)
    clean_text_grid: list[list[str]] = [["" for _ in stages] for _ in pairs]
    for row, text in zip(clean_rows, clean_texts):
        clean_ok[row.pair, row.stage] = _intact(text, pairs[row.pair].rests[stages[row.stage]])[0]
        clean_text_grid[row.pair][row.stage] = text
    keep = [p for p in range(len(pairs)) if not config.require_clean or bool(clean_ok[p].all())]

    # 2. Corrupted z of every kept example, once over its longest prefix.
    longest = {p: max(pairs[p].stage_lengths[k] for k in stages) for p in keep}
    sources = _corrupted_z(model, pairs, keep, longest, layers, config.batch_size, progress)

    # 3. Corrupted runs, unpatched, and clean runs with one layer's z patched.
    rows = [_Row(p, s, None, True) for p in keep for s in range(len(stages))]
    rows += [_Row(p, s, layer, False) for p in keep for s in range(len(stages)) for layer in layers]
    out = _decode_rows(model, rows, pairs, stages, sources, config, max_new, desc="horizon patched",
                       progress=progress) if rows else []
    texts = tokenizer.batch_decode(out, skip_special_tokens=True) if out else []

    where = {p: j for j, p in enumerate(keep)}
    intact = torch.zeros(len(keep), len(stages), len(layers))
    label_ok = torch.zeros(len(keep), len(stages), len(layers), dtype=torch.bool)
    corrupted_ok = torch.zeros(len(keep), len(stages), dtype=torch.bool)
    text_grid: list[list[list[str]]] = [[["" for _ in layers] for _ in stages] for _ in keep]
    id_grid: list[list[list[list[int]]]] = [[[[] for _ in layers] for _ in stages] for _ in keep]
    corrupted_grid: list[list[str]] = [["" for _ in stages] for _ in keep]
    layer_index = {layer: j for j, layer in enumerate(layers)}
    for row, text, ids in zip(rows, texts, out):
        j = where[row.pair]
        chain_ok, answer_ok = _intact(text, pairs[row.pair].rests[stages[row.stage]])
        if row.layer is None:
            corrupted_ok[j, row.stage] = chain_ok
            corrupted_grid[j][row.stage] = text
        else:
            l = layer_index[row.layer]
            intact[j, row.stage, l] = float(chain_ok)
            label_ok[j, row.stage, l] = answer_ok
            text_grid[j][row.stage][l] = text
            id_grid[j][row.stage][l] = list(ids)

    meta = {"model": str(model.cfg.model_name), "statement": config.statement,
            "config": config.to_dict(),
            "max_new_tokens": max_new}
    stage_labels, layer_labels = [f"k={k}" for k in stages], [f"L{layer}" for layer in layers]
    return HorizonResult(
        intact=LabelledTensor(intact, axes=("example", "stage", "layer"),
                              labels={"stage": stage_labels, "layer": layer_labels},
                              meta={**meta, "metric": "intact"}),
        label_intact=label_ok, clean=clean_ok, corrupted=corrupted_ok, stages=stages, layers=layers,
        n_layers=n_layers, n_examples=len(examples), example_indices=[candidates[p] for p in keep],
        candidate_indices=candidates, skipped=skipped, replaced=[pairs[p].replaced for p in keep],
        texts=text_grid, output_ids=id_grid, clean_texts=clean_text_grid, corrupted_texts=corrupted_grid, meta=meta)

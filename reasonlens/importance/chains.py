"""Chains of thought as token blocks: the unit every step-importance method works on.

A :class:`Chain` is a prompt ``x`` and its steps ``s_1 .. s_n`` (sentences), each step a block of token ids
cut from one tokenization of the whole text, so that a step subsequence ``T`` is read by the model as the
prompt tokens followed by the kept blocks (``chain.token_ids(keep)``): removing a step removes exactly its
tokens, with no re-tokenization. A step's block starts after the previous step's last token, so whitespace
tokens before a step (``Ġ``, ``▁``) belong to it. Positions are those of ``model.to_tokens`` (BOS included).

Chains come from the generator's gold chains of thought (``source="gold"``, every step with its role tag,
``"redundant"`` marking the steps the generator knows to be removable) or from the model's own greedy
decoding (``source="greedy"``, as in the step-importance paper; steps that repeat a gold step verbatim get
its role, others ``None``).

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> model = load_model("reasonlens-main")
>>> chain = chains_from_examples(model, generate(1, hops=2, seed=3))[0]
>>> len(chain), chain.roles[:3]
(5, ['premise_copy', 'rule_copy', 'derived_fact'])
>>> model.tokenizer.decode(chain.token_ids(keep=[0, 2])[chain.prompt_len:])
'sally is a gorpus. sally is a dumpus.'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.prompt import format_prompt
from reasonlens.ontology.sentences import sentence_char_spans
from reasonlens.ontology.types import Example
from reasonlens.spans import TokenSpan, char_to_token_spans, single_token_id
from reasonlens.validation import check_int_list, check_token_lists

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ChainSource = Literal["gold", "greedy"]


@dataclass
class Chain:
    """One chain of thought: ``prompt_ids`` (the prompt, BOS included), ``step_ids`` (each step's token block),
    ``steps`` (each step's text), ``roles`` (the generator's role tag of each step, or ``None``), the answer
    tokens ``answer_ids = (true_id, false_id)`` and the gold ``label``."""

    example: Example
    prompt_ids: list[int]
    step_ids: list[list[int]]
    steps: list[str]
    roles: list[str | None]
    answer_ids: tuple[int, int]
    source: str = "gold"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.step_ids:
            raise ReasonlensError("a chain needs at least one step; this one has none")
        if not (len(self.step_ids) == len(self.steps) == len(self.roles)):
            raise ReasonlensError(f"step_ids, steps and roles differ in length: {len(self.step_ids)}, "
                                  f"{len(self.steps)}, {len(self.roles)}")
        if any(not block for block in self.step_ids):
            raise ReasonlensError("every step needs at least one token")
        if not self.prompt_ids:
            raise ReasonlensError("a chain needs a prompt of at least one token (e.g. BOS)")

    def check(self, model: TransformerBridge) -> None:
        """Raise for token ids (prompt, steps, answer tokens) that are not integers in ``model``'s vocabulary."""
        check_token_lists(model, [self.prompt_ids, *self.step_ids], name="the chain's tokens", item="block")
        check_token_lists(model, [list(self.answer_ids)], name="answer_ids", item="answer pair")

    def __len__(self) -> int:
        return len(self.step_ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the example as ``Example.to_dict()``); :meth:`from_dict` reads it back."""
        return {"example": self.example.to_dict(), "prompt_ids": self.prompt_ids, "step_ids": self.step_ids,
                "steps": self.steps, "roles": self.roles, "answer_ids": list(self.answer_ids), "source": self.source,
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chain:
        return cls(example=Example.from_dict(d["example"]), prompt_ids=d["prompt_ids"], step_ids=d["step_ids"],
                   steps=d["steps"], roles=d["roles"], answer_ids=tuple(d["answer_ids"]), source=d["source"],
                   meta=d["meta"])

    @property
    def label(self) -> bool:
        return self.example.label

    @property
    def gold_answer_id(self) -> int:
        """The token id of the gold label (``answer_ids[0]`` for True, ``[1]`` for False)."""
        return self.answer_ids[0] if self.label else self.answer_ids[1]

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    def _keep(self, keep: object) -> list[int]:
        if keep is None:
            return list(range(len(self)))
        kept = sorted(set(check_int_list(keep, "keep", allow_empty=True, unique=False, example="[0, 2]")))
        if kept and not (0 <= kept[0] and kept[-1] < len(self)):
            raise ReasonlensError(f"step indices {list(keep)} are outside this chain's {len(self)} steps")
        return kept

    def token_ids(self, keep: Sequence[int] | None = None, suffix_ids: Sequence[int] = ()) -> list[int]:
        """The prompt, the kept steps' blocks in chain order (all steps when ``keep`` is None), then
        ``suffix_ids`` (an answer-eliciting suffix)."""
        ids = list(self.prompt_ids)
        for k in self._keep(keep):
            ids.extend(self.step_ids[k])
        return ids + list(suffix_ids)

    def spans(self, keep: Sequence[int] | None = None) -> list[TokenSpan]:
        """Token spans of the kept steps' blocks within :meth:`token_ids` of the same ``keep``."""
        out, pos = [], self.prompt_len
        for k in self._keep(keep):
            out.append(TokenSpan(pos, pos + len(self.step_ids[k]), self.steps[k]))
            pos += len(self.step_ids[k])
        return out


def answer_token_ids(model: TransformerBridge) -> tuple[int, int]:
    """The single-token ids of the labels ``True`` and ``False`` as they follow a step (after a space).

    Raises :class:`ReasonlensError` when a label is several tokens in this tokenizer (the answer readout
    compares two next-token probabilities).
    """
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    return single_token_id(tok, "True"), single_token_id(tok, "False")


def _blocks(model: TransformerBridge, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Tokenize ``prompt + " " + " ".join(steps)`` once and cut it into the prompt and one block per step."""
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    text, char_spans = prompt, []
    for step in steps:
        text += " "
        char_spans.append((len(text), len(text) + len(step)))
        text += step
    ids = model.to_tokens(text, truncate=False)[0].tolist()
    plain = tok(text, add_special_tokens=True)["input_ids"]
    offset = len(ids) - len(plain)
    if offset < 0 or ids[offset:] != plain:
        raise ReasonlensError("the model's to_tokens and its tokenizer disagree on this text beyond a prepended BOS; "
                              "step spans cannot be placed")
    try:
        spans = [s.shift(offset) for s in char_to_token_spans(tok, text, char_spans, add_special_tokens=True)]
    except ReasonlensError as e:
        raise ReasonlensError(
            f"a step does not start and end on token boundaries in this tokenizer, which merges text across the "
            f"space before or after it ({e}); so it cannot be removed alone. Join it with its neighbour into one "
            "step, or use a tokenizer that splits at spaces (the byte-level BPEs of GPT-2, Llama 3 and Qwen2 do)"
        ) from None
    prompt_plain = tok(prompt, add_special_tokens=True)["input_ids"]
    prompt_len = len(prompt_plain) + offset
    if plain[:len(prompt_plain)] != prompt_plain or spans[0].start < prompt_len:
        raise ReasonlensError("the prompt tokenizes differently alone and followed by its chain (a token spans the "
                              "prompt/chain boundary); end the prompt where this tokenizer splits")
    for a, b in zip(spans, spans[1:]):
        if b.start < a.end:
            raise ReasonlensError(
                f"steps {a.text!r} and {b.text!r} share a token: this tokenizer merges the text across the boundary "
                "between them, so neither step can be removed alone; join the two into one step, or use a tokenizer "
                "that splits at spaces (the byte-level BPEs of GPT-2, Llama 3 and Qwen2 do)")
    bounds = [prompt_len] + [s.end for s in spans]
    return ids[:prompt_len], [ids[a:b] for a, b in zip(bounds, bounds[1:])]


def make_chain(model: TransformerBridge, example: Example, steps: Sequence[str], roles: Sequence[str | None] | None = None,
               *, prompt: str | None = None, source: str = "gold") -> Chain:
    """A :class:`Chain` of ``steps`` (sentences) after ``prompt`` (default ``format_prompt(example)``)."""
    steps = [s.strip() for s in steps]
    if any(not s for s in steps):
        raise ReasonlensError("a step is empty; pass the chain's sentences")
    prompt = format_prompt(example) if prompt is None else prompt
    prompt_ids, blocks = _blocks(model, prompt, steps)
    return Chain(example=example, prompt_ids=prompt_ids, step_ids=blocks, steps=list(steps),
                 roles=list(roles) if roles is not None else [None] * len(steps),
                 answer_ids=answer_token_ids(model), source=source)


def chains_from_examples(model: TransformerBridge, examples: Sequence[Example], *, source: ChainSource = "gold",
                         batch_size: int = 32, progress: bool = False) -> list[Chain]:
    """One chain per example: its gold chain of thought (``source="gold"``), or the model's greedy chain
    (``source="greedy"``; ``meta["answer"]`` holds the label the model wrote, ``None`` when it wrote none).

    Greedy chains whose text has no complete sentence are dropped (counted in each kept chain's
    ``meta["n_dropped"]``).
    """
    if not examples:
        raise ReasonlensError("no examples: pass at least one question")
    if source == "gold":
        return [make_chain(model, e, [s.text for s in e.cot], [s.role for s in e.cot]) for e in examples]
    if source != "greedy":
        raise ReasonlensError(f"unknown chain source {source!r}; choose 'gold' or 'greedy'")
    from reasonlens.attribution.steering import decoding_budget
    from reasonlens.evaluate import normalize
    from reasonlens.generation import GenerationConfig, generate

    prompts = [format_prompt(e) for e in examples]
    gen = generate(model, prompts, GenerationConfig(max_new_tokens=decoding_budget(model, examples),
                                                    batch_size=batch_size), progress=progress)
    chains = []
    for example, prompt, text, answer in zip(examples, prompts, gen.texts, gen.answers):
        steps = [text[s:e] for s, e in sentence_char_spans(text)]
        if not steps:
            continue
        gold = {normalize(s.text): s.role for s in example.cot}
        chain = make_chain(model, example, steps, [gold.get(normalize(s)) for s in steps], prompt=prompt,
                           source="greedy")
        chain.meta["answer"] = answer
        chains.append(chain)
    for chain in chains:
        chain.meta["n_dropped"] = len(examples) - len(chains)
    return chains

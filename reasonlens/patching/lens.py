"""Logit lens per layer, and the prior-vs-context crossover of Dutta et al. (TMLR 2024: the mid-layer "functional rift").

:func:`logit_lens` reads the residual stream of every layer at one position per sequence and decodes it as
if it were the last layer: ``log_softmax(unembed(ln_final(resid)))``, with the model's own final norm
(RMSNorm or LayerNorm, with whatever weights the bridge folded into it) and unembedding, so the lens of the
last ``resid_post`` *is* the model's output distribution.

:func:`prior_vs_context` asks, layer by layer, whether the residual stream favours what the context says or
what the pretraining prior says. Conflict items come from false-ontology questions whose in-context
conclusion contradicts the real taxonomy the reference models learned first (``meta["prior_label"]`` differs
from the label: "Rodents are not bony. Polly is a rodent." against the prior "rodents are bony"). The model
reads the prompt and the gold chain of thought up to a decision, and the lens compares two next tokens:

- ``decision="property"`` (default): the answer step of the chain of thought, "Polly is ___": ``not``
  (context) against ``bony`` (prior), or the property word against ``not`` where the prior denies it. The
  item is what the chain of thought concludes, one token, and needs no reasoning about the query.
- ``decision="label"``: the final ``True`` / ``False`` after the whole chain of thought.

With the generator's default ``false_mode="negation"`` both pick the same examples. Items are balanced
between the two polarities of the context token (as many ``not`` as property words, as many ``True`` as
``False``), so a layer that merely prefers one token type scores one half, not a spurious majority.

Per layer the result gives the fraction of items where the context token is the more probable one, the mean
log-odds ``log p(context) - log p(prior)`` with its standard error, and the mean probabilities. The
*crossover layer* is the first layer from which the context token wins for a majority of items at every
later layer; its relative depth is the fraction of the blocks the read site has passed, ``(layer + 1) /
n_layers`` for ``resid_post`` (so the last layer is 1).

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> model = load_model("reasonlens-main")
>>> logit_lens(model, ["Q: Every wumpus is wooden."]).values.shape  # [example, layer, vocab]
torch.Size([1, 6, 191])
>>> result = prior_vs_context(model, generate(40, kind="false", hops=1, seed=0))
>>> result.context_win_fraction()
tensor([0.5000, 1.0000, 1.0000, 1.0000, 1.0000, 1.0000])
>>> result.crossover_relative_depth  # (layer + 1) / n_layers of the crossover layer, 1 (0.5 at block 0 is no majority)
0.3333333333333333
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.model import require_tokenizer
from reasonlens.ontology.lexicon import TRUE_TAXONOMY, true_properties
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.ontology.types import Example
from reasonlens.results import LabelledTensor
from reasonlens.runtime import collect_activations, lens_logits, site_hook
from reasonlens.spans import char_to_token_spans, single_token_id
from reasonlens.validation import check_token_lists, check_tokens, describe, is_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

LENS_SITES: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post")
DECISIONS: tuple[str, ...] = ("property", "label")
# Fraction of the blocks a site has passed through: resid_pre of layer l has seen l blocks, resid_post l + 1.
_BLOCKS_DONE: dict[str, float] = {"resid_pre": 0.0, "resid_mid": 0.5, "resid_post": 1.0}

TokenRows = Int[Tensor, "batch pos"] | Sequence[Sequence[int]] | Sequence[str]


def _token_rows(model: TransformerBridge, tokens: object, attention_mask: object) -> list[list[int]]:
    """Unpadded token-id lists: a tensor's rows (only the positions its mask keeps), id lists as given, or
    strings tokenized by ``model.to_tokens`` (all checked by :mod:`reasonlens.validation`)."""
    if isinstance(tokens, str):
        raise ReasonlensError("tokens is one string; pass a list of prompts, e.g. [prompt]")
    if isinstance(tokens, Tensor):
        tokens, mask = check_tokens(model, tokens, attention_mask, padding="either")
        return [t[k].tolist() for t, k in zip(tokens.cpu(), mask.cpu().bool())]
    if attention_mask is not None:
        raise ReasonlensError("attention_mask only goes with a padded token tensor; lists of token ids or "
                              "strings are unpadded already")
    if not isinstance(tokens, Sequence):
        raise ReasonlensError(f"tokens must be a [batch, pos] tensor, token-id lists or strings, got "
                              f"{describe(tokens)}")
    if len(tokens) and all(isinstance(t, str) for t in tokens):
        return [model.to_tokens(t, truncate=False)[0].tolist() for t in tokens]
    return check_token_lists(model, tokens, name="tokens", item="sequence")


def _resolve_positions(rows: list[list[int]], positions: object) -> list[int]:
    if positions is None:
        return [len(r) - 1 for r in rows]
    if is_int(positions):
        positions = [int(positions)] * len(rows)
    if (isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence)
            or not all(is_int(p) for p in positions)):
        raise ReasonlensError(f"positions must be None (the last token), one integer for every sequence or one "
                              f"integer per sequence, got {describe(positions)}")
    if len(positions) != len(rows):
        raise ReasonlensError(f"{len(positions)} positions for {len(rows)} sequences; pass one per sequence, "
                              "one int for all, or None for the last token")
    resolved = []
    for i, (row, p) in enumerate(zip(rows, positions)):
        q = p + len(row) if p < 0 else p
        if not 0 <= q < len(row):
            raise ReasonlensError(f"position {p} is outside sequence {i} of {len(row)} tokens")
        resolved.append(q)
    return resolved


def _lens_hooks(model: TransformerBridge, site: object) -> list[str]:
    if site not in LENS_SITES:
        raise ReasonlensError(f"unknown lens site {site!r}; choose from {LENS_SITES}")
    return [site_hook(site, l) for l in range(model.cfg.n_layers)]


def _decode(model: TransformerBridge, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
    """``log_softmax(unembed(ln_final(resid)))`` with the model's own final norm and unembedding."""
    with torch.no_grad():
        return lens_logits(model, resid.to(model.cfg.device)).float().log_softmax(-1).cpu()


def logit_lens(model: TransformerBridge, tokens: TokenRows, attention_mask: Int[Tensor, "batch pos"] | None = None,
               *, site: str = "resid_post", positions: int | Sequence[int] | None = None, batch_size: int = 32,
               progress: bool = False) -> LabelledTensor:
    """Log-probabilities of the next token read from every layer's residual stream: values
    ``[example, layer, vocab]`` with layer labels ``L0``, ``L1``, ...

    ``tokens`` is a token tensor (padded on either side, with ``attention_mask``), a list of token-id lists,
    or a list of strings. ``positions`` index each unpadded sequence (negative from its end): ``None`` the
    last token, one int for every sequence, or one per sequence. ``site`` is ``resid_pre``, ``resid_mid`` or
    ``resid_post``; the lens of the last layer's ``resid_post`` equals the model's log-probabilities.
    """
    hooks = _lens_hooks(model, site)
    rows = _token_rows(model, tokens, attention_mask)
    resolved = _resolve_positions(rows, positions)
    acts = collect_activations(model, rows, [[p] for p in resolved], hooks, batch_size=batch_size, progress=progress)
    resid = torch.stack([a[:, 0] for a in acts])  # [example, layer, d_model]
    return LabelledTensor(_decode(model, resid), axes=("example", "layer", "vocab"),
                          labels={"layer": [f"L{l}" for l in range(len(hooks))]},
                          meta={"site": site, "positions": resolved, "model": model.cfg.model_name})


@dataclass(frozen=True)
class ConflictItem:
    """One prior-vs-context conflict: after ``token_ids`` (prompt plus gold chain-of-thought prefix) the
    context entails ``context_word`` as the next token, the pretraining prior ``prior_word``."""

    example_index: int
    token_ids: tuple[int, ...]
    context_token: int
    prior_token: int
    context_word: str
    prior_word: str


def _entity_concept(example: Example) -> str | None:
    return next((s.fact.predicate for s in example.context if s.role == "entity_fact"), None)


def _conclusion(example: Example) -> int | None:
    """Index of the chain of thought's answer step: its last derived property of the entity."""
    return next((i for i in range(len(example.cot) - 1, -1, -1)
                 if example.cot[i].role == "derived_fact" and example.cot[i].fact.kind == "property"), None)


def _step_starts(example: Example, text: str, prompt_len: int) -> list[int]:
    """Character offset of every chain-of-thought step in ``text`` (prompt + completion)."""
    starts, cursor = [], prompt_len
    for s in example.cot:
        cursor = text.index(s.text, cursor)
        starts.append(cursor)
        cursor += len(s.text)
    return starts


def _conflict(tokenizer: PreTrainedTokenizerBase, index: int, example: Example,
              decision: str) -> ConflictItem | None:
    """The item of ``example``, or None when its decision does not set the context against the prior."""
    concept, step = _entity_concept(example), _conclusion(example)
    if concept not in TRUE_TAXONOMY or step is None:
        return None
    prompt = format_prompt(example)
    text = prompt + format_completion(example)
    if decision == "property":
        fact = example.cot[step].fact
        prior_holds = true_properties(concept).get(fact.predicate)
        if prior_holds is None or prior_holds != fact.negated:
            return None  # the prior has no opinion, or agrees with the context
        words = ("not", fact.predicate) if fact.negated else (fact.predicate, "not")
        start = _step_starts(example, text, len(prompt))[step]
        # "Polly is [not] bony.": the decision word follows the subject and "is".
        word_start = start + example.cot[step].text.index(" is ") + len(" is ")
    else:
        query = example.query.fact
        prior_holds = true_properties(concept).get(query.predicate)
        prior_label = None if prior_holds is None else prior_holds != query.negated
        if prior_label is None or prior_label == example.label:
            return None
        words = (example.answer, "True" if prior_label else "False")
        word_start = text.rindex(example.answer)
    span = char_to_token_spans(tokenizer, text, [(word_start, word_start + len(words[0]))])[0]
    ids = tuple(tokenizer(text)["input_ids"])
    context_token, prior_token = (single_token_id(tokenizer, w) for w in words)
    if len(span) != 1 or ids[span.start] != context_token:
        raise ReasonlensError(f"{words[0]!r} is not one token where it stands in example {index}'s chain of "
                              "thought; the lens comparison needs single-token decision words")
    return ConflictItem(index, ids[:span.start], context_token, prior_token, *words)


def conflict_items(tokenizer: PreTrainedTokenizerBase | None, examples: Sequence[Example], *,
                   decision: str = "property", balance: bool = True,
                   seed: int = 0) -> list[ConflictItem]:
    """The prior-vs-context items of ``examples`` (0-shot prompts; see the module doc for ``decision``).

    An example gives an item when its decision contradicts the real taxonomy (in practice half the
    ``kind="false"`` ones; with the default ``false_mode="negation"`` both decisions pick the same examples).
    ``balance`` keeps as many items whose context token is ``not``/``True`` as items whose context token is
    the property word/``False``, dropping a random surplus (``seed``).
    """
    if decision not in DECISIONS:
        raise ReasonlensError(f"unknown decision {decision!r}; choose from {DECISIONS}")
    if tokenizer is None:
        raise ReasonlensError("no tokenizer: pass model.tokenizer (load the model from a folder with a "
                              "tokenizer.json)")
    items = [it for i, ex in enumerate(examples) if (it := _conflict(tokenizer, i, ex, decision)) is not None]
    if not items:
        raise ReasonlensError(
            f"none of the {len(examples)} examples has a conclusion that contradicts the pretraining prior; pass "
            "false-ontology examples, e.g. generate(200, kind='false', hops=(1, 2, 3))")
    if balance:
        groups = [[it for it in items if it.context_word in ("not", "True")],
                  [it for it in items if it.context_word not in ("not", "True")]]
        n = min(len(g) for g in groups)
        if n == 0:
            raise ReasonlensError(
                f"all {len(items)} conflict items have the same context polarity, so they cannot be balanced; pass "
                "more false-ontology examples or balance=False")
        rng = random.Random(seed)
        keep = {it.example_index for g in groups for it in rng.sample(g, n)}
        items = [it for it in items if it.example_index in keep]
    return items


@dataclass
class PriorContextResult:
    """Lens log-probabilities of the context and prior tokens: ``log_probs`` has axes
    ``("example", "token", "layer")`` with ``token`` = ``["context", "prior"]`` (one row per conflict item;
    ``meta`` holds the items' example indices and words, the site and the decision)."""

    log_probs: LabelledTensor

    @property
    def n_items(self) -> int:
        return self.log_probs.values.shape[0]

    @property
    def n_layers(self) -> int:
        return self.log_probs.values.shape[2]

    @property
    def layer_labels(self) -> list[str]:
        return self.log_probs.axis_labels("layer")

    def log_odds(self) -> LabelledTensor:
        """``log p(context) - log p(prior)`` per item and layer (axes ``example``, ``layer``)."""
        lp = self.log_probs.values
        return LabelledTensor(lp[:, 0] - lp[:, 1], axes=("example", "layer"),
                              labels={"layer": self.layer_labels}, meta=dict(self.log_probs.meta))

    def context_win_fraction(self) -> Float[Tensor, " layer"]:
        """Fraction of items whose context token is strictly more probable than the prior token."""
        return (self.log_odds().values > 0).float().mean(0)

    def mean_probs(self) -> Float[Tensor, "token layer"]:
        """Mean lens probability of the context (row 0) and prior (row 1) token."""
        return self.log_probs.values.exp().mean(0)

    def crossover(self, min_win_fraction: float = 0.5) -> int | None:
        """The first layer from which the context token wins for more than ``min_win_fraction`` of the items at
        that layer and every later one (None if the last layer does not pass)."""
        if not 0 <= min_win_fraction < 1:
            raise ReasonlensError(f"min_win_fraction must be in [0, 1), got {min_win_fraction}")
        passing = (self.context_win_fraction() > min_win_fraction).tolist()
        if not passing[-1]:
            return None
        layer = len(passing) - 1
        while layer > 0 and passing[layer - 1]:
            layer -= 1
        return layer

    @property
    def crossover_layer(self) -> int | None:
        """:meth:`crossover` at a strict majority: the layer where the context takes over for good. (A layer
        where it wins before losing again later does not count; see ``context_win_fraction`` for those.)"""
        return self.crossover()

    @property
    def crossover_relative_depth(self) -> float | None:
        """The fraction of the blocks the crossover site has passed through: ``(layer + 1) / n_layers`` for
        ``resid_post`` (its last layer is 1), ``(layer + 0.5) / n_layers`` for ``resid_mid``, ``layer /
        n_layers`` for ``resid_pre``."""
        layer = self.crossover_layer
        if layer is None:
            return None
        return (layer + _BLOCKS_DONE[self.log_probs.meta["site"]]) / self.n_layers

    def to_dataframe(self):
        """One row per layer: win fraction (with its binomial standard error), mean log-odds (with its standard
        error) and mean probabilities of the two tokens."""
        import pandas as pd

        odds, probs, wins = self.log_odds(), self.mean_probs(), self.context_win_fraction()
        return pd.DataFrame({
            "layer": self.layer_labels, "context_win_fraction": wins.tolist(),
            "win_fraction_stderr": (wins * (1 - wins) / self.n_items).sqrt().tolist(),
            "mean_log_odds": odds.mean().tolist(), "log_odds_stderr": odds.stderr().tolist(),
            "p_context": probs[0].tolist(), "p_prior": probs[1].tolist()})

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a ``.pt`` file)."""
        return self.log_probs.save(path)

    @classmethod
    def load(cls, path: str | Path) -> PriorContextResult:
        """Read a file written by :meth:`save`."""
        return cls(LabelledTensor.load(path))


def prior_vs_context(model: TransformerBridge, examples: Sequence[Example], *,
                     decision: str = "property", site: str = "resid_post",
                     balance: bool = True, seed: int = 0, batch_size: int = 32,
                     progress: bool = False) -> PriorContextResult:
    """Per layer, the lens probability of the in-context token against the prior token on the conflict items
    of ``examples`` (:func:`conflict_items`), read at ``site`` of every layer."""
    tokenizer = require_tokenizer(model)
    items = conflict_items(tokenizer, examples, decision=decision, balance=balance, seed=seed)
    hooks = _lens_hooks(model, site)
    acts = collect_activations(model, [it.token_ids for it in items], [[len(it.token_ids) - 1] for it in items],
                               hooks, batch_size=batch_size, progress=progress)
    pairs = torch.tensor([[it.context_token, it.prior_token] for it in items])  # [item, token]
    resid = torch.stack([a[:, 0] for a in acts])  # [item, layer, d_model]
    log_probs = torch.cat([
        _decode(model, resid[k:k + batch_size]).gather(-1, pairs[k:k + batch_size, None, :].expand(-1, len(hooks), -1))
        for k in range(0, len(items), batch_size)]).transpose(1, 2)  # [item, token, layer]
    meta = {"site": site, "decision": decision, "model": model.cfg.model_name,
            "example_index": [it.example_index for it in items],
            "context_word": [it.context_word for it in items], "prior_word": [it.prior_word for it in items]}
    return PriorContextResult(LabelledTensor(log_probs, axes=("example", "token", "layer"),
                                             labels={"token": ["context", "prior"],
                                                     "layer": [f"L{l}" for l in range(len(hooks))]}, meta=meta))

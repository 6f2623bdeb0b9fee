"""Step activations: the residual stream after every block, pooled over each labelled step's tokens (the
input of the step-importance probes: Nikankin et al., 2026, section 2.3).

A :class:`StepSet` is chains plus labelled steps ``(chain, step, label)`` with label 1 = removable and
0 = important (unlabelled steps are absent). :func:`step_activations` reads every chain once, whole (prompt
and all its steps, as the model wrote them), and pools the hidden states ``blocks.{l}.hook_resid_post``
(Hugging Face ``hidden_states[1:]``; never the embedding output) over each labelled step's token block. With
``context=False`` (the context-free control) each step's block is read alone after BOS.

>>> from reasonlens.importance.chains import chains_from_examples
>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> model = load_model("reasonlens-main")
>>> chains = chains_from_examples(model, generate(2, hops=1, seed=0))
>>> steps = StepSet.from_labels(chains, [[0, None, 1], [1, 0, None]])
>>> len(steps), steps.labels.tolist()
(4, [0, 1, 1, 0])
>>> step_activations(model, steps, layers=[5, 0]).shape
torch.Size([4, 2, 128])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.importance.chains import Chain
from reasonlens.model import check_hook_name, model_fingerprint, require_tokenizer
from reasonlens.runtime import left_pad, left_padded_positions, pad_token_id
from reasonlens.validation import check_bool, check_context, check_int, check_int_list

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Pooling = Literal["mean", "first", "middle", "last"]
POOLINGS: tuple[str, ...] = ("mean", "first", "middle", "last")


@dataclass
class StepSet:
    """Chains and their labelled steps: ``items[i] = (chain index, step index, label)``, label 1 = removable,
    0 = important. Rows of :func:`step_activations` follow ``items``."""

    chains: list[Chain]
    items: list[tuple[int, int, int]]

    def __post_init__(self) -> None:
        for c, s, label in self.items:
            if not 0 <= c < len(self.chains):
                raise ReasonlensError(f"item ({c}, {s}, {label}) names chain {c} but there are {len(self.chains)} "
                                      "chains; use chain indices in 0..len(chains) - 1")
            if not 0 <= s < len(self.chains[c]):
                raise ReasonlensError(f"item ({c}, {s}, {label}) names step {s} but chain {c} has "
                                      f"{len(self.chains[c])} steps")
            if label not in (0, 1):
                raise ReasonlensError(f"item ({c}, {s}, {label}) has label {label!r}; labels are 1 (removable) "
                                      "or 0 (important)")

    @classmethod
    def from_labels(cls, chains: Sequence[Chain], labels: Sequence[Sequence[int | bool | None]]) -> StepSet:
        """One item per step whose label is not ``None`` (``labels[c][s]`` for step ``s`` of chain ``c``)."""
        if len(labels) != len(chains):
            raise ReasonlensError(f"{len(labels)} label lists for {len(chains)} chains; pass one list per chain")
        items = []
        for c, (chain, row) in enumerate(zip(chains, labels)):
            if len(row) != len(chain):
                raise ReasonlensError(f"chain {c} has {len(chain)} steps but {len(row)} labels; pass one label "
                                      "(or None) per step")
            items.extend((c, s, int(label)) for s, label in enumerate(row) if label is not None)
        return cls(list(chains), items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> Int[Tensor, " step"]:
        return torch.tensor([label for _, _, label in self.items], dtype=torch.long)

    @property
    def texts(self) -> list[str]:
        """Each labelled step's text."""
        return [self.chains[c].steps[s] for c, s, _ in self.items]


@dataclass
class _Sequence:
    """One forward row and the spans ``(output row, start, end)`` pooled from it."""

    ids: list[int]
    spans: list[tuple[int, int, int]]


def _resolve_layers(model: TransformerBridge, layers: object) -> list[int]:
    n = model.cfg.n_layers
    resolved = list(range(n)) if layers is None else check_int_list(layers, "layers", allow_empty=True,
                                                                     unique=False, example="[0, 3]")
    bad = [l for l in resolved if not 0 <= l < n]
    if bad or not resolved:
        raise ReasonlensError(f"layers {bad or resolved} out of range: the model has {n} layers (0..{n - 1})")
    if len(set(resolved)) != len(resolved):
        raise ReasonlensError(f"layers {resolved} repeat a layer; pass each layer once")
    return resolved


def _sequences(model: TransformerBridge, steps: StepSet, context: bool) -> list[_Sequence]:
    if context:
        by_chain: dict[int, list[tuple[int, int]]] = {}
        for row, (c, s, _) in enumerate(steps.items):
            by_chain.setdefault(c, []).append((row, s))
        out = []
        for c, rows in by_chain.items():
            spans = steps.chains[c].spans()
            out.append(_Sequence(steps.chains[c].token_ids(), [(row, spans[s].start, spans[s].end) for row, s in rows]))
        return out
    bos = require_tokenizer(model).bos_token_id
    out = []
    for row, (c, s, _) in enumerate(steps.items):
        chain = steps.chains[c]
        prefix = chain.prompt_ids[:1] if bos is not None and chain.prompt_ids[:1] == [bos] else []
        block = chain.step_ids[s]
        out.append(_Sequence(prefix + block, [(row, len(prefix), len(prefix) + len(block))]))
    return out


def _pool_weights(batch: list[_Sequence], width: int, pooling: str) -> Float[Tensor, "batch span pos"]:
    """Weights that pool each sequence's spans from its left-padded row (one-hot for a single position)."""
    weights = torch.zeros(len(batch), max(len(seq.spans) for seq in batch), width)
    for b, seq in enumerate(batch):
        offset = width - len(seq.ids)
        for j, (_, start, end) in enumerate(seq.spans):
            start, end = start + offset, end + offset
            if pooling == "mean":
                weights[b, j, start:end] = 1.0 / (end - start)
            else:
                pos = {"first": start, "middle": start + (end - start - 1) // 2, "last": end - 1}[pooling]
                weights[b, j, pos] = 1.0
    return weights


def _pool_hook(act: Tensor, hook, *, store: dict[str, Tensor], name: str, weights: Tensor, valid: Tensor) -> None:
    store[name] = torch.bmm(weights.to(act.dtype), act.detach())[valid]


def _run(model: TransformerBridge, sequences: list[_Sequence], names: list[str], n_rows: int, pooling: str,
         batch_size: int, progress: bool) -> Float[Tensor, "step layer d_model"]:
    import functools

    from tqdm.auto import tqdm

    check_context(model, [len(seq.ids) for seq in sequences], item="sequence", fix="drop or shorten those chains")
    device = model.cfg.device
    out = torch.zeros(n_rows, len(names), model.cfg.d_model)
    order = sorted(sequences, key=lambda seq: -len(seq.ids))
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in tqdm(batches, desc="step activations", unit="batch", disable=not progress):
            ids, mask = left_pad([seq.ids for seq in batch], pad_token_id(model))
            weights = _pool_weights(batch, ids.shape[1], pooling).to(device)
            valid = torch.tensor([[j < len(seq.spans) for j in range(weights.shape[1])] for seq in batch]).to(device)
            store: dict[str, Tensor] = {}
            hooks = [(n, functools.partial(_pool_hook, store=store, name=n, weights=weights, valid=valid))
                     for n in names]
            mask = mask.to(device)
            with model.hooks(fwd_hooks=hooks):
                model(ids.to(device), attention_mask=mask, position_ids=left_padded_positions(mask), return_type=None)
            missing = [n for n in names if n not in store]
            if missing:
                raise ReasonlensError(f"hooks {missing} did not fire on a forward pass of this model")
            rows = torch.tensor([row for seq in batch for row, _, _ in seq.spans])
            out[rows] = torch.stack([store[n] for n in names], dim=1).float().cpu()
    return out


def _cache_path(cache_dir: str | Path, model: TransformerBridge, steps: StepSet, layers: list[int], pooling: str,
                context: bool) -> Path:
    chains = [[c.prompt_ids, c.step_ids] for c in steps.chains]
    items = [[c, s] for c, s, _ in steps.items]
    tokens = hashlib.sha256(json.dumps([chains, items]).encode()).hexdigest()
    key = json.dumps({"model": model_fingerprint(model), "tokens": tokens, "layers": layers, "pooling": pooling,
                      "context": context}, sort_keys=True)
    return Path(cache_dir) / f"step-activations-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def step_activations(model: TransformerBridge, steps: StepSet, *, layers: Sequence[int] | None = None,
                     pooling: Pooling = "mean", context: bool = True, batch_size: int = 16,
                     cache_dir: str | Path | None = None,
                     progress: bool = False) -> Float[Tensor, "step layer d_model"]:
    """The residual stream after each block in ``layers`` (default all, in the order given), pooled over each
    labelled step's tokens: their ``mean``, or the ``first``, ``middle`` (``start + (n - 1) // 2``) or ``last``
    token. Rows follow ``steps.items``; float32 on the CPU.

    With ``context`` each chain is one forward (prompt and all steps); chains are left-padded into batches of
    ``batch_size`` with an attention mask and position ids, so a chain reads as it would alone, and only the
    pooled vectors leave the device. Without ``context`` each step's token block is read alone, after BOS when
    the model's sequences start with one. With ``cache_dir`` the result is saved there under a key of the model
    (:func:`model_fingerprint`), the chains' tokens, the items, ``layers``, ``pooling`` and ``context``, and
    loaded from there by a later call with the same key.
    """
    if not steps.items:
        raise ReasonlensError("the step set has no labelled steps; label at least one step of one chain")
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ReasonlensError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
    check_int(batch_size, "batch_size", low=1)
    check_bool(context, "context")
    for chain in steps.chains:
        chain.check(model)
    resolved = _resolve_layers(model, layers)
    path = _cache_path(cache_dir, model, steps, resolved, pooling, context) if cache_dir is not None else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True)
    names = [check_hook_name(model, f"blocks.{l}.hook_resid_post") for l in resolved]
    out = _run(model, _sequences(model, steps, context), names, len(steps), pooling, batch_size, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
    return out

"""Head role scores of Dutta et al. (TMLR 2024): answer writers, movers and decision heads.

Every score is read at the last position of a left-padded batch whose next token is ``answer``:

- ``writer``: the logit lens of the head's output alone, ``softmax(W_U ln_final(z_h W_O) + b_U)[answer]``.
  As in the authors' stage I (``informationFlow.py``), the final norm renormalises the head output by its
  own scale (not by the run's).
- ``direct_logit``: the direct-logit projection ``ln_final*(z_h W_O) . W_U[:, answer]``, where ``ln_final*``
  is the final norm frozen at the full run's scale (``ln_final.hook_scale`` at the last position; centred
  first for LayerNorm; times the norm weight, bias left out). Unlike ``writer`` it is linear: the heads'
  values and the other components' add up to the answer logit minus ``b_U`` and the norm bias.
- ``mover``: the attention probability from the last position to ``source_position`` (the answer's source
  token; ``project_attnProb.py``).
- decision (``decisionHeads_part2.py``): ``head_only_prob`` is the logit lens of the residual stream with only
  head h of its layer L written, ``P_only_h = softmax(unembed(ln_final(resid_pre[L] + z_h W_O + b_O)))[answer]``,
  and ``resid_mid_prob`` the same for ``resid_mid[L]`` (all heads), ``P_mid[L]``. :meth:`HeadRoles.decision`
  is the authors' normalised drop of batch means, ``(P_mid[L] - P_only_h) / P_mid[L]``: near 0 (or below)
  when the head alone gives the answer the probability its whole layer gives.

The relative depth of layer ``l`` is ``(l + 0.5) / n_layers``, the centre of the layer: ``>= 0.5`` exactly
for the second half of the network (the authors' "layer >= 16 of 32").

Per-example vectors (``answer``, ``source_position``) are annotated with the anonymous ``_batch`` axis: the
functions check them, and the token batch, themselves (:mod:`reasonlens.validation`) and raise
:class:`ReasonlensError` on a mismatch.

>>> relative_depth(3, 6)
0.5833333333333334
>>> head_mask(["L1H0", (0, 1)], n_layers=2, n_heads=2).tolist()
[[False, True], [True, False]]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.results import LabelledTensor
from reasonlens.runtime import batch_slices, lens_logits, run_padded, saving_hooks
from reasonlens.validation import check_per_example, check_tokens, load_saved

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

ROLES: tuple[str, ...] = ("writer", "direct_logit", "mover", "decision")
_HEAD_LABEL = re.compile(r"L(\d+)H(\d+)")


def relative_depth(layer: int, n_layers: int) -> float:
    """``(layer + 0.5) / n_layers``: the centre of ``layer`` as a fraction of the network's depth."""
    if not 0 <= layer < n_layers:
        raise ReasonlensError(f"layer {layer} is out of range for a model with {n_layers} layers (0..{n_layers - 1})")
    return (layer + 0.5) / n_layers


def head_mask(heads: Sequence[str | tuple[int, int]], n_layers: int, n_heads: int) -> Bool[Tensor, "layer head"]:
    """A ``[layer, head]`` mask that is True at ``heads`` (labels like ``"L3H1"`` or ``(layer, head)`` pairs)."""
    mask = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    for item in heads:
        if isinstance(item, str):
            match = _HEAD_LABEL.fullmatch(item)
            if match is None:
                raise ReasonlensError(f"head label {item!r} is not of the form 'L<layer>H<head>', e.g. 'L3H1'")
            layer, head = int(match[1]), int(match[2])
        elif (isinstance(item, (tuple, list)) and len(item) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            layer, head = item
        else:
            raise ReasonlensError(f"head {item!r} is neither a label like 'L3H1' nor a (layer, head) pair of integers")
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ReasonlensError(f"head {item!r} is outside the model's {n_layers} layers x {n_heads} heads; "
                                  f"use layers 0..{n_layers - 1} and heads 0..{n_heads - 1}")
        mask[layer, head] = True
    return mask


# ----------------------------------------------------------------------------------------------------------
# Shared machinery (also used by reasonlens.patching.circuit and reasonlens.patching.flow)


def head_outputs(model: TransformerBridge, z: Float[Tensor, "*batch layer head d_head"]
                  ) -> Float[Tensor, "*batch layer head d_model"]:
    """``z_h W_O`` of every head (no output bias)."""
    return torch.einsum("...lhd,lhdm->...lhm", z, model.W_O.to(z.device, z.dtype))


def _logit_lens_probs(model: TransformerBridge, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch vocab"]:
    """The logit lens of ``x`` as probabilities (:func:`reasonlens.runtime.lens_logits`)."""
    return torch.softmax(lens_logits(model, x), dim=-1)


def _frozen_final_norm(model: TransformerBridge, x: Float[Tensor, "*batch d_model"],
                       scale: Float[Tensor, "*#batch 1"]) -> Float[Tensor, "*batch d_model"]:
    """The final norm as a linear map at a fixed ``scale``: centred for LayerNorm, divided by ``scale``, times
    the norm weight (no bias)."""
    norm = model.ln_final
    if not norm.uses_rms_norm:
        x = x - x.mean(-1, keepdim=True)
    x = x / scale
    weight = getattr(norm, "weight", None)  # param-free (folded) norms have none
    if weight is not None:
        x = x * ((1 + weight) if norm.uses_weight_offset else weight)
    return x


def _at(values: Float[Tensor, " batch *rest vocab"], ids: Int[Tensor, " batch"]) -> Float[Tensor, " batch *rest"]:
    """``values[b, ..., ids[b]]`` for every row ``b``."""
    index = ids.view(-1, *([1] * (values.ndim - 1))).expand(*values.shape[:-1], 1)
    return values.gather(-1, index)[..., 0]


def _grid_labels(n_layers: int, n_heads: int) -> dict[str, list[str]]:
    return {"layer": [f"L{l}" for l in range(n_layers)], "head": [f"H{h}" for h in range(n_heads)]}


# ----------------------------------------------------------------------------------------------------------
# Head roles


@dataclass
class HeadRoles:
    """Per-example head role scores ``[example, layer, head]`` (``resid_mid_prob``: ``[example, layer]``).

    ``writer``, ``direct_logit``, ``mover`` and ``head_only_prob`` / ``resid_mid_prob`` are defined in the
    module docstring; :meth:`decision` combines the last two as the authors do.
    """

    writer: LabelledTensor
    direct_logit: LabelledTensor
    mover: LabelledTensor
    head_only_prob: LabelledTensor
    resid_mid_prob: LabelledTensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.writer.values.shape[1]

    @property
    def n_heads(self) -> int:
        return self.writer.values.shape[2]

    def decision(self) -> LabelledTensor:
        """``(P_mid[L] - P_only_h) / P_mid[L]`` of batch means, ``[layer, head]`` (the authors' normalised drop)."""
        mid = self.resid_mid_prob.mean()[:, None]
        return LabelledTensor((mid - self.head_only_prob.mean()) / mid, axes=("layer", "head"),
                              labels=_grid_labels(self.n_layers, self.n_heads), meta={**self.meta, "role": "decision"})

    def scores(self, role: str) -> Float[Tensor, "layer head"]:
        """Mean score of ``role`` (one of :data:`ROLES`) per head."""
        if role not in ROLES:
            raise ReasonlensError(f"unknown head role {role!r}; use one of {ROLES}")
        return self.decision().values if role == "decision" else getattr(self, role).mean()

    def top_heads(self, role: str = "writer", k: int = 4) -> list[str]:
        """The ``k`` heads with the highest mean ``role`` score (for ``"decision"``: the lowest drop, i.e. the
        heads that alone keep most of their layer's probability of the answer), best first, as ``"L3H1"``."""
        scores = self.scores(role).flatten()
        order = torch.sort(scores if role == "decision" else -scores, stable=True).indices[:k].tolist()
        return [f"L{i // self.n_heads}H{i % self.n_heads}" for i in order]

    def writer_share_late(self, top: int = 4, threshold: float = 0.5) -> float:
        """Share of answer-writer occurrences at relative depth ``>= threshold``.

        The writers of an example are its ``top`` heads by writer score (``top=4`` is the tracer's l = 4, as
        in the authors' depth-0 counts); the share is over all (example, writer) occurrences.
        """
        if not 1 <= top <= self.n_layers * self.n_heads:
            raise ReasonlensError(f"top must be in 1..{self.n_layers * self.n_heads}, got {top}")
        values = self.writer.values.flatten(1)
        layers = values.topk(top, dim=1).indices // self.n_heads
        depth = (layers.double() + 0.5) / self.n_layers
        return float((depth >= threshold).double().mean())

    def to_dataframe(self) -> pd.DataFrame:
        """One row per head: its label, layer, relative depth and mean score in every role."""
        import pandas as pd

        columns = {role: self.scores(role).flatten().tolist() for role in ROLES}
        heads = [(l, h) for l in range(self.n_layers) for h in range(self.n_heads)]
        return pd.DataFrame({"head": [f"L{l}H{h}" for l, h in heads], "layer": [l for l, _ in heads],
                             "relative_depth": [relative_depth(l, self.n_layers) for l, _ in heads], **columns})

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a ``.pt`` file); :meth:`load` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"class": type(self).__name__, "meta": self.meta,
                    **{name: getattr(self, name).to_dict() for name in
                       ("writer", "direct_logit", "mover", "head_only_prob", "resid_mid_prob")}}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HeadRoles:
        """Read a file written by :meth:`save`."""
        names = ("writer", "direct_logit", "mover", "head_only_prob", "resid_mid_prob")
        data = load_saved(path, cls.__name__, (*names, "meta"), expect_class=cls.__name__)
        return cls(**{name: LabelledTensor.from_dict(data[name]) for name in names}, meta=data["meta"])


def _role_selects(n_layers: int) -> dict[str, Callable[[Tensor], Tensor]]:
    """Last-position slices of what the role scores read."""
    selects: dict[str, Callable[[Tensor], Tensor]] = {}
    for l in range(n_layers):
        selects[f"blocks.{l}.attn.hook_z"] = lambda a: a[:, -1]  # [batch, head, d_head]
        selects[f"blocks.{l}.attn.hook_pattern"] = lambda a: a[:, :, -1]  # [batch, head, key]
        selects[f"blocks.{l}.hook_resid_pre"] = lambda a: a[:, -1]
        selects[f"blocks.{l}.hook_resid_mid"] = lambda a: a[:, -1]
    selects["ln_final.hook_scale"] = lambda a: a[:, -1]  # [batch, 1]
    return selects


def head_roles(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
               answer: Int[Tensor, " _batch"], source_position: Int[Tensor, " _batch"], *, batch_size: int = 32,
               progress: bool = False) -> HeadRoles:
    """Writer, direct-logit, mover and decision scores of every head (see the module docstring), one forward
    pass per ``batch_size`` prompts.

    ``tokens`` / ``attention_mask``: a left-padded ``[batch, pos]`` batch; ``answer``: the token expected after
    the last position; ``source_position``: the (padded) position of the answer's source token (one per prompt;
    all checked by :mod:`reasonlens.validation`).
    """
    from tqdm.auto import tqdm

    tokens, attention_mask = check_tokens(model, tokens, attention_mask)
    answer = check_per_example(model, answer, "answer", tokens.shape[0])
    source_position = check_per_example(model, source_position, "source_position", tokens.shape[0], kind="position")
    n, width = tokens.shape
    real = attention_mask.bool()
    bad = [i for i, s in enumerate(source_position.tolist()) if not (0 <= s < width and real[i, s])]
    if bad:
        raise ReasonlensError(f"source_position of prompt {bad[0]} ({int(source_position[bad[0]])}) is not a real "
                              f"token position of the padded batch (width {width}); give padded positions")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    device = model.cfg.device
    biases = [model.blocks[l].attn.b_O for l in range(n_layers)]
    selects = _role_selects(n_layers)
    parts: dict[str, list[Tensor]] = {name: [] for name in
                                      ("writer", "direct_logit", "mover", "head_only_prob", "resid_mid_prob")}
    for rows in tqdm(batch_slices(n, batch_size), desc="head roles", unit="batch", disable=not progress):
        store: dict[str, Tensor] = {}
        run_padded(model, tokens[rows], attention_mask[rows], saving_hooks(store, selects))
        ans, src = answer[rows].to(device), source_position[rows].to(device)
        with torch.no_grad():
            z = torch.stack([store[f"blocks.{l}.attn.hook_z"] for l in range(n_layers)], dim=1)
            head_out = head_outputs(model, z)  # [batch, layer, head, d_model]
            frozen = _frozen_final_norm(model, head_out, store["ln_final.hook_scale"][:, None, None])
            writer, only, mid, mover = [], [], [], []
            for l in range(n_layers):
                writer.append(_at(_logit_lens_probs(model, head_out[:, l]), ans))
                resid_h = store[f"blocks.{l}.hook_resid_pre"][:, None] + head_out[:, l]
                if biases[l] is not None:
                    resid_h = resid_h + biases[l]
                only.append(_at(_logit_lens_probs(model, resid_h), ans))
                mid.append(_at(_logit_lens_probs(model, store[f"blocks.{l}.hook_resid_mid"]), ans))
                pattern = store[f"blocks.{l}.attn.hook_pattern"]  # [batch, head, key]
                mover.append(pattern.gather(2, src.view(-1, 1, 1).expand(-1, n_heads, 1))[..., 0])
            parts["writer"].append(torch.stack(writer, 1))
            parts["direct_logit"].append(torch.einsum("blhm,mb->blh", frozen, model.W_U[:, ans]))
            parts["mover"].append(torch.stack(mover, 1))
            parts["head_only_prob"].append(torch.stack(only, 1))
            parts["resid_mid_prob"].append(torch.stack(mid, 1))
    meta = {"model": str(model.cfg.model_name), "n_examples": n}
    grid = _grid_labels(n_layers, n_heads)
    values = {name: torch.cat(chunks).float().cpu() for name, chunks in parts.items()}
    return HeadRoles(
        **{name: LabelledTensor(values[name], axes=("example", "layer", "head"), labels=grid,
                                meta={**meta, "role": name})
           for name in ("writer", "direct_logit", "mover", "head_only_prob")},
        resid_mid_prob=LabelledTensor(values["resid_mid_prob"], axes=("example", "layer"),
                                      labels={"layer": grid["layer"]}, meta={**meta, "role": "resid_mid_prob"}),
        meta=meta)

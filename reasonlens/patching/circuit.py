"""Circuit sufficiency by mean ablation (Dutta et al., TMLR 2024).

A *circuit* is a set of kept heads, a ``[layer, head]`` mask. The circuit model replaces the output ``z`` of
every other head by its mean over a reference set (the authors use false-ontology prompts) at the same
position; its *agreement* is the fraction of prompts whose argmax next token at the last position equals the
full model's.

- :func:`mean_head_activations`: the per-position mean ``z`` of every head, aligned from the right (the last
  position of every prompt is position -1), as :class:`HeadMeans`.
- :func:`circuit_logits`, :func:`circuit_matches`, :func:`circuit_agreement`: run circuits. Many circuits
  share one forward: each row of a batch carries its own keep mask.
- :func:`circuit_curve`: agreement as the circuit grows by the top-k heads of a score, the smallest circuit
  reaching 0.9 agreement, and the authors' band-around-the-mode selection (:func:`band_masks`).

>>> import torch
>>> scores = torch.tensor([[0.0, 0.1, 0.1, 0.2], [0.1, 0.9, 0.0, -0.8]])
>>> band_masks(scores, max_half_width=1).sum((1, 2)).tolist()
[8, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.patching.engine import reference_means
from reasonlens.patching.heads import head_mask
from reasonlens.results import LabelledTensor
from reasonlens.runtime import FwdHook, Intervention, batch_slices, run_padded, site_hook
from reasonlens.validation import check_finite, check_int, check_int_list, check_tokens, load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

TARGET_AGREEMENT = 0.9  # the agreement the authors' circuits aim for


@dataclass
class HeadMeans:
    """Mean ``z`` of every head over a reference set.

    ``per_position[:, p]`` is the mean over the reference rows whose position ``p`` is a real token, with
    positions aligned from the right (``p = -1`` is every prompt's last token); a position no reference row
    reaches holds ``overall``, the mean over all real positions of all rows.
    """

    per_position: Float[Tensor, "layer pos head d_head"]
    overall: Float[Tensor, "layer head d_head"]

    def check(self, model: TransformerBridge) -> None:
        """Raise :class:`ReasonlensError` unless these are means of ``model``'s heads."""
        want = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
        got = (self.per_position.shape[0], *self.per_position.shape[2:])
        if got != want or tuple(self.overall.shape) != want:
            raise ReasonlensError(f"means are for [layer, head, d_head] = {got}, but the model has {want}; compute them "
                                  "with mean_head_activations on this model")

    def aligned(self, n_pos: int) -> Float[Tensor, "layer n_pos head d_head"]:
        """Means for a left-padded batch of ``n_pos`` positions, aligned from the right; positions left of the
        reference's longest prompt get ``overall``."""
        have = self.per_position.shape[1]
        if n_pos <= have:
            return self.per_position[:, have - n_pos:]
        extra = self.overall[:, None].expand(-1, n_pos - have, -1, -1)
        return torch.cat([extra, self.per_position], dim=1)


def mean_head_activations(model: TransformerBridge, ref_tokens: Int[Tensor, "ref ref_pos"],
                          ref_mask: Int[Tensor, "ref ref_pos"], *, batch_size: int = 32,
                          progress: bool = False) -> HeadMeans:
    """The mean ``z`` of every head over a left-padded ``[ref, ref_pos]`` reference batch (see
    :class:`HeadMeans`)."""
    ref_tokens, ref_mask = check_tokens(model, ref_tokens, ref_mask, name="reference tokens")
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    means = reference_means(model, names, ref_tokens, ref_mask, batch_size, progress=progress)
    return HeadMeans(per_position=torch.stack([means[n][0] for n in names]).float(),
                     overall=torch.stack([means[n][1] for n in names]).float())


def _check_keeps(model: TransformerBridge, keeps: Tensor) -> None:
    want = (model.cfg.n_layers, model.cfg.n_heads)
    if tuple(keeps.shape[-2:]) != want or keeps.dtype != torch.bool:
        raise ReasonlensError(f"a keep mask must be a bool [layer, head] = {want} tensor, got {keeps.dtype} of shape "
                              f"{tuple(keeps.shape)}; build one with reasonlens.patching.heads.head_mask")


def mean_ablation_hooks(keep_rows: Bool[Tensor, "row layer head"], means: HeadMeans, n_pos: int,
                        device: str | torch.device = "cpu") -> list[FwdHook]:
    """``hook_z`` hooks for a batch of ``row`` x ``n_pos`` tokens whose row ``r`` keeps the heads of
    ``keep_rows[r]`` and replaces every other head's ``z`` by its right-aligned mean (layers where every row
    keeps every head get no hook)."""
    mean = means.aligned(n_pos).to(device)
    return [Intervention(site_hook("z", l), "set", mean[l], mask=~keep_rows[:, l, None, :, None].to(device)).as_hook()
            for l in range(keep_rows.shape[1]) if not bool(keep_rows[:, l].all())]


def _last_logits(model: TransformerBridge, tokens: Tensor, attention_mask: Tensor, keep_rows: Tensor | None,
                 means: HeadMeans | None) -> Tensor:
    hooks = [] if keep_rows is None else mean_ablation_hooks(keep_rows, means, tokens.shape[1], model.cfg.device)
    return run_padded(model, tokens, attention_mask, hooks, last_only=True)[:, -1]


def circuit_logits(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                   keep: Bool[Tensor, "layer head"], means: HeadMeans, *,
                   batch_size: int = 32) -> Float[Tensor, "batch vocab"]:
    """Last-position logits of the circuit model that keeps the heads of ``keep`` (the others mean-ablated), for
    a left-padded ``[batch, pos]`` batch."""
    tokens, attention_mask = check_tokens(model, tokens, attention_mask)
    _check_keeps(model, keep)
    means.check(model)
    out = [_last_logits(model, tokens[rows], attention_mask[rows], keep.expand(rows.stop - rows.start, -1, -1),
                        means) for rows in batch_slices(tokens.shape[0], batch_size)]
    return torch.cat(out).cpu()


def circuit_matches(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                    attention_mask: Int[Tensor, "batch pos"], keeps: Bool[Tensor, "circuit layer head"],
                    means: HeadMeans, *, batch_size: int = 32, progress: bool = False) -> Bool[Tensor, "circuit batch"]:
    """Whether each circuit's argmax at the last position equals the full model's, for every prompt.

    The (circuit, prompt) rows are packed ``batch_size`` to a forward pass, each row with its own keep mask.
    """
    from tqdm.auto import tqdm

    tokens, attention_mask = check_tokens(model, tokens, attention_mask)
    if keeps.ndim != 3 or keeps.shape[0] == 0:
        raise ReasonlensError(f"keeps must be a non-empty [circuit, layer, head] tensor, got shape {tuple(keeps.shape)}")
    _check_keeps(model, keeps)
    means.check(model)
    n = tokens.shape[0]
    full = torch.cat([_last_logits(model, tokens[rows], attention_mask[rows], None, None).argmax(-1).cpu()
                      for rows in batch_slices(n, batch_size)])
    circuit = torch.arange(keeps.shape[0]).repeat_interleave(n)
    example = torch.arange(n).repeat(keeps.shape[0])
    matches = []
    for rows in tqdm(batch_slices(len(example), batch_size), desc="circuits", unit="batch", disable=not progress):
        ex = example[rows]
        predicted = _last_logits(model, tokens[ex], attention_mask[ex], keeps[circuit[rows]], means).argmax(-1)
        matches.append(predicted.cpu() == full[ex])
    return torch.cat(matches).view(keeps.shape[0], n)


def circuit_agreement(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                      attention_mask: Int[Tensor, "batch pos"], keep: Bool[Tensor, "layer head"], means: HeadMeans, *,
                      batch_size: int = 32) -> float:
    """Fraction of prompts whose circuit argmax equals the full model's (per prompt: :func:`circuit_matches`)."""
    return float(circuit_matches(model, tokens, attention_mask, keep[None], means,
                                 batch_size=batch_size)[0].double().mean())


def band_masks(scores: Float[Tensor, "layer head"], max_half_width: int = 7) -> Bool[Tensor, "band layer head"]:
    """The authors' circuits ``i = 0..max_half_width``: keep the heads whose score lies outside a band around
    the mode of the scores' histogram.

    As in ``informationFlow.py``: ``int(range / w)`` bins of Freedman-Diaconis width
    ``w = 2 IQR / n^(1/3)`` (at least one bin); the mode is the fullest bin ``m``; band ``i`` is
    ``[edge[max(m - i, 0)], edge[min(m + i, n_bins - 1)]]`` (``edge[j]`` the left edge of bin ``j``, so the
    band has half-width ``i`` bins around the mode bin's left edge); the circuit keeps the scores strictly
    outside it. The bins scale with the scores, so any positive affine normalisation gives the same circuits.
    """
    check_int(max_half_width, "max_half_width", low=0)
    data = scores.detach().double().flatten().cpu().numpy()
    if not np.isfinite(data).all():
        raise ReasonlensError("scores hold NaN or infinite values; pass finite head scores")
    span = data.max() - data.min()
    width = 2 * (np.percentile(data, 75) - np.percentile(data, 25)) / len(data) ** (1 / 3)
    n_bins = max(1, int(span / width)) if width > 0 else 1
    counts, edges = np.histogram(data, bins=n_bins)
    mode = int(np.argmax(counts))
    masks = []
    for i in range(max_half_width + 1):
        low, high = edges[max(mode - i, 0)], edges[min(mode + i, n_bins - 1)]
        masks.append(torch.from_numpy((data < low) | (data > high)).view(scores.shape))
    return torch.stack(masks)


@dataclass
class BandSelection:
    """The band-around-the-mode circuit whose agreement is closest to 0.9 (first on ties).

    ``agreements[i]`` is the agreement of band half-width ``i``; ``keep`` the chosen circuit.
    """

    half_width: int
    keep: Bool[Tensor, "layer head"]
    agreements: list[float]

    @property
    def size(self) -> int:
        return int(self.keep.sum())

    @property
    def agreement(self) -> float:
        return self.agreements[self.half_width]


@dataclass
class CircuitResult:
    """Agreement of circuits grown by a head ranking, and the band selection.

    ``matches[e, s]`` is 1 where prompt ``e``'s argmax under the circuit of the top ``sizes[s]`` heads of
    ``ranking`` equals the full model's (``matches.mean()``: agreement per size, ``stderr()`` its error).
    """

    sizes: list[int]
    matches: LabelledTensor
    ranking: list[str]
    n_layers: int
    n_heads: int
    band: BandSelection
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def agreements(self) -> list[float]:
        return self.matches.mean().tolist()

    @property
    def head_fraction_90(self) -> float | None:
        """Fraction of all heads in the smallest circuit of the curve with agreement >= 0.9 (None if none)."""
        reached = [k for k, a in zip(self.sizes, self.agreements) if a >= TARGET_AGREEMENT - 1e-9]
        return min(reached) / (self.n_layers * self.n_heads) if reached else None

    def keep(self, size: int) -> Bool[Tensor, "layer head"]:
        """The circuit of the top ``size`` heads of the ranking."""
        check_int(size, "size", low=0, high=len(self.ranking))
        return head_mask(self.ranking[:size], self.n_layers, self.n_heads)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a ``.pt`` file); :meth:`load` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"class": type(self).__name__, "sizes": self.sizes, "matches": self.matches.to_dict(),
                    "ranking": self.ranking, "n_layers": self.n_layers, "n_heads": self.n_heads,
                    "band": {"half_width": self.band.half_width, "keep": self.band.keep.cpu(),
                             "agreements": self.band.agreements}, "meta": self.meta}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CircuitResult:
        """Read a file written by :meth:`save`."""
        data = load_saved(path, cls.__name__, ("sizes", "matches", "ranking", "n_layers", "n_heads", "band", "meta"),
                          expect_class=cls.__name__)
        return cls(sizes=data["sizes"], matches=LabelledTensor.from_dict(data["matches"]), ranking=data["ranking"],
                   n_layers=data["n_layers"], n_heads=data["n_heads"], band=BandSelection(**data["band"]),
                   meta=data["meta"])


def circuit_curve(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                  scores: Float[Tensor, "layer head"], means: HeadMeans, sizes: Sequence[int] | None = None, *,
                  max_half_width: int = 7, batch_size: int = 32, progress: bool = False) -> CircuitResult:
    """Agreement of the circuits of the top-k heads by ``scores`` (ties: lower layer, then head, first) for
    every k in ``sizes`` (default: every k for up to 100 heads in all, else steps of one hundredth of
    them, as the authors' steps of 10 of 1,024, with all heads last), plus the band-around-the-mode selection of :func:`band_masks` on the same scores. All
    circuits run packed into shared forward passes."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    total = n_layers * n_heads
    if tuple(scores.shape) != (n_layers, n_heads):
        raise ReasonlensError(f"scores have shape {tuple(scores.shape)} but the model has [layer, head] = "
                              f"{(n_layers, n_heads)}")
    check_finite(scores, "scores", hint="pass finite head scores")
    if sizes is None:
        sizes = sorted(set(range(0, total + 1, max(1, total // 100))) | {total})
    sizes = check_int_list(sizes, "sizes", example=f"[0, 4, {total}]")
    if any(not 0 <= k <= total for k in sizes):
        raise ReasonlensError(f"sizes must be a non-empty list of circuit sizes in 0..{total}, got {sizes}")
    bands = band_masks(scores, max_half_width)
    order = torch.sort(-scores.detach().double().flatten().cpu(), stable=True).indices
    ranking = [f"L{i // n_heads}H{i % n_heads}" for i in order.tolist()]
    curve = torch.stack([head_mask(ranking[:k], n_layers, n_heads) for k in sizes])
    matches = circuit_matches(model, tokens, attention_mask, torch.cat([curve, bands]), means,
                              batch_size=batch_size, progress=progress)
    band_agreements = matches[len(sizes):].double().mean(1).tolist()
    best = min(range(len(band_agreements)), key=lambda i: abs(band_agreements[i] - TARGET_AGREEMENT))
    meta = {"model": str(model.cfg.model_name), "n_examples": int(tokens.shape[0])}
    return CircuitResult(
        sizes=sizes, ranking=ranking, n_layers=n_layers, n_heads=n_heads, meta=meta,
        matches=LabelledTensor(matches[:len(sizes)].T.float(), axes=("example", "size"),
                               labels={"size": [f"k={k}" for k in sizes]}, meta={**meta, "metric": "argmax agreement"}),
        band=BandSelection(half_width=best, keep=bands[best], agreements=band_agreements))

"""The path integral behind IPG, raw policy gradient and plain integrated gradients, batched.

For each sequence ``s`` (prompt + continuation ``a_1..a_T``), weight ``w_s`` and component layer ``l``, the
objective is ``F_s = w_s * sum_t log pi(a_t | s_t)`` over the target tokens (all of the continuation, or its
last ``n_target`` tokens). The activation ``h`` at layer ``l`` is replaced, at the positions that predict
``a_1..a_T``, by ``h' + alpha (h - h')`` and the attribution of unit ``i`` is the right Riemann sum

    A_s[l, i] = sum_t (h - h')_{t,i} * (1/q) sum_{k=1..q} dF_s/dh_{t,i} (alpha = k/q),

which for heads is taken with respect to a gate on ``z`` (baseline 0, actual 1). Each layer has its own path;
``sum_i A_s[l, i]`` approaches ``F_s(alpha=1) - F_s(alpha=0)`` as ``q`` grows (completeness). The right Riemann
sum (the paper's) errs by O(1/q); ``rule="midpoint"`` (``alpha = (k - 1/2) / q``) and ``rule="trapezoid"``
(``alpha = k / q`` for ``k = 0..q``, the two ends weighted 1/2) by O(1/q^2).

Rows (sequence x step) go through the model in chunks of ``batch_size``: one forward and one backward per
chunk. The prompt is causal context the interpolation cannot change, so each distinct prompt's keys and values
are computed once per run without gradients and every row runs only its continuation on top of them (when the
model's cache is a plain per-layer one; otherwise rows run whole). The last output token predicts nothing and
is not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.attribution.components import HOOKS, n_units
from reasonlens.errors import ReasonlensError
from reasonlens.runtime import (
    REST_OF_BLOCK_BASE,
    BlockEntry,
    Intervention,
    KVPrefix,
    can_enter_at_block,
    can_finish_block,
    has_plain_kv_cache,
    left_pad,
    pad_token_id,
    rest_of_block,
    run_continuations,
    saving_hooks,
    site_hook,
)
from reasonlens.validation import check_context, check_float, check_int, check_int_list, check_token_lists, is_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

BASELINES: tuple[str, ...] = ("zero", "mean", "noise")
RULES: tuple[str, ...] = ("right", "midpoint", "trapezoid")


def quadrature(rule: str, steps: int) -> list[tuple[float, float]]:
    """``(alpha, weight)`` points of ``rule`` with ``steps`` intervals on [0, 1]; the weights sum to 1.

    >>> quadrature("right", 2), quadrature("midpoint", 2), quadrature("trapezoid", 2)
    ([(0.5, 0.5), (1.0, 0.5)], [(0.25, 0.5), (0.75, 0.5)], [(0.0, 0.25), (0.5, 0.5), (1.0, 0.25)])
    """
    if not isinstance(rule, str) or rule not in RULES:
        raise ReasonlensError(f"unknown integration rule {rule!r}; use one of {', '.join(RULES)}")
    if not is_int(steps) or steps < 1:
        raise ReasonlensError(f"steps (q) must be an integer >= 1, got {steps!r}")
    if rule == "right":
        return [(k / steps, 1 / steps) for k in range(1, steps + 1)]
    if rule == "midpoint":
        return [((k - 0.5) / steps, 1 / steps) for k in range(1, steps + 1)]
    return [(k / steps, (0.5 if k in (0, steps) else 1) / steps) for k in range(steps + 1)]


@no_type_check  # checked by __post_init__ and check() (reasonlens.validation), under the test run's type checks too
@dataclass
class PathSequences:
    """Sequences to attribute: ``prompt_ids[s] + output_ids[s]``, objective weight ``weights[s]``; the
    objective reads the log-probabilities of the last ``n_target[s]`` output tokens (None, or more than there
    are: all of them)."""

    prompt_ids: list[list[int]]
    output_ids: list[list[int]]
    weights: list[float]
    n_target: list[int | None]

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        if not (len(self.output_ids) == len(self.weights) == len(self.n_target) == n):
            raise ReasonlensError("prompt_ids, output_ids, weights and n_target must have one entry per sequence")
        for s in range(n):
            if len(self.prompt_ids[s]) < 1 or len(self.output_ids[s]) < 1:
                raise ReasonlensError(f"sequence {s} needs at least one prompt token and one output token")
            check_float(self.weights[s], f"weights[{s}]")
            if self.n_target[s] is not None and not (is_int(self.n_target[s]) and self.n_target[s] >= 1):
                raise ReasonlensError(f"n_target[{s}] must be None (all output tokens) or an integer >= 1 (the last "
                                      f"n_target output tokens), got {self.n_target[s]!r}")

    def check(self, model: TransformerBridge) -> None:
        """Raise for token ids outside ``model``'s vocabulary or a sequence longer than its context."""
        check_token_lists(model, self.prompt_ids, name="prompt_ids", item="prompt")
        check_token_lists(model, self.output_ids, name="output_ids", item="output")
        check_context(model, [len(p) + len(o) for p, o in zip(self.prompt_ids, self.output_ids)], item="sequence",
                      fix="each sequence is a prompt and its continuation (for integrated gradients the gold chain "
                          "of thought and answer): use shorter prompts or chains, or a model with a longer context")


@dataclass
class PathResult:
    """``attributions[s, layer, unit]`` and the objective at both ends of each layer's path:
    ``objective_end[s]`` (alpha = 1, the model as it is) and ``objective_start[s, layer]`` (alpha = 0)."""

    attributions: Float[Tensor, "seq layer unit"]
    objective_end: Float[Tensor, " seq"]
    objective_start: Float[Tensor, "seq layer"]


def path_attributions(model: TransformerBridge, component: str, layers: Sequence[int], seqs: PathSequences, *,
                      steps: int = 10, rule: str = "right", baseline: str = "zero", batch_size: int = 32,
                      seed: int = 0,
                      progress: bool = False) -> PathResult:
    """Attributions of ``component`` components at ``layers`` for ``seqs`` (see the module docstring)."""
    from tqdm.auto import tqdm

    points = quadrature(rule, steps)
    if not isinstance(baseline, str) or baseline not in BASELINES:
        raise ReasonlensError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}")
    if component == "head" and baseline != "zero":
        raise ReasonlensError("head attributions use a gate on z whose baseline is 0; use baseline='zero'")
    check_int(batch_size, "batch_size", low=1)
    check_int(seed, "seed")
    layers = check_int_list(layers, "layers", low=0, high=model.cfg.n_layers - 1, example="[3, 4]")
    n_seq, units = len(seqs.prompt_ids), n_units(model, component)
    if n_seq == 0:
        raise ReasonlensError("no sequences to attribute; pass at least one prompt with its continuation")
    seqs.check(model)
    names = [HOOKS[component].format(l=l) for l in layers]
    runner = _Runner(model, seqs, batch_size)
    width = max(len(o) for o in seqs.output_ids)

    # The model as it is: objective at alpha = 1, the activations to interpolate and, where the stack can be entered
    # mid-way, what the rows need to enter it (the blocks before the entry are the same at every alpha).
    clean: dict[str, Tensor] = {n: torch.zeros(n_seq, width, units) for n in names} if component != "head" else {}
    # A resid path overwrites block l's output, so it enters at block l + 1 with the interpolated residual; a neuron
    # or head path too, through the rest of block l computed from the interpolated activation (rest_of_block),
    # where the model allows; otherwise at block l with a hook. The last block is entered at l.
    site = {"neuron": "neuron", "head": "z"}.get(component)
    can_enter = can_enter_at_block(model)
    finishing = can_enter and site is not None and can_finish_block(model, site)
    entry_of = {l: l + 1 if (component == "resid" or finishing) and l + 1 < model.cfg.n_layers else l for l in layers}
    kept: list[str] = []  # per sequence, at the rows' columns
    for l, name in zip(layers, names) if can_enter else ():
        if entry_of[l] > l and component != "resid":  # the site's activation and what the rest of block l adds to
            kept += [name, site_hook(REST_OF_BLOCK_BASE[site], l)]
        elif entry_of[l] > 0:  # the residual entering the block
            kept.append(site_hook("resid_pre", entry_of[l]))
    kept = list(dict.fromkeys(kept))
    objective_end = torch.zeros(n_seq)
    # Rows of similar length share a chunk, so a chunk's right-padding stays short.
    by_length = sorted(range(n_seq), key=lambda s: (len(seqs.output_ids[s]), len(seqs.prompt_ids[s])))
    for chunk in _chunks(by_length, batch_size):
        store: dict[str, Tensor] = {}
        hooks = saving_hooks(store, dict.fromkeys([*clean, *kept]))
        with torch.no_grad():
            objective_end[chunk] = runner.objective(chunk, hooks).cpu()
        for n in clean:
            clean[n][chunk] = runner.interpolated_view(chunk, store[n]).float().cpu()
        for n in kept:
            runner.keep(n, chunk, store[n])
    starts = {n: _baseline(baseline, clean[n], runner.lengths, seed + i) for i, n in enumerate(clean)}

    attributions = torch.zeros(n_seq, len(layers), units)
    objective_start = torch.zeros(n_seq, len(layers))
    rows = [(s, k) for s in by_length for k in range(len(points))]
    bar = tqdm(total=len(layers) * len(rows), desc=f"{component} attributions", unit="row", disable=not progress)
    for li, name in enumerate(names):
        grad_sum = torch.zeros(n_seq, width, units) if component != "head" else torch.zeros(n_seq, units)
        for chunk in _chunks(rows, batch_size):
            seq_idx = [s for s, _ in chunk]
            alpha = torch.tensor([points[k][0] for _, k in chunk])
            grad = runner.gradient(seq_idx, entry_of[layers[li]], name, component, alpha, clean.get(name),
                                   starts.get(name), units)
            weight = torch.tensor([points[k][1] for _, k in chunk]).view(-1, *[1] * (grad.dim() - 1))
            summed = grad_sum if component == "head" else grad_sum[:, :grad.shape[1]]  # the chunk's columns
            summed.index_add_(0, torch.tensor(seq_idx), grad * weight)
            bar.update(len(chunk))
        if component == "head":
            attributions[:, li] = grad_sum
        else:
            attributions[:, li] = ((clean[name] - starts[name]) * grad_sum).sum(1)
        for chunk in _chunks(by_length, batch_size):  # objective at alpha = 0
            with torch.no_grad():
                objective_start[chunk, li] = runner.objective_at(chunk, entry_of[layers[li]], name, component,
                                                                 torch.zeros(len(chunk)), clean.get(name),
                                                                 starts.get(name), units).cpu()
    bar.close()
    return PathResult(attributions, objective_end, objective_start)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _baseline(baseline: str, clean: Tensor, lengths: Tensor, seed: int) -> Tensor:
    """``h'`` for every sequence and interpolated position ``[seq, width, unit]``."""
    if baseline == "zero":
        return torch.zeros_like(clean)
    if baseline == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(clean.shape, generator=generator)
    real = (torch.arange(clean.shape[1])[None, :] < lengths[:, None]).float()  # mean over real positions
    mean = (clean * real[..., None]).sum((0, 1)) / real.sum()
    return mean.expand_as(clean).clone()


class _Runner:
    """Runs rows of ``seqs``: the prompt (all but its last token) as a cached, gradient-free prefix where the
    model's cache allows, the rest (last prompt token + output) with hooks and gradients.

    The continuation part is right-padded, so interpolated position ``j`` (the state that predicts output token
    ``j``) sits at column ``offset[s] + j`` of every row (``offset`` is 0 with a cached prefix).
    """

    def __init__(self, model: TransformerBridge, seqs: PathSequences, batch_size: int):
        self.model, self.seqs = model, seqs
        self.device = model.cfg.device
        self.lengths = torch.tensor([len(o) for o in seqs.output_ids])
        self.pad_id = pad_token_id(model)
        self.cached_prefix = all(len(p) > 1 for p in seqs.prompt_ids) and has_plain_kv_cache(model)
        self.kept: dict[str, dict[int, Tensor]] = {}  # hook name -> sequence -> clean activation at the row's columns
        if self.cached_prefix:  # each distinct prompt's keys and values, once per run, one row each
            prompts = sorted({tuple(p[:-1]) for p in seqs.prompt_ids})
            self.prefixes = KVPrefix.concat([KVPrefix.run(model, *left_pad(chunk, self.pad_id)).cropped()
                                             for chunk in _chunks(prompts, batch_size)])
            self.prefix_row = {prompt: i for i, prompt in enumerate(prompts)}

    def offsets(self, seq_idx: list[int]) -> list[int]:
        """Column of each row's first interpolated position: 0 after a cached prefix, else prompt length - 1."""
        if self.cached_prefix:
            return [0] * len(seq_idx)
        return [len(self.seqs.prompt_ids[s]) - 1 for s in seq_idx]

    def _rows(self, seq_idx: list[int]) -> list[list[int]]:
        """The tokens each row runs: after a cached prefix, the last prompt token and every output token but the
        last (which predicts nothing); without one, the whole prompt and those output tokens."""
        seqs = self.seqs
        if self.cached_prefix:
            return [seqs.prompt_ids[s][-1:] + seqs.output_ids[s][:-1] for s in seq_idx]
        return [seqs.prompt_ids[s] + seqs.output_ids[s][:-1] for s in seq_idx]

    def keep(self, name: str, seq_idx: list[int], act: Tensor) -> None:
        """Keep the activation at hook ``name`` of a clean run of ``seq_idx``'s rows."""
        kept = self.kept.setdefault(name, {})
        for r, (s, row) in enumerate(zip(seq_idx, self._rows(seq_idx))):
            kept[s] = act[r, :len(row)].detach().cpu()

    def _kept(self, name: str, seq_idx: list[int]) -> Tensor:
        """The kept activation at ``name`` for ``seq_idx``'s rows, right-padded like them with zeros (padding
        columns are never read)."""
        rows = [self.kept[name][s] for s in seq_idx]
        out = rows[0].new_zeros(len(rows), max(len(r) for r in rows), *rows[0].shape[1:])
        for r, row in enumerate(rows):
            out[r, :len(row)] = row
        return out.to(self.device)

    def _entry(self, block: int, seq_idx: list[int]) -> BlockEntry | None:
        name = site_hook("resid_pre", block)
        return BlockEntry(block, self._kept(name, seq_idx)) if name in self.kept else None

    def _forward(self, seq_idx: list[int], hooks: list, entry: BlockEntry | None = None) -> Tensor:
        """Log-probabilities of the target tokens summed per row (:meth:`_rows`, read after the prompt's cached
        prefix where there is one), times the row's weight; with ``entry``, the rows enter the stack there."""
        seqs = self.seqs
        prefix = None
        if self.cached_prefix:
            prefix = self.prefixes.select([self.prefix_row[tuple(seqs.prompt_ids[s][:-1])] for s in seq_idx]).cropped()
        logits = run_continuations(self.model, prefix, self._rows(seq_idx), self.pad_id, fwd_hooks=hooks,
                                   entry=entry)
        logp = torch.log_softmax(logits.float(), -1)
        totals = []
        for r, (s, o) in enumerate(zip(seq_idx, self.offsets(seq_idx))):
            out_ids = torch.tensor(self.seqs.output_ids[s], device=logp.device)
            T = len(out_ids)
            picked = logp[r, o:o + T].gather(-1, out_ids[:, None])[:, 0]
            n_target = self.seqs.n_target[s]
            totals.append(self.seqs.weights[s] * (picked if n_target is None else picked[max(T - n_target, 0):]).sum())
        return torch.stack(totals)

    def objective(self, seq_idx: list[int], hooks: list) -> Tensor:
        return self._forward(seq_idx, hooks)

    def interpolated_view(self, seq_idx: list[int], act: Tensor) -> Tensor:
        """``act`` of a clean run of ``seq_idx`` at the interpolated positions, ``[row, width, unit]``."""
        width = int(self.lengths.max())
        out = torch.zeros(len(seq_idx), width, act.shape[-1], dtype=act.dtype, device=act.device)
        offsets = self.offsets(seq_idx)
        for r, s in enumerate(seq_idx):
            T = len(self.seqs.output_ids[s])
            out[r, :T] = act[r, offsets[r]:offsets[r] + T]
        return out

    def _interpolation(self, seq_idx, block, name, component, alpha, clean, start, units, leaf_grad: bool):
        """The interpolation at ``alpha``: hooks (the leaf written into the interpolated positions of each row, or
        gating the heads there), where the rows enter the stack (``block``, where a residual was kept), and the
        leaf the gradient is taken for. A path entering after its own block builds the entry residual from the
        leaf: a ``resid`` leaf is that residual; a neuron or head leaf goes through the rest of its block."""
        through_rest = name in self.kept  # the site's clean activation was kept: enter after its block
        entry = None if through_rest else self._entry(block, seq_idx)
        offsets = torch.tensor(self.offsets(seq_idx), device=self.device)[:, None]
        lengths = torch.tensor([len(self.seqs.output_ids[s]) for s in seq_idx], device=self.device)[:, None]
        cols = torch.arange(max(map(len, self._rows(seq_idx))), device=self.device)[None, :]
        inside = (cols >= offsets) & (cols < offsets + lengths)  # [row, pos]
        if component == "head":
            leaf = alpha[:, None].expand(-1, units).clone().to(self.device).requires_grad_(leaf_grad)
            gate = torch.where(inside[..., None], leaf[:, None, :], torch.ones((), device=self.device))
            if through_rest:
                z = self._kept(name, seq_idx)
                return [], self._after_block(block, "z", z * gate[..., None].to(z.dtype), seq_idx), leaf
            return [Intervention(name, "scale", gate[..., None]).as_hook()], entry, leaf
        idx, width = torch.tensor(seq_idx), int(lengths.max())  # the chunk's interpolated columns
        h, h0 = clean[idx, :width], start[idx, :width]
        leaf = (h0 + alpha[:, None, None] * (h - h0)).to(self.device).requires_grad_(leaf_grad)
        if self.cached_prefix:  # leaf column j is activation column j
            placed = leaf[:, :cols.shape[1]]
        else:  # leaf column j sits at activation column offset + j
            src_cols = (cols - offsets).clamp(0, leaf.shape[1] - 1)
            placed = leaf.gather(1, src_cols[..., None].expand(-1, -1, leaf.shape[-1]))
        if component == "resid" and entry is not None and name == site_hook("resid_post", entry.block - 1):
            resid = torch.where(inside[..., None], placed.to(entry.resid.dtype), entry.resid)
            return [], BlockEntry(entry.block, resid), leaf
        if through_rest:
            act = self._kept(name, seq_idx)
            act = torch.where(inside[..., None], placed.to(act.dtype), act)
            return [], self._after_block(block, "neuron", act, seq_idx), leaf
        return [Intervention(name, "set", placed, mask=inside[..., None]).as_hook()], entry, leaf

    def _after_block(self, block: int, site: str, act: Tensor, seq_idx: list[int]) -> BlockEntry:
        """Enter at ``block`` with the residual the rest of block ``block - 1`` makes from ``act`` at ``site``."""
        base = self._kept(site_hook(REST_OF_BLOCK_BASE[site], block - 1), seq_idx)
        return BlockEntry(block, rest_of_block(self.model, site, block - 1, act, base))

    def gradient(self, seq_idx, block, name, component, alpha, clean, start, units) -> Tensor:
        """``d objective / d leaf`` per row: ``[row, column, unit]`` over the chunk's longest continuation
        (``[row, unit]`` for head gates)."""
        hooks, entry, leaf = self._interpolation(seq_idx, block, name, component, alpha, clean, start, units, True)
        with torch.enable_grad():
            total = self._forward(seq_idx, hooks, entry)
            (grad,) = torch.autograd.grad(total.sum(), leaf)
        return grad.detach().float().cpu()

    def objective_at(self, seq_idx, block, name, component, alpha, clean, start, units) -> Tensor:
        hooks, entry, _ = self._interpolation(seq_idx, block, name, component, alpha, clean, start, units, False)
        return self._forward(seq_idx, hooks, entry)

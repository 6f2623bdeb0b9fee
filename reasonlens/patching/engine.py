"""One exact activation-patching engine: every site, cells by layer / position / span / head / neuron, batched.

A *cell* is one patch: a layer, a set of positions (one position, a token span such as a CoT step, or all
positions) and optionally one head or neuron. For every example and cell the engine runs the *target* prompt
with the *source* activation written into that cell and reads a metric at the last position:

- ``direction="denoise"``: target = corrupted prompt, source = clean activations (what restores behaviour);
- ``direction="noise"``: target = clean prompt, source = corrupted activations (what breaks it);
- ``source="mean"`` / ``"zero"`` replace the source by the mean over a reference set or by zeros.

``normalize="example"`` (the default) stores ``(m - m_corrupted) / (m_clean - m_corrupted)`` per example, so
the clean run scores 1 and the corrupted run 0; ``"batch"`` divides by the mean over examples of
``m_clean - m_corrupted`` instead (Dutta et al.'s ratio of batch means); ``"none"`` keeps the raw metric.

Every site is written where its name says (pinned to a hand-made edit of the plain Hugging Face model on Llama,
Qwen2, Gemma-2 and GPT-2 by ``tests/test_sites.py``). ``resid_mid`` is read at ``hook_resid_mid`` but written
as a residual edit, see :data:`DELTA_HOOKS`.

Speed comes from five exact shortcuts: many (example, cell) rows share one forward (packed along the batch,
at most ``batch_size`` rows); a cell whose source activation equals the target's own activation is a no-op
and takes the unpatched value without a forward (in a clean / corrupted pair every position before the
corrupted token is such a cell); the positions before a row's first changed, patched position are those of
the target run, so their keys and values come from its cache; a patch at block ``l`` leaves the blocks before
it unchanged, so a chunk of one layer's rows enters the stack at block ``l`` with the target run's residual
(:func:`reasonlens.runtime.enter_at_block`, where the model allows); and only the last position's logits are read.

>>> import torch
>>> from reasonlens.patching.engine import PatchConfig
>>> PatchConfig(site="z", positions="each").unit
'head'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, no_type_check

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.results import ConfigDict, LabelledTensor
from reasonlens.runtime import (
    HEAD_SITES,
    KV_SITES,
    SITES,
    BlockEntry,
    Intervention,
    KVPrefix,
    can_enter_at_block,
    gradient_taps,
    left_padded_positions,
    run_padded,
    saving_hooks,
    site_hook,
)
from reasonlens.validation import (
    check_int,
    check_int_list,
    check_per_example,
    check_spans,
    check_tokens,
    describe,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# Sites written by adding (source - target) to another hook. On the bridge ``hook_resid_mid`` is the input of
# the second norm (``ln2.hook_in``): a value written there reaches the MLP but not the skip connection.
# ``hook_attn_out`` feeds only the residual sum, so adding the difference there sets the mid-block residual.
DELTA_HOOKS: dict[str, str] = {"resid_mid": "blocks.{l}.hook_attn_out"}
UNIT_PREFIX: dict[str, str] = {"head": "H", "kv_head": "KV", "neuron": "N"}
NORMALIZATIONS = ("example", "batch", "none")

Metric = Callable[[Float[Tensor, "row vocab"], Int[Tensor, " row"]], Float[Tensor, " row"]]
Spans = Sequence[Sequence[tuple[int, int]]]


@no_type_check  # checked by check() below, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass
class PatchConfig(ConfigDict):
    """What to patch.

    ``site``: one of :data:`SITES`. ``layers``: layer indices (default all). ``positions``: ``"each"``
    (one cell per position), ``"all"`` (one cell patching every position) or ``"spans"`` (one cell per token
    span, spans given to :func:`patch`). ``units``: for head sites (``z q k v pattern``) the heads and for
    ``neuron`` the neurons to sweep, one cell each (default every head / neuron); ``None`` and a site without
    units patch the whole activation. ``direction``: ``"denoise"`` or ``"noise"``. ``source``: ``"prompt"``
    (the other prompt of each pair), ``"mean"`` (mean over a reference set) or ``"zero"``. ``normalize``:
    ``"example"``, ``"batch"`` or ``"none"`` (see the module docstring).

    Every field is checked when the config is made (and again by :func:`patch`): layers and units are lists of
    distinct non-negative integers, ``batch_size`` a positive integer.
    """

    site: str = "resid_pre"
    layers: Sequence[int] | None = None
    positions: Literal["each", "all", "spans"] = "each"
    units: Sequence[int] | Literal["each"] | None = "each"
    direction: Literal["denoise", "noise"] = "denoise"
    source: Literal["prompt", "mean", "zero"] = "prompt"
    normalize: Literal["example", "batch", "none"] = "example"
    batch_size: int = 128

    @property
    def unit(self) -> str | None:
        """``"head"``, ``"neuron"`` or ``None``: the kind of unit of the site's cells (``k`` / ``v`` of a
        grouped-query attention model sweep key/value heads, axis ``"kv_head"``: see :func:`unit_axis`)."""
        if self.units is None:
            return None
        return "head" if self.site in HEAD_SITES else "neuron" if self.site == "neuron" else None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`ReasonlensError` for a field of the wrong type or out of range (model-independent)."""
        _check_site_name(self.site)
        if not isinstance(self.positions, str) or self.positions not in ("each", "all", "spans"):
            raise ReasonlensError(f"positions must be 'each', 'all' or 'spans', not {self.positions!r}")
        if not isinstance(self.direction, str) or self.direction not in ("denoise", "noise"):
            raise ReasonlensError(f"direction must be 'denoise' or 'noise', not {self.direction!r}")
        if not isinstance(self.source, str) or self.source not in ("prompt", "mean", "zero"):
            raise ReasonlensError(f"source must be 'prompt', 'mean' or 'zero', not {self.source!r}")
        check_int(self.batch_size, "batch_size", low=1)
        if not isinstance(self.normalize, str) or self.normalize not in NORMALIZATIONS:
            raise ReasonlensError(f"normalize must be one of {NORMALIZATIONS}, not {self.normalize!r} (the former "
                                  "normalize=True is 'example', normalize=False is 'none')")
        check_int_list(self.layers, "layers", low=0, optional=True, example="[0, 2] (or None for every layer)")
        if isinstance(self.units, str):
            if self.units != "each":
                raise ReasonlensError(f"units must be 'each', None or a list of unit indices, not {self.units!r}")
        else:
            check_int_list(self.units, "units", low=0, optional=True,
                           example="[0, 3] (or 'each' for every unit, None for the whole activation)")


def _check_site_name(site: object) -> None:
    if not isinstance(site, str) or site not in SITES:
        raise ReasonlensError(f"unknown patching site {site!r}; valid sites: {sorted(SITES)}")


def n_kv_heads(model: TransformerBridge) -> int:
    """The number of key/value heads of ``model`` (its number of heads unless it uses grouped-query attention)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def unit_axis(model: TransformerBridge, config: PatchConfig) -> str | None:
    """The unit axis of ``config``'s cells on ``model``: ``"head"``, ``"kv_head"`` (``k`` / ``v`` under grouped-query
    attention, whose units are key/value heads), ``"neuron"`` or ``None``."""
    if config.unit == "head" and config.site in KV_SITES and n_kv_heads(model) < model.cfg.n_heads:
        return "kv_head"
    return config.unit


class PatchSweep(LabelledTensor):
    """Per-example patching values ``[example, layer, position|span, (head|kv_head|neuron)]`` with labels
    (``L0``, ``3`` or ``span 0``, ``H1`` / ``KV1`` / ``N7``); ``meta`` holds the config, the normalisation, the
    metric name and the per-example clean / corrupted metric values."""


# ---------------------------------------------------------------------------------------------------------- runs


def _cache_run(model: TransformerBridge, tokens, attention_mask, names: list[str], batch_size: int,
               keep_kv: bool = False, writes: Sequence[str] = ()):
    """Last-position logits, the activations at ``names`` (on CPU) and, with ``keep_kv``, the run's keys and
    values (None when the model's cache is not a plain per-layer one), in chunks of ``batch_size``. A hook of
    ``names`` or ``writes`` that does not fire (not wired on this architecture) is an error."""
    import functools

    device = model.cfg.device
    logits, acts, kv_chunks = [], {n: [] for n in names}, []
    kv_ok = keep_kv
    for start in range(0, tokens.shape[0], batch_size):
        store: dict[str, Tensor] = {}
        fired: set[str] = set()

        def mark(act, hook, name):
            fired.add(name)

        hooks = saving_hooks(store, dict.fromkeys(names, Tensor.cpu))
        hooks += [(n, functools.partial(mark, name=n)) for n in writes]
        mask = attention_mask[start:start + batch_size].to(device)
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            out, cache = model(tokens[start:start + batch_size].to(device), attention_mask=mask,
                               position_ids=left_padded_positions(mask), use_cache=True,
                               return_type="logits_and_cache")
        silent = [n for n in [*names, *writes] if n not in store and n not in fired]
        if silent:
            raise ReasonlensError(f"hook points {silent} exist on this model but never fire in a forward (not wired "
                                  "by TransformerLens on this architecture): patching them would change nothing")
        logits.append(out[:, -1].float().cpu())
        for n in names:
            acts[n].append(store[n])
        chunk_kv = KVPrefix.from_cache(cache, mask) if kv_ok else None
        kv_ok = chunk_kv is not None
        if kv_ok:
            kv_chunks.append(chunk_kv.to("cpu"))
    kv = KVPrefix.concat(kv_chunks) if kv_ok else None
    return torch.cat(logits), {n: torch.cat(v) for n, v in acts.items()}, kv


def reference_means(model: TransformerBridge, names: Sequence[str], tokens: Int[Tensor, "ref ref_pos"],
                    attention_mask: Int[Tensor, "ref ref_pos"], batch_size: int = 64, *,
                    pattern: bool = False, progress: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
    """``{name: (per_position, overall)}``: the mean activation at each hook ``name`` over a left-padded
    reference batch, streamed in chunks of ``batch_size`` (accumulated in float64). ``per_position[p]`` is the
    mean over the rows whose position ``p`` (aligned from the right) is a real token, ``overall`` for a position
    no row reaches; ``overall`` is the mean over all real positions. With ``pattern``, positions are the query
    axis (axis 2) of attention patterns. ``tokens`` / ``attention_mask``: ``[ref, ref_pos]``, checked as
    :func:`reasonlens.validation.check_tokens` checks them."""
    from tqdm.auto import tqdm

    tokens, attention_mask = check_tokens(model, tokens, attention_mask, name="reference tokens")
    check_int(batch_size, "batch_size", low=1)
    sums: dict[str, Tensor] = {}
    counts = torch.zeros(tokens.shape[1], dtype=torch.float64)
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="reference means", unit="batch",
                      disable=not progress):
        store: dict[str, Tensor] = {}
        rows = slice(start, start + batch_size)
        run_padded(model, tokens[rows], attention_mask[rows], saving_hooks(store, dict.fromkeys(names)))
        real = attention_mask[rows].to(torch.float64)
        for n in names:
            view = store[n].cpu().double()
            view = view.transpose(1, 2) if pattern else view  # [batch, pos, ...]
            total = (view * real.reshape(*real.shape, *([1] * (view.ndim - 2)))).sum(0)
            sums[n] = total if n not in sums else sums[n] + total
        counts += real.sum(0)
    out = {}
    for n in names:
        shape = (-1, *([1] * (sums[n].ndim - 1)))
        overall = sums[n].sum(0) / counts.sum().clamp_min(1)
        per_position = torch.where(counts.reshape(shape) > 0, sums[n] / counts.clamp_min(1).reshape(shape), overall)
        out[n] = (per_position, overall)
    return out


def mean_activations(model: TransformerBridge, site: str, tokens: Int[Tensor, "ref ref_pos"],
                     attention_mask: Int[Tensor, "ref ref_pos"], length: int, layers: Sequence[int],
                     batch_size: int = 64) -> dict[int, Tensor]:
    """Mean activation of ``site`` over a reference set, per position aligned at the last token (left padding),
    for a target batch of ``length`` positions; positions the reference does not cover get the mean over all
    of its real positions (see :func:`reference_means`)."""
    _check_site_name(site)
    layers = check_int_list(layers, "layers", low=0)
    names = {l: SITES[site].format(l=l) for l in layers}
    means = reference_means(model, list(names.values()), tokens, attention_mask, batch_size,
                            pattern=site == "pattern")
    out = {}
    for l, n in names.items():
        per_pos, overall = means[n]
        ref_len = per_pos.shape[0]
        if length <= ref_len:
            per_pos = per_pos[ref_len - length:]
        else:
            per_pos = torch.cat([overall.expand(length - ref_len, *overall.shape), per_pos])
        out[l] = _from_pos_view(site, per_pos.unsqueeze(0)).squeeze(0).float()
    return out


def _pos_view(site: str, act: Tensor) -> Tensor:
    """The activation with positions on axis 1 (attention patterns: the query position)."""
    return act.transpose(1, 2) if site == "pattern" else act


def _from_pos_view(site: str, view: Tensor) -> Tensor:
    return view.transpose(1, 2) if site == "pattern" else view


# ---------------------------------------------------------------------------------------------------------- cells


def _position_masks(config: PatchConfig, real: Bool[Tensor, "batch pos"], spans: object
                    ) -> tuple[Bool[Tensor, "batch cell pos"], list[str]]:
    batch, length = real.shape
    if config.positions == "each":
        if spans is not None:
            raise ReasonlensError("spans were given but positions is 'each'; use positions='spans'")
        eye = torch.eye(length, dtype=torch.bool)
        return eye.unsqueeze(0) & real.unsqueeze(1), [str(p) for p in range(length)]
    if config.positions == "all":
        if spans is not None:
            raise ReasonlensError("spans were given but positions is 'all'; use positions='spans'")
        return real.unsqueeze(1), ["all"]
    if spans is None:
        raise ReasonlensError("positions='spans' needs spans=[[(start, end), ...] per example]")
    spans = check_spans(spans, batch, length)
    masks = torch.zeros((batch, len(spans[0]), length), dtype=torch.bool)
    for b, example_spans in enumerate(spans):
        for s, (start, end) in enumerate(example_spans):
            masks[b, s, start:end] = True
    return masks & real.unsqueeze(1), [f"span {s}" for s in range(masks.shape[1])]


def _unit_indices(config: PatchConfig, axis: str | None, n_units: int, n_heads: int) -> list[int] | None:
    if axis is None:
        return None
    units = range(n_units) if config.units == "each" else check_int_list(config.units, "units", low=0)
    bad = [u for u in units if not 0 <= u < n_units]
    if bad:
        has = {"head": f"{n_units} heads",
               "kv_head": f"{n_units} key/value heads (grouped-query attention: {n_heads} query heads share them)",
               "neuron": f"{n_units} neurons"}[axis]
        raise ReasonlensError(f"{axis}s {bad} out of range: site {config.site!r} has {has}")
    return list(units)


def _check_site(model: TransformerBridge, config: PatchConfig, names: dict[int, str], writes: dict[int, str]) -> None:
    """A site the architecture lacks, or cannot patch faithfully, is an error."""
    if config.site == "resid_mid" and getattr(model.cfg, "parallel_attn_mlp", False):
        raise ReasonlensError("site 'resid_mid' does not exist on this architecture: attention and MLP read the "
                              "same residual in parallel (cfg.parallel_attn_mlp), so there is no mid-block residual; "
                              "patch resid_pre, attn_out or mlp_out instead")
    for n in [*names.values(), *writes.values()]:
        if n not in model.hook_dict:
            raise ReasonlensError(f"this model has no hook point {n!r} for site {config.site!r}")


def _resolve_layers(model: TransformerBridge, config: PatchConfig) -> list[int]:
    n = model.cfg.n_layers
    layers = list(range(n)) if config.layers is None else check_int_list(config.layers, "layers", low=0)
    bad = [l for l in layers if not 0 <= l < n]
    if bad:
        raise ReasonlensError(f"layers {bad} out of range: the model has layers 0..{n - 1}")
    return layers


# ---------------------------------------------------------------------------------------------------------- metrics


def _builtin_metric(name: str, answer: Tensor | None, wrong: Tensor | None, clean_logits: Tensor) -> Metric:
    if name == "kl":
        ref = torch.log_softmax(clean_logits, -1)

        def neg_kl(logits, example):
            logp = torch.log_softmax(logits, -1)
            return -(ref[example].exp() * (ref[example] - logp)).sum(-1)
        return neg_kl
    if answer is None:
        raise ReasonlensError(f"metric {name!r} needs answer= (the answer token id of every example)")
    if name == "prob":
        return lambda logits, example: torch.softmax(logits, -1).gather(1, answer[example, None]).squeeze(1)
    if name == "logit_diff":
        if wrong is None:
            raise ReasonlensError("metric 'logit_diff' needs wrong= (the competing token id of every example)")
        return lambda logits, example: (logits.gather(1, answer[example, None])
                                        - logits.gather(1, wrong[example, None])).squeeze(1)
    raise ReasonlensError(f"unknown metric {name!r}; use 'kl', 'prob', 'logit_diff' or a callable "
                          "metric(logits[row, vocab], example[row]) -> values[row]")


def _apply_metric(metric: Metric, logits: Tensor, example: Tensor) -> Tensor:
    values = metric(logits, example)
    if not isinstance(values, Tensor) or values.shape != example.shape:
        raise ReasonlensError(f"the metric must return one value per row (shape {tuple(example.shape)}), "
                              f"got {getattr(values, 'shape', type(values))}")
    if not torch.isfinite(values).all():
        raise ReasonlensError(f"the metric returned NaN or inf for examples {example[~torch.isfinite(values)].tolist()}")
    return values.float()


# ---------------------------------------------------------------------------------------------------------- engine


def _check_inputs(model: TransformerBridge, clean, corrupted, attention_mask,
                  source: str) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(clean, corrupted, attention_mask)`` checked (reasonlens.validation.check_tokens), as long tensors on
    the CPU."""
    clean, mask = check_tokens(model, clean, attention_mask, name="clean tokens")
    if corrupted is None:
        if source == "prompt":
            raise ReasonlensError("source='prompt' needs corrupted tokens (the other prompt of each pair)")
    else:
        if isinstance(corrupted, Tensor) and corrupted.shape != clean.shape:
            raise ReasonlensError(
                f"clean and corrupted prompts have different token lengths: {tuple(clean.shape)} vs "
                f"{tuple(corrupted.shape)}; patching needs the two prompts of a pair aligned token for token "
                "(pick corruptions that keep the tokenization, e.g. reasonlens.patching.subtasks)")
        corrupted, _ = check_tokens(model, corrupted, mask, name="corrupted tokens")
        corrupted = corrupted.cpu()
    return clean.cpu(), corrupted, mask.cpu()


def _check_reference(model: TransformerBridge, reference) -> tuple[Tensor, Tensor]:
    if not isinstance(reference, (tuple, list)) or len(reference) != 2:
        raise ReasonlensError(f"reference must be (tokens, attention_mask) of the reference set, got "
                              f"{describe(reference)}")
    return check_tokens(model, reference[0], reference[1], name="reference tokens")


@dataclass
class _Sweep:
    """Everything a sweep needs, computed once: runs, caches, baselines, cells."""

    config: PatchConfig
    layers: list[int]
    names: dict[int, str]
    writes: dict[int, str]
    mask: Tensor
    target: Tensor
    target_acts: dict[str, Tensor]
    target_kv: KVPrefix | None  # keys and values of the whole target run (CPU)
    source_acts: dict[str, Tensor]
    metric: Metric
    metric_name: str
    m_clean: Tensor
    m_corr: Tensor
    m_target: Tensor
    pos_masks: Tensor
    pos_labels: list[str]
    unit_axis: str | None
    units: list[int] | None
    entries: dict[int, Tensor]  # layer -> the target run's residual entering that block (CPU), where blocks can be skipped

    def normalise(self, values: Float[Tensor, "batch layer cell unit"]) -> tuple[Tensor, dict]:
        """``values`` normalised as ``config.normalize`` says, and what to record about it."""
        mode = self.config.normalize
        if mode == "none":
            return values, {"normalize": mode}
        scale = self.m_clean - self.m_corr
        if mode == "example":
            flat = scale.abs() < 1e-12
            if flat.any():
                raise ReasonlensError(
                    f"the metric is the same on the clean and corrupted prompts of examples "
                    f"{flat.nonzero().flatten().tolist()} (nothing to normalise by); drop those pairs or pass "
                    "normalize='batch' or 'none'")
            return (values - self.m_corr.reshape(-1, 1, 1, 1)) / scale.reshape(-1, 1, 1, 1), {"normalize": mode}
        mean = scale.mean()
        if mean.abs() <= 1e-12 + 1e-6 * scale.abs().mean():
            raise ReasonlensError(
                f"the mean over examples of metric(clean) - metric(corrupted) is {float(mean):.3g}, about 0 (nothing "
                "to normalise by); pass normalize='example' or 'none'")
        return (values - self.m_corr.reshape(-1, 1, 1, 1)) / mean, {"normalize": mode, "batch_scale": float(mean)}

    def finish(self, values: Float[Tensor, "batch layer cell unit"], extra: dict) -> PatchSweep:
        """Normalise, label and wrap per-example cell values."""
        config = self.config
        values, how = self.normalise(values)
        axes = ["example", "layer", "span" if config.positions == "spans" else "position"]
        labels = {"layer": [f"L{l}" for l in self.layers], axes[2]: self.pos_labels}
        if self.units is None:
            values = values.squeeze(-1)
        else:
            axes.append(self.unit_axis)
            labels[self.unit_axis] = [UNIT_PREFIX[self.unit_axis] + str(u) for u in self.units]
        meta = {"config": config.to_dict(),
                "metric": self.metric_name, "layers": self.layers, "units": self.units, **how,
                "clean_metric": self.m_clean.tolist(), "corrupted_metric": self.m_corr.tolist(), **extra}
        return PatchSweep(values, axes=tuple(axes), labels=labels, meta=meta)


def _prepare(model: TransformerBridge, clean, corrupted, metric, answer, wrong, attention_mask, spans, span_labels,
             reference, config: PatchConfig, enter: bool = False) -> _Sweep:
    config.check()
    if not (isinstance(metric, str) or callable(metric)):
        raise ReasonlensError(f"metric must be 'kl', 'prob', 'logit_diff' or a callable metric(logits[row, vocab], "
                              f"example[row]) -> values[row], got {describe(metric)}")
    clean, corrupted, mask = _check_inputs(model, clean, corrupted, attention_mask, config.source)
    batch = clean.shape[0]
    answer = None if answer is None else check_per_example(model, answer, "answer", batch).cpu()
    wrong = None if wrong is None else check_per_example(model, wrong, "wrong", batch).cpu()
    if config.source == "mean" and reference is not None:
        reference = _check_reference(model, reference)
    layers = _resolve_layers(model, config)
    names = {l: SITES[config.site].format(l=l) for l in layers}
    writes = {l: DELTA_HOOKS.get(config.site, SITES[config.site]).format(l=l) for l in layers}
    _check_site(model, config, names, writes)
    if corrupted is None and config.normalize != "none":
        raise ReasonlensError(f"normalize={config.normalize!r} needs corrupted prompts (the 0 of the scale); pass "
                              "normalize='none'")
    denoise = config.direction == "denoise" and corrupted is not None
    batch, length = clean.shape
    read, written = list(names.values()), [w for w in writes.values() if w not in names.values()]
    # The residual entering each patched block, read from the target run: a patch at block l leaves the blocks
    # before it unchanged, so its rows enter the stack there (runtime.enter_at_block).
    entry_names = {l: site_hook("resid_pre", l) for l in layers if l > 0} if enter else {}
    entry_read = [n for n in entry_names.values() if n not in read]
    clean_logits, clean_acts, clean_kv = _cache_run(model, clean, mask, read + (entry_read if not denoise else []),
                                                    config.batch_size, keep_kv=not denoise, writes=written)
    if corrupted is not None:
        corr_logits, corr_acts, corr_kv = _cache_run(model, corrupted, mask, read + (entry_read if denoise else []),
                                                     config.batch_size, keep_kv=denoise)
    else:
        corr_logits, corr_acts, corr_kv = clean_logits, clean_acts, clean_kv
    target, target_acts, target_kv = (corrupted, corr_acts, corr_kv) if denoise else (clean, clean_acts, clean_kv)
    if config.source == "prompt":
        source_acts = clean_acts if denoise else corr_acts
    elif config.source == "zero":
        source_acts = {n: torch.zeros_like(a) for n, a in target_acts.items()}
    else:
        if reference is None:
            raise ReasonlensError("source='mean' needs reference=(tokens, attention_mask) of the reference set")
        means = mean_activations(model, config.site, *reference, length=length, layers=layers,
                                 batch_size=config.batch_size)
        source_acts = {names[l]: means[l].to(target_acts[names[l]].dtype).unsqueeze(0).expand_as(target_acts[names[l]])
                       for l in layers}
    metric_fn = _builtin_metric(metric, answer, wrong, clean_logits) if isinstance(metric, str) else metric
    examples = torch.arange(batch)
    m_clean = _apply_metric(metric_fn, clean_logits, examples)
    m_corr = _apply_metric(metric_fn, corr_logits, examples)
    pos_masks, pos_labels = _position_masks(config, mask.bool(), spans)
    if span_labels is not None:
        if len(span_labels) != len(pos_labels):
            raise ReasonlensError(f"{len(span_labels)} span labels for {len(pos_labels)} spans")
        pos_labels = list(span_labels)
    axis = unit_axis(model, config)
    first = _pos_view(config.site, target_acts[names[layers[0]]])
    units = _unit_indices(config, axis, first.shape[2] if axis else 0, model.cfg.n_heads)
    entries = {l: target_acts[n] for l, n in entry_names.items()}
    return _Sweep(config, layers, names, writes, mask, target, target_acts, target_kv, source_acts, metric_fn,
                  metric if isinstance(metric, str) else getattr(metric, "__name__", "callable"),
                  m_clean, m_corr, m_corr if denoise else m_clean, pos_masks, pos_labels, axis, units, entries)


def _per_position(sweep: _Sweep, per_entry: Tensor) -> Tensor:
    """Reduce a per-entry tensor in position view ``[b, pos, (unit), ...]`` to ``[b, pos, unit]`` (summed over
    features), keeping the swept units only."""
    batch, length = per_entry.shape[:2]
    if sweep.units is None:
        return per_entry.reshape(batch, length, -1).sum(-1, keepdim=True)
    return per_entry.reshape(batch, length, per_entry.shape[2], -1).sum(-1)[:, :, sweep.units]


def patch(model: TransformerBridge, clean: Int[Tensor, "batch pos"],
          corrupted: Int[Tensor, "batch corrupted_pos"] | None = None, *,
          metric: str | Metric = "kl", answer: Int[Tensor, " batch"] | None = None,
          wrong: Int[Tensor, " batch"] | None = None, attention_mask: Int[Tensor, "batch pos"] | None = None,
          spans: Spans | None = None, span_labels: Sequence[str] | None = None,
          reference: tuple[Int[Tensor, "ref ref_pos"], Int[Tensor, "ref ref_pos"]] | None = None,
          config: PatchConfig | None = None, progress: bool = True, **overrides) -> PatchSweep:
    """Patch every cell of ``config`` (or of its fields given as keyword ``overrides``) and return the metric.

    ``metric``: ``"kl"`` (Dutta et al.: minus KL(P_clean || P_patched) at the last position; normalised, this
    is (KL_noise - KL_patched) / KL_noise), ``"prob"`` (probability of ``answer``), ``"logit_diff"``
    (``answer`` minus ``wrong``), or a callable ``metric(logits[row, vocab], example[row]) -> values[row]``.
    ``reference``: (tokens, attention_mask) of the reference set for ``source="mean"``.

    ``clean`` / ``corrupted``: integer token ids ``[batch, pos]`` of the same shape, left-padded with
    ``attention_mask`` (default: no padding); ``answer`` / ``wrong``: one token id per example. All are checked
    (:func:`reasonlens.validation.check_tokens`): ids in the vocabulary, a 0/1 mask without holes, rows that fit
    the model's context.

    Example: ``patch(model, clean, corrupted, site="z", positions="all")`` gives per-head scores
    ``[example, layer, 1, head]`` for all-position head patching, as in Dutta et al.
    """
    config = replace(config or PatchConfig(), **overrides)
    sweep = _prepare(model, clean, corrupted, metric, answer, wrong, attention_mask, spans, span_labels, reference,
                     config, enter=can_enter_at_block(model))
    layers, names, units = sweep.layers, sweep.names, sweep.units
    batch = clean.shape[0]
    n_units = 1 if units is None else len(units)
    n_pos = sweep.pos_masks.shape[1]
    values = sweep.m_target.reshape(batch, 1, 1, 1).repeat(1, len(layers), n_pos, n_units)
    # A cell is a no-op for an example when the source equals the target's own activation on every entry it
    # writes; only the other (example, layer, position cell, unit) rows need a forward.
    # Positions before a row's first changed, patched position are those of the unpatched target run at every
    # layer: their keys and values come from its cache and only the positions from there on are computed.
    todo, firsts = [], []
    cell_starts = sweep.pos_masks.float().argmax(-1)  # [b, position cell]
    for li, l in enumerate(layers):
        src = _pos_view(config.site, sweep.source_acts[names[l]])
        tgt = _pos_view(config.site, sweep.target_acts[names[l]])
        changed = _per_position(sweep, (src != tgt).float()) > 0
        hit = torch.bmm(sweep.pos_masks.float(), changed.float()) > 0  # [b, position cell, unit]
        idx = hit.nonzero()
        todo.append(torch.cat([idx[:, :1], torch.full_like(idx[:, :1], li), idx[:, 1:]], 1))
        first_changed = changed.float().argmax(1)  # [b, unit]
        firsts.append(torch.maximum(cell_starts[idx[:, 0], idx[:, 1]], first_changed[idx[:, 0], idx[:, 2]]))
    rows, first = torch.cat(todo), torch.cat(firsts)
    # Rows are sorted by that position so that a chunk shares a long prefix; where the stack can be entered
    # mid-way, a chunk holds rows of one layer (it enters at that block).
    order = torch.argsort(first, descending=True, stable=True)
    rows, first = rows[order], first[order]
    if sweep.entries:
        by_layer = torch.argsort(rows[:, 1], descending=True, stable=True)
        rows, first = rows[by_layer], first[by_layer]
    groups = [0, *((rows[1:, 1] != rows[:-1, 1]).nonzero()[:, 0] + 1).tolist()] if sweep.entries else [0]
    bounds = [(lo, min(lo + config.batch_size, end)) for begin, end in zip(groups, [*groups[1:], len(rows)])
              for lo in range(begin, end, config.batch_size)]
    n_layers, length, cost = model.cfg.n_layers, sweep.mask.shape[1], 0.0

    from tqdm.auto import tqdm

    add = config.site in DELTA_HOOKS
    for start, stop in tqdm(bounds, disable=not progress, desc=f"patch {config.site}"):
        chunk = rows[start:stop]
        b, li, pc, uc = chunk.unbind(1)
        skip = int(first[start:stop].min()) if sweep.target_kv is not None else 0
        prefix = sweep.target_kv.select(b).first(skip).to(model.cfg.device) if skip > 0 else None
        block = layers[int(li.min())]
        entry = BlockEntry(block, sweep.entries[block][b, skip:]) if block in sweep.entries else None
        cost += len(b) * (n_layers - (block if entry else 0)) / n_layers * (length - skip) / length
        hooks = []
        for layer_i in li.unique().tolist():
            sel = (li == layer_i).nonzero().squeeze(1)
            name = names[layers[layer_i]]
            source = _pos_view(config.site, sweep.source_acts[name][b[sel]])[:, skip:]
            if add:
                source = source - _pos_view(config.site, sweep.target_acts[name][b[sel]])[:, skip:]
            hooks.append(_patch(config.site, sweep.writes[layers[layer_i]], sel, source,
                                sweep.pos_masks[b[sel], pc[sel]][:, skip:],
                                None if units is None else torch.tensor(units)[uc[sel]], add).as_hook())
        logits = run_padded(model, sweep.target[b], sweep.mask[b], hooks, prefix=prefix, entry=entry,
                            last_only=True)[:, -1].float().cpu()
        values[b, li, pc, uc] = _apply_metric(sweep.metric, logits, b)
    floor = float(sum((n_layers - layers[int(l)]) / n_layers * (length - int(p)) / length
                      for l, p in zip(rows[:, 1], first)))
    return sweep.finish(values, {"method": "activation patching", "rows_run": len(rows),
                                 "rows_total": batch * len(layers) * n_pos * n_units,
                                 "forward_cost": cost, "forward_cost_floor": floor,
                                 "entered_mid_stack": bool(sweep.entries)})


def attribution_patch(model: TransformerBridge, clean: Int[Tensor, "batch pos"],
                      corrupted: Int[Tensor, "batch corrupted_pos"] | None = None, *,
                      metric: str | Metric = "kl", answer: Int[Tensor, " batch"] | None = None,
                      wrong: Int[Tensor, " batch"] | None = None,
                      attention_mask: Int[Tensor, "batch pos"] | None = None, spans: Spans | None = None,
                      span_labels: Sequence[str] | None = None,
                      reference: tuple[Int[Tensor, "ref ref_pos"], Int[Tensor, "ref ref_pos"]] | None = None,
                      config: PatchConfig | None = None, progress: bool = True, **overrides) -> PatchSweep:
    """Attribution patching (Nanda; Syed et al.): the first-order estimate of :func:`patch` for every cell at
    once, ``m_target + sum over the cell's entries of (source - target) * d metric / d activation``, from two
    cached forwards and one forward + backward per ``batch_size`` examples. Same arguments, same result layout.

    A fast screen: it is poor on large activations (whole residual streams) and saturated attention; verify
    the top cells with :func:`patch` (:func:`compare_rankings` measures the agreement). The gradient is taken
    where the site is written: for ``resid_mid``, at ``hook_attn_out`` (d metric / d mid-block residual).
    """
    config = replace(config or PatchConfig(), **overrides)
    sweep = _prepare(model, clean, corrupted, metric, answer, wrong, attention_mask, spans, span_labels, reference,
                     config)
    layers, names, writes = sweep.layers, sweep.names, sweep.writes
    batch = clean.shape[0]
    n_units = 1 if sweep.units is None else len(sweep.units)
    values = torch.zeros(batch, len(layers), sweep.pos_masks.shape[1], n_units)
    device = model.cfg.device

    from tqdm.auto import tqdm

    for start in tqdm(range(0, batch, config.batch_size), disable=not progress, desc=f"attribution {config.site}"):
        rows = torch.arange(start, min(start + config.batch_size, batch))
        hooks, deltas = gradient_taps(list(writes.values()))
        mask = sweep.mask[rows].to(device)
        with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
            logits = model(sweep.target[rows].to(device), attention_mask=mask,
                           position_ids=left_padded_positions(mask))[:, -1]
            total = _apply_metric(sweep.metric, logits.float().cpu(), rows).sum()
            grads = torch.autograd.grad(total, [deltas[writes[l]] for l in layers])
        for li, (l, grad) in enumerate(zip(layers, grads)):
            name = names[l]
            diff = sweep.source_acts[name][rows] - sweep.target_acts[name][rows]
            contrib = _per_position(sweep, _pos_view(config.site, diff * grad.detach().cpu()))
            values[rows, li] = torch.bmm(sweep.pos_masks[rows].float(), contrib)
    values = values + sweep.m_target.reshape(-1, 1, 1, 1)
    return sweep.finish(values, {"method": "attribution patching"})


def compare_rankings(exact: PatchSweep, approx: PatchSweep, k: int = 10) -> dict[str, float]:
    """Agreement of two sweeps' mean cell values: Spearman rank correlation, and the overlap of their top-``k``
    cells by absolute value (fraction of ``k``)."""
    from scipy.stats import spearmanr

    a, b = exact.mean().flatten(), approx.mean().flatten()
    if a.shape != b.shape:
        raise ReasonlensError(f"the sweeps have different cells: {tuple(exact.mean().shape)} vs {tuple(approx.mean().shape)}")
    k = min(k, a.numel())
    top_a = set(a.abs().topk(k).indices.tolist())
    top_b = set(b.abs().topk(k).indices.tolist())
    return {"spearman": float(spearmanr(a.numpy(), b.numpy()).statistic), "top_k_overlap": len(top_a & top_b) / k,
            "k": k}


def _patch(site: str, hook_name: str, rows: Tensor, source: Tensor, pos_mask: Tensor, unit: Tensor | None,
           add: bool) -> Intervention:
    """Write ``source`` (position view, one row per entry of ``rows``) into those batch rows where ``pos_mask``
    (and, per row, ``unit``) select, or with ``add`` add it there."""
    if unit is None:
        mask = pos_mask.clone()
    else:
        mask = torch.zeros(*pos_mask.shape, source.shape[2], dtype=torch.bool)
        mask[torch.arange(len(rows))[:, None], torch.arange(pos_mask.shape[1])[None, :], unit[:, None]] = pos_mask
    mask = mask.reshape(*mask.shape, *([1] * (source.ndim - mask.ndim)))
    return Intervention(hook_name, "add" if add else "set", source, mask=mask, rows=rows,
                        positions_axis=2 if site == "pattern" else 1)

"""The runtime every method runs on: padding, one prefix key/value cache, the site table, activation capture and
the logit lens.

- **Padding.** :func:`left_pad` batches whole sequences (each row's position ids count from its first real
  token, :func:`left_padded_positions`); :func:`run_continuations` right-pads continuations read after a prefix.
- **Prefix cache.** :class:`KVPrefix` holds the keys and values of some rows' first positions (computed once,
  without gradients); :func:`run_continuations` and :func:`forward` run tokens after it, so a prefix shared by
  many rows (a prompt, the unpatched positions of a patching row) is computed once. Decoding, IPG paths,
  patching, step scoring and evaluation all use it.
- **Sites.** :data:`SITES` names each activation a method reads or writes and the hook it lives at
  (``blocks.{l}.attn.hook_z`` for ``z``); :func:`site_hook` resolves one.
- **Capture.** :func:`collect_activations` reads hook activations at chosen positions of left-padded batches.
- **Logit lens.** :func:`lens_logits` decodes any residual vector with the model's own final norm and
  unembedding.

>>> from reasonlens.model import load_model
>>> model = load_model("reasonlens-main")
>>> prompt, rows = [1, 14, 23, 4], [[27, 5], [6]]
>>> prefix = KVPrefix.of(model, prompt)
>>> cached = run_continuations(model, prefix, rows, pad_token_id(model))
>>> whole = run_continuations(model, None, [prompt + r for r in rows], pad_token_id(model))
>>> bool(torch.allclose(cached[0, :2], whole[0, 4:6], atol=1e-5))
True
>>> site_hook("z", 3)
'blocks.3.attn.hook_z'
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.model import check_hook_name
from reasonlens.validation import check_context, check_int, check_token_lists, describe, is_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HookFn = Callable[..., Any]
FwdHook = tuple[str | Callable[[str], bool], HookFn]

# ---------------------------------------------------------------------------------------------------------- sites

# The hook each site is read at (and written at, except where a method says otherwise: patching writes
# ``resid_mid`` as a residual edit at ``hook_attn_out``).
SITES: dict[str, str] = {
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
    "z": "blocks.{l}.attn.hook_z",
    "q": "blocks.{l}.attn.hook_q",
    "k": "blocks.{l}.attn.hook_k",
    "v": "blocks.{l}.attn.hook_v",
    "pattern": "blocks.{l}.attn.hook_pattern",
    "neuron": "blocks.{l}.mlp.hook_post",
}
HEAD_SITES: tuple[str, ...] = ("z", "q", "k", "v", "pattern")
KV_SITES: tuple[str, ...] = ("k", "v")


def site_hook(site: str, layer: int) -> str:
    """The hook name of ``site`` (a key of :data:`SITES`) at block ``layer``."""
    if site not in SITES:
        raise ReasonlensError(f"unknown site {site!r}; valid sites: {sorted(SITES)}")
    return SITES[site].format(l=layer)


@dataclass(frozen=True)
class Intervention:
    """One edit of the activation at ``hook``, declared as data; :meth:`as_hook` compiles it to a forward hook.

    ``op``: ``"set"`` writes ``value``, ``"add"`` adds it, ``"scale"`` multiplies by it, at the entries ``mask``
    selects (``None``: every entry). ``rows``: the batch rows edited (``None``: all); ``units``: the units edited,
    indices on axis 2 (heads of ``[batch, pos, head, d_head]``, neurons or dimensions of ``[batch, pos, unit]``;
    ``None``: all). ``value`` and ``mask`` broadcast against the activation restricted to those rows and units,
    in *position view*: positions on axis 1 (for attention patterns ``[batch, head, query, key]`` pass
    ``positions_axis=2``: the query axis moves there).
    ``width``: edit only a forward over that many positions (a decoding step's one-position forwards pass
    unchanged). Patching, circuits, steering, IPG paths and the horizon experiment all edit activations this way.

    >>> import torch
    >>> act = torch.ones(2, 3, 4)  # [batch, pos, d_model]
    >>> first = torch.tensor([[True, False, False]])[..., None]  # [row, pos, 1]
    >>> halve = Intervention("blocks.0.hook_resid_post", "scale", torch.tensor(0.5), mask=first, rows=torch.tensor([1]),
    ...                      units=torch.tensor([0, 2]))
    >>> halve(act)[1].tolist()
    [[0.5, 1.0, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    hook: str
    op: Literal["set", "add", "scale"]
    value: Tensor
    mask: Tensor | None = None
    rows: Tensor | None = None
    units: Tensor | None = None
    positions_axis: int = 1
    width: int | None = None

    def __post_init__(self) -> None:
        if self.op not in ("set", "add", "scale"):
            raise ReasonlensError(f"unknown intervention op {self.op!r}; choose 'set', 'add' or 'scale'")
        if self.width is not None and self.width < 2:
            raise ReasonlensError(f"width {self.width} cannot tell a prompt forward from a decoding step; pass None")

    def __repr__(self) -> str:  # short: TransformerLens names each registered hook by its repr
        shape = "x".join(map(str, self.value.shape)) or "scalar"
        return f"Intervention({self.hook!r}, {self.op!r}, value {shape})"

    def __call__(self, act: Tensor, hook: Any = None) -> Tensor:
        axis = self.positions_axis
        if self.width is not None and act.shape[axis] != self.width:
            return act
        view = act.transpose(1, axis) if axis != 1 else act
        rows = slice(None) if self.rows is None else self.rows.to(act.device)
        units = slice(None) if self.units is None else self.units.to(act.device)
        whole = self.rows is None and self.units is None
        target = view if whole else view[rows][:, :, units]
        value = self.value.to(act.device, act.dtype)
        edited = value if self.op == "set" else target + value if self.op == "add" else target * value
        if self.mask is not None:
            edited = torch.where(self.mask.to(act.device), edited, target)
        elif self.op == "set":
            edited = edited.expand_as(target)
        if not whole:
            out = view.clone()
            if self.rows is None:
                out[:, :, units] = edited
            elif self.units is None:
                out[rows] = edited
            else:
                out[rows[:, None], :, units[None, :]] = edited.transpose(1, 2)
            edited = out
        return edited.transpose(1, axis) if axis != 1 else edited

    def as_hook(self) -> FwdHook:
        """``(hook name, hook function)`` for ``model.hooks(fwd_hooks=...)`` or :func:`forward`."""
        return (self.hook, self)



# ---------------------------------------------------------------------------------------------------------- padding


def _pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[Tensor, Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), None) if left else slice(0, len(row))
        ids[i, cols] = torch.tensor(list(row), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token ids and attention mask of ``rows`` padded on the left with ``pad_id`` to the longest row."""
    return _pad(rows, pad_id, left=True)


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token ids and attention mask of ``rows`` padded on the right with ``pad_id`` to the longest row."""
    return _pad(rows, pad_id, left=False)


def left_padded_positions(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Position ids of a left-padded batch: each row counts from its first real token."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


def pad_token_id(model: TransformerBridge) -> int:
    """The id to pad batches with: the tokenizer's pad token, else its EOS, else 0 (padding is masked or cut
    off, so any id works; these keep the embedding lookup in range)."""
    tok = model.tokenizer
    for candidate in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


# ---------------------------------------------------------------------------------------------------------- prefix cache


def plain_kv_cache(cache: Any) -> bool:
    """Whether ``cache`` (a model's KV cache) is a plain per-layer ``DynamicCache`` whose keys and values can be
    sliced and reused (sliding-window or quantised caches cannot)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _checked_once(model: TransformerBridge, name: str, check: Callable[[], bool]) -> bool:
    """``check()`` the first time ``name`` is asked of ``model``; the answer is kept on the model (in
    ``model._reasonlens_checks``) for every later call."""
    checks = model.__dict__.setdefault("_reasonlens_checks", {})
    if name not in checks:
        checks[name] = check()
    return checks[name]


def has_plain_kv_cache(model: TransformerBridge) -> bool:
    """Whether ``model`` keeps a plain :func:`plain_kv_cache` (checked once per model, on a two-token forward)."""
    def check() -> bool:
        ids = torch.zeros(1, 2, dtype=torch.long, device=model.cfg.device)
        with torch.no_grad():
            _, cache = model(ids, use_cache=True, return_type="logits_and_cache")
        return plain_kv_cache(cache)

    return _checked_once(model, "plain_kv_cache", check)


@dataclass(frozen=True)
class KVPrefix:
    """The keys and values ``[row, kv_head, pos, d_head]`` of each layer over the first ``length`` positions of
    some rows, and which of those positions are real tokens (``mask``, 1 = real; rows are left-padded).

    Build one with :meth:`of` (one token sequence), :meth:`run` (a left-padded batch) or :meth:`from_cache` (the
    cache of a forward that ran anyway); read tokens after it with :func:`run_continuations` or :func:`forward`.
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    mask: Int[Tensor, "row pos"]

    @property
    def n_rows(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    @classmethod
    def from_cache(cls, cache: Any, mask: Int[Tensor, "row pos"]) -> KVPrefix | None:
        """The keys and values of a forward's cache (``None`` when it is not a plain ``DynamicCache``)."""
        if not plain_kv_cache(cache):
            return None
        return cls(tuple(layer.keys for layer in cache.layers), tuple(layer.values for layer in cache.layers), mask)

    @classmethod
    def run(cls, model: TransformerBridge, ids: Int[Tensor, "row pos"],
            mask: Int[Tensor, "row pos"]) -> KVPrefix | None:
        """Run a left-padded batch once, without gradients, and keep its keys and values (``None`` when the model's
        cache is not a plain ``DynamicCache``)."""
        device = model.cfg.device
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            _, cache = model(ids, attention_mask=mask, position_ids=left_padded_positions(mask), use_cache=True,
                             return_type="logits_and_cache")
        return cls.from_cache(cache, mask)

    @classmethod
    def of(cls, model: TransformerBridge, ids: Sequence[int]) -> KVPrefix | None:
        """One row: the token sequence ``ids`` run once (``None`` for no tokens or a cache that cannot be reused)."""
        if not ids:
            return None
        return cls.run(model, torch.tensor([list(ids)]), torch.ones(1, len(ids), dtype=torch.long))

    def select(self, rows: Sequence[int] | Tensor) -> KVPrefix:
        """These rows, in this order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return KVPrefix(tuple(k[rows.to(k.device)] for k in self.keys),
                        tuple(v[rows.to(v.device)] for v in self.values), self.mask[rows.to(self.mask.device)])

    def first(self, length: int) -> KVPrefix:
        """The first ``length`` positions."""
        return KVPrefix(tuple(k[:, :, :length] for k in self.keys), tuple(v[:, :, :length] for v in self.values),
                        self.mask[:, :length])

    def cropped(self) -> KVPrefix:
        """Without the leading positions that are padding in every row."""
        real = self.mask.any(0).nonzero()
        start = int(real[0]) if len(real) else self.length
        return KVPrefix(tuple(k[:, :, start:] for k in self.keys), tuple(v[:, :, start:] for v in self.values),
                        self.mask[:, start:])

    def to(self, device: torch.device | str) -> KVPrefix:
        return KVPrefix(tuple(k.to(device) for k in self.keys), tuple(v.to(device) for v in self.values),
                        self.mask.to(device))

    @staticmethod
    def concat(prefixes: Sequence[KVPrefix]) -> KVPrefix:
        """The rows of ``prefixes`` in one prefix, each left-padded (zero keys and values, mask 0) to the longest."""
        width = max(p.length for p in prefixes)
        starts = [0]
        for p in prefixes:
            starts.append(starts[-1] + p.n_rows)

        def stacked(parts: Sequence[Tensor]) -> Tensor:  # left-padded with zeros along the position axis (-2)
            if all(t.shape[-2] == width for t in parts):
                return torch.cat(list(parts))
            out = parts[0].new_zeros(starts[-1], *parts[0].shape[1:-2], width, parts[0].shape[-1])
            for i, t in enumerate(parts):
                out[starts[i]:starts[i + 1], ..., width - t.shape[-2]:, :] = t
            return out

        keys = tuple(stacked([p.keys[l] for p in prefixes]) for l in range(len(prefixes[0].keys)))
        values = tuple(stacked([p.values[l] for p in prefixes]) for l in range(len(prefixes[0].values)))
        mask = prefixes[0].mask.new_zeros(starts[-1], width)
        for i, p in enumerate(prefixes):
            mask[starts[i]:starts[i + 1], width - p.length:] = p.mask
        return KVPrefix(keys, values, mask)

    def cache(self, n_rows: int | None = None) -> Any:
        """A fresh ``DynamicCache`` holding these keys and values; with ``n_rows``, a one-row prefix is shared by
        that many rows (expanded, not copied)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            if n_rows is not None and n_rows != self.n_rows:
                k, v = k.expand(n_rows, *k.shape[1:]), v.expand(n_rows, *v.shape[1:])
            cache.update(k, v, layer_idx=layer)
        return cache

    def rows_mask(self, n_rows: int) -> Int[Tensor, "row pos"]:
        """The prefix mask for ``n_rows`` continuation rows (a one-row prefix is shared by all)."""
        if self.n_rows == n_rows:
            return self.mask
        if self.n_rows != 1:
            raise ReasonlensError(f"a prefix of {self.n_rows} rows cannot serve {n_rows} rows; pass one prefix row, "
                                  "or one per row")
        return self.mask.expand(n_rows, -1)


@dataclass(frozen=True)
class BlockEntry:
    """Enter the stack at ``block``: the residual stream entering it (``hook_resid_pre``) is ``resid``
    ``[batch, pos, d_model]`` and the blocks before it are not run."""

    block: int
    resid: Tensor


class _Skipped(torch.nn.Module):
    """Stands in for a block that is not run: passes the residual through, or (the last one) hands over the
    cached residual entering the first block that runs."""

    def __init__(self, resid: Tensor | None) -> None:
        super().__init__()
        self.resid = resid

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states if self.resid is None else self.resid.to(hidden_states.device, hidden_states.dtype)


@contextlib.contextmanager
def enter_at_block(model: TransformerBridge, entry: BlockEntry | None) -> Iterator[None]:
    """Within the context, forwards of ``model`` skip blocks ``0..entry.block - 1`` (their modules pass the residual
    through; the last hands over ``entry.resid``), so a forward costs only the blocks from ``entry.block`` on.

    Exact where the blocks before ``entry.block`` cannot change what follows: a patch at a later block, on rows
    whose earlier blocks ran before (their keys and values in a :class:`KVPrefix`). Hooks of skipped blocks see
    the passed-through values. Nothing is skipped for ``None``, for block 0, or where :func:`can_enter_at_block`
    found the model's stack cannot be entered this way (the full stack runs, with the same numbers)."""
    if entry is None or entry.block == 0 or not can_enter_at_block(model):
        yield
        return
    with _skipping(model, entry):
        yield


@contextlib.contextmanager
def _skipping(model: TransformerBridge, entry: BlockEntry) -> Iterator[None]:
    # The bridge's block calls the Hugging Face layer it wraps, held as its ``_original_component`` submodule.
    blocks = [model.blocks[i]._modules for i in range(entry.block)]
    originals = [modules["_original_component"] for modules in blocks]
    try:
        for i, modules in enumerate(blocks):
            modules["_original_component"] = _Skipped(entry.resid if i == entry.block - 1 else None)
        yield
    finally:
        for modules, original in zip(blocks, originals):
            modules["_original_component"] = original


@contextlib.contextmanager
def full_stack(model: TransformerBridge) -> Iterator[None]:
    """Within the context, forwards of ``model`` run every block (:func:`enter_at_block` skips none): the plain
    path, for comparisons."""
    known = can_enter_at_block(model)
    checks = model.__dict__["_reasonlens_checks"]
    checks["can_enter_at_block"] = False
    try:
        yield
    finally:
        checks["can_enter_at_block"] = known


def can_enter_at_block(model: TransformerBridge) -> bool:
    """Whether skipping the first blocks (:func:`enter_at_block`) reproduces a full forward on ``model``: checked
    once per model on a small left-padded batch, entering at every block, to 1e-5. Where it does not (an
    architecture whose blocks do more than map the residual stream), the full stack runs and a log line says so."""
    def check() -> bool:
        ok = _entering_at_blocks_matches(model)
        if not ok:
            logging.getLogger("reasonlens").warning(
                "%s cannot be entered mid-stack; interventions at later layers run the full stack (same numbers, "
                "slower)", model.cfg.model_name)
        return ok

    return _checked_once(model, "can_enter_at_block", check)


def _entering_at_blocks_matches(model: TransformerBridge) -> bool:
    n_vocab, n_layers = int(model.cfg.d_vocab), int(model.cfg.n_layers)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(1, n_vocab, (n,), generator=generator).tolist() for n in (6, 4)]
    tokens, mask = left_pad(rows, pad_token_id(model))
    store: dict[str, Tensor] = {}
    names = {l: site_hook("resid_pre", l) for l in range(n_layers)}
    device = model.cfg.device
    tokens, mask = tokens.to(device), mask.to(device)
    positions = left_padded_positions(mask)
    try:
        with torch.no_grad():
            with model.hooks(fwd_hooks=saving_hooks(store, dict.fromkeys(names.values()))):
                full = model(tokens, attention_mask=mask, position_ids=positions)
            for block in range(1, n_layers):
                with _skipping(model, BlockEntry(block, store[names[block]])):
                    entered = model(tokens, attention_mask=mask, position_ids=positions)
                if not torch.allclose(entered.float(), full.float(), atol=1e-5, rtol=1e-5):
                    return False
    except Exception:  # noqa: BLE001 - any failure means: run the full stack
        return False
    return True


# What the rest of a block adds to, after a site inside it: the residual before the attention (z) or before the MLP.
REST_OF_BLOCK_BASE: dict[str, str] = {"z": "resid_pre", "neuron": "resid_mid"}


def rest_of_block(model: TransformerBridge, site: str, layer: int, act: Tensor,
                  resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """The residual leaving block ``layer`` (its ``hook_resid_post``) computed from the activation ``act`` at
    ``site`` inside it (``"z"``: ``[batch, pos, head, d_head]``; ``"neuron"``: ``[batch, pos, d_mlp]``) and the
    residual the rest of the block adds to (``resid``: the block's ``hook_resid_pre`` for ``z``, ``hook_resid_mid``
    for ``neuron``, :data:`REST_OF_BLOCK_BASE`), without running the block's parts before the site. With a
    :class:`BlockEntry` at ``layer + 1`` an edit of the site then costs only what follows it. The submodules' own
    hooks fire; the block's residual hooks do not. Exact where :func:`can_finish_block` holds."""
    block = model.blocks[layer]
    if site == "neuron":
        return resid + block.mlp.out(act)
    if site == "z":
        mid = resid + block.attn.o(act.flatten(-2))
        return mid + block.mlp(block.ln2(mid))
    raise ReasonlensError(f"rest_of_block takes site 'z' or 'neuron', got {site!r}")


def can_finish_block(model: TransformerBridge, site: str) -> bool:
    """Whether :func:`rest_of_block` reproduces each block's output from ``site`` on ``model``: checked once per
    model and site on a small batch, at every block, to 1e-5 (False for an architecture whose blocks are built
    otherwise, e.g. with parallel attention or extra norms; callers then run the block whole)."""
    return _checked_once(model, f"finishes_block {site}", lambda: _rest_of_block_matches(model, site))


def _rest_of_block_matches(model: TransformerBridge, site: str) -> bool:
    if site not in REST_OF_BLOCK_BASE:
        return False
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, int(model.cfg.d_vocab), (2, 5), generator=generator).to(model.cfg.device)
    layers = range(int(model.cfg.n_layers))
    names = [site_hook(s, l) for l in layers for s in (site, REST_OF_BLOCK_BASE[site], "resid_post")]
    store: dict[str, Tensor] = {}
    try:
        with torch.no_grad():
            with model.hooks(fwd_hooks=saving_hooks(store, dict.fromkeys(names))):
                model(tokens)
            for l in layers:
                out = rest_of_block(model, site, l, store[site_hook(site, l)], store[site_hook(REST_OF_BLOCK_BASE[site], l)])
                if not torch.allclose(out.float(), store[site_hook("resid_post", l)].float(), atol=1e-5, rtol=1e-5):
                    return False
    except Exception:  # noqa: BLE001 - any failure means: run the block whole
        return False
    return True


def forward(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
            position_ids: Int[Tensor, "batch pos"], *, prefix: KVPrefix | None = None,
            fwd_hooks: Sequence[FwdHook] = (), entry: BlockEntry | None = None,
            last_only: bool = False) -> Float[Tensor, "batch out_pos vocab"]:
    """Logits of ``tokens`` (with their own ``attention_mask`` and ``position_ids``), read after ``prefix``'s
    cached keys and values when one is given, with ``fwd_hooks`` active; hooks see, and the logits cover, the
    ``tokens`` positions only. With ``entry``, the blocks before ``entry.block`` are not run: that block reads
    ``entry.resid`` (see :func:`enter_at_block`). With ``last_only``, the logits of the last column only
    (``[batch, 1, vocab]``; the unembedding runs on that column alone where the model allows). Gradients flow as
    the caller's context allows (the prefix holds none)."""
    device = model.cfg.device
    tokens, mask, position_ids = tokens.to(device), attention_mask.to(device), position_ids.to(device)
    keep = {"logits_to_keep": 1} if last_only and _keeps_last_logits(model) else {}
    with model.hooks(fwd_hooks=list(fwd_hooks)), enter_at_block(model, entry):
        if prefix is None:
            logits = model(tokens, attention_mask=mask, position_ids=position_ids, **keep)
        else:
            mask = torch.cat([prefix.rows_mask(len(tokens)).to(device), mask], dim=1)
            logits, _ = model(tokens, attention_mask=mask, position_ids=position_ids,
                              past_key_values=prefix.cache(len(tokens)), use_cache=True,
                              return_type="logits_and_cache", **keep)
    return logits[:, -1:] if last_only else logits


def _keeps_last_logits(model: TransformerBridge) -> bool:
    """Whether the wrapped model computes the last position's logits alone (``logits_to_keep=1``) with the same
    numbers: checked once per model."""
    def check() -> bool:
        tokens = torch.randint(1, int(model.cfg.d_vocab), (2, 4), generator=torch.Generator().manual_seed(0))
        tokens = tokens.to(model.cfg.device)
        try:
            with torch.no_grad():
                full, last = model(tokens), model(tokens, logits_to_keep=1)
        except Exception:  # noqa: BLE001 - any failure means: unembed every position and slice
            return False
        return last.shape[1] == 1 and torch.allclose(last[:, 0].float(), full[:, -1].float(), atol=1e-5, rtol=1e-5)

    return _checked_once(model, "keeps_last_logits", check)


def run_continuations(model: TransformerBridge, prefix: KVPrefix | None, rows: Sequence[Sequence[int]],
                      pad_id: int, *, fwd_hooks: Sequence[FwdHook] = (),
                      entry: BlockEntry | None = None) -> Float[Tensor, "row pos vocab"]:
    """Logits of ``rows`` (token ids), each read after ``prefix`` (one row shared by all, or one per row):
    right-padded into one batch, position ids counting on from each prefix row's real tokens. Column ``i`` of
    row ``r`` predicts the token after ``rows[r][i]``; columns past a row's end are padding. Equal to running the
    prefix's tokens and the row alone, to float rounding. With ``prefix=None`` the rows run as they are.
    ``fwd_hooks`` see the continuation positions only; ``entry`` (the residual entering a block at the rows'
    positions, right-padded like them) skips the blocks before it.
    """
    tokens, mask = right_pad(rows, pad_id)
    start = torch.zeros(len(rows), dtype=torch.long)
    if prefix is not None:
        start = prefix.rows_mask(len(rows)).sum(1).cpu()
    positions = start[:, None] + torch.arange(tokens.shape[1])[None, :]
    return forward(model, tokens, mask, positions, prefix=prefix, fwd_hooks=fwd_hooks, entry=entry)


def batch_slices(n: int, batch_size: object) -> list[slice]:
    """Slices of ``range(n)`` in chunks of ``batch_size`` (checked: a positive int)."""
    check_int(batch_size, "batch_size", low=1)
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def run_padded(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
               fwd_hooks: Sequence[FwdHook] = (), *, prefix: KVPrefix | None = None,
               entry: BlockEntry | None = None, last_only: bool = False) -> Float[Tensor, "batch out_pos vocab"]:
    """Logits of a left-padded batch (attention mask, position ids counted from each row's first real token, as
    :mod:`reasonlens.generation` decodes), with ``fwd_hooks`` active and no gradients. With ``prefix`` (the keys
    and values of these rows' first ``prefix.length`` positions, e.g. from an earlier run of them), only the rest
    is computed: hooks then see, and the logits cover, positions ``prefix.length..`` only. With ``entry`` (the
    residual entering a block at those positions, e.g. from an earlier run), the blocks before it are not run.
    With ``last_only``, the logits of the last position only, ``[batch, 1, vocab]`` (what every row predicts next;
    the unembedding runs on that position alone where the model allows)."""
    positions = left_padded_positions(attention_mask)
    start = 0 if prefix is None else prefix.length
    with torch.no_grad():
        return forward(model, tokens[:, start:], attention_mask[:, start:], positions[:, start:], prefix=prefix,
                       fwd_hooks=fwd_hooks, entry=entry, last_only=last_only)


# ---------------------------------------------------------------------------------------------------------- capture


def _capture(act: Tensor, hook: Any, *, store: list[Tensor | None], slot: int, rows: Tensor, cols: Tensor) -> None:
    store[slot] = act[rows, cols].detach()


def _save(activation: Tensor, hook: Any, *, store: dict[str, Tensor], name: str,
          select: Callable[[Tensor], Tensor] | None) -> None:
    store[name] = (activation if select is None else select(activation)).detach()


def saving_hooks(store: dict[str, Tensor], selects: dict[str, Callable[[Tensor], Tensor] | None]) -> list[FwdHook]:
    """Hooks that write ``select(activation)`` (the whole activation for ``None``) of each named hook point into
    ``store`` (name -> tensor, detached)."""
    return [(name, functools.partial(_save, store=store, name=name, select=select)) for name, select in selects.items()]


def _tap(act: Tensor, hook: Any, *, taps: dict[str, Tensor], name: str) -> Tensor:
    taps[name] = torch.zeros_like(act, requires_grad=True)
    return act + taps[name]


def gradient_taps(names: Sequence[str]) -> tuple[list[FwdHook], dict[str, Tensor]]:
    """Hooks that add a zero tensor requiring gradients to each named activation (the forward is unchanged), and
    the dict they fill (name -> that tensor): an output's gradient with respect to ``taps[name]`` is its gradient
    with respect to the activation."""
    taps: dict[str, Tensor] = {}
    return [(name, functools.partial(_tap, taps=taps, name=name)) for name in names], taps


def collect_activations(model: TransformerBridge, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                        hook_names: Sequence[str], *, batch_size: int = 32,
                        progress: bool = False) -> list[Float[Tensor, "hook n_pos d_model"]]:
    """The activations of ``hook_names`` (each ``[batch, pos, d_model]``, e.g. ``blocks.{l}.hook_resid_post``)
    at ``positions[i]`` of sequence ``rows[i]``, one ``[hook, position, d_model]`` tensor per sequence.

    Sequences are left-padded into batches of ``batch_size`` (longest first) with an attention mask and
    per-row position ids, so each row sees exactly what it would see alone. Only ``hook_names`` are hooked,
    and only the asked positions are kept.
    """
    from tqdm.auto import tqdm

    check_int(batch_size, "batch_size", low=1)
    rows = check_token_lists(model, rows, name="rows", item="sequence")
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence):
        raise ReasonlensError(f"positions must be one list of positions per sequence, got {describe(positions)}")
    if len(positions) != len(rows):
        raise ReasonlensError(f"{len(positions)} position lists for {len(rows)} sequences; pass one per sequence")
    if isinstance(hook_names, str):
        raise ReasonlensError(f"hook_names is one string; pass a list, e.g. [{hook_names!r}]")
    names = [check_hook_name(model, n) for n in hook_names]
    if not names:
        raise ReasonlensError("no hook names given; pass at least one, e.g. ['blocks.0.hook_resid_post']")
    check_context(model, [len(row) for row in rows], item="sequence", fix="shorten them")
    for i, (row, pos) in enumerate(zip(rows, positions)):
        if isinstance(pos, (str, bytes)) or not isinstance(pos, Sequence) or not all(is_int(p) for p in pos):
            raise ReasonlensError(f"positions of sequence {i} must be a list of integer token positions, got "
                                  f"{describe(pos)}")
        if any(not 0 <= p < len(row) for p in pos):
            raise ReasonlensError(f"sequence {i} has {len(row)} tokens but positions {list(pos)} were asked for; "
                                  f"use positions in 0..{len(row) - 1}")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: list[Tensor] = [torch.empty(0)] * len(rows)
    device = model.cfg.device
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in tqdm(batches, desc="activations", unit="batch", disable=not progress):
            width = max(len(rows[i]) for i in batch)
            ids, mask = left_pad([rows[i] for i in batch], 0)
            counts = [len(positions[i]) for i in batch]
            sel_rows = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(counts)).to(device)
            sel_cols = torch.tensor([width - len(rows[i]) + p for i in batch for p in positions[i]],
                                    dtype=torch.long).to(device)
            store: list[Tensor | None] = [None] * len(names)
            hooks = [(n, functools.partial(_capture, store=store, slot=s, rows=sel_rows, cols=sel_cols))
                     for s, n in enumerate(names)]
            with model.hooks(fwd_hooks=hooks):
                model(ids.to(device), attention_mask=mask.to(device),
                      position_ids=left_padded_positions(mask).to(device), return_type=None)
            if any(t is None for t in store):
                raise ReasonlensError(f"hooks {names} did not all fire on a forward pass; pass hook names of "
                                      "activations every forward computes (e.g. blocks.{l}.hook_resid_post)")
            stacked = torch.stack(store).cpu()  # [hook, positions of the batch, d_model]
            for i, chunk in zip(batch, stacked.split(counts, dim=1)):
                out[i] = chunk
    return out


# ---------------------------------------------------------------------------------------------------------- logit lens


def lens_logits(model: TransformerBridge, resid: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch vocab"]:
    """``unembed(ln_final(resid))``: a residual vector read as if it were the last layer's, with the model's own
    final norm (applied to ``resid`` alone) and unembedding. Of the last ``resid_post`` it is the model's
    logits."""
    return model.unembed(model.ln_final(resid))

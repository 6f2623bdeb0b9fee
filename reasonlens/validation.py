"""The one validation layer of the public API: every bad input gets a :class:`~reasonlens.errors.ReasonlensError`
that says what was given and what to pass, before any forward pass (never a traceback from inside torch, never a
silent wrong answer).

- Settings: :func:`check_int` (an integer, not a bool or a float), :func:`check_float` (a finite number),
  :func:`check_bool`, :func:`check_choice`, :func:`check_int_list` / :func:`check_float_list` (lists of them,
  by default non-empty and without repeats).
- Tensors: :func:`check_tensor` (kind of values and number of axes), :func:`check_finite` (no NaN or inf).
- Tokens: :func:`check_tokens` (a padded ``[batch, pos]`` batch of token ids with its attention mask: integer
  ids in ``[0, vocab)``, a 0/1 mask without holes, rows that fit the context), :func:`check_per_example` (one
  token id or position per prompt), :func:`check_token_lists` (unpadded token-id lists),
  :func:`check_context` (the model's context length, the one check every method that takes tokens runs),
  :func:`check_spans` (``[start, end)`` token spans).
- Files: :func:`load_saved` (a file written by a result's ``save``).

The public functions keep their jaxtyping annotations, checked at test time by the jaxtyping import hook; the
bad-input tests call them unwrapped (``inspect.unwrap``), as users do, so that they see these checks' errors
rather than the hook's ``TypeCheckError``. The configs that check themselves in ``__post_init__`` carry
``@no_type_check`` (plain field types, no tensor shapes), so a bad value gets the same error under the hook.
Private helpers that receive a value before it is checked annotate it as ``object``.

>>> check_int_list([2, 0], "layers", low=0)
[2, 0]
>>> check_int_list([1.0], "layers")
Traceback (most recent call last):
...
reasonlens.errors.ReasonlensError: layers must be integers, got [1.0]; pass e.g. [0, 2]
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.model import context_length

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message (a tensor's dtype and shape, else its repr)."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, bool):
        return f"{value} (a bool)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a Python or NumPy int, or a 0-d integer tensor), not a bool."""
    if isinstance(value, Tensor):
        return value.ndim == 0 and _integer_dtype(value.dtype)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _suffix(hint: str | None) -> str:
    return f"; {hint}" if hint else ""


# ---------------------------------------------------------------------------------------------------------- settings


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None, optional: bool = False,
              hint: str | None = None) -> int | None:
    """``value`` as an ``int`` in ``low..high`` (either bound may be None); ``None`` passes when ``optional``.
    A bool or a float (even ``2.0``) is an error."""
    if value is None and optional:
        return None
    if not is_int(value):
        raise ReasonlensError(f"{name} must be an integer{' or None' if optional else ''}, got {describe(value)}"
                              f"{_suffix(hint)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        want = (f"in {low}..{high}" if low is not None and high is not None
                else f"at least {low}" if low is not None else f"at most {high}")
        raise ReasonlensError(f"{name} must be {want}, got {value}{_suffix(hint)}")
    return value


def _interval(low: float | int | None, high: float | int | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def check_float(value: Any, name: str, *, low: float | int | None = None, high: float | int | None = None,
                low_open: bool = False, high_open: bool = False, optional: bool = False,
                hint: str | None = None) -> float | None:
    """``value`` as a finite ``float`` within the bounds (``low_open`` / ``high_open``: the bound itself is
    excluded); ``None`` passes when ``optional``. A bool, a string, NaN or infinity is an error."""
    if value is None and optional:
        return None
    if isinstance(value, Tensor) and value.ndim == 0 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ReasonlensError(f"{name} must be a number{' or None' if optional else ''}, got {describe(value)}"
                              f"{_suffix(hint)}")
    value = float(value)
    if not math.isfinite(value):
        raise ReasonlensError(f"{name} must be a finite number, got {value}{_suffix(hint)}")
    if ((low is not None and (value <= low if low_open else value < low))
            or (high is not None and (value >= high if high_open else value > high))):
        raise ReasonlensError(f"{name} must be {_interval(low, high, low_open, high_open)}, got {value:g}"
                              f"{_suffix(hint)}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a bool (``True`` / ``False``; ``1`` or ``"yes"`` is an error)."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_"):
        raise ReasonlensError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ReasonlensError(f"unknown {name} {value!r}; choose from {tuple(choices)}")
    return value


def _as_list(values: Any, name: str, kind: str, example: str, optional: bool) -> list | None:
    if values is None and optional:
        return None
    if isinstance(values, Tensor):
        if values.ndim != 1:
            raise ReasonlensError(f"{name} must be a list of {kind}s, got {describe(values)}; pass e.g. {example}")
        return values.tolist()
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        none = " or None" if optional else ""
        raise ReasonlensError(f"{name} must be a list of {kind}s{none}, got {describe(values)}; pass e.g. {example}")
    return list(values)


def _check_items(items: list, name: str, allow_empty: bool, unique: bool, example: str) -> None:
    if not items and not allow_empty:
        raise ReasonlensError(f"{name} is empty; pass at least one, e.g. {example}")
    if unique:
        seen, repeats = set(), []
        for v in items:
            if v in seen and v not in repeats:
                repeats.append(v)
            seen.add(v)
        if repeats:
            raise ReasonlensError(f"{name} {items} repeat {repeats}; list each once")


def check_int_list(values: Any, name: str, *, low: int | None = None, high: int | None = None,
                   allow_empty: bool = False, unique: bool = True, optional: bool = False,
                   example: str = "[0, 2]") -> list[int] | None:
    """``values`` as a list of ints in ``low..high``: a list, tuple, range or 1-D integer tensor, non-empty
    unless ``allow_empty``, without repeats unless ``not unique``; ``None`` passes when ``optional``. A bare
    int, a bool, a string or a float item is an error."""
    items = _as_list(values, name, "integer", example, optional)
    if items is None:
        return None
    if not all(is_int(v) for v in items):
        raise ReasonlensError(f"{name} must be integers, got {describe(items)}; pass e.g. {example}")
    items = [int(v) for v in items]
    _check_items(items, name, allow_empty, unique, example)
    bad = [v for v in items if (low is not None and v < low) or (high is not None and v > high)]
    if bad:
        want = (f"in {low}..{high}" if low is not None and high is not None
                else f"at least {low}" if low is not None else f"at most {high}")
        raise ReasonlensError(f"{name} {bad} out of range: each must be {want}")
    return items


def check_float_list(values: Any, name: str, *, low: float | int | None = None, high: float | int | None = None,
                     low_open: bool = False, high_open: bool = False, allow_empty: bool = False,
                     unique: bool = False, example: str = "[0.5, 1.0]") -> list[float]:
    """``values`` as a list of finite floats within the bounds (see :func:`check_float`)."""
    items = _as_list(values, name, "number", example, False)
    for v in items:
        check_float(v, f"every entry of {name}", low=low, high=high, low_open=low_open, high_open=high_open)
    items = [float(v) for v in items]
    _check_items(items, name, allow_empty, unique, example)
    return items


# ---------------------------------------------------------------------------------------------------------- tensors


def check_tensor(value: Any, name: str, *, kind: Literal["int", "float", "bool", "any"] = "any",
                 ndim: int | Sequence[int] | None = None, non_empty: bool = True, what: str = "") -> Tensor:
    """``value`` if it is a tensor of ``kind`` values (``int``: an integer dtype, not bool; ``float``: a
    floating dtype) with ``ndim`` axes (one of them) and, when ``non_empty``, no axis of size 0. ``what``
    describes the expected layout in the message (e.g. ``"[step, feature]"``)."""
    layout = f" {what}" if what else ""
    if not isinstance(value, Tensor):
        raise ReasonlensError(f"{name} must be a{layout} tensor, got {describe(value)}")
    ok = {"int": _integer_dtype(value.dtype), "float": value.dtype.is_floating_point,
          "bool": value.dtype == torch.bool, "any": True}[kind]
    if not ok:
        want = {"int": "integer", "float": "floating-point", "bool": "bool"}[kind]
        raise ReasonlensError(f"{name} must be a{layout} {want} tensor, got {describe(value)}")
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim or ())
    if ndims and value.ndim not in ndims:
        axes = " or ".join(str(n) for n in ndims)
        raise ReasonlensError(f"{name} must have {axes} axes{layout}, got {describe(value)}")
    if non_empty and 0 in value.shape:
        raise ReasonlensError(f"{name} is empty ({describe(value)}); pass at least one row")
    return value


def check_finite(value: Tensor, name: str, *, hint: str | None = None) -> Tensor:
    """``value`` if it holds no NaN or infinite entry (integer tensors always pass)."""
    if not isinstance(value, Tensor):
        raise ReasonlensError(f"{name} must be a tensor, got {describe(value)}")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0].tolist())
            raise ReasonlensError(
                f"{name} hold {int(bad.sum())} NaN or infinite value(s) (the first at index {first}: "
                f"{value[first].item()}){_suffix(hint or 'drop or repair those rows: nothing trained or scored on them means anything')}")
    return value


# ---------------------------------------------------------------------------------------------------------- tokens


def check_context(model: TransformerBridge, lengths: Sequence[int], *, item: str = "prompt", extra: int = 0,
                  extra_name: str = "max_new_tokens",
                  fix: str = "shorten the prompts (e.g. fewer demonstrations)") -> None:
    """Every sequence of ``lengths`` tokens, plus ``extra`` positions still to come (``extra_name``, e.g. the
    tokens to generate), fits the model's context length: learned position embeddings (GPT-2) have no entry
    beyond it, and rotary models (Llama, Qwen) were not trained there. The one context check of reasonlens."""
    n_ctx = context_length(model)
    too_long = [i for i, n in enumerate(lengths) if n + extra > n_ctx]
    if not too_long:
        return
    i = too_long[0]
    count = f"{len(too_long)} {item}(s) too long"
    if extra:
        raise ReasonlensError(f"{item} {i} has {lengths[i]} tokens, and with {extra_name}={extra} it needs more "
                              f"positions than the model's context length {n_ctx} ({count}); {fix} or lower "
                              f"{extra_name}")
    raise ReasonlensError(f"{item} {i} has {lengths[i]} tokens, more than the model's context length {n_ctx} "
                          f"({count}); {fix}")


def _check_vocab(model: TransformerBridge, ids: Tensor, name: str, where: str, fix: str) -> None:
    """``where``: how to name an index of ``ids`` ("prompt" for 1-D ids, "row" for 2-D ones, "" for none)."""
    vocab = model.cfg.d_vocab
    if ids.numel() == 0:
        return
    bad = (ids < 0) | (ids >= vocab)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0].tolist())
        at = (f" at row {first[0]}, position {first[1]}" if where == "row" and len(first) == 2
              else f" for {where} {first[0]}" if where else "")
        raise ReasonlensError(f"{name}: token id {int(ids[first])}{at} is outside the vocabulary [0, {vocab}) "
                              f"({int(bad.sum())} such id(s)); {fix}")


def check_tokens(model: TransformerBridge, tokens: Any, attention_mask: Any = None, *, name: str = "tokens",
                 padding: Literal["left", "either"] = "left") -> tuple[Tensor, Tensor]:
    """``(tokens, attention_mask)`` of a padded batch, both as ``long`` tensors on the tokens' and the mask's
    devices (an all-ones mask when none is given), after checking that

    - ``tokens`` is a non-empty ``[batch, pos]`` tensor of integer token ids in ``[0, vocab)`` (with
      ``padding="either"`` only the real positions are looked up, so only they need to be ids);
    - ``attention_mask`` has the tokens' shape, holds only 0 (padding) and 1 (real token), and every row is
      left-padded (``padding="left"``: zeros, then ones up to the last position, as
      :func:`reasonlens.runtime.left_pad` makes them) or one run of ones (``padding="either"``);
    - every row's real tokens fit the model's context (:func:`check_context`).
    """
    if not isinstance(tokens, Tensor):
        raise ReasonlensError(f"{name} must be a [batch, pos] tensor of token ids, got {describe(tokens)}; "
                              "encode the prompts with model.to_tokens (one prompt) or reasonlens.runtime.left_pad")
    if not _integer_dtype(tokens.dtype):
        raise ReasonlensError(f"{name} must hold integer token ids, got {describe(tokens)}; pass the ids the "
                              "tokenizer gave (model.to_tokens returns a long tensor)")
    if tokens.ndim != 2 or 0 in tokens.shape:
        raise ReasonlensError(f"{name} must be a non-empty [batch, pos] tensor, got shape {tuple(tokens.shape)}; "
                              "pass at least one prompt of at least one token (one prompt is tokens[None])")
    if attention_mask is None:
        mask = torch.ones(tokens.shape, dtype=torch.long, device=tokens.device)
    else:
        if not isinstance(attention_mask, Tensor):
            raise ReasonlensError(f"attention_mask must be a tensor of the shape of {name}, got "
                                  f"{describe(attention_mask)}")
        if attention_mask.shape != tokens.shape:
            raise ReasonlensError(f"attention_mask has shape {tuple(attention_mask.shape)} but {name} have "
                                  f"{tuple(tokens.shape)}; pass the mask of the same padded batch")
        values = attention_mask.cpu()
        off = (values != 0) & (values != 1)
        if bool(off.any()):
            raise ReasonlensError(f"attention_mask must hold only 0 (padding) and 1 (real token), got "
                                  f"{sorted(set(values[off].tolist()))[:5]}")
        mask = values.long()
        steps = mask[:, 1:] - mask[:, :-1]
        if padding == "left":
            bad = (steps < 0).any(1) | (mask[:, -1] == 0)
            if bool(bad.any()):
                row = int(bad.nonzero()[0])
                why = ("ends with padding (right-padded?)" if int(mask[row, -1]) == 0
                       else "has a padding 0 between real tokens (a hole)")
                raise ReasonlensError(f"attention_mask must be left-padded (zeros, then ones up to the last position) "
                                      f"in every row; row {row} {why}; pad the prompts on the left as "
                                      "reasonlens.runtime.left_pad does")
        else:
            runs = (steps > 0).sum(1) + mask[:, 0]  # the number of runs of ones in each row
            bad = runs != 1
            if bool(bad.any()):
                row = int(bad.nonzero()[0])
                why = "has no real token" if int(runs[row]) == 0 else "has a padding 0 between real tokens (a hole)"
                raise ReasonlensError(f"attention_mask row {row} {why}; every row must be one run of real tokens, "
                                      "padded on the left or on the right")
        mask = mask.to(attention_mask.device)
    ids = tokens if padding == "left" else tokens[mask.to(tokens.device).bool()]
    _check_vocab(model, ids, name, "row" if padding == "left" else "",
                 "encode the prompts with this model's tokenizer")
    item = "prompt" if name == "tokens" else f"{name.removesuffix(' tokens')} prompt"
    check_context(model, mask.sum(1).tolist(), item=item)
    return tokens.long(), mask


def check_per_example(model: TransformerBridge, values: Any, name: str, batch: int, *,
                      kind: Literal["token", "position"] = "token") -> Tensor:
    """``values`` as a ``long`` tensor of one integer per prompt (a ``[batch]`` tensor or a list); with
    ``kind="token"`` every value must be a token id in ``[0, vocab)``, with ``"position"`` a position >= 0."""
    if not isinstance(values, Tensor):
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ReasonlensError(f"{name} must be a [batch] tensor with one {kind} per prompt, got "
                                  f"{describe(values)}")
        items = list(values)
        if not all(is_int(v) for v in items):
            raise ReasonlensError(f"{name} must hold integer {kind}s, got {describe(items)}")
        values = torch.tensor([int(v) for v in items], dtype=torch.long)
    if not _integer_dtype(values.dtype):
        raise ReasonlensError(f"{name} must hold integer {kind}s, got {describe(values)}")
    if tuple(values.shape) != (batch,):
        raise ReasonlensError(f"{name} has shape {tuple(values.shape)} but the batch has {batch} prompts; pass one "
                              f"value per prompt (a [{batch}] tensor)")
    if kind == "token":
        _check_vocab(model, values, name, "prompt", f"encode {name} with this model's tokenizer")
    elif batch and int(values.min()) < 0:
        raise ReasonlensError(f"{name} holds negative positions {values[values < 0].tolist()[:5]}; give positions "
                              "of the padded batch, 0 or more")
    return values.long()


def check_token_lists(model: TransformerBridge, rows: Any, *, name: str = "prompts",
                      item: str = "prompt") -> list[list[int]]:
    """``rows`` (a list of token-id lists or 1-D integer tensors) as lists of ints: at least one row, every row
    non-empty, every id an integer in ``[0, vocab)``. The context length is :func:`check_context`'s."""
    if isinstance(rows, (str, bytes)):
        raise ReasonlensError(f"{name} is one string; pass a list of {item}s, e.g. [{item}]")
    if isinstance(rows, Tensor):
        if rows.ndim != 2:
            raise ReasonlensError(f"{name} must be a list of token-id lists or a [batch, pos] tensor, got "
                                  f"{describe(rows)}")
        rows = list(rows)
    if not isinstance(rows, Iterable):
        raise ReasonlensError(f"{name} must be a list of token-id lists, got {describe(rows)}")
    rows = list(rows)
    if not rows:
        raise ReasonlensError(f"no {item}s given; pass a non-empty list of token-id lists")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, Tensor):
            if row.ndim != 1 or not _integer_dtype(row.dtype):
                raise ReasonlensError(f"{item} {i} must be a 1-D integer tensor or a list of token ids, got "
                                      f"{describe(row)}")
            ids = row.tolist()
        elif isinstance(row, (str, bytes)) or not isinstance(row, Iterable):
            raise ReasonlensError(f"{item} {i} must be a list of token ids, got {describe(row)}")
        else:
            ids = list(row)
            if not all(is_int(t) for t in ids):
                raise ReasonlensError(f"{item} {i} must hold integer token ids, got {describe(ids)}; encode it with "
                                      "this model's tokenizer")
            ids = [int(t) for t in ids]
        if not ids:
            raise ReasonlensError(f"{item} {i} has no tokens; pass at least one token (e.g. BOS)")
        vocab = model.cfg.d_vocab
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ReasonlensError(f"{item} {i} has token ids outside the vocabulary [0, {vocab}) ({bad[0]}); encode "
                                  "it with this model's tokenizer")
        out.append(ids)
    return out


def check_spans(spans: Any, batch: int, length: int, *, name: str = "spans") -> list[list[tuple[int, int]]]:
    """``spans`` (one list of ``(start, end)`` token spans per example, the same non-zero number for every
    example, in positions ``0..length`` of the padded batch) as lists of int pairs."""
    if isinstance(spans, (str, bytes, Tensor)) or not isinstance(spans, Iterable):
        raise ReasonlensError(f"{name} must be one list of (start, end) spans per example, got {describe(spans)}")
    spans = [s if not isinstance(s, (str, bytes)) and isinstance(s, Iterable) else None for s in spans]
    spans = [list(s) if s is not None else None for s in spans]
    if len(spans) != batch:
        raise ReasonlensError(f"{name} are given for {len(spans)} examples but the batch has {batch}")
    if any(s is None for s in spans):
        raise ReasonlensError(f"{name} must be one list of (start, end) spans per example, e.g. [[(0, 4), (4, 9)]] "
                              "for one example")
    n_spans = {len(s) for s in spans}
    if len(n_spans) != 1 or 0 in n_spans:
        raise ReasonlensError(f"every example needs the same, non-zero number of spans; got {sorted(n_spans)}")
    out = []
    for b, example_spans in enumerate(spans):
        row = []
        for s, span in enumerate(example_spans):
            pair = list(span) if isinstance(span, Iterable) and not isinstance(span, (str, bytes)) else None
            if pair is None or len(pair) != 2 or not all(is_int(v) for v in pair):
                raise ReasonlensError(f"span {s} of example {b} is {describe(span)}; a span is a pair of integer token "
                                      "positions (start, end)")
            start, end = int(pair[0]), int(pair[1])
            if start >= end:
                raise ReasonlensError(f"span {s} of example {b} is ({start}, {end}): its start must be before its end "
                                      "(a span is the token positions [start, end), e.g. (2, 6))")
            if start < 0 or end > length:
                raise ReasonlensError(f"span {s} of example {b} is ({start}, {end}), outside the batch's positions "
                                      f"0..{length}")
            row.append((start, end))
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------------- files


def load_saved(path: object, what: str, keys: Sequence[str] = (), *, fmt: Literal["torch", "json"] = "torch",
               expect_class: str | Sequence[str] | None = None) -> Any:
    """The contents of ``path``, a file a ``what`` wrote with its ``save`` method (``fmt``: ``torch.save`` or
    JSON), checked to be a dict holding ``keys`` (and, with ``expect_class``, a ``"class"`` entry among those
    names). A missing, unreadable or foreign file is a :class:`ReasonlensError` naming the problem."""
    if not isinstance(path, (str, os.PathLike)):
        raise ReasonlensError(f"path must be a file path (a str or pathlib.Path), got {describe(path)}")
    path = Path(path)
    if not path.exists():
        raise ReasonlensError(f"no file {path}; pass the path a {what} was saved to (with its save method)")
    if path.is_dir():
        raise ReasonlensError(f"{path} is a folder; pass the file a {what} was saved to")
    try:
        if fmt == "json":
            import json

            data = json.loads(path.read_text())
        else:
            data = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing here
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ReasonlensError(f"{path} is not a {what} file (it could not be read: {detail}); pass a file written "
                              f"by {what}.save") from e
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise ReasonlensError(f"{path} holds no {what} (it lacks {missing}); pass a file written by {what}.save")
    if expect_class is not None:
        names = (expect_class,) if isinstance(expect_class, str) else tuple(expect_class)
        got = data.get("class")
        if got is not None and got not in names:
            raise ReasonlensError(f"{path} holds a {got}, not a {what}; load it with {got}.load")
    return data


__all__ = ["is_int", "check_bool", "check_choice", "check_context", "check_finite", "check_float", "check_float_list",
           "check_int", "check_int_list", "check_per_example", "check_spans", "check_tensor", "check_token_lists",
           "check_tokens", "describe", "load_saved"]

"""Result containers: tensors that carry their axis names and labels, with statistics and save / load; configs as
plain dicts (:class:`ConfigDict`); the contract of a study's result (:class:`StudyResult`).

>>> import torch
>>> r = LabelledTensor(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), axes=("example", "head"),
...                    labels={"head": ["L0H0", "L0H1"]})
>>> r.mean().tolist()
[2.0, 3.0]
>>> r.to_dataframe().columns.tolist()
['head', 'mean', 'stderr']
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Protocol, TypeVar, Union, get_args, get_origin, get_type_hints, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.errors import ReasonlensError


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses as dicts, tuples as lists, anything else JSON cannot hold as its
    ``str``.

    >>> jsonable({"hops": (1, 2), "path": Path("a")})
    {'hops': [1, 2], 'path': 'a'}
    """
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return json.loads(json.dumps(value, default=str))


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """``["L0H0", "L0H1", ...]`` in layer-major order (the order of a flattened ``[layer, head]`` tensor)."""
    return [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]


C = TypeVar("C")


def config_to_dict(config: object) -> dict[str, Any]:
    """The fields of ``config`` (a dataclass) as plain JSON data: tuples as lists, nested dataclasses as dicts
    (:func:`config_from_dict` reads it back)."""
    if not is_dataclass(config) or isinstance(config, type):
        from reasonlens.validation import describe

        raise ReasonlensError(f"a config (a dataclass instance) is needed, got {describe(config)}")
    return {f.name: _plain(getattr(config, f.name)) for f in fields(config) if f.init}


def config_from_dict(cls: type[C], data: object) -> C:
    """The ``cls`` (a dataclass) of a :func:`config_to_dict` record, its lists and dicts turned back into what the
    field types say (tuples, nested dataclasses); missing keys take their defaults, unknown keys are an error.

    >>> from reasonlens.evaluate import EvalConfig
    >>> config_from_dict(EvalConfig, {"hops": [1, 2]}).hops
    (1, 2)
    >>> config_from_dict(EvalConfig, {"hop": [1, 2]})
    Traceback (most recent call last):
    ...
    reasonlens.errors.ReasonlensError: EvalConfig has no setting 'hop'; its settings are n_per_cell, seed, kinds, hops, batch_size, closed_book, shots, sizes
    """
    if not (isinstance(cls, type) and is_dataclass(cls)):
        raise ReasonlensError(f"{cls!r} is not a config class (a dataclass)")
    if not isinstance(data, Mapping):
        from reasonlens.validation import describe

        raise ReasonlensError(f"a {cls.__name__} is read from a dict of its settings, got {describe(data)}")
    types = _field_types(cls)
    for key in data:
        if key not in types:
            raise ReasonlensError(f"{cls.__name__} has no setting {key!r}; its settings are {', '.join(types)}")
    return cls(**{key: _typed(types[key], value) for key, value in data.items()})


class ConfigDict:
    """A config that converts to plain JSON data and back: ``Config.from_dict(c.to_dict()) == c``."""

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON data (:func:`config_to_dict`)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: object) -> C:
        """The config of a :meth:`to_dict` record (:func:`config_from_dict`)."""
        return config_from_dict(cls, data)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple, range)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _field_types(cls: type) -> dict[str, Any]:
    """The type of every init field of the dataclass ``cls`` (``typing.get_type_hints`` sees none on a
    ``@no_type_check`` class, so each class's own annotations are read off a plain stand-in)."""
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        own = base.__dict__.get("__annotations__")
        if own:
            stand_in = type(base.__name__, (), {"__annotations__": own, "__module__": base.__module__})
            hints.update(get_type_hints(stand_in))
    return {f.name: hints[f.name] for f in fields(cls) if f.init}


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (plain JSON data) as the type ``hint`` says: lists as tuples, dicts as dataclasses, through
    unions, sequences and dicts; anything else unchanged (the config's own checks judge it)."""
    origin, args = get_origin(hint) or hint, get_args(hint)
    if origin in (Union, UnionType):
        return next((_typed(arm, value) for arm in args if _fits(arm, value)), value)
    if is_dataclass(origin) and isinstance(value, Mapping):
        return config_from_dict(origin, value)
    if origin in (tuple, list, Sequence) and isinstance(value, (list, tuple)):
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = [_typed(arm, v) for arm, v in zip(args, value)]
        else:
            items = [_typed(args[0], v) if args else v for v in value]
        return items if origin is list else tuple(items)
    if origin in (dict, Mapping) and len(args) == 2 and isinstance(value, Mapping):
        return {k: _typed(args[1], v) for k, v in value.items()}
    return value


def _fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` (plain JSON data) can stand for the type ``hint`` (an arm of a union)."""
    origin = get_origin(hint) or hint
    if origin in (tuple, list, Sequence):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping) or is_dataclass(origin):
        return isinstance(value, Mapping)
    return not isinstance(origin, type) or isinstance(value, origin)


@dataclass
class LabelledTensor:
    """A tensor whose axes have names and (optionally) tick labels.

    If the first axis is ``"example"``, :meth:`mean` and :meth:`stderr` reduce over it and
    :meth:`to_dataframe` gives one row per cell with its mean and standard error; otherwise one row per
    cell with its value. ``meta`` holds JSON-serialisable settings (site, metric, model, ...).
    """

    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise ReasonlensError(f"values have {self.values.ndim} axes but {len(self.axes)} names were given: {self.axes}")
        for axis, names in self.labels.items():
            if axis not in self.axes:
                raise ReasonlensError(f"labels given for unknown axis {axis!r}; axes are {self.axes}")
            size = self.values.shape[self.axes.index(axis)]
            if len(names) != size:
                raise ReasonlensError(f"axis {axis!r} has {size} entries but {len(names)} labels")

    @property
    def per_example(self) -> bool:
        return bool(self.axes) and self.axes[0] == "example"

    @property
    def cell_axes(self) -> tuple[str, ...]:
        return self.axes[1:] if self.per_example else self.axes

    def mean(self) -> Tensor:
        """Mean over examples (NaN-free: cells are means of finite per-example values)."""
        return self.values.mean(0) if self.per_example else self.values

    def stderr(self) -> Tensor:
        """Standard error of the mean over examples (zero with one example)."""
        if not self.per_example or self.values.shape[0] < 2:
            return torch.zeros_like(self.mean())
        return self.values.std(0, unbiased=True) / self.values.shape[0] ** 0.5

    def interval(self, confidence: float = 0.95) -> Float[Tensor, "*cell 2"]:
        """Student-t interval of the mean over examples, ``[*cell, (low, high)]`` (NaN with one example)."""
        from reasonlens.stats import mean_interval

        if not self.per_example:
            raise ReasonlensError(f"an interval needs per-example values (first axis 'example'), axes are {self.axes}")
        return mean_interval(self.values, confidence)

    def permutation_test(self, other: LabelledTensor | None = None, n_permutations: int = 10_000,
                         seed: int = 0) -> Float[Tensor, " *cell"]:
        """Per cell, the two-sided p-value that the mean over examples is zero, or with ``other`` (the same examples
        and cells, e.g. another method or a control) that the paired difference is zero: a sign-flip permutation
        test (:func:`reasonlens.stats.sign_flip_test`)."""
        from reasonlens.stats import sign_flip_test

        if not self.per_example:
            raise ReasonlensError(f"a test needs per-example values (first axis 'example'), axes are {self.axes}")
        values = self.values
        if other is not None:
            if other.axes != self.axes or other.values.shape != values.shape:
                raise ReasonlensError(f"cannot pair {tuple(values.shape)} {self.axes} with {tuple(other.values.shape)} "
                                      f"{other.axes}; pass results over the same examples and cells")
            values = values - other.values
        return sign_flip_test(values, n_permutations, seed)

    def axis_labels(self, axis: str) -> list[str]:
        """Tick labels of ``axis`` (its indices as strings when none were given)."""
        if axis in self.labels:
            return list(self.labels[axis])
        return [str(i) for i in range(self.values.shape[self.axes.index(axis)])]

    def to_dataframe(self):
        """One row per cell: its label on every cell axis, ``mean`` and ``stderr`` (or ``value``)."""
        import itertools

        import pandas as pd

        axes = self.cell_axes
        mean, err = self.mean(), self.stderr()
        rows = []
        for idx in itertools.product(*(range(n) for n in mean.shape)):
            row = {a: self.axis_labels(a)[i] for a, i in zip(axes, idx)}
            if self.per_example:
                row.update(mean=float(mean[idx]), stderr=float(err[idx]))
            else:
                row["value"] = float(mean[idx])
            rows.append(row)
        return pd.DataFrame(rows, columns=[*axes, *(["mean", "stderr"] if self.per_example else ["value"])])

    def to_dict(self) -> dict[str, Any]:
        """Values (on the CPU), axes, labels and metadata, for saving inside a larger record (:meth:`from_dict`)."""
        return {"values": self.values.detach().cpu(), "axes": list(self.axes), "labels": self.labels,
                "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelledTensor:
        """The tensor of a :meth:`to_dict` record."""
        return cls(values=data["values"], axes=tuple(data["axes"]), labels=data["labels"], meta=data["meta"])

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a ``.pt`` file with the tensor, axes, labels and metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"class": type(self).__name__, "values": self.values.detach().cpu(), "axes": list(self.axes),
                    "labels": self.labels, "meta": json.loads(json.dumps(self.meta))}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelledTensor:
        """Read a file written by :meth:`save` (a missing, unreadable or foreign file is a
        :class:`ReasonlensError`; a subclass loads its own files and plain :class:`LabelledTensor` ones)."""
        from reasonlens.validation import load_saved

        expect = None if cls is LabelledTensor else (cls.__name__, "LabelledTensor")
        data = load_saved(path, cls.__name__, ("values", "axes", "labels", "meta"), expect_class=expect)
        if not isinstance(data["values"], Tensor):
            raise ReasonlensError(f"{path} holds no tensor of values; pass a file written by {cls.__name__}.save")
        return cls(values=data["values"], axes=tuple(data["axes"]), labels=data["labels"], meta=data["meta"])


RESULTS_FILE = "results.json"
RESULTS_FORMAT = 1  # the version of the folder layout, ``"format"`` in results.json


@runtime_checkable
class StudyResult(Protocol):
    """The result of a study (``EvalResult``, ``MechanismResult``, ``IPGStudyResult``, ``StepImportanceResult``,
    ``TourResult``).

    ``save(folder)`` writes ``results.json`` (:func:`write_results`: :meth:`summary` with the class name under
    ``"result"`` and :data:`RESULTS_FORMAT` under ``"format"``) and the parts (``.pt`` and JSON files) beside it;
    ``load(folder)`` reads them back (:func:`read_results`, :func:`result_part`)."""

    def summary(self) -> dict[str, Any]: ...

    def save(self, out: str | Path) -> Path: ...

    @classmethod
    def load(cls, out: str | Path) -> StudyResult: ...


def write_results(result: StudyResult, out: str | os.PathLike[str]) -> Path:
    """Make the folder ``out`` and write its ``results.json`` (see :class:`StudyResult`); returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"result": type(result).__name__, "format": RESULTS_FORMAT, **result.summary()}
    (out / RESULTS_FILE).write_text(json.dumps(record, indent=1))
    return out


def read_results(out: object, what: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """The ``results.json`` of the folder ``out`` a ``what`` was saved to, checked to be one (a folder saved
    before the ``"result"`` entry passes on its ``keys``): a missing folder or file, another result's folder, a
    newer format or missing ``keys`` are a :class:`ReasonlensError`."""
    from reasonlens.validation import describe, load_saved

    if not isinstance(out, (str, os.PathLike)):
        raise ReasonlensError(f"pass the folder a {what} was saved to (a str or pathlib.Path), got {describe(out)}")
    out = Path(out)
    if not out.exists():
        raise ReasonlensError(f"no file {out / RESULTS_FILE}: the folder {out} does not exist; pass the folder a "
                              f"{what} was saved to")
    if not out.is_dir():
        raise ReasonlensError(f"{out} is a file; pass the folder a {what} was saved to")
    if not (out / RESULTS_FILE).is_file():
        raise ReasonlensError(f"{out} holds no {RESULTS_FILE}; pass the folder a {what} was saved to")
    data = load_saved(out / RESULTS_FILE, what, fmt="json")
    if not isinstance(data, dict):
        raise ReasonlensError(f"{out / RESULTS_FILE} holds no {what}; pass the folder a {what} was saved to")
    got = data.get("result", what)
    if got != what:
        raise ReasonlensError(f"{out} holds a {got}, not a {what}; load it with {got}.load")
    if not isinstance(data.get("format", 0), int) or data.get("format", 0) > RESULTS_FORMAT:
        raise ReasonlensError(f"{out} is in results format {data['format']!r}, newer than this reasonlens reads "
                              f"({RESULTS_FORMAT}); update reasonlens to load it")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ReasonlensError(f"{out / RESULTS_FILE} holds no {what} (it lacks {missing}); pass the folder a "
                              f"{what} was saved to")
    return data


def result_part(out: str | os.PathLike[str], name: str, what: str) -> Path:
    """``out / name``, a part of the ``what`` saved in ``out``; a :class:`ReasonlensError` when it is missing."""
    path = Path(out) / name
    if not path.exists():
        raise ReasonlensError(f"{out} holds a {what} without its part {name}; pass a whole folder written by "
                              f"{what}.save")
    return path

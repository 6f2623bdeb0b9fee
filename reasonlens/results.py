"""Result containers: tensors that carry their axis names and labels, with statistics and save / load.

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
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
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

"""Model components that attribution scores and steering scales: residual dimensions, MLP neurons and
attention heads, named ``L{layer}R{dim}``, ``L{layer}N{neuron}`` and ``L{layer}H{head}``.

- ``resid``: coordinate ``i`` of ``blocks.{l}.hook_resid_post`` (the output of block ``l``), the unit IPG scores.
- ``neuron``: MLP neuron ``i`` of ``blocks.{l}.mlp.hook_post`` (after the activation / gate).
- ``head``: head ``h`` of ``blocks.{l}.attn.hook_z``, scaled as a whole (a multiplicative gate on its ``z``).

A :class:`Selection` is a set of components of one kind (its ``component``); ``selection.hooks(gamma)`` gives the forward hooks
that scale them by ``gamma`` at every position (``gamma = 0`` suppresses, ``gamma > 1`` enhances) for
:func:`reasonlens.generation.generate` or ``model.hooks``.

>>> s = Selection.from_labels(["L4R17", "L5R3", "L4R2"])
>>> s.component, s.labels
('resid', ['L4R2', 'L4R17', 'L5R3'])
>>> [name for name, _ in s.hooks(0.0)]
['blocks.4.hook_resid_post', 'blocks.5.hook_resid_post']
>>> dice(s, Selection.from_labels(["L4R17", "L0R0"]))
0.4
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, no_type_check

import torch
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.runtime import SITES, FwdHook, Intervention
from reasonlens.validation import check_float, check_int_list, is_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Component = Literal["resid", "neuron", "head"]
COMPONENTS: tuple[str, ...] = ("resid", "neuron", "head")
SITE_OF_COMPONENT: dict[str, str] = {"resid": "resid_post", "neuron": "neuron", "head": "z"}  # runtime site names
HOOKS: dict[str, str] = {component: SITES[site] for component, site in SITE_OF_COMPONENT.items()}
LETTERS: dict[str, str] = {"resid": "R", "neuron": "N", "head": "H"}
_LABEL = re.compile(r"L(\d+)([RNH])(\d+)")


def check_component(component: object) -> None:
    if not isinstance(component, str) or component not in COMPONENTS:
        raise ReasonlensError(f"unknown component {component!r}; use one of {', '.join(COMPONENTS)}")


def n_units(model: TransformerBridge, component: str) -> int:
    """Components per layer: ``d_model`` residual dimensions, ``d_mlp`` neurons or ``n_heads`` heads."""
    check_component(component)
    return {"resid": model.cfg.d_model, "neuron": model.cfg.d_mlp, "head": model.cfg.n_heads}[component]


def check_layers(model: TransformerBridge, layers: object) -> list[int]:
    """``layers`` as a sorted list of distinct valid layer indices (clear error otherwise)."""
    if is_int(layers):
        layers = [layers]
    layers = check_int_list(layers, "layers", allow_empty=True, unique=False, example="[3, 4]")
    if not layers:
        raise ReasonlensError("no layers given; pass e.g. layers=[3, 4]")
    bad = [l for l in layers if not 0 <= l < model.cfg.n_layers]
    if bad:
        raise ReasonlensError(f"layers {bad} do not exist: the model has layers 0..{model.cfg.n_layers - 1}")
    check_int_list(layers, "layers")  # no repeats
    return sorted(layers)


def unit_labels(component: str, n: int) -> list[str]:
    """``["R0", "R1", ...]`` (or ``N`` / ``H``): the unit axis of a score tensor."""
    return [f"{LETTERS[component]}{i}" for i in range(n)]


@no_type_check  # checked by __post_init__ (reasonlens.validation), under the test run's type checks too
@dataclass(frozen=True)
class Selection:
    """A set of components of one kind, ``component``: ``units[k]`` of layer ``layers[k]`` (sorted, distinct)."""

    component: str
    layers: tuple[int, ...]
    units: tuple[int, ...]

    def __post_init__(self) -> None:
        check_component(self.component)
        check_int_list(self.layers, "a selection's layers", low=0, allow_empty=True, unique=False)
        check_int_list(self.units, "a selection's units", low=0, allow_empty=True, unique=False)
        if len(self.layers) != len(self.units):
            raise ReasonlensError("a selection needs one unit per layer entry")
        pairs = sorted(set(zip((int(l) for l in self.layers), (int(u) for u in self.units))))
        if len(pairs) != len(self.layers):
            raise ReasonlensError("a selection lists a component twice")
        object.__setattr__(self, "layers", tuple(int(l) for l, _ in pairs))
        object.__setattr__(self, "units", tuple(int(u) for _, u in pairs))

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> Selection:
        """From labels such as ``"L4R17"`` (residual dimension), ``"L2N300"`` (neuron), ``"L1H0"`` (head)."""
        labels = list(labels)
        parsed = []
        for label in labels:
            m = _LABEL.fullmatch(str(label))
            if m is None:
                raise ReasonlensError(f"{label!r} is not a component name; use L<layer>R<dim> (residual), "
                                      "L<layer>N<neuron> (MLP neuron) or L<layer>H<head> (head), e.g. 'L3H1'")
            parsed.append((m.group(2), int(m.group(1)), int(m.group(3))))
        letters = {p[0] for p in parsed}
        if len(letters) > 1:
            raise ReasonlensError(f"a selection holds one kind of component, got {sorted(letters)} in {labels}")
        component = next((k for k, v in LETTERS.items() if v in letters), "resid")
        return cls(component, tuple(p[1] for p in parsed), tuple(p[2] for p in parsed))

    @property
    def labels(self) -> list[str]:
        return [f"L{l}{LETTERS[self.component]}{u}" for l, u in zip(self.layers, self.units)]

    def __repr__(self) -> str:
        return f"Selection({self.component}: {' '.join(self.labels)})"

    def __len__(self) -> int:
        return len(self.units)

    def check(self, model: TransformerBridge) -> None:
        """Raise if a component does not exist in ``model``."""
        n = n_units(model, self.component)
        bad = [lab for lab, l, u in zip(self.labels, self.layers, self.units)
               if not 0 <= l < model.cfg.n_layers or not 0 <= u < n]
        if bad:
            raise ReasonlensError(f"components {bad[:5]} do not exist: the model has layers 0..{model.cfg.n_layers - 1} "
                                  f"and {n} {self.component} units per layer")

    def by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for l, u in zip(self.layers, self.units):
            out.setdefault(l, []).append(u)
        return out

    def hooks(self, gamma: float) -> list[FwdHook]:
        """Forward hooks that multiply the selected components by ``gamma`` at every position."""
        gamma = check_float(gamma, "gamma", low=0, hint="0 suppresses, 1 leaves the model alone, > 1 enhances")
        return [self.scaling(layer, gamma).as_hook() for layer in self.by_layer()]

    def scaling(self, layer: int, gamma: float | Tensor) -> Intervention:
        """The :class:`~reasonlens.runtime.Intervention` that multiplies this selection's units of ``layer`` by
        ``gamma``."""
        return Intervention(HOOKS[self.component].format(l=layer), "scale", torch.as_tensor(gamma),
                            units=torch.tensor(self.by_layer()[layer]))


def dice(a: Selection, b: Selection) -> float:
    """Dice overlap ``2 |A & B| / (|A| + |B|)`` of two selections (1 for two empty ones)."""
    if a.component != b.component:
        raise ReasonlensError(f"cannot compare a {a.component} selection with a {b.component} one")
    sa, sb = set(zip(a.layers, a.units)), set(zip(b.layers, b.units))
    return 1.0 if not sa and not sb else 2 * len(sa & sb) / (len(sa) + len(sb))


def random_dice(p: int, n_components: int) -> float:
    """Expected Dice overlap of two independent uniformly random sets of ``p`` out of ``n_components``: ``p / n``."""
    return p / n_components

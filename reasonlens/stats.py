"""Small statistics shared by the studies: intervals for proportions and quantiles that carry their n.

>>> [round(x, 3) for x in proportion(45, 48)["ci95"]]
[0.832, 0.979]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.errors import ReasonlensError


def wilson_interval(successes: Tensor | int, n: int, z: float = 1.96) -> Float[Tensor, "*cell 2"]:
    """Wilson score interval ``[..., (low, high)]`` (95% for ``z=1.96``) of ``successes`` out of ``n``, for a
    count or a tensor of counts (NaN when ``n`` is 0).

    >>> [round(x, 3) for x in wilson_interval(torch.tensor(9), 10).tolist()]
    [0.596, 0.982]
    """
    k = torch.as_tensor(successes).double()
    if n < 0 or bool((k < 0).any()) or bool((k > n).any()):
        raise ReasonlensError(f"need 0 <= successes <= n, got {k.tolist()} of {n}")
    if n == 0:
        return torch.full((*k.shape, 2), float("nan"), dtype=torch.float64)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return torch.stack([(centre - half).clamp_min(0.0), (centre + half).clamp_max(1.0)], dim=-1)


def proportion(successes: int, n: int) -> dict[str, float | int | list[float] | None]:
    """``{"rate", "n", "ci95"}`` of a proportion (rate and interval ``None`` when ``n`` is 0)."""
    if n == 0:
        return {"rate": None, "n": 0, "ci95": None}
    return {"rate": successes / n, "n": n, "ci95": wilson_interval(successes, n).tolist()}


def quantiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """Minimum, quartiles, maximum and count of ``values`` (``None`` when empty)."""
    import numpy as np

    if len(values) == 0:
        return {"n": 0, "min": None, "q25": None, "median": None, "q75": None, "max": None}
    q = np.quantile(np.asarray(values, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0]).tolist()
    return {"n": len(values), "min": q[0], "q25": q[1], "median": q[2], "q75": q[3], "max": q[4]}

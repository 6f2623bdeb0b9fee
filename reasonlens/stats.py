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


def mean_interval(values: Float[Tensor, " example *cell"], confidence: float = 0.95) -> Float[Tensor, "*cell 2"]:
    """Student-t interval ``[..., (low, high)]`` of the mean over the first axis (NaN with fewer than two rows).

    >>> [round(x, 3) for x in mean_interval(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()]
    [0.446, 4.554]
    """
    from scipy.stats import t

    if not 0 < confidence < 1:
        raise ReasonlensError(f"confidence must be in (0, 1), got {confidence!r}")
    x = values.double()
    n = x.shape[0]
    if n < 2:
        return torch.full((*x.shape[1:], 2), float("nan"), dtype=torch.float64)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * x.std(0, unbiased=True) / n ** 0.5
    return torch.stack([x.mean(0) - half, x.mean(0) + half], dim=-1)


def sign_flip_test(differences: Float[Tensor, " example *cell"], n_permutations: int = 10_000,
                   seed: int = 0) -> Float[Tensor, " *cell"]:
    """Two-sided paired permutation test that the mean of ``differences`` (one row per example, e.g. method A
    minus method B on the same questions) is zero: each example's sign is flipped at random, and the p-value is
    ``(1 + #{|mean of flipped| >= |observed mean|}) / (1 + n_permutations)``. With ``2 ** n <= n_permutations``
    every sign pattern is enumerated instead (an exact test).

    >>> round(float(sign_flip_test(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))), 4)  # all 32 sign patterns
    0.0625
    """
    x = differences.double()
    n = x.shape[0]
    if n == 0:
        raise ReasonlensError("no examples: a permutation test needs at least one paired difference")
    if n_permutations < 1:
        raise ReasonlensError(f"n_permutations must be at least 1, got {n_permutations!r}")
    observed = x.mean(0).abs()
    flat = x.reshape(n, -1)
    if 2 ** n <= n_permutations:
        bits = torch.arange(2 ** n)[:, None] >> torch.arange(n)[None, :] & 1
        signs = (1 - 2 * bits).double()
        extreme = ((signs @ flat).abs() / n >= observed.reshape(-1) - 1e-12).sum(0)
        return (extreme.double() / 2 ** n).reshape(observed.shape)
    generator = torch.Generator().manual_seed(seed)
    extreme = torch.zeros(flat.shape[1], dtype=torch.float64)
    for start in range(0, n_permutations, 1000):
        k = min(1000, n_permutations - start)
        signs = torch.randint(0, 2, (k, n), generator=generator).double() * 2 - 1
        extreme += ((signs @ flat).abs() / n >= observed.reshape(-1) - 1e-12).sum(0)
    return ((1 + extreme) / (1 + n_permutations)).reshape(observed.shape)


def bootstrap_interval(values: Float[Tensor, "group example"], n_resamples: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> Float[Tensor, " 2"]:
    """Percentile bootstrap interval ``(low, high)`` of the grand mean of ``values[group, example]``, resampling
    groups (e.g. attribution seeds) and examples (e.g. evaluation questions) with replacement, both levels at once,
    so that the interval carries the spread between groups as well as between questions. One group: the examples
    alone.

    >>> low, high = bootstrap_interval(torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])).tolist()
    >>> low < 0.75 < high
    True
    """
    if not 0 < confidence < 1:
        raise ReasonlensError(f"confidence must be in (0, 1), got {confidence!r}")
    if n_resamples < 1:
        raise ReasonlensError(f"n_resamples must be at least 1, got {n_resamples!r}")
    x = values.double()
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ReasonlensError(f"values must be [group, example] with at least one of each, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ReasonlensError("values hold NaN or infinity; a bootstrap interval needs finite values")
    generator = torch.Generator().manual_seed(seed)
    n_groups, n_examples = x.shape
    means = torch.empty(n_resamples, dtype=torch.float64)
    for start in range(0, n_resamples, 500):
        k = min(500, n_resamples - start)
        groups = torch.randint(0, n_groups, (k, n_groups), generator=generator)
        examples = torch.randint(0, n_examples, (k, n_examples), generator=generator)
        picked = x[groups].gather(2, examples[:, None, :].expand(-1, n_groups, -1))  # [k, group, example]
        means[start:start + k] = picked.mean((1, 2))
    tail = (1 - confidence) / 2
    return torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))


def outcome_matrix(rows: Sequence[str]) -> Float[Tensor, "group example"]:
    """Right / wrong strings (``"0110..."``, one per group, e.g. per attribution seed) as a float64 ``[group,
    example]`` matrix of 0 and 1.

    >>> outcome_matrix(["011", "110"]).tolist()
    [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    """
    return torch.tensor([[float(ch == "1") for ch in row] for row in rows], dtype=torch.float64)


def paired_difference(a: Float[Tensor, "group_a example"], b: Float[Tensor, "group_b example"],
                      n_resamples: int = 2000, seed: int = 0) -> dict[str, float | list[float]]:
    """``a - b`` on the same examples (``b`` may hold several groups against one row of ``a``): the mean
    ``difference``, its two-level bootstrap ``ci95`` (:func:`bootstrap_interval`) and the sign-flip ``p_value`` of
    the per-example mean difference (:func:`sign_flip_test`). ``a`` and ``b`` have one group each or the same
    number.

    >>> paired_difference(torch.ones(1, 40), torch.zeros(2, 40))["difference"]
    1.0
    """
    difference = a - b
    return {"difference": float(difference.mean()),
            "ci95": bootstrap_interval(difference, n_resamples, seed=seed).tolist(),
            "p_value": float(sign_flip_test(difference.mean(0), seed=seed))}

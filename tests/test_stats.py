"""Intervals and quantiles shared by the studies."""

import pytest
import torch

from reasonlens.errors import ReasonlensError
from reasonlens.stats import proportion, quantiles, wilson_interval


def test_wilson_interval():
    low, high = wilson_interval(torch.tensor([0, 5, 10]), 10).T.tolist()
    assert low[0] == 0.0 and high[2] == 1.0 and low[1] < 0.5 < high[1]
    assert abs(high[0] - 0.2775) < 1e-3  # 0 of 10: the Wilson upper bound
    assert torch.isnan(wilson_interval(torch.tensor(0), 0)).all()
    assert wilson_interval(7, 20).tolist() == wilson_interval(torch.tensor(7), 20).tolist()
    with pytest.raises(ReasonlensError, match="successes"):
        wilson_interval(11, 10)


def test_proportion_and_quantiles():
    p = proportion(45, 48)
    assert p["rate"] == 45 / 48 and p["n"] == 48 and p["ci95"][0] < 45 / 48 < p["ci95"][1]
    assert proportion(0, 0) == {"rate": None, "n": 0, "ci95": None}
    q = quantiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (q["min"], q["median"], q["max"], q["n"]) == (1.0, 3.0, 5.0, 5)
    assert quantiles([])["median"] is None

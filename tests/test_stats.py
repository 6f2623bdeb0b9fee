"""Intervals and quantiles shared by the studies."""

import pytest
import torch

from reasonlens.errors import ReasonlensError
from reasonlens.stats import mean_interval, proportion, quantiles, sign_flip_test, wilson_interval


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


def test_mean_interval_is_the_t_interval():
    from scipy import stats as scipy_stats

    values = torch.tensor([[0.2, 1.0], [0.5, 1.5], [0.9, 0.7], [0.4, 1.1], [0.6, 0.9]])
    got = mean_interval(values, 0.9)
    for cell in range(2):
        x = values[:, cell].double().numpy()
        low, high = scipy_stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
        assert got[cell].tolist() == pytest.approx([low, high], abs=1e-12)
    assert mean_interval(values[:1]).isnan().all()
    with pytest.raises(ReasonlensError, match="confidence"):
        mean_interval(values, 1.0)


def test_sign_flip_test_against_enumeration_and_sampling():
    import itertools

    generator = torch.Generator().manual_seed(3)
    diffs = torch.randn(12, 3, generator=generator) + torch.tensor([0.0, 0.4, 2.0])
    exact = []
    for cell in range(3):  # all 4,096 sign patterns, by hand
        d, seen = diffs[:, cell].double(), 0
        for signs in itertools.product([1.0, -1.0], repeat=12):
            seen += abs(float((torch.tensor(signs, dtype=torch.float64) * d).mean())) >= abs(float(d.mean())) - 1e-12
        exact.append(seen / 4096)
    assert sign_flip_test(diffs, n_permutations=4096).tolist() == pytest.approx(exact, abs=1e-12)
    sampled = sign_flip_test(diffs, n_permutations=4000, seed=1)  # below 2^12: Monte Carlo
    assert sampled.tolist() == pytest.approx(exact, abs=0.03)
    assert exact[2] < 0.01 < exact[0]
    with pytest.raises(ReasonlensError, match="no examples"):
        sign_flip_test(torch.zeros(0, 2))


def test_labelled_tensor_interval_and_paired_test():
    from reasonlens.results import LabelledTensor

    a = LabelledTensor(torch.tensor([[1.0, 0.0], [2.0, 0.1], [3.0, -0.1], [4.0, 0.05]]), axes=("example", "layer"))
    b = LabelledTensor(a.values - torch.tensor([[1.0, 0.0]]), axes=("example", "layer"))
    assert a.interval().shape == (2, 2) and a.interval()[0].tolist() == mean_interval(a.values)[0].tolist()
    assert a.permutation_test(b).tolist() == [0.125, 1.0]  # a constant +1 difference: 2 of 16 patterns
    with pytest.raises(ReasonlensError, match="cannot pair"):
        a.permutation_test(LabelledTensor(torch.zeros(3, 2), axes=("example", "layer")))
    with pytest.raises(ReasonlensError, match="per-example"):
        LabelledTensor(torch.zeros(2), axes=("layer",)).interval()


def test_bootstrap_interval_matches_the_normal_interval_and_widens_with_group_spread():
    from reasonlens.stats import bootstrap_interval

    generator = torch.Generator().manual_seed(0)
    flips = (torch.rand(1, 400, generator=generator) < 0.7).double()
    low, high = bootstrap_interval(flips).tolist()
    p, half = float(flips.mean()), 1.96 * (float(flips.mean()) * (1 - float(flips.mean())) / 400) ** 0.5
    assert abs(low - (p - half)) < 0.01 and abs(high - (p + half)) < 0.01
    alike = flips.expand(3, -1)  # three groups that agree: the same width as one
    apart = torch.stack([flips[0], 1 - flips[0], flips[0]])  # groups that disagree: wider
    width = [float(w[1] - w[0]) for w in (bootstrap_interval(alike), bootstrap_interval(apart))]
    assert abs(width[0] - (high - low)) < 0.01 and width[1] > 2 * width[0]
    with pytest.raises(ReasonlensError, match="NaN"):
        bootstrap_interval(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ReasonlensError, match="group, example"):
        bootstrap_interval(torch.zeros(0, 3))

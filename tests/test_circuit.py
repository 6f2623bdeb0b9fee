"""Circuit sufficiency: right-aligned means against single unpadded runs, the batched curve against one
circuit per forward with plain hooks, the keep-all / keep-none limits, the authors' band selection, bad input."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from model_util import padded, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.patching.circuit import (
    CircuitResult,
    HeadMeans,
    band_masks,
    circuit_agreement,
    circuit_curve,
    circuit_logits,
    circuit_matches,
    mean_head_activations,
)
from reasonlens.patching.heads import head_mask
from reasonlens.results import LabelledTensor

REFERENCE = ["Q: Every cat is a cow. Rex is a cat.", "Q: Max is a dog.\nA:", "Q: Each cow is blue. Sam is a cow."]
TARGETS = [  # the first is longer than every reference prompt
    "Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:",
    "Q: Max is a cat.",
    "Q: Each numpus is blue. Sam is a numpus.\nA:",
    "Q: Every yumpus is red. Wren is a yumpus.",
    "Q: Sally is a vumpus. True or false:",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp("circuit") / "llama", "llama", scale=3.0))


@pytest.fixture(scope="module")
def means(model):
    tokens, mask, _ = padded(model, REFERENCE)
    return mean_head_activations(model, tokens, mask, batch_size=2)


@pytest.fixture(scope="module")
def targets(model):
    tokens, mask, _ = padded(model, TARGETS)
    return tokens, mask


def plain_forward(model, tokens, mask, hooks=()):
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        # the last position's logits, as the model itself computes them alone (logits_to_keep=1, as circuit_logits)
        return model.run_with_hooks(tokens, attention_mask=mask, position_ids=positions, fwd_hooks=list(hooks),
                                    logits_to_keep=1)[:, -1]


def loop_logits(model, tokens, mask, keep, means):
    """One circuit, one forward: a plain hook per layer overwriting the dropped heads' z with their means."""
    mean = means.aligned(tokens.shape[1])

    def overwrite(z, hook, *, layer):
        z = z.clone()
        for h in range(z.shape[2]):
            if not keep[layer, h]:
                z[:, :, h] = mean[layer, :, h]
        return z

    hooks = [(f"blocks.{l}.attn.hook_z", partial(overwrite, layer=l)) for l in range(keep.shape[0])]
    return plain_forward(model, tokens, mask, hooks)


def test_means_match_single_unpadded_runs(model, means):
    _, _, rows = padded(model, REFERENCE)
    width = max(len(r) for r in rows)
    n_layers = model.cfg.n_layers
    sums = torch.zeros(n_layers, width, model.cfg.n_heads, model.cfg.d_head, dtype=torch.float64)
    counts = torch.zeros(width, dtype=torch.float64)
    for row in rows:
        with torch.no_grad():
            _, cache = model.run_with_cache(row[None])
        for l in range(n_layers):
            sums[l, width - len(row):] += cache[f"blocks.{l}.attn.hook_z"][0].double()
        counts[width - len(row):] += 1
    torch.testing.assert_close(means.per_position.double(), sums / counts[None, :, None, None], atol=1e-5, rtol=0)
    torch.testing.assert_close(means.overall.double(), sums.sum(1) / counts.sum(), atol=1e-5, rtol=0)


def test_positions_without_reference_tokens_use_the_overall_mean(model, means):
    tokens, mask, _ = padded(model, REFERENCE, extra=2)  # two all-padding columns on the left
    wide = mean_head_activations(model, tokens, mask)
    for p in range(2):
        torch.testing.assert_close(wide.per_position[:, p], means.overall, atol=1e-5, rtol=0)
    torch.testing.assert_close(wide.per_position[:, 2:], means.per_position, atol=1e-5, rtol=0)
    longer = means.aligned(means.per_position.shape[1] + 3)
    assert torch.equal(longer[:, :3], means.overall[:, None].expand(-1, 3, -1, -1))
    assert torch.equal(longer[:, 3:], means.per_position)
    assert torch.equal(means.aligned(4), means.per_position[:, -4:])


def test_keeping_every_head_is_the_full_model(model, means, targets):
    tokens, mask = targets
    keep = torch.ones(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.bool)
    # to float rounding: the unembedding of a 1-row chunk takes another BLAS path than that of the whole batch
    torch.testing.assert_close(circuit_logits(model, tokens, mask, keep, means, batch_size=2),
                               plain_forward(model, tokens, mask), atol=1e-6, rtol=1e-6)
    assert circuit_agreement(model, tokens, mask, keep, means) == 1.0


def test_keeping_no_head_is_the_all_mean_ablated_model(model, means, targets):
    tokens, mask = targets
    mean = means.aligned(tokens.shape[1])
    hooks = [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: mean[l].expand_as(z).clone())
             for l in range(model.cfg.n_layers)]
    keep = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.bool)
    expected = plain_forward(model, tokens, mask, hooks)
    torch.testing.assert_close(circuit_logits(model, tokens, mask, keep, means), expected, atol=1e-5, rtol=0)


def test_batched_curve_equals_one_circuit_per_forward(model, means, targets):
    tokens, mask = targets
    torch.manual_seed(0)
    scores = torch.randn(model.cfg.n_layers, model.cfg.n_heads)
    result = circuit_curve(model, tokens, mask, scores, means, batch_size=7)  # rows of different circuits share forwards
    total = model.cfg.n_layers * model.cfg.n_heads
    assert result.sizes == list(range(total + 1))
    full = plain_forward(model, tokens, mask).argmax(-1)
    ranked = sorted(((-float(scores[l, h]), l, h) for l in range(scores.shape[0]) for h in range(scores.shape[1])))
    assert result.ranking == [f"L{l}H{h}" for _, l, h in ranked]
    for s, k in enumerate(result.sizes):
        keep = head_mask([(l, h) for _, l, h in ranked[:k]], *scores.shape)
        assert torch.equal(result.keep(k), keep)
        logits = loop_logits(model, tokens, mask, keep, means)
        torch.testing.assert_close(circuit_logits(model, tokens, mask, keep, means), logits, atol=1e-5, rtol=0)
        matches = (logits.argmax(-1) == full).float()
        assert torch.equal(result.matches.values[:, s], matches)
        assert result.agreements[s] == pytest.approx(float(matches.mean()), abs=1e-6)
    bands = band_masks(scores)
    for i, keep in enumerate(bands):
        expected = float((loop_logits(model, tokens, mask, keep, means).argmax(-1) == full).double().mean())
        assert result.band.agreements[i] == pytest.approx(expected, abs=1e-6)
    best = int(np.argmin([abs(a - 0.9) for a in result.band.agreements]))
    assert result.band.half_width == best and torch.equal(result.band.keep, bands[best])
    reached = [k for k, a in zip(result.sizes, result.agreements) if a >= 0.9]
    assert result.head_fraction_90 == min(reached) / total
    assert result.agreements[-1] == 1.0


def test_circuit_matches_keeps_its_circuits_apart(model, means, targets):
    tokens, mask = targets
    keeps = torch.stack([torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)])
    matches = circuit_matches(model, tokens, mask, keeps, means, batch_size=3)
    assert matches.shape == (2, len(TARGETS)) and bool(matches[0].all())
    full = plain_forward(model, tokens, mask).argmax(-1)
    assert torch.equal(matches[1], circuit_logits(model, tokens, mask, keeps[1], means).argmax(-1) == full)


def authors_band(data, i):
    """The band of the authors' informationFlow.py, transcribed."""
    data_range = np.max(data) - np.min(data)
    bin_width = 2 * (np.percentile(data, 75) - np.percentile(data, 25)) / (len(data) ** (1 / 3))
    hist, bin_edges = np.histogram(data, bins=int(data_range / bin_width))
    mode = np.argmax(hist)
    left, right = max(mode - i, 0), min(mode + i, len(hist) - 1)
    return bin_edges[left], bin_edges[right]


def test_band_masks_follow_the_authors_code():
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 0.05, 400), rng.normal(0.6, 0.2, 60), rng.normal(-0.5, 0.1, 40)])
    scores = torch.tensor(data, dtype=torch.float64).view(20, 25)
    masks = band_masks(scores)
    assert masks.shape == (8, 20, 25)
    for i in range(8):
        low, high = authors_band(data, i)
        assert masks[i].flatten().tolist() == ((data < low) | (data > high)).tolist()
    assert masks.sum((1, 2)).tolist() == sorted(masks.sum((1, 2)).tolist(), reverse=True)  # wider bands keep fewer
    assert torch.equal(band_masks(scores * 3 + 1), masks)  # invariant to a positive affine normalisation


def test_head_fraction_and_save_load(model, means, targets, tmp_path):
    tokens, mask = targets
    scores = torch.arange(8.0).view(2, 4)
    result = circuit_curve(model, tokens, mask, scores, means, sizes=[0, 4, 8])
    assert result.sizes == [0, 4, 8] and result.ranking[0] == "L1H3"
    back = CircuitResult.load(result.save(tmp_path / "circuit.pt"))
    assert back.sizes == result.sizes and back.ranking == result.ranking
    assert torch.equal(back.matches.values, result.matches.values)
    assert back.band.agreements == result.band.agreements and torch.equal(back.band.keep, result.band.keep)
    assert back.head_fraction_90 == result.head_fraction_90
    matches = LabelledTensor(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), axes=("example", "size"))
    never = CircuitResult(sizes=[0, 1], matches=matches, ranking=result.ranking, n_layers=2, n_heads=4, band=result.band)
    assert never.head_fraction_90 is None


def test_bad_input(model, means, targets):
    tokens, mask = targets
    keep = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ReasonlensError, match="keep mask"):
        circuit_agreement(model, tokens, mask, torch.ones(3, 4, dtype=torch.bool), means)
    with pytest.raises(ReasonlensError, match="mean_head_activations on this model"):
        circuit_logits(model, tokens, mask, keep, HeadMeans(means.per_position[..., :4], means.overall[..., :4]))
    with pytest.raises(ReasonlensError, match="non-empty"):
        circuit_agreement(model, tokens[:0], mask[:0], keep, means)
    with pytest.raises(ReasonlensError, match="non-empty"):
        circuit_matches(model, tokens, mask, keep[None][:0], means)
    with pytest.raises(ReasonlensError, match="scores have shape"):
        circuit_curve(model, tokens, mask, torch.zeros(4, 2), means)
    with pytest.raises(ReasonlensError, match="sizes"):
        circuit_curve(model, tokens, mask, torch.zeros(2, 4), means, sizes=[0, 9])
    with pytest.raises(ReasonlensError, match="NaN"):
        band_masks(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ReasonlensError, match="left-padded"):
        mean_head_activations(model, tokens, mask.flip(-1))
    with pytest.raises(ReasonlensError, match="size must be"):
        circuit_curve(model, tokens, mask, torch.zeros(2, 4), means, sizes=[1]).keep(9)

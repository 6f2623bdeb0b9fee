"""Step activations, probes and their baselines (reasonlens.importance.activations / probes / controls)."""

import math

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError

import reasonlens.importance.activations as activations
from reasonlens.errors import ReasonlensError
from reasonlens.importance.activations import StepSet, step_activations
from reasonlens.importance.chains import chains_from_examples
from reasonlens.importance.controls import (
    SURFACE_PROBE_CONFIG,
    chain_groups,
    cross_model,
    random_init_model,
    surface_correlations,
    surface_features,
    train_text_probe,
)
from reasonlens.importance.probes import (
    ARCHS,
    Probe,
    ProbeConfig,
    ProbeResult,
    SeedRun,
    Standardiser,
    agreement,
    balanced_accuracy,
    balanced_split,
    compare_agreement,
    compare_probes,
    probe_by_layer,
    train_probe,
)
from reasonlens.importance.study import generator_step_set
from reasonlens.model import load_model, model_fingerprint
from reasonlens.ontology import generate

FAST = ProbeConfig(epochs=8, lr=1e-2, seeds=(42,))


@pytest.fixture(scope="module")
def main():
    return load_model("reasonlens-main")


@pytest.fixture(scope="module")
def gold(main):
    return chains_from_examples(main, generate(24, hops=2, seed=5, redundant_step_p=0.5))


# ---------------------------------------------------------------------------------------------------------- activations


def _expected(model, chain, spans, layers, pooling):
    """Pooled activations of one chain read alone, unpadded."""
    _, cache = model.run_with_cache(torch.tensor([chain]))
    out = []
    for start, end in spans:
        pos = {"first": start, "middle": start + (end - start - 1) // 2, "last": end - 1}.get(pooling)
        acts = [cache[f"blocks.{l}.hook_resid_post"][0] for l in layers]
        out.append(torch.stack([a[start:end].mean(0) if pos is None else a[pos] for a in acts]))
    return torch.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "first", "middle", "last"])
def test_padded_batches_equal_one_forward_per_chain(tiny_model, pooling):
    chains = chains_from_examples(tiny_model, generate(5, hops=(1, 2, 3), seed=1, redundant_step_p=0.5))
    labels = [[s % 2 if s != 1 else None for s in range(len(c))] for c in chains]
    steps = StepSet.from_labels(chains, labels)
    layers = [1, 0]
    got = step_activations(tiny_model, steps, layers=layers, pooling=pooling, batch_size=2)
    assert got.shape == (len(steps), 2, tiny_model.cfg.d_model)
    for c, chain in enumerate(chains):
        rows = [i for i, (ci, _, _) in enumerate(steps.items) if ci == c]
        spans = [(chain.spans()[steps.items[i][1]].start, chain.spans()[steps.items[i][1]].end) for i in rows]
        torch.testing.assert_close(got[rows], _expected(tiny_model, chain.token_ids(), spans, layers, pooling),
                                   atol=1e-5, rtol=1e-5)
    alone = step_activations(tiny_model, steps, layers=layers, pooling=pooling, context=False, batch_size=3)
    c, s, _ = steps.items[-1]
    block = chains[c].step_ids[s]
    bos = chains[c].prompt_ids[:1]
    torch.testing.assert_close(alone[-1:], _expected(tiny_model, bos + block, [(1, 1 + len(block))], layers, pooling),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone, got, atol=1e-3)


def test_mean_pooling_by_hand(main, gold):
    steps = StepSet.from_labels(gold[:1], [[1] + [None] * (len(gold[0]) - 1)])
    span = gold[0].spans()[0]
    _, cache = main.run_with_cache(torch.tensor([gold[0].token_ids()]))
    acts = cache["blocks.3.hook_resid_post"][0]
    by_hand = sum(acts[p] for p in range(span.start, span.end)) / len(span)
    torch.testing.assert_close(step_activations(main, steps, layers=[3])[0, 0], by_hand, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(step_activations(main, steps, layers=[3], pooling="last")[0, 0], acts[span.end - 1])


def test_cache_round_trip(main, gold, tmp_path, monkeypatch):
    steps = generator_step_set(gold[:4])
    first = step_activations(main, steps, layers=[0, 5], cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1

    def recompute(*args, **kwargs):
        raise AssertionError("recomputed instead of loading the cache")

    monkeypatch.setattr(activations, "_run", recompute)
    assert torch.equal(step_activations(main, steps, layers=[0, 5], cache_dir=tmp_path), first)
    monkeypatch.undo()
    step_activations(main, steps, layers=[0, 5], pooling="last", cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_bad_activation_inputs(main, gold):
    steps = generator_step_set(gold[:2])
    with pytest.raises(ReasonlensError, match="6 layers"):
        step_activations(main, steps, layers=[99])
    with pytest.raises(ReasonlensError, match="no labelled steps"):
        step_activations(main, StepSet(gold[:2], []))
    with pytest.raises((ReasonlensError, TypeCheckError)):  # the jaxtyping hook of the test run checks first
        step_activations(main, steps, pooling="max")
    with pytest.raises(ReasonlensError, match="label lists for 2 chains"):
        StepSet.from_labels(gold[:2], [[0]])
    with pytest.raises(ReasonlensError, match="label 2"):
        StepSet(gold[:1], [(0, 0, 2)])


# ---------------------------------------------------------------------------------------------------------- probes


def _separable(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.4).long()
    direction = torch.randn(16, generator=g)
    features = torch.randn(n, 3, 16, generator=g) + 3.0 * (2 * labels[:, None, None] - 1) * direction / direction.norm()
    return features, labels


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_separates_separable_features(arch):
    features, labels = _separable()
    result = train_probe(features, labels, ProbeConfig(arch=arch, epochs=8, lr=1e-2, seeds=(42, 43)))
    assert result.held_out_accuracy >= 0.95 and result.best_epoch_accuracy >= 0.95
    assert agreement(result.predictions, labels) >= 0.95
    run = result.runs[0]
    assert len(run.test_curve) == 8 and run.best_epoch_accuracy == max(run.test_curve)
    assert set(result.summary()) == {"best_epoch_accuracy", "best_epoch_std", "held_out_accuracy", "held_out_std"}


def test_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(1)
    features, labels = torch.randn(300, 2, 8, generator=g), torch.randint(0, 2, (300,), generator=g)
    result = train_probe(features, labels, ProbeConfig(epochs=8, lr=1e-2))
    assert result.held_out_accuracy < 0.7


def test_balanced_subsampling():
    labels = torch.tensor([0] * 70 + [1] * 25)
    train, test = balanced_split(labels, seed=42)
    kept = labels[torch.cat([train, test])]
    assert (kept == 0).sum() == (kept == 1).sum() == 25
    assert set(train.tolist()).isdisjoint(test.tolist()) and len(test) == 10
    features = torch.randn(95, 4) + labels[:, None]
    assert train_probe(features, labels, FAST).runs[0].n_per_class == 25


def test_probe_is_deterministic_and_saves(tmp_path):
    features, labels = _separable(seed=2)
    a, b = train_probe(features, labels, FAST), train_probe(features, labels, FAST)
    assert a.runs == b.runs and torch.equal(a.predictions, b.predictions)
    assert train_probe(features, labels, ProbeConfig(epochs=8, lr=1e-2, seeds=(7,))).runs[0].test_index \
        != a.runs[0].test_index
    loaded = ProbeResult.load(a.save(tmp_path / "probe.json"))
    assert loaded.runs == a.runs and loaded.config == a.config
    torch.testing.assert_close(loaded.probe.logits(features), a.probe.logits(features))


def test_two_dimensional_features_and_layers():
    features, labels = _separable(seed=3)
    features[:, 0] = torch.randn(features[:, 0].shape)  # layer 0 carries no signal
    flat = train_probe(features[:, 2], labels, ProbeConfig(arch="linear", epochs=30, lr=1e-2, seeds=(42,)))
    assert flat.held_out_accuracy >= 0.95
    by_layer = probe_by_layer(features, labels, FAST, layer_labels=["L0", "L1", "L2"])
    assert by_layer.axes == ("metric", "seed", "layer") and by_layer.values.shape == (2, 1, 3)
    assert by_layer.axis_labels("layer") == ["L0", "L1", "L2"]
    held_out = by_layer.values[by_layer.axis_labels("metric").index("held_out_accuracy"), 0]
    assert held_out[0] < 0.8 and held_out[1] >= 0.95


def test_bad_probe_inputs():
    features = torch.randn(40, 2, 4)
    with pytest.raises(ReasonlensError, match="both removable"):
        train_probe(features, torch.zeros(40, dtype=torch.long), FAST)
    with pytest.raises(ReasonlensError, match="4 removable"):
        train_probe(features, torch.tensor([1] * 4 + [0] * 36), FAST)
    with pytest.raises((ReasonlensError, TypeCheckError)):
        train_probe(features, torch.zeros(39, dtype=torch.long), FAST)
    with pytest.raises((ReasonlensError, TypeCheckError)):
        ProbeConfig(arch="transformer")
    with pytest.raises(ReasonlensError, match="same steps"):
        agreement(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------- controls


def test_tfidf_vectorizer_sees_training_texts_only(tmp_path):
    labels = torch.tensor([0, 1] * 30)
    _, test = balanced_split(labels, seed=42)
    texts = [f"step {'kept' if y else 'needed'} number {i}" for i, y in enumerate(labels.tolist())]
    for i in test.tolist():
        texts[i] += " zzzunseen"
    texts[int(next(i for i in range(60) if i not in test.tolist()))] += " zzzseen"
    result = train_text_probe(texts, labels, ProbeConfig(arch="mlp", epochs=10, lr=1e-2, batch_size=256, seeds=(42,)))
    assert result.runs[0].test_index == test.tolist()
    vocabulary = result.probe.encoder.vocabulary
    assert "zzzunseen" not in vocabulary and not any("zzzunseen" in t for t in vocabulary)
    assert result.held_out_accuracy >= 0.9
    loaded = ProbeResult.load(result.save(tmp_path / "text.json"))
    assert torch.equal(loaded.predict(texts), result.predict(texts))


def test_surface_features_and_correlations(gold):
    steps = generator_step_set(gold)
    features, names = surface_features(steps)
    assert features.shape == (len(steps), len(names))
    c, s, _ = steps.items[3]
    assert features[3, names.index("relative_position")] == pytest.approx((s + 1) / len(gold[c]))
    assert features[3, names.index("token_length")] == len(gold[c].step_ids[s])
    assert torch.equal(features[:, names.index("role_redundant")].long(), steps.labels)
    correlations = surface_correlations(features, names, steps.labels)
    assert not any(math.isnan(v) for v in correlations.values())
    assert "numbers" in correlations.constant and correlations["numbers"] == 0.0
    assert correlations["role_redundant"] == pytest.approx(1.0)
    assert train_probe(features, steps.labels, SURFACE_PROBE_CONFIG).held_out_accuracy >= 0.9


def test_random_init_model(tiny_model):
    a, b = random_init_model(tiny_model, seed=1), random_init_model(tiny_model, seed=1)  # seed 0 is the checkpoint itself
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(tiny_model)
    assert a.cfg.n_layers == tiny_model.cfg.n_layers and a.tokenizer.get_vocab() == tiny_model.tokenizer.get_vocab()


def test_cross_model(main, gold):
    second = load_model("reasonlens-seed1")
    steps = generator_step_set(gold)
    groups = chain_groups(steps)
    out = cross_model(main, second, steps, FAST, features_a=step_activations(main, steps), groups=groups)
    for key in ("accuracy_a", "accuracy_b", "random_init_accuracy", "agreement", "random_init_agreement"):
        assert 0.0 <= out[key] <= 1.0
    assert out["n_test"] == len(out["results"]["a"].runs[0].test_index)
    assert out["results"]["b"].runs[0].test_index == out["results"]["a"].runs[0].test_index
    run = out["results"]["a"].runs[0]
    train_chains = set(groups.tolist()) - set(groups[run.test_index].tolist())
    assert train_chains and set(groups[run.test_index].tolist()).isdisjoint(train_chains)
    tested = out["agreement_vs_random_init"]
    assert tested["agreement"] == [out["agreement"], out["random_init_agreement"]] and 0 < tested["p_value"] <= 1
    assert tested["n_test_steps"] == [out["n_test"]]
    assert out["accuracy_vs_random_init"]["b"]["accuracy"] == [out["accuracy_b"], out["random_init_accuracy"]]


# -------------------------------------------------------------------------------------------------------- grouped split


def _chains(n_chains=40, seed=0):
    """Labels that vary within chains of 2 to 6 steps, and each step's chain."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 7, (n_chains,), generator=g)
    groups = torch.arange(n_chains).repeat_interleave(sizes)
    labels = (torch.rand(len(groups), generator=g) < 0.35).long()
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 42, 43, 44])
def test_grouped_split_keeps_chains_apart_and_balances_training(seed):
    labels, groups = _chains(seed=seed)
    train, test = balanced_split(labels, seed, groups=groups)
    train_groups, test_groups = set(groups[train].tolist()), set(groups[test].tolist())
    assert train_groups.isdisjoint(test_groups)
    assert set(test.tolist()) == {i for i, g in enumerate(groups.tolist()) if g in test_groups}  # test kept whole
    assert (labels[train] == 0).sum() == (labels[train] == 1).sum() > 0
    assert len(set(labels[test].tolist())) == 2
    assert 0.1 < len(test_groups) / 40 < 0.3  # one fold of five
    again = balanced_split(labels, seed, groups=groups)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)


def test_grouped_split_errors():
    labels, groups = _chains()
    with pytest.raises((ReasonlensError, TypeCheckError)):
        balanced_split(labels, 0, groups=groups[:-1])
    with pytest.raises(ReasonlensError, match="3 groups .* label more chains"):
        balanced_split(labels, 0, groups=torch.arange(len(labels)) % 3)
    with pytest.raises(ReasonlensError, match="one class only; label more chains"):
        balanced_split((groups == 0).long(), 0, groups=groups)  # one chain holds every removable step
    with pytest.raises((ReasonlensError, TypeCheckError)):  # the jaxtyping hook of the test run checks first
        balanced_split(labels, 0, groups=groups.float())


def test_same_grouped_split_for_every_probe():
    labels, groups = _chains(60, seed=3)
    features = torch.randn(len(labels), 2, 8) + labels[:, None, None]
    texts = [f"step {'kept' if y else 'needed'} {i}" for i, y in enumerate(labels.tolist())]
    config = ProbeConfig(arch="mlp", epochs=4, lr=1e-2, batch_size=256, seeds=(42, 7))
    probe = train_probe(features, labels, config, groups=groups)
    text = train_text_probe(texts, labels, config, groups=groups)
    for seed, a, b in zip(config.seeds, probe.runs, text.runs):
        _, test = balanced_split(labels, seed, groups=groups)
        assert a.test_index == b.test_index == test.tolist() and a.test_labels == labels[test].tolist()
        assert a.held_out_accuracy == balanced_accuracy(torch.tensor(a.test_predictions), labels[test])
    assert probe.groups == text.groups == groups.tolist()
    assert compare_probes(probe, text)["n_test_steps"] == probe.n_test_steps
    assert probe.n_test_steps == [len(r.test_index) for r in probe.runs]
    assert probe.n_test_groups == [len(set(groups[r.test_index].tolist())) for r in probe.runs]
    layers = probe_by_layer(features, labels, config, groups=groups)
    first_layer = train_probe(features[:, 0], labels, config, groups=groups)
    assert layers.values[1, :, 0].tolist() == pytest.approx([r.held_out_accuracy for r in first_layer.runs])
    with pytest.raises(ReasonlensError, match="same labels, groups and seeds"):
        compare_probes(probe, train_probe(features, labels, config))  # a step split


def test_balanced_accuracy_by_hand():
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    predictions = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert balanced_accuracy(predictions, labels) == pytest.approx((1 / 3 + 6 / 7) / 2)
    assert balanced_accuracy(predictions[3:], labels[3:]) == pytest.approx(6 / 7)  # one class: its recall
    balanced = torch.tensor([1, 1, 0, 0])
    assert balanced_accuracy(torch.tensor([1, 0, 0, 1]), balanced) == agreement(torch.tensor([1, 0, 0, 1]), balanced)


def test_step_split_leaks_chains_grouped_split_does_not():
    g = torch.Generator().manual_seed(0)
    n_chains, per = 80, 4
    chain_label = (torch.arange(n_chains) % 2)[torch.randperm(n_chains, generator=g)]
    chains = torch.arange(n_chains).repeat_interleave(per)
    identity = torch.randn(n_chains, 32, generator=g)  # features say which chain, labels are the chain's
    features = identity[chains] + 0.3 * torch.randn(n_chains * per, 32, generator=g)
    labels = chain_label[chains]
    config = ProbeConfig(arch="mlp", epochs=20, lr=1e-2, seeds=(0, 1))
    by_step = train_probe(features, labels, config)
    by_chain = train_probe(features, labels, config, groups=chains)
    assert by_step.held_out_accuracy >= 0.9 and by_chain.held_out_accuracy <= 0.7
    low, high = by_chain.interval()
    assert low < 0.5 < high and by_step.interval()[0] > 0.8


# ---------------------------------------------------------------------------------------------------------- statistics


def _result(seeds, groups=None):
    """A ProbeResult with given test rows: ``seeds`` holds ``(test_index, labels, predictions)`` per seed."""
    probe = Probe(Standardiser.fit(torch.zeros(2, 1), "linear"), torch.nn.Sequential(torch.nn.Linear(1, 1)),
                  "linear", 1, 1)
    runs = [SeedRun(seed=s, n_per_class=1, best_epoch_accuracy=0.0, best_epoch=1,
                    held_out_accuracy=0.0 if not p else balanced_accuracy(torch.tensor(p), torch.tensor(y)),
                    selected_epoch=1, validation_accuracy=0.0, test_index=list(index), test_curve=[0.0],
                    test_predictions=list(p),
                    test_labels=list(y)) for s, (index, y, p) in enumerate(seeds)]
    return ProbeResult(ProbeConfig(seeds=tuple(range(len(seeds)))), runs, probe, torch.zeros(1, dtype=torch.long),
                       groups=None if groups is None else list(groups))


def _chain_outcomes(n_chains, per=5, p_right=0.8, seed=0, whole_chains=False):
    """Labels, predictions right with probability ``p_right`` (per step, or per chain) and chains."""
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(n_chains).repeat_interleave(per)
    labels = torch.randint(0, 2, (n_chains * per,), generator=g)
    right = torch.rand(n_chains if whole_chains else n_chains * per, generator=g) < p_right
    right = right[groups] if whole_chains else right
    predictions = torch.where(right, labels, 1 - labels)
    return labels.tolist(), predictions.tolist(), groups.tolist()


def test_interval_contains_the_estimate_and_narrows_with_more_chains():
    widths = []
    for n_chains in (20, 200):
        y, p, groups = _chain_outcomes(n_chains)
        result = _result([(range(len(y)), y, p)], groups)
        low, high = result.interval()
        assert low <= result.held_out_accuracy <= high
        widths.append(high - low)
        assert result.n_test_steps == [len(y)] and result.n_test_groups == [n_chains]
    assert widths[1] < 0.5 * widths[0]
    y, p, groups = _chain_outcomes(60, whole_chains=True)  # errors come in whole chains: steps are not independent
    grouped, by_step = _result([(range(len(y)), y, p)], groups), _result([(range(len(y)), y, p)])
    assert np.diff(grouped.interval()) > 1.6 * np.diff(by_step.interval())
    assert by_step.n_test_groups == [len(y)]
    with pytest.raises(ReasonlensError, match="no test predictions"):
        _result([([0, 1], [0, 1], [])]).interval()


def test_compare_identical_strong_and_chance_probes():
    y, p, groups = _chain_outcomes(60, p_right=0.95, seed=1)
    strong = _result([(range(len(y)), y, p)], groups)
    out = compare_probes(strong, strong)
    assert out["difference"] == 0.0 and out["p_value"] == 1.0 and out["difference_ci95"] == [0.0, 0.0]
    assert out["ci95"][0] == out["ci95"][1] and out["ci95"][0] == list(strong.interval())
    assert out["n_test_steps"] == [300] and out["n_test_chains"] == [60]
    chance = _result([(range(len(y)), y, _chain_outcomes(60, p_right=0.5, seed=2)[1])], groups)
    out = compare_probes(strong, chance)
    assert out["accuracy"] == [strong.held_out_accuracy, chance.held_out_accuracy]
    assert out["difference"] > 0.3 and out["p_value"] < 0.01 and out["difference_ci95"][0] > 0.2
    assert compare_probes(chance, strong)["difference"] == -out["difference"]


def _swap_p_value(a, b):
    """The exact permutation p-value by hand: every swap of whole groups between the two probes, every seed."""
    import itertools

    units = [(s, g) for s, (_, _, _, groups) in enumerate(a) for g in sorted(set(groups))]

    def difference(swapped):
        total = 0.0
        for s, ((_, y, pa, groups), (_, _, pb, _)) in enumerate(zip(a, b)):
            pa2 = [pb[i] if (s, g) in swapped else pa[i] for i, g in enumerate(groups)]
            pb2 = [pa[i] if (s, g) in swapped else pb[i] for i, g in enumerate(groups)]
            total += balanced_accuracy(torch.tensor(pa2), torch.tensor(y)) - \
                balanced_accuracy(torch.tensor(pb2), torch.tensor(y))
        return total / len(a)

    observed = abs(difference(set()))
    swaps = list(itertools.product([False, True], repeat=len(units)))
    extreme = sum(abs(difference({u for u, on in zip(units, bits) if on})) >= observed - 1e-12 for bits in swaps)
    return extreme / len(swaps)


def test_permutation_p_value_against_enumeration():
    g = torch.Generator().manual_seed(5)

    def seed_rows(offset, n_groups):  # uneven chains, unbalanced classes
        groups = [offset + k for k in range(n_groups) for _ in range(k % 3 + 1)]
        y = (torch.rand(len(groups), generator=g) < 0.3).long().tolist()
        pa = [t if float(torch.rand(1, generator=g)) < 0.9 else 1 - t for t in y]
        pb = [t if float(torch.rand(1, generator=g)) < 0.55 else 1 - t for t in y]
        return y, pa, pb, groups

    y, pa, pb, groups = seed_rows(0, 6)  # one seed, six chains: 64 swaps
    a, b = [(None, y, pa, groups)], [(None, y, pb, groups)]
    exact = _swap_p_value(a, b)
    out = compare_probes(_result([(range(len(y)), y, pa)], groups), _result([(range(len(y)), y, pb)], groups),
                         n_permutations=64)
    assert out["p_value"] == pytest.approx(exact, abs=1e-12) and exact < 1

    # two seeds with their own test rows (chains 0-5 and 6-11 of one step set): 4,096 swaps
    first, second = seed_rows(0, 6), seed_rows(6, 6)
    n0 = len(first[0])
    index = [list(range(n0)), list(range(n0, n0 + len(second[0])))]
    all_groups = first[3] + second[3]
    rows_a = [(None, first[0], first[1], first[3]), (None, second[0], second[1], second[3])]
    rows_b = [(None, first[0], first[2], first[3]), (None, second[0], second[2], second[3])]
    exact = _swap_p_value(rows_a, rows_b)
    ra = _result([(index[0], first[0], first[1]), (index[1], second[0], second[1])], all_groups)
    rb = _result([(index[0], first[0], first[2]), (index[1], second[0], second[2])], all_groups)
    assert compare_probes(ra, rb, n_permutations=4096)["p_value"] == pytest.approx(exact, abs=1e-12)
    sampled = compare_probes(ra, rb, n_permutations=4000, seed=1)["p_value"]  # below 2^12: Monte Carlo
    assert sampled == pytest.approx(exact, abs=0.03)


def test_compare_agreement():
    y, reference, groups = _chain_outcomes(50, p_right=0.9, seed=3)
    g = torch.Generator().manual_seed(4)
    close = [r if float(torch.rand(1, generator=g)) < 0.95 else 1 - r for r in reference]
    unrelated = torch.randint(0, 2, (len(y),), generator=g).tolist()
    rows = range(len(y))
    ref, a, b = (_result([(rows, y, p)], groups) for p in (reference, close, unrelated))
    out = compare_agreement(ref, a, b)
    assert out["agreement"] == pytest.approx([agreement(torch.tensor(close), torch.tensor(reference)),
                                              agreement(torch.tensor(unrelated), torch.tensor(reference))])
    assert out["difference"] == pytest.approx(out["agreement"][0] - out["agreement"][1])
    assert out["p_value"] < 0.01 and out["ci95"][0][0] <= out["agreement"][0] <= out["ci95"][0][1]
    same = compare_agreement(ref, a, a)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ReasonlensError, match="same labels, groups and seeds"):
        compare_agreement(ref, a, _result([(rows, y, unrelated)]))  # no groups


def test_grouped_result_saves_and_old_files_load(tmp_path):
    import json

    labels, groups = _chains(50, seed=2)
    features = torch.randn(len(labels), 6) + labels[:, None]
    result = train_probe(features, labels, FAST, groups=groups)
    loaded = ProbeResult.load(result.save(tmp_path / "probe.json"))
    assert loaded.groups == groups.tolist() and loaded.runs == result.runs
    assert loaded.runs[0].test_predictions and loaded.interval() == result.interval()
    data = json.loads((tmp_path / "probe.json").read_text())
    del data["groups"]
    for run in data["runs"]:
        del run["test_predictions"], run["test_labels"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = ProbeResult.load(tmp_path / "old.json")
    assert old.groups is None and old.runs[0].test_predictions == []
    assert old.held_out_accuracy == result.held_out_accuracy
    with pytest.raises(ReasonlensError, match="retrain"):
        old.interval()

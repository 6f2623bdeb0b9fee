"""Step activations, probes and their baselines (reasonlens.importance.activations / probes / controls)."""

import math

import pytest
import torch
from jaxtyping import TypeCheckError

import reasonlens.importance.activations as activations
from reasonlens.errors import ReasonlensError
from reasonlens.importance.activations import StepSet, step_activations
from reasonlens.importance.chains import chains_from_examples
from reasonlens.importance.controls import (
    SURFACE_PROBE_CONFIG,
    cross_model,
    random_init_model,
    surface_correlations,
    surface_features,
    train_text_probe,
)
from reasonlens.importance.probes import (
    ARCHS,
    ProbeConfig,
    ProbeResult,
    agreement,
    balanced_split,
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
    out = cross_model(main, second, steps, FAST, features_a=step_activations(main, steps))
    for key in ("accuracy_a", "accuracy_b", "random_init_accuracy", "agreement", "random_init_agreement"):
        assert 0.0 <= out[key] <= 1.0
    assert out["n_test"] == len(out["results"]["a"].runs[0].test_index)
    assert out["results"]["b"].runs[0].test_index == out["results"]["a"].runs[0].test_index

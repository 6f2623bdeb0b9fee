"""Step-importance scoring, influence and labels against one-row brute force, a scripted search, and the
reference model end to end."""

import math

import pytest
import torch
from jaxtyping import TypeCheckError
from model_util import write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.importance import labels as labels_module
from reasonlens.importance.chains import Chain, chains_from_examples, make_chain
from reasonlens.importance.influence import influence_matrix
from reasonlens.importance.labels import LabelConfig, StepLabels, influence_kept, label_steps
from reasonlens.importance.scoring import (
    ScoringConfig,
    SubsetScorer,
    answer_probabilities,
    attainability,
    encode_suffix,
    sufficiency,
)
from reasonlens.model import load_model
from reasonlens.ontology import generate


@pytest.fixture(scope="module")
def tiny_chain(tiny_model):
    return chains_from_examples(tiny_model, generate(1, hops=1, seed=4, redundant_step_p=1.0))[0]


@pytest.fixture(scope="module")
def reference():
    return load_model("reasonlens-main")


@pytest.fixture(scope="module")
def reference_chains(reference):
    return chains_from_examples(reference, generate(6, hops=2, seed=5, redundant_step_p=0.5))


@pytest.fixture(scope="module")
def reference_labels(reference, reference_chains):
    return label_steps(reference, reference_chains)


def test_prefix_cache_and_whole_sequence_runs_agree(tiny_model, tiny_chain, monkeypatch):
    """Scoring and influence read the prompt from one cached run; without the cache they run it per row."""
    from reasonlens.runtime import KVPrefix

    n = len(tiny_chain)
    keeps = [[], list(range(n)), [0], list(range(1, n))]
    cached = SubsetScorer(tiny_model, tiny_chain).scores(keeps)
    cached_influence = {m: influence_matrix(tiny_model, tiny_chain, method=m, ig_steps=2)
                        for m in ("gradient", "integrated_gradients")}
    monkeypatch.setattr(KVPrefix, "of", classmethod(lambda cls, model, ids: None))
    whole = SubsetScorer(tiny_model, tiny_chain).scores(keeps)
    for a, b in zip(cached, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for method, matrix in cached_influence.items():
        torch.testing.assert_close(matrix, influence_matrix(tiny_model, tiny_chain, method=method, ig_steps=2),
                                   atol=1e-5, rtol=1e-4)


def _last_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


# ------------------------------------------------------------------------------------------------- scoring


def test_answer_probabilities_batched_equal_one_forward_per_subset(tiny_model, tiny_chain):
    n = len(tiny_chain)
    assert n >= 4
    keeps = [[], [0], [1, 3], list(range(n)), [n - 1], [0, 2]]
    suffix = encode_suffix(tiny_model, "rex is")
    got = answer_probabilities(tiny_model, tiny_chain, keeps, suffix_ids=suffix, batch_size=4)
    gold = 0 if tiny_chain.label else 1
    want = [_last_logits(tiny_model, tiny_chain.token_ids(k, suffix))[-1, list(tiny_chain.answer_ids)].softmax(-1)[gold]
            for k in keeps]
    torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=0)


def test_attainability_against_unpadded_perplexities(tiny_model, tiny_chain):
    chain, n = tiny_chain, len(tiny_chain)
    config = ScoringConfig(suffix="rex is", batch_size=3)
    suffix = encode_suffix(tiny_model, config.suffix)

    def ppl(ids, start):
        logp = _last_logits(tiny_model, ids)[:-1].double().log_softmax(-1)
        return math.exp(-logp[torch.arange(start - 1, len(ids) - 1), torch.tensor(ids[start:])].mean().item())

    ppl_o = ppl(chain.token_ids(), chain.prompt_len)
    ppl_answer = ppl(chain.prompt_ids + suffix + [chain.gold_answer_id], chain.prompt_len)
    keeps = [list(range(n)), [], [0, 2], [1]]
    suff, attn = SubsetScorer(tiny_model, chain, config).scores(keeps)
    assert attn[0] == 1.0 and attn[1] == 0.0
    for keep, got in zip(keeps[2:], attn[2:]):
        want = 1 - (ppl(chain.token_ids(keep), chain.prompt_len) - ppl_o) / (ppl_answer - ppl_o)
        assert got.item() == pytest.approx(want, abs=1e-5)
    torch.testing.assert_close(suff, answer_probabilities(tiny_model, chain, keeps, suffix_ids=suffix), atol=1e-5, rtol=0)
    torch.testing.assert_close(attainability(tiny_model, chain, keeps, config), attn)
    torch.testing.assert_close(sufficiency(tiny_model, chain, keeps, config), suff)


def test_sampled_sufficiency_is_reproducible_and_batch_independent(tiny_model, tiny_chain):
    config = ScoringConfig(mode="sampled", k_samples=10, temperature=0.6, seed=3)
    keeps = [[0], [0, 1], [], [1, 2, 3]]
    first = SubsetScorer(tiny_model, tiny_chain, config).scores(keeps)[0]
    assert torch.equal(first, SubsetScorer(tiny_model, tiny_chain, config).scores(keeps)[0])
    assert torch.equal(first[2:], SubsetScorer(tiny_model, tiny_chain, config).scores(keeps[2:])[0])
    assert torch.allclose(first * 10, (first * 10).round())  # fractions of 10 samples


def test_scoring_rejects_bad_input(tiny_model, tiny_chain, tmp_path):
    with pytest.raises(ReasonlensError, match="outside this chain"):
        answer_probabilities(tiny_model, tiny_chain, [[0, len(tiny_chain)]])
    with pytest.raises(ReasonlensError, match="outside this chain"):
        SubsetScorer(tiny_model, tiny_chain).scores([[-1]])
    with pytest.raises(ReasonlensError, match="encodes to no tokens"):
        SubsetScorer(tiny_model, tiny_chain, ScoringConfig(suffix="   "))
    with pytest.raises(ReasonlensError, match="does not know"):
        encode_suffix(tiny_model, "so the answer is")
    for bad in (dict(tau=0.0), dict(mode="greedy"), dict(k_samples=0), dict(temperature=0), dict(batch_size=0)):
        with pytest.raises((ReasonlensError, TypeCheckError)):  # the test run's type checks see Literals first
            ScoringConfig(**bad)
    broken = load_model(str(write_checkpoint(tmp_path / "nan", scale=float("nan"), n_ctx=256)))
    with pytest.raises(ReasonlensError, match="NaN"):
        SubsetScorer(broken, tiny_chain).scores([[0]])


# ----------------------------------------------------------------------------------------------- influence


def _brute_gradients(model, chain):
    """One forward and backward per target step: ``(d Σ_{t∈s_k} P_t / d E for each k, E)``, each ``[pos, d]``."""
    ids = torch.tensor([chain.token_ids()])
    grads, store = [], {}

    def hook(act, hook):
        store["E"] = act.detach().clone().requires_grad_(True)
        return store["E"]

    for span in chain.spans():
        with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", hook)]):
            probs = model(ids)[0].softmax(-1)
            objective = sum(probs[t - 1, ids[0, t]] for t in range(span.start, span.end))
            (g,) = torch.autograd.grad(objective, store["E"])
        grads.append(g[0])
    return grads, store["E"][0].detach()


def _block_norms(attributions, chain):
    spans = chain.spans()
    return torch.tensor([[float(torch.linalg.norm(a[s.start:s.end])) for s in spans] for a in attributions])


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input"])
def test_influence_batched_equals_one_backward_per_step(tiny_model, tiny_chain, method):
    grads, emb = _brute_gradients(tiny_model, tiny_chain)
    full = _block_norms([g * emb if method == "gradient_x_input" else g for g in grads], tiny_chain)
    assert torch.equal(full.triu(1), torch.zeros_like(full))  # causality: exact zeros above the diagonal
    assert (full[torch.ones_like(full, dtype=torch.bool).tril(-1)] > 0).all()
    want = full - torch.diag(full.diagonal())
    got = influence_matrix(tiny_model, tiny_chain, method=method, batch_size=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert torch.equal(got.diagonal(), torch.zeros(len(tiny_chain)))


def test_integrated_gradients(tiny_model, tiny_chain):
    grads, emb = _brute_gradients(tiny_model, tiny_chain)
    start = tiny_chain.prompt_len
    base = emb[start:].mean(0)
    want = _block_norms([g * (emb - base) for g in grads], tiny_chain).tril(-1)
    one = influence_matrix(tiny_model, tiny_chain, method="integrated_gradients", ig_steps=1)
    torch.testing.assert_close(one, want, atol=1e-5, rtol=1e-4)  # one right-Riemann point: g(E) ⊙ (E - b)
    split = influence_matrix(tiny_model, tiny_chain, method="integrated_gradients", ig_steps=3, batch_size=2)
    whole = influence_matrix(tiny_model, tiny_chain, method="integrated_gradients", ig_steps=3, batch_size=64)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-5)


def test_influence_of_a_subsequence_and_bad_input(tiny_model, tiny_chain):
    keep = [0, 2, 3]
    sub = make_chain(tiny_model, tiny_chain.example, [tiny_chain.steps[i] for i in keep])
    assert sub.step_ids == [tiny_chain.step_ids[i] for i in keep]
    torch.testing.assert_close(influence_matrix(tiny_model, tiny_chain, keep), influence_matrix(tiny_model, sub))
    assert influence_matrix(tiny_model, tiny_chain, [1]).shape == (1, 1)
    with pytest.raises(ReasonlensError, match="outside"):
        influence_matrix(tiny_model, tiny_chain, [0, 99])
    with pytest.raises((ReasonlensError, TypeCheckError)):
        influence_matrix(tiny_model, tiny_chain, method="saliency")
    with pytest.raises(ReasonlensError):
        influence_matrix(tiny_model, tiny_chain, ig_steps=0)


# -------------------------------------------------------------------------------------- the search (scripted)

# Steps 0 (sufficient alone) and 7 (states the gold label) are shortcuts. A subset is sufficient iff it holds
# steps 1 and 4, attainable iff it holds step 5, so the prefix is steps 1-5. The influence matrix makes stage 1
# keep {1, 3, 4, 5} at threshold 0 (step 2 removable); stage 2 tries 5, 1, 3 and removes 3.
_INFLUENCE = torch.tensor([[0.0, 0, 0, 0, 0],
                           [1.0, 0, 0, 0, 0],
                           [0.7, 0.3, 0, 0, 0],
                           [0.1, 0.1, 0.8, 0, 0],
                           [0.1, 0.05, 0.05, 0.8, 0]])


class _ScriptedScorer:
    def __init__(self, model, chain, config):
        self.config = config

    def scores(self, keeps):
        keeps = [set(k) for k in keeps]
        suff = [0.95 if k >= {1, 4} or k == {0} else 0.1 for k in keeps]
        attn = [0.9 if 5 in k else 0.5 for k in keeps]
        return torch.tensor(suff), torch.tensor(attn)


@pytest.fixture
def scripted(monkeypatch, tiny_model):
    example = next(e for e in generate(10, hops=1, seed=0) if e.label)
    chain = Chain(example=example, prompt_ids=[1, 5], step_ids=[[6 + i] for i in range(8)],
                  steps=[f"step {i}." for i in range(7)] + ["so it is true."], roles=[None] * 8, answer_ids=(11, 13))
    monkeypatch.setattr(labels_module, "SubsetScorer", _ScriptedScorer)
    monkeypatch.setattr(labels_module, "influence_matrix",
                        lambda model, chain, keep, **kw: _INFLUENCE[:len(keep), :len(keep)].clone())
    return tiny_model, chain


def test_scripted_search_labels(scripted):
    model, chain = scripted
    result = label_steps(model, [chain])
    assert result.filter_counts == dict(total=1, sufficient=1, necessary=1, sufficient_after_shortcuts=1, labelled=1)
    (c,) = result.chains
    assert (c.shortcut_steps, c.prefix, c.t_inf, c.core, c.threshold) == ([0, 7], [1, 2, 3, 4, 5], [1, 3, 4, 5],
                                                                         [1, 4, 5], 0.0)
    assert c.labels == [None, 0, 1, None, 0, 0, None, None]
    assert c.scores["core_sufficiency"] >= 0.8 and c.scores["core_attainability"] >= 0.8
    assert [r["step"] for r in result.records()] == [1, 2, 4, 5]
    assert result.core_size() == pytest.approx(3 / 5)


def test_scripted_search_variants(scripted):
    model, chain = scripted
    (c,) = label_steps(model, [chain], LabelConfig(use_attainability=False)).chains
    assert c.prefix == [1, 2, 3, 4] and set(c.core) == {1, 4}
    runs = [label_steps(model, [chain], LabelConfig(ranking="random", seed=s)).chains[0] for s in (0, 0, 1)]
    for r in runs:
        assert r.t_inf == r.prefix == [1, 2, 3, 4, 5] and r.influence is None and r.threshold is None
        assert r.core == [1, 4, 5] and 1 not in r.labels
    assert runs[0].labels == runs[1].labels


def test_influence_kept_grows_with_the_threshold():
    g = torch.Generator().manual_seed(0)
    infl = torch.rand(7, 7, generator=g).tril(-1)
    kept = [set(influence_kept(infl, t)) for t in labels_module.PRUNING_THRESHOLDS]
    assert all(a <= b for a, b in zip(kept, kept[1:]))
    assert 6 in kept[0] and kept[-1] <= set(range(7))
    assert influence_kept(torch.zeros(3, 3), 0.0) == [0, 1, 2]  # no influence: nothing to prune by


def test_label_steps_rejects_bad_input(reference, reference_chains):
    with pytest.raises(ReasonlensError, match="no chains"):
        label_steps(reference, [])
    one = make_chain(reference, reference_chains[0].example, [reference_chains[0].steps[0]])
    with pytest.raises(ReasonlensError, match="single step"):
        label_steps(reference, [one])
    result = label_steps(reference, [one, reference_chains[1]])
    assert result.dropped[0] == (0, "one step") and result.filter_counts["total"] == 2
    for bad in (dict(influence="saliency"), dict(ranking="best"), dict(thresholds=()), dict(thresholds=(1.5,)),
                dict(ig_steps=0)):
        with pytest.raises((ReasonlensError, TypeCheckError)):
            LabelConfig(**bad)
    with pytest.raises(ReasonlensError, match="no StepLabels|labels.json"):
        StepLabels.load("/nonexistent-folder")
    with pytest.raises(ReasonlensError, match="no chain passed"):
        StepLabels(chains=[], config=LabelConfig(), filter_counts={}).core_size()


# ------------------------------------------------------------------------------------- reference, end to end


def test_reference_labels_structure(reference, reference_labels, reference_chains):
    result, tau = reference_labels, 0.8
    counts = result.filter_counts
    order = ["total", "sufficient", "necessary", "sufficient_after_shortcuts", "labelled"]
    assert [counts[k] for k in order] == sorted((counts[k] for k in order), reverse=True)
    assert counts["total"] == len(reference_chains) and counts["labelled"] == len(result.chains) >= 1
    assert len(result.chains) + len(result.dropped) == len(reference_chains)
    for c in result.chains:
        rest = [i for i in range(len(c.chain)) if i not in c.shortcut_steps]
        assert c.prefix == rest[:c.prefix_len] and c.prefix_len >= 2
        assert set(c.core) <= set(c.t_inf) <= set(c.prefix)
        assert c.influence.shape == (c.prefix_len, c.prefix_len)
        assert len(c.labels) == len(c.chain)
        for i, label in enumerate(c.labels):
            assert (label == 1) == (i in c.prefix and i not in c.t_inf)
            assert (label == 0) == (i in c.core)
        suff, attn = SubsetScorer(reference, c.chain).scores([c.core, c.t_inf, c.prefix])
        assert (suff >= tau).all() and (attn >= tau).all()
    assert len(result.records()) == sum(label is not None for c in result.chains for label in c.labels)
    assert 0 < result.core_size() <= 1
    agreement = result.agreement_with_ground_truth()
    assert agreement["n_redundant"] >= 0 and agreement["n_removable"] >= 0
    assert all(math.isnan(agreement[k]) or 0 <= agreement[k] <= 1 for k in ("precision", "recall"))


def test_reference_labels_are_deterministic(reference, reference_chains, reference_labels):
    again = label_steps(reference, reference_chains)
    assert [c.labels for c in again.chains] == [c.labels for c in reference_labels.chains]
    config = LabelConfig(scoring=ScoringConfig(mode="sampled", k_samples=5), influence="gradient_x_input")
    first, second = (label_steps(reference, reference_chains[:3], config) for _ in range(2))
    assert [c.labels for c in first.chains] == [c.labels for c in second.chains]
    assert first.filter_counts == second.filter_counts


def test_save_load_round_trip(reference_labels, tmp_path):
    reference_labels.save(tmp_path / "labels")
    loaded = StepLabels.load(tmp_path / "labels")
    assert loaded.config == reference_labels.config
    assert loaded.filter_counts == reference_labels.filter_counts and loaded.dropped == reference_labels.dropped
    assert loaded.records() == reference_labels.records()
    for a, b in zip(loaded.chains, reference_labels.chains):
        assert (a.index, a.labels, a.prefix, a.shortcut_steps, a.t_inf, a.core, a.threshold, a.scores) == \
            (b.index, b.labels, b.prefix, b.shortcut_steps, b.t_inf, b.core, b.threshold, b.scores)
        assert torch.equal(a.influence, b.influence)
        assert a.chain == b.chain

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
    answer_token_sets,
    attainability,
    encode_suffix,
    sufficiency,
)
from reasonlens.model import load_model
from reasonlens.ontology import generate
from reasonlens.ontology.prompt import ANSWER_NOW


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_model(request, tmp_path_factory):
    """A random tiny Llama, then GPT-2, with the version-2 reference tokenizer (it knows the answer-now suffix)."""
    folder = tmp_path_factory.mktemp(f"{request.param}-v2")
    return load_model(str(write_checkpoint(folder, request.param, n_ctx=256, vocabulary=2)))


@pytest.fixture(scope="module")
def tiny_chain(tiny_model):
    return chains_from_examples(tiny_model, generate(1, hops=1, seed=4, redundant_step_p=1.0))[0]


@pytest.fixture(scope="module")
def reference():
    return load_model("reasonlens-main")


@pytest.fixture(scope="module")
def reference_chains(reference):
    return chains_from_examples(reference, generate(40, hops=2, seed=5, redundant_step_p=0.5))


@pytest.fixture(scope="module")
def reference_labels(reference, reference_chains):
    return label_steps(reference, reference_chains)


def test_prefix_cache_and_whole_sequence_runs_agree(tiny_model, tiny_chain, monkeypatch):
    """Scoring and influence read the prompt from one cached run; without the cache they run it per row."""
    from reasonlens.runtime import KVPrefix

    n = len(tiny_chain)
    keeps = [[], list(range(n)), [0], list(range(1, n))]
    config = ScoringConfig(mode="expected")
    cached = SubsetScorer(tiny_model, tiny_chain, config).scores(keeps)
    cached_influence = {m: influence_matrix(tiny_model, tiny_chain, method=m, ig_steps=2)
                        for m in ("gradient", "integrated_gradients")}
    monkeypatch.setattr(KVPrefix, "of", classmethod(lambda cls, model, ids: None))
    whole = SubsetScorer(tiny_model, tiny_chain, config).scores(keeps)
    for a, b in zip(cached, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for method, matrix in cached_influence.items():
        torch.testing.assert_close(matrix, influence_matrix(tiny_model, tiny_chain, method=method, ig_steps=2),
                                   atol=1e-5, rtol=1e-4)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].double()


# ------------------------------------------------- scoring: a port of the paper code's definitions, one row each


def _gold_ids(model, label):
    """Every spelling of the gold word that is one token, found by decoding the whole vocabulary."""
    word = "true" if label else "false"
    return [i for i in range(model.cfg.d_vocab) if model.tokenizer.decode([i]).strip().lower() == word]


def _port_answer_probability(model, ids, label, temperature=1.0, top_p=1.0):
    """P(a draw after ``ids`` is the gold word): softmax(logits / T), nucleus by a running sum, renormalised."""
    probs = (_logits(model, ids)[-1] / temperature).softmax(-1)
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))
    kept, mass = [], 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.append(i)
        mass += float(probs[i])
    gold = set(_gold_ids(model, label))
    return sum(float(probs[i]) for i in kept if i in gold) / sum(float(probs[i]) for i in kept)


def _port_ppl(model, ids):
    """Perplexity of the whole string, every token after the first predicted (the released code's PPL)."""
    logp = _logits(model, ids)[:-1].log_softmax(-1)
    return math.exp(-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean().item())


def test_answer_probabilities_against_one_forward_per_subset(tiny_model, tiny_chain):
    n = len(tiny_chain)
    assert n >= 4
    keeps = [[], [0], [1, 3], list(range(n)), [n - 1], [0, 2]]
    suffix = encode_suffix(tiny_model, ANSWER_NOW)
    assert set(_gold_ids(tiny_model, tiny_chain.label)) == answer_token_sets(tiny_model)[1 - tiny_chain.label]
    for temperature, top_p in ((1.0, 1.0), (0.6, 0.95), (0.3, 0.5)):
        got = answer_probabilities(tiny_model, tiny_chain, keeps, temperature=temperature, top_p=top_p, batch_size=4)
        want = [_port_answer_probability(tiny_model, tiny_chain.token_ids(k, suffix), tiny_chain.label, temperature,
                                         top_p) for k in keeps]
        torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5, rtol=0)


def test_attainability_against_whole_string_perplexities(tiny_model, tiny_chain):
    chain, n = tiny_chain, len(tiny_chain)
    config = ScoringConfig(mode="expected", batch_size=3)
    tail = encode_suffix(tiny_model, config.suffix) + [chain.gold_answer_id]
    ppl_o = _port_ppl(tiny_model, chain.token_ids() + tail)
    ppl_answer = _port_ppl(tiny_model, chain.prompt_ids + tail)
    keeps = [list(range(n)), [], [0, 2], [1]]
    scorer = SubsetScorer(tiny_model, chain, config)
    suff, attn = scorer.scores(keeps)
    assert attn[0] == 1.0 and attn[1] == 0.0
    for keep, got in zip(keeps, attn):
        want = 1 - (_port_ppl(tiny_model, chain.token_ids(keep) + tail) - ppl_o) / (ppl_answer - ppl_o)
        assert got.item() == pytest.approx(want, abs=1e-5)
        assert scorer.ppl(keep) == pytest.approx(_port_ppl(tiny_model, chain.token_ids(keep) + tail), rel=1e-6)
    want_suff = [_port_answer_probability(tiny_model, chain.token_ids(k, tail[:-1]), chain.label, 0.6, 0.95)
                 for k in keeps]
    torch.testing.assert_close(suff.double(), torch.tensor(want_suff, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(attainability(tiny_model, chain, keeps, config), attn)
    torch.testing.assert_close(sufficiency(tiny_model, chain, keeps, config), suff)


def test_sampled_sufficiency_is_reproducible_batch_independent_and_unbiased(tiny_model, tiny_chain):
    config = ScoringConfig(k_samples=10, seed=3)
    keeps = [[0], [0, 1], [], [1, 2, 3]]
    first = SubsetScorer(tiny_model, tiny_chain, config).scores(keeps)[0]
    assert torch.equal(first, SubsetScorer(tiny_model, tiny_chain, config).scores(keeps)[0])
    assert torch.equal(first[2:], SubsetScorer(tiny_model, tiny_chain, config).scores(keeps[2:])[0])
    assert torch.allclose(first * 10, (first * 10).round())  # fractions of 10 samples
    many = SubsetScorer(tiny_model, tiny_chain, ScoringConfig(k_samples=4000)).scores(keeps)[0]
    expected = SubsetScorer(tiny_model, tiny_chain, ScoringConfig(mode="expected")).scores(keeps)[0]
    torch.testing.assert_close(many, expected, atol=0.03, rtol=0)  # 4,000 draws: sd <= 0.008


def test_necessity_is_at_most_one_of_five_right(tiny_model, tiny_chain):
    for mode in ("sampled", "expected"):
        for max_correct in (0, 1, 3, 5):
            config = ScoringConfig(mode=mode, necessity_max_correct=max_correct)
            scorer = SubsetScorer(tiny_model, tiny_chain, config)
            right = float(scorer.scores([[]])[0][0]) * config.k_samples
            assert scorer.necessary() == (right <= max_correct + 1e-9)
    assert SubsetScorer(tiny_model, tiny_chain, ScoringConfig(necessity_max_correct=5)).necessary()


def test_scoring_rejects_bad_input(tiny_model, tiny_chain, tmp_path):
    with pytest.raises(ReasonlensError, match="outside this chain"):
        answer_probabilities(tiny_model, tiny_chain, [[0, len(tiny_chain)]])
    with pytest.raises(ReasonlensError, match="outside this chain"):
        SubsetScorer(tiny_model, tiny_chain).scores([[-1]])
    with pytest.raises(ReasonlensError, match="suffix.*empty"):
        ScoringConfig(suffix="   ")
    v1 = load_model(str(write_checkpoint(tmp_path / "v1", n_ctx=256)))
    with pytest.raises(ReasonlensError, match="does not know.*answers on request"):
        SubsetScorer(v1, chains_from_examples(v1, generate(1, hops=1, seed=4))[0])
    for bad in (dict(tau=0.0), dict(mode="deterministic"), dict(k_samples=0), dict(temperature=0), dict(batch_size=0),
                dict(top_p=0.0), dict(necessity_max_correct=-1)):
        with pytest.raises((ReasonlensError, TypeCheckError)):  # the test run's type checks see Literals first
            ScoringConfig(**bad)
    broken = load_model(str(write_checkpoint(tmp_path / "nan", scale=float("nan"), n_ctx=256, vocabulary=2)))
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
# steps 1 and 4, attainable iff it holds step 5, so the prefix is steps 1-5. The influence matrix (prefix steps
# 1-5, then the answer step) makes stage 1 keep {1, 3, 4, 5} at threshold 0 from the answer (step 2 removable);
# stage 2 ranks 3, 1, 4 by mean influence (5, the last prefix step, is protected) and removes 3.
_INFLUENCE = torch.tensor([[0.0, 0, 0, 0, 0, 0],
                           [1.0, 0, 0, 0, 0, 0],
                           [0.7, 0.3, 0, 0, 0, 0],
                           [0.1, 0.1, 0.8, 0, 0, 0],
                           [0.1, 0.05, 0.05, 0.8, 0, 0],
                           [0.05, 0.05, 0.1, 0.3, 0.5, 0]])


class _ScriptedScorer:
    suffix_ids: list[int] = []

    def __init__(self, model, chain, config):
        self.config = config

    def scores(self, keeps):
        keeps = [set(k) for k in keeps]
        suff = [0.95 if k >= {1, 4} or k == {0} else 0.1 for k in keeps]
        attn = [0.9 if 5 in k else 0.5 for k in keeps]
        return torch.tensor(suff), torch.tensor(attn)

    def necessary(self):
        return True


@pytest.fixture
def scripted(monkeypatch, tiny_model):
    example = next(e for e in generate(10, hops=1, seed=0) if e.label)
    chain = Chain(example=example, prompt_ids=[1, 5], step_ids=[[6 + i] for i in range(8)],
                  steps=[f"step {i}." for i in range(7)] + ["so it is true."], roles=[None] * 8, answer_ids=(11, 13))
    seen = []

    def influence(model, chain, keep, **kw):
        seen.append((chain.roles[-1], list(keep)))
        return _INFLUENCE[:len(keep), :len(keep)].clone()

    monkeypatch.setattr(labels_module, "SubsetScorer", _ScriptedScorer)
    monkeypatch.setattr(labels_module, "influence_matrix", influence)
    return tiny_model, chain, seen


def test_scripted_search_labels(scripted):
    model, chain, seen = scripted
    result = label_steps(model, [chain])
    assert result.filter_counts == dict(total=1, **dict.fromkeys(labels_module.STAGES, 1))
    assert seen == [("answer", [1, 2, 3, 4, 5, 8])]  # the prefix, then the appended answer step
    (c,) = result.chains
    assert (c.shortcut_steps, c.prefix, c.t_inf, c.core, c.threshold) == ([0, 7], [1, 2, 3, 4, 5], [1, 3, 4, 5],
                                                                         [1, 4, 5], 0.0)
    assert c.labels == [None, 0, 1, None, 0, 0, None, None]
    assert c.scores["core_sufficiency"] >= 0.8 and c.scores["core_attainability"] >= 0.8
    assert [r["step"] for r in result.records()] == [1, 2, 4, 5]
    assert result.core_size() == pytest.approx(3 / 5)
    decisions = result.score_summary()
    assert decisions["rejected_by_attainability_only"] >= 1 and decisions["vacuous"] == []  # e.g. prefix 1-4
    assert decisions["subsets_decided"] >= decisions["rejected_by_sufficiency"] + 1
    assert decisions["quantiles"]["core_sufficiency"]["n"] == 1


def test_scripted_search_variants(scripted):
    model, chain, _ = scripted
    (c,) = label_steps(model, [chain], LabelConfig(use_attainability=False)).chains
    assert c.prefix == [1, 2, 3, 4] and set(c.core) == {1, 4}
    runs = [label_steps(model, [chain], LabelConfig(ranking="random", seed=s)).chains[0] for s in (0, 0, 1)]
    for r in runs:
        assert r.t_inf == r.prefix == [1, 2, 3, 4, 5] and r.influence is None and r.threshold is None
        assert r.core == [1, 4, 5] and 1 not in r.labels
    assert runs[0].labels == runs[1].labels
    (c,) = label_steps(model, [chain], LabelConfig(shortcut_alone=False)).chains
    assert c.shortcut_steps == [7] and c.prefix == [0, 1, 2, 3, 4, 5]
    chain.roles[2] = chain.roles[3] = "redundant"  # the oracle drops both in stage 1; stage 2 has nothing to remove
    oracle = label_steps(model, [chain], LabelConfig(ranking="oracle", require_stage2_removal=False)).chains[0]
    assert (oracle.t_inf, oracle.core, oracle.labels[1:6]) == ([1, 4, 5], [1, 4, 5], [0, 1, 1, 0, 0])
    assert label_steps(model, [chain], LabelConfig(ranking="oracle")).dropped == [
        (0, labels_module._DROP_REASONS["labelled"])]
    chain.roles[2] = chain.roles[3] = None
    with pytest.raises(ReasonlensError, match="oracle ranking reads the generator's role tags"):
        label_steps(model, [chain], LabelConfig(ranking="oracle"))
    short = label_steps(model, [chain], LabelConfig(prefix_steps=(6, 200)))
    assert short.dropped == [(0, labels_module._DROP_REASONS["prefix_length"])]
    assert short.filter_counts["prefix"] == 1 and short.filter_counts["prefix_length"] == 0


def test_influence_kept_grows_with_the_threshold():
    g = torch.Generator().manual_seed(0)
    infl = torch.rand(7, 7, generator=g).tril(-1)
    kept = [set(influence_kept(infl, t)) for t in labels_module.PRUNING_THRESHOLDS]
    assert all(a <= b for a, b in zip(kept, kept[1:]))
    assert 6 in kept[0] and kept[-1] <= set(range(7))
    assert influence_kept(torch.zeros(3, 3), 0.0) == [0, 1, 2]  # no influence: nothing to prune by


# ---------------------------------------------- the whole pipeline against a port of the paper code's search


def _port_influence(model, chain, prefix, suffix):
    """The influence matrix over the prefix steps and the answer step, one backward per target step."""
    sub = Chain(example=chain.example, prompt_ids=chain.prompt_ids,
                step_ids=[chain.step_ids[i] for i in prefix] + [suffix + [chain.gold_answer_id]],
                steps=[chain.steps[i] for i in prefix] + ["answer"], roles=[None] * (len(prefix) + 1),
                answer_ids=chain.answer_ids)
    grads, _ = _brute_gradients(model, sub)
    return _block_norms(grads, sub).tril(-1)


def _port_function1(infl, threshold):
    """Function 1 from the answer step (the last row) backwards."""
    n = len(infl)
    kept, todo = {n - 1}, [n - 1]
    while todo:
        k = todo.pop()
        values = [float(v) for v in infl[k, :k]]
        total = sum(values)
        if k == 0:
            continue
        if total <= 0:
            new = set(range(k))
        else:
            ordered, running, cutoff = sorted(values, reverse=True), 0.0, None
            for v in ordered:
                running += v
                cutoff = v
                if running / total >= threshold:
                    break
            new = {j for j in range(k) if values[j] >= cutoff}
        todo.extend(sorted(new - kept))
        kept |= new
    return sorted(kept - {n - 1})


def _port_labels(model, chain, tau=0.8):
    """The released code's pipeline, written from its definitions, in the deterministic ("expected") readout,
    without the necessity filter and with text-only shortcuts (the study's variant for a True/False task)."""
    from reasonlens.importance.labels import PRUNING_THRESHOLDS, is_shortcut_text

    suffix = encode_suffix(model, ANSWER_NOW)
    tail = suffix + [chain.gold_answer_id]
    n = len(chain)
    ppl_o, ppl_a = _port_ppl(model, chain.token_ids() + tail), _port_ppl(model, chain.prompt_ids + tail)

    def passes(keep):
        keep = sorted(keep)
        ok = _port_answer_probability(model, chain.token_ids(keep, suffix), chain.label, 0.6, 0.95) >= tau
        return ok and bool(keep) and 1 - (_port_ppl(model, chain.token_ids(keep) + tail) - ppl_o) / (ppl_a - ppl_o) >= tau

    def sufficient(keep):
        return _port_answer_probability(model, chain.token_ids(sorted(keep), suffix), chain.label, 0.6, 0.95) >= tau

    if not sufficient(range(n)):
        return None
    rest = [i for i in range(n) if not is_shortcut_text(chain.steps[i], chain.label)]
    if not rest or not sufficient(rest):
        return None
    prefix = next((rest[:p] for p in range(1, len(rest) + 1) if passes(rest[:p])), None)
    if prefix is None or len(prefix) < 2:
        return None
    infl = _port_influence(model, chain, prefix, suffix)
    t_inf = prefix
    for threshold in PRUNING_THRESHOLDS:
        mask = [prefix[p] for p in _port_function1(infl, threshold)]
        if passes(mask):
            t_inf = mask
            break
    means = {s: float(infl[:, p].sum()) / max(int((infl[:, p] != 0).sum()), 1) for p, s in enumerate(prefix)}
    queue = sorted((s for s in t_inf if s != prefix[-1]), key=lambda s: means[s])
    current, failures = list(t_inf), 0
    while queue and failures < len(queue):
        step = queue.pop(0)
        if passes([s for s in current if s != step]):
            current.remove(step)
            failures = 0
        else:
            queue.append(step)
            failures += 1
    if current == t_inf:
        return None
    return [0 if i in current else None if i in t_inf else 1 if i in prefix else None for i in range(n)]


def test_pipeline_matches_a_port_of_the_paper_code(reference, reference_chains):
    config = LabelConfig(scoring=ScoringConfig(mode="expected", necessity_max_correct=5), shortcut_alone=False)
    chains = reference_chains[:10]
    result = label_steps(reference, chains, config)
    got = {c.index: c.labels for c in result.chains}
    want = {i: _port_labels(reference, chain) for i, chain in enumerate(chains)}
    assert got == {i: labels for i, labels in want.items() if labels is not None}
    assert len(got) >= 2 and any(1 in labels for labels in got.values())


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
        assert c.influence.shape == (c.prefix_len + 1, c.prefix_len + 1)  # the answer step last
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


def test_a_shared_scorer_cache_changes_no_label(reference, reference_chains, monkeypatch):
    from reasonlens.importance import scoring

    chains = reference_chains[:6]
    variant = LabelConfig(scoring=ScoringConfig(necessity_max_correct=5), shortcut_alone=False)
    configs = [variant, LabelConfig(scoring=variant.scoring, ranking="random", shortcut_alone=False), LabelConfig()]
    fresh = [label_steps(reference, chains, config) for config in configs]
    forwards = []
    original = scoring._forward_rows
    monkeypatch.setattr(scoring, "_forward_rows", lambda *a, **kw: forwards.append(len(a[3])) or original(*a, **kw))
    cache: dict = {}
    shared = [label_steps(reference, chains, config, scorer_cache=cache) for config in configs]
    for a, b in zip(fresh, shared):
        assert [c.labels for c in a.chains] == [c.labels for c in b.chains] and a.filter_counts == b.filter_counts
        assert [c.scores for c in a.chains] == [c.scores for c in b.chains]
    assert len(cache) == len(chains)  # necessity_max_correct alone does not split the cache
    rows_shared = sum(forwards)
    forwards.clear()
    for config in configs:
        label_steps(reference, chains, config)
    assert rows_shared < sum(forwards)


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

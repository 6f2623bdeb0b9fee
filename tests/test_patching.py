"""The patching engine against transformer_lens.patching, against one forward per patch and against its
normalisations computed by hand (tests/test_sites.py pins every site to a hand-made edit of the plain model)."""

import functools

import pytest
import torch
import transformer_lens.patching as tlp
from model_util import random_pair, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.patching.engine import PatchConfig, PatchSweep, compare_rankings, patch
from reasonlens.runtime import SITES

B, T = 3, 10


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    return load_model(str(write_checkpoint(tmp_path_factory.mktemp(request.param), request.param, scale=3.0)))


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    clean, corrupted = random_pair(B, T, g)
    corrupted[1, 7] = 3
    answer, wrong = torch.randint(5, 150, (B,), generator=g), torch.randint(5, 150, (B,), generator=g)
    return clean, corrupted, answer, wrong


def _logit_diff(answer, wrong):
    def metric(logits):
        last = logits[:, -1]
        return (last.gather(1, answer[:, None]) - last.gather(1, wrong[:, None])).mean()
    return metric


TL_SWEEPS = [
    ("resid_pre", "each", tlp.get_act_patch_resid_pre, lambda r: r),
    ("resid_mid", "each", tlp.get_act_patch_resid_mid, lambda r: r),
    ("attn_out", "each", tlp.get_act_patch_attn_out, lambda r: r),
    ("mlp_out", "each", tlp.get_act_patch_mlp_out, lambda r: r),
    ("z", "each", tlp.get_act_patch_attn_head_out_by_pos, lambda r: r),
    ("q", "each", tlp.get_act_patch_attn_head_q_by_pos, lambda r: r),
    ("k", "each", tlp.get_act_patch_attn_head_k_by_pos, lambda r: r),
    ("v", "each", tlp.get_act_patch_attn_head_v_by_pos, lambda r: r),
    ("pattern", "each", tlp.get_act_patch_attn_head_pattern_by_pos, lambda r: r.transpose(1, 2)),
    ("z", "all", tlp.get_act_patch_attn_head_out_all_pos, lambda r: r.squeeze(1)),
    ("v", "all", tlp.get_act_patch_attn_head_v_all_pos, lambda r: r.squeeze(1)),
    ("pattern", "all", tlp.get_act_patch_attn_head_pattern_all_pos, lambda r: r.squeeze(1)),
]


@pytest.mark.parametrize("site,positions,tl_fn,reshape", TL_SWEEPS, ids=[f"{s}-{p}" for s, p, *_ in TL_SWEEPS])
def test_equals_transformer_lens_patching(model, pair, site, positions, tl_fn, reshape):
    clean, corrupted, answer, wrong = pair
    _, cache = model.run_with_cache(clean)
    # without gradients: with them get_act_patch_resid_mid writes a clone of ln2's input, which reaches the MLP
    # but not the skip connection (TransformerLens 4.3)
    with torch.no_grad():
        expected = tl_fn(model, corrupted, cache, _logit_diff(answer, wrong))
    res = patch(model, clean, corrupted, metric="logit_diff", answer=answer, wrong=wrong, site=site,
                positions=positions, normalize="none", progress=False, batch_size=7)
    got = reshape(res.mean())
    assert got.shape == expected.shape
    assert expected.abs().max() > 0.01  # the sweep measures something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _manual(model, target, source_cache, name, write, metric_of):
    """One forward per patch: ``write(act, src)`` edits a clone of the activation."""
    def hook(act, hook):
        return write(act.clone(), None if source_cache is None else source_cache[name])
    with torch.no_grad():
        logits = model.run_with_hooks(target, fwd_hooks=[(name, hook)])
    return metric_of(logits[:, -1])


def test_noising_neurons_spans_and_sources_equal_one_forward_per_patch(model, pair):
    clean, corrupted, answer, _ = pair
    prob = lambda last: torch.softmax(last, -1).gather(1, answer[:, None]).squeeze(1)  # noqa: E731
    _, corr_cache = model.run_with_cache(corrupted)
    spans = [[(0, 4), (4, 8)], [(2, 6), (6, 10)], [(1, 2), (5, 9)]]
    res = patch(model, clean, corrupted, metric="prob", answer=answer, site="neuron", units=[0, 7],
                positions="spans", spans=spans, direction="noise", normalize="none", progress=False, batch_size=5)
    assert res.axes == ("example", "layer", "span", "neuron") and res.labels["neuron"] == ["N0", "N7"]
    for l in range(model.cfg.n_layers):
        name = SITES["neuron"].format(l=l)
        for s in range(2):
            for ui, u in enumerate([0, 7]):
                def write(act, src, s=s, u=u):
                    for b in range(B):
                        lo, hi = spans[b][s]
                        act[b, lo:hi, u] = src[b, lo:hi, u]
                    return act
                expected = _manual(model, clean, corr_cache, name, write, prob)
                torch.testing.assert_close(res.values[:, l, s, ui], expected, atol=1e-5, rtol=0)

    ref = torch.randint(5, 150, (4, T + 2), generator=torch.Generator().manual_seed(3))
    for source in ("zero", "mean"):
        res = patch(model, clean, corrupted, metric="prob", answer=answer, site="resid_post", positions="all",
                    source=source, reference=(ref, torch.ones_like(ref)), normalize="none", progress=False)
        _, ref_cache = model.run_with_cache(ref)
        for l in range(model.cfg.n_layers):
            name = SITES["resid_post"].format(l=l)
            fill = torch.zeros(T, model.cfg.d_model) if source == "zero" else ref_cache[name][:, 2:].mean(0)
            expected = _manual(model, corrupted, None, name, lambda act, src, fill=fill: act * 0 + fill, prob)
            torch.testing.assert_close(res.values[:, l, 0], expected, atol=1e-5, rtol=0)


def test_left_padded_batch_equals_each_example_alone(model, pair):
    clean, corrupted, answer, wrong = pair
    short_clean, short_corr = clean[0, 3:], corrupted[0, 3:]
    padded_clean = torch.cat([torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), short_clean])]), clean[1:]])
    padded_corr = torch.cat([torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), short_corr])]), corrupted[1:]])
    mask = torch.ones_like(padded_clean)
    mask[0, :3] = 0
    batched = patch(model, padded_clean, padded_corr, attention_mask=mask, metric="kl", site="z", progress=False)
    alone = patch(model, short_clean[None], short_corr[None], metric="kl", site="z", progress=False)
    torch.testing.assert_close(batched.values[0, :, 3:], alone.values[0], atol=1e-5, rtol=0)
    assert batched.values[0, :, :3].eq(0).all()  # pad positions are no-ops: the corrupted value, 0 after normalising


def test_normalised_clean_is_one_corrupted_zero_and_noops_skip_forwards(model, pair):
    clean, corrupted, answer, wrong = pair
    res = patch(model, clean, corrupted, metric="logit_diff", answer=answer, wrong=wrong, site="resid_pre",
                progress=False)
    assert isinstance(res, PatchSweep)
    # patching the whole clean residual at the corrupted position of layer 0 restores the clean run exactly
    assert torch.allclose(res.values[[0, 2], 0, 5], torch.ones(2), atol=1e-5)
    assert res.values[:, :, :5].eq(0).all()  # before the corruption nothing differs: value of the corrupted run
    assert res.meta["rows_run"] < res.meta["rows_total"] / 2
    kl = patch(model, clean, corrupted, metric="kl", site="resid_pre", positions="all", progress=False)
    torch.testing.assert_close(kl.values[:, 0, 0], torch.ones(B), atol=1e-5, rtol=0)


@pytest.mark.parametrize("metric", ["kl", "logit_diff"])
def test_normalisations_equal_a_hand_computation(model, pair, metric):
    """"example": (m - m_corr) / (m_clean - m_corr) per example; "batch": (m - m_corr) / mean(m_clean - m_corr),
    whose mean over examples is (mean KL_noise - mean KL_patched) / mean KL_noise for the KL metric."""
    clean, corrupted, answer, wrong = pair
    name = SITES["z"].format(l=1)
    _, clean_cache = model.run_with_cache(clean)

    def write_head(act, hook):
        act = act.clone()
        act[:, :, 2] = clean_cache[name][:, :, 2]
        return act
    with torch.no_grad():
        clean_logits, corr_logits = model(clean)[:, -1], model(corrupted)[:, -1]
        patched_logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, write_head)])[:, -1]
    log_clean = torch.log_softmax(clean_logits, -1)
    if metric == "kl":
        def by_hand(logits):
            return -(log_clean.exp() * (log_clean - torch.log_softmax(logits, -1))).sum(-1)
    else:
        def by_hand(logits):
            return logits[torch.arange(B), answer] - logits[torch.arange(B), wrong]
    m, m_clean, m_corr = by_hand(patched_logits), by_hand(clean_logits), by_hand(corr_logits)
    expected = {"none": m, "example": (m - m_corr) / (m_clean - m_corr),
                "batch": (m - m_corr) / (m_clean - m_corr).mean()}
    for mode, want in expected.items():
        res = patch(model, clean, corrupted, metric=metric, answer=answer, wrong=wrong, site="z", layers=[1],
                    units=[2], positions="all", normalize=mode, progress=False)
        assert res.meta["normalize"] == mode and res.meta["config"]["normalize"] == mode
        torch.testing.assert_close(res.values[:, 0, 0, 0], want, atol=1e-5, rtol=0)
    batch_mean = expected["batch"].mean()
    torch.testing.assert_close(batch_mean, (m.mean() - m_corr.mean()) / (m_clean.mean() - m_corr.mean()))
    if metric == "kl":
        kl_noise, kl_patched = -m_corr, -m
        torch.testing.assert_close(batch_mean, (kl_noise.mean() - kl_patched.mean()) / kl_noise.mean())
    assert abs(expected["batch"].mean() - expected["example"].mean()) > 1e-3  # the two are different numbers


def test_result_labels_dataframe_and_save_load(model, pair, tmp_path):
    clean, corrupted, *_ = pair
    res = patch(model, clean, corrupted, site="z", positions="all", progress=False)
    df = res.to_dataframe()
    assert len(df) == model.cfg.n_layers * model.cfg.n_heads and set(df.columns) == {"layer", "position", "head", "mean", "stderr"}
    back = PatchSweep.load(res.save(tmp_path / "r.pt"))
    assert torch.equal(back.values, res.values) and back.labels == res.labels and back.meta == res.meta


def test_bad_input_gets_clear_errors(model, pair):
    clean, corrupted, answer, wrong = pair
    run = functools.partial(patch, model, progress=False)
    with pytest.raises(ReasonlensError, match="different token lengths"):
        run(clean, corrupted[:, 1:])
    with pytest.raises(ReasonlensError, match="unknown patching site"):
        run(clean, corrupted, site="resid")
    with pytest.raises(ReasonlensError, match="out of range"):
        run(clean, corrupted, layers=[5])
    with pytest.raises(ReasonlensError, match="out of range"):
        run(clean, corrupted, site="z", units=[9])
    with pytest.raises(ReasonlensError, match="needs answer"):
        run(clean, corrupted, metric="prob")
    with pytest.raises(ReasonlensError, match="NaN"):
        run(clean, corrupted, metric=lambda logits, ex: logits[:, 0] * float("nan"))
    with pytest.raises(ReasonlensError, match="same on the clean and corrupted"):
        run(clean, clean.clone())
    old_style = PatchConfig()
    old_style.normalize = True  # assigned: the test run's type checks refuse it in the constructor first
    with pytest.raises(ReasonlensError, match="the former normalize=True is 'example'"):
        old_style.check()
    with pytest.raises(ReasonlensError, match="about 0"):  # two pairs with opposite effects: the mean scale is 0
        a, b = clean[0], corrupted[0]
        run(torch.stack([a, b]), torch.stack([b, a]), metric="logit_diff", answer=answer[[0, 0]],
            wrong=wrong[[0, 0]], normalize="batch")
    with pytest.raises(ReasonlensError, match="left-pad"):
        mask = torch.ones_like(clean)
        mask[0, -1] = 0
        run(clean, corrupted, attention_mask=mask)
    with pytest.raises(ReasonlensError, match="same, non-zero number of spans"):
        run(clean, corrupted, positions="spans", spans=[[(0, 2)], [(0, 2), (2, 4)], [(0, 1)]])


def test_attribution_patching_equals_one_directional_derivative_per_cell(model, pair):
    from reasonlens.patching.engine import attribution_patch

    clean, corrupted, answer, wrong = pair
    res = attribution_patch(model, clean, corrupted, metric="logit_diff", answer=answer, wrong=wrong, site="z",
                            positions="spans", spans=[[(0, 6), (6, 10)]] * B, normalize="none", progress=False,
                            batch_size=2)
    assert res.values.shape == (B, model.cfg.n_layers, 2, model.cfg.n_heads)
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        last = model(corrupted)[:, -1]
    base = last.gather(1, answer[:, None]).squeeze(1) - last.gather(1, wrong[:, None]).squeeze(1)
    for l, (lo, hi), h in [(0, (6, 10), 1), (1, (0, 6), 3), (1, (6, 10), 0)]:
        name = SITES["z"].format(l=l)
        eps = torch.zeros(B, requires_grad=True)

        def hook(act, hook, lo=lo, hi=hi, h=h):
            direction = torch.zeros_like(act)
            direction[:, lo:hi, h] = clean_cache[name][:, lo:hi, h] - act[:, lo:hi, h].detach()
            return act + eps[:, None, None, None] * direction
        logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])[:, -1]
        diff = logits.gather(1, answer[:, None]).squeeze(1) - logits.gather(1, wrong[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(diff.sum(), eps)
        torch.testing.assert_close(res.values[:, l, 0 if lo == 0 else 1, h], base + grad, atol=1e-5, rtol=0)


def test_compare_rankings_against_hand_computed_values():
    def sweep(values):
        return PatchSweep(torch.tensor([values]), axes=("example", "layer"), labels={"layer": ["a", "b", "c", "d"]})

    exact = sweep([4.0, -3.0, 2.0, 1.0])
    same_order = compare_rankings(exact, sweep([40.0, -30.0, 20.0, 10.0]), k=2)
    assert same_order == {"spearman": pytest.approx(1.0), "top_k_overlap": 1.0, "k": 2}
    # negated values: ranks reversed (Spearman -1), magnitudes kept (top-2 by |value| the same)
    assert compare_rankings(exact, sweep([-4.0, 3.0, -2.0, -1.0]), k=2) == {"spearman": pytest.approx(-1.0),
                                                                             "top_k_overlap": 1.0, "k": 2}
    # ranks (4, 1, 3, 2) vs (2, 3, 1, 4): rho = 1 - 6 * 16 / (4 * 15) = -0.6; top-2 {0, 1} vs {2, 3}: no overlap
    assert compare_rankings(exact, sweep([1.0, 2.0, -3.0, 4.0]), k=2) == {"spearman": pytest.approx(-0.6),
                                                                           "top_k_overlap": 0.0, "k": 2}
    # one swap among four: rho = 1 - 6 * (1 + 1) / (4 * 15) = 0.8; top-3 {0, 1, 2} vs {0, 1, 3}: 2 of 3
    assert compare_rankings(exact, sweep([4.0, -3.0, 1.0, 2.0]), k=3)["spearman"] == pytest.approx(0.8)
    assert compare_rankings(exact, sweep([4.0, -3.0, 1.0, 2.0]), k=3)["top_k_overlap"] == pytest.approx(2 / 3)
    with pytest.raises(ReasonlensError, match="different cells"):
        compare_rankings(exact, PatchSweep(torch.zeros(1, 3), axes=("example", "layer"), labels={}))

"""The runtime: a prefix's cached keys and values give the logits of running each row whole (one shared prefix,
one prefix per row of different lengths, the first positions of a cached batch), and entering the stack at a block
with the cached residual gives the full forward, on Llama, Qwen2 (grouped-query attention), Gemma and GPT-2;
padding, sites, saving hooks and the logit lens."""

from __future__ import annotations

import pytest
import torch
from model_util import write_checkpoint

from reasonlens.attribution.paths import PathSequences, path_attributions
from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.runtime import (
    REST_OF_BLOCK_BASE,
    SITES,
    BlockEntry,
    KVPrefix,
    batch_slices,
    can_enter_at_block,
    can_finish_block,
    full_stack,
    has_plain_kv_cache,
    left_pad,
    lens_logits,
    pad_token_id,
    rest_of_block,
    right_pad,
    run_continuations,
    run_padded,
    saving_hooks,
    site_hook,
)

PREFIXES = [[1, 14, 23, 4, 27, 9], [1, 6, 66], [1, 30, 31, 32, 33]]
ROWS = [[5, 9, 11], [7], [12, 13, 14, 15, 16]]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma", "gpt2"])
def model(request, tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp(request.param), request.param, scale=5.0))


def alone(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def test_one_prefix_shared_by_many_rows_equals_each_row_run_whole(model):
    prefix = KVPrefix.of(model, PREFIXES[0])
    assert prefix is not None and prefix.n_rows == 1 and prefix.length == len(PREFIXES[0])
    with torch.no_grad():
        logits = run_continuations(model, prefix, ROWS, pad_token_id(model))
        bare = run_continuations(model, None, [PREFIXES[0] + r for r in ROWS], pad_token_id(model))
    for r, row in enumerate(ROWS):
        whole = alone(model, PREFIXES[0] + row)
        torch.testing.assert_close(logits[r, :len(row)], whole[len(PREFIXES[0]):], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bare[r, :len(PREFIXES[0]) + len(row)], whole, atol=1e-5, rtol=1e-5)


def test_prefixes_of_different_lengths_run_in_one_batch(model):
    batch = KVPrefix.run(model, *left_pad(PREFIXES, pad_token_id(model)))
    parts = [batch.select([i]).cropped() for i in range(len(PREFIXES))]
    assert [p.length for p in parts] == [len(p) for p in PREFIXES]
    prefix = KVPrefix.concat(parts[::-1])  # another order than computed
    assert prefix.mask.tolist()[1] == [0, 0, 0, 1, 1, 1]
    with torch.no_grad():
        logits = run_continuations(model, prefix, ROWS, pad_token_id(model))
    for r, (ids, row) in enumerate(zip(PREFIXES[::-1], ROWS)):
        torch.testing.assert_close(logits[r, :len(row)], alone(model, ids + row)[len(ids):], atol=1e-5, rtol=1e-5)


def test_first_positions_of_a_cached_batch_replace_running_them(model):
    rows = [p + r for p, r in zip(PREFIXES, ROWS)]
    tokens, mask = left_pad(rows, pad_token_id(model))
    full = run_padded(model, tokens, mask)
    cached = KVPrefix.run(model, tokens, mask)
    for start in (1, 4, tokens.shape[1] - 1):
        picked = torch.tensor([2, 0])
        rest = run_padded(model, tokens[picked], mask[picked], prefix=cached.select(picked).first(start))
        assert rest.shape[1] == tokens.shape[1] - start
        torch.testing.assert_close(rest[:, -1], full[picked, -1], atol=1e-5, rtol=1e-5)


def test_hooks_after_a_prefix_see_only_the_new_positions(model):
    store: dict[str, torch.Tensor] = {}
    prefix = KVPrefix.of(model, PREFIXES[0])
    with torch.no_grad():
        run_continuations(model, prefix, ROWS, pad_token_id(model),
                          fwd_hooks=saving_hooks(store, {site_hook("resid_post", 0): None,
                                                         site_hook("z", 1): lambda z: z[:, -1]}))
    assert store["blocks.0.hook_resid_post"].shape[:2] == (3, 5)
    assert store["blocks.1.attn.hook_z"].shape[:2] == (3, model.cfg.n_heads)


def test_a_prefix_serves_one_row_or_one_per_row(model):
    prefix = KVPrefix.concat([KVPrefix.of(model, p) for p in PREFIXES[:2]])
    with pytest.raises(ReasonlensError, match="cannot serve 3 rows"):
        run_continuations(model, prefix, ROWS, pad_token_id(model))


def test_logit_lens_of_the_last_residual_is_the_output(model):
    store: dict[str, torch.Tensor] = {}
    tokens, mask = left_pad([PREFIXES[0]], pad_token_id(model))
    logits = run_padded(model, tokens, mask, saving_hooks(store, {site_hook("resid_post", model.cfg.n_layers - 1): None}))
    with torch.no_grad():
        torch.testing.assert_close(lens_logits(model, store[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]),
                                   logits, atol=1e-5, rtol=1e-5)


def test_padding_sites_and_slices():
    ids, mask = right_pad([[4, 5, 6], [7]], 0)
    assert ids.tolist() == [[4, 5, 6], [7, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = left_pad([[4, 5, 6], [7]], 0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert site_hook("neuron", 2) == "blocks.2.mlp.hook_post" and "z" in SITES
    with pytest.raises(ReasonlensError, match="unknown site"):
        site_hook("resid", 0)
    assert batch_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    with pytest.raises(ReasonlensError, match="batch_size"):
        batch_slices(5, 0)


def test_entering_at_a_block_equals_the_full_forward(model):
    rows = [p + r for p, r in zip(PREFIXES, ROWS)]
    tokens, mask = left_pad(rows, pad_token_id(model))
    store: dict[str, torch.Tensor] = {}
    last = site_hook("resid_post", model.cfg.n_layers - 1)
    names = [site_hook("resid_pre", l) for l in range(model.cfg.n_layers)]
    full = run_padded(model, tokens, mask, saving_hooks(store, dict.fromkeys([*names, last])))
    assert can_enter_at_block(model)
    cached = KVPrefix.run(model, tokens, mask)
    for block in range(1, model.cfg.n_layers):
        for skip in (0, 3, tokens.shape[1] - 1):
            seen: dict[str, torch.Tensor] = {}
            entered = run_padded(model, tokens, mask, saving_hooks(seen, {last: None}),
                                 prefix=cached.first(skip) if skip else None,
                                 entry=BlockEntry(block, store[names[block]][:, skip:]))
            real = mask[:, skip:].bool()  # padding positions hold no meaningful values
            # float32 rounding of the prefix path (as without entering): 1e-6 of the largest value (|logit| ~ 20,
            # |residual| ~ 80 with these scaled weights)
            for got, want in ((entered, full), (seen[last], store[last])):
                scale = float(want.abs().max())
                torch.testing.assert_close(got[real], want[:, skip:][real], atol=1e-6 * scale, rtol=1e-5)
    # the skipped blocks' layers do not run, the others do; the model is left as it was
    calls = [0] * model.cfg.n_layers
    handles = [model.blocks[l].original_component.register_forward_hook(
        lambda *args, l=l: calls.__setitem__(l, calls[l] + 1)) for l in range(model.cfg.n_layers)]
    try:
        run_padded(model, tokens, mask, entry=BlockEntry(model.cfg.n_layers - 1, store[names[-1]]))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0] * (model.cfg.n_layers - 1) + [1]
    modules = {name for name, _ in model.named_modules()}
    assert not any(name.endswith(".original_component") for name in modules)
    torch.testing.assert_close(run_padded(model, tokens, mask), full, atol=0, rtol=0)


@pytest.mark.parametrize("site", ["z", "neuron"])
def test_the_rest_of_a_block_from_a_site_gives_the_block_output(model, site):
    rows = [p + r for p, r in zip(PREFIXES, ROWS)]
    tokens, mask = left_pad(rows, pad_token_id(model))
    layers = range(model.cfg.n_layers)
    names = [site_hook(s, l) for l in layers for s in (site, REST_OF_BLOCK_BASE[site], "resid_post")]
    store: dict[str, torch.Tensor] = {}
    run_padded(model, tokens, mask, saving_hooks(store, dict.fromkeys(names)))
    assert can_finish_block(model, site)
    for l in layers:
        with torch.no_grad():
            out = rest_of_block(model, site, l, store[site_hook(site, l)], store[site_hook(REST_OF_BLOCK_BASE[site], l)])
        want = store[site_hook("resid_post", l)]
        torch.testing.assert_close(out, want, atol=1e-6 * float(want.abs().max()), rtol=1e-5)
    with pytest.raises(ReasonlensError, match="site 'z' or 'neuron'"):
        rest_of_block(model, "resid_pre", 0, store[names[0]], store[names[1]])


def test_a_block_built_otherwise_is_run_whole(tmp_path, monkeypatch):
    """A block whose output is not its residual plus its MLP (here: the MLP's output doubled, as a post-MLP norm
    would change it) fails the check, and IPG paths then enter at the block itself: same numbers."""
    import reasonlens.runtime as runtime

    model = load_model(write_checkpoint(tmp_path, "llama", n_layers=2))
    original = runtime.rest_of_block
    monkeypatch.setattr(runtime, "rest_of_block", lambda m, site, l, act, resid: 2 * original(m, site, l, act, resid))
    assert not can_finish_block(model, "neuron") and not can_finish_block(model, "z")
    assert can_enter_at_block(model) and has_plain_kv_cache(model)  # checked (and remembered) before counting
    seqs = PathSequences([PREFIXES[0], PREFIXES[1]], ROWS[:2], [1.0, -0.5], [None, None])
    calls = []
    handle = model.blocks[0].original_component.register_forward_hook(lambda *args: calls.append(1))
    try:
        for component in ("neuron", "head"):
            entered = path_attributions(model, component, [0], seqs, steps=3)
            n_entered = len(calls)
            with full_stack(model):
                full = path_attributions(model, component, [0], seqs, steps=3)
            assert len(calls) == 2 * n_entered  # block 0 ran in every forward of both
            calls.clear()
            torch.testing.assert_close(entered.attributions, full.attributions, atol=1e-6, rtol=1e-5)
    finally:
        handle.remove()


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma", "gpt2"])
def unscaled(request, tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp(request.param), request.param, n_layers=3))


@pytest.mark.parametrize("site, positions", [("resid_pre", "each"), ("z", "each"), ("resid_mid", "all"),
                                             ("mlp_out", "each"), ("neuron", "all"), ("v", "each")])
def test_patch_sweeps_that_enter_mid_stack_equal_full_stack_sweeps(unscaled, site, positions):
    model = unscaled
    from reasonlens.patching import patch

    generator = torch.Generator().manual_seed(1)
    clean = torch.randint(5, 60, (3, 9), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 4] = torch.randint(5, 60, (3,), generator=generator)
    kwargs = dict(site=site, positions=positions, metric="logit_diff", answer=torch.tensor([7, 8, 9]),
                  wrong=torch.tensor([10, 11, 12]), normalize="none", batch_size=16, progress=False,
                  **({"units": [0, 3]} if site == "neuron" else {}))
    entered = patch(model, clean, corrupted, **kwargs)
    with full_stack(model):
        full = patch(model, clean, corrupted, **kwargs)
    assert entered.meta["entered_mid_stack"] and not full.meta["entered_mid_stack"]
    assert entered.meta["forward_cost"] < full.meta["forward_cost"]
    assert entered.meta["forward_cost_floor"] <= entered.meta["forward_cost"] + 1e-9
    moved = full.values.flatten(1) - torch.tensor(full.meta["corrupted_metric"])[:, None]
    assert moved.abs().max() > 1e-4  # the patches move the logit difference (10x the tolerance): not vacuous
    torch.testing.assert_close(entered.values, full.values, atol=1e-5, rtol=1e-5)

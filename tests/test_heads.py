"""Head role scores: writer, direct logit and mover against the cache of single unpadded runs, the decision
score against hooked forwards with one head left per layer, the role summaries, save / load, bad input."""

from __future__ import annotations

import pytest
import torch
from model_util import padded, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.patching.heads import HeadRoles, head_mask, head_roles, relative_depth
from reasonlens.results import LabelledTensor

PROMPTS = [
    "Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:",
    "Q: Max is a cat.",
    "Q: Each numpus is blue. Sam is a numpus.\nA:",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    return {arch: write_checkpoint(root / arch, arch, scale=3.0) for arch in ("llama", "gpt2")}


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def setup(request, folders):
    model = load_model(folders[request.param])
    tokens, mask, rows = padded(model, PROMPTS)
    answer = torch.tensor([7, 30, 12])
    source = torch.tensor([tokens.shape[1] - 4, tokens.shape[1] - 2, tokens.shape[1] - 5])
    roles = head_roles(model, tokens, mask, answer, source, batch_size=2)
    return model, tokens, mask, rows, answer, source, roles


def test_writer_and_direct_logit_match_single_unpadded_runs(setup):
    model, _, _, rows, answer, _, roles = setup
    for i, row in enumerate(rows):
        with torch.no_grad():
            _, cache = model.run_with_cache(row[None])
            scale = cache["ln_final.hook_scale"][0, -1]
            for l in range(model.cfg.n_layers):
                for h in range(model.cfg.n_heads):
                    out = cache[f"blocks.{l}.attn.hook_z"][0, -1, h] @ model.W_O[l, h]
                    prob = torch.softmax(model.unembed(model.ln_final(out[None, None]))[0, 0], -1)[answer[i]]
                    assert roles.writer.values[i, l, h] == pytest.approx(float(prob), abs=1e-5)
                    centred = out if model.ln_final.uses_rms_norm else out - out.mean()
                    direct = (centred / scale * model.ln_final.weight) @ model.W_U[:, answer[i]]
                    assert roles.direct_logit.values[i, l, h] == pytest.approx(float(direct), abs=1e-4)


def test_mover_is_the_cached_attention_to_the_source(setup):
    model, tokens, mask, _, _, source, roles = setup
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask, position_ids=positions,
                                        names_filter=lambda n: n.endswith("hook_pattern"))
    for l in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]
        expected = pattern[torch.arange(3), :, -1, source]  # [example, head]
        torch.testing.assert_close(roles.mover.values[:, l], expected, atol=1e-6, rtol=0)


def test_decision_matches_a_hooked_forward_with_one_head_per_layer(setup):
    model, tokens, mask, _, answer, _, roles = setup
    positions = (mask.cumsum(-1) - 1).clamp_min(0)

    def lens(resid):
        return torch.softmax(model.unembed(model.ln_final(resid[:, -1:]))[:, 0], -1)[torch.arange(3), answer]

    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask, position_ids=positions)
        for l in range(model.cfg.n_layers):
            p_mid = lens(cache[f"blocks.{l}.hook_resid_mid"])
            torch.testing.assert_close(roles.resid_mid_prob.values[:, l], p_mid, atol=1e-5, rtol=0)
            for h in range(model.cfg.n_heads):
                seen = {}

                def only_head(z, hook, h=h):
                    kept = torch.zeros_like(z)
                    kept[:, :, h] = z[:, :, h]
                    return kept

                def grab(resid, hook):
                    seen["mid"] = resid

                model.run_with_hooks(tokens, attention_mask=mask, position_ids=positions,
                                     fwd_hooks=[(f"blocks.{l}.attn.hook_z", only_head),
                                                (f"blocks.{l}.hook_resid_mid", grab)])
                p_only = lens(seen["mid"])
                torch.testing.assert_close(roles.head_only_prob.values[:, l, h], p_only, atol=1e-5, rtol=0)
                expected = (p_mid.mean() - p_only.mean()) / p_mid.mean()
                assert roles.decision().values[l, h] == pytest.approx(float(expected), abs=1e-4)


def test_batch_size_does_not_change_scores(setup):
    model, tokens, mask, _, answer, source, roles = setup
    whole = head_roles(model, tokens, mask, answer, source, batch_size=8)
    for name in ("writer", "direct_logit", "mover", "head_only_prob", "resid_mid_prob"):
        torch.testing.assert_close(getattr(whole, name).values, getattr(roles, name).values, atol=1e-5, rtol=0)


def synthetic_roles(writer):
    n, n_layers, n_heads = writer.shape
    grid = {"layer": [f"L{l}" for l in range(n_layers)], "head": [f"H{h}" for h in range(n_heads)]}
    cells = LabelledTensor(writer, axes=("example", "layer", "head"), labels=grid)
    mid = LabelledTensor(torch.full((n, n_layers), 0.5), axes=("example", "layer"), labels={"layer": grid["layer"]})
    only = LabelledTensor(writer, axes=("example", "layer", "head"), labels=grid)
    return HeadRoles(writer=cells, direct_logit=cells, mover=cells, head_only_prob=only, resid_mid_prob=mid)


def test_top_heads_and_late_writer_share():
    writer = torch.zeros(2, 4, 2)
    writer[0, 3, 1], writer[0, 0, 0] = 0.9, 0.8  # example 0: writers in layers 3 and 0
    writer[1, 2, 0], writer[1, 3, 0] = 0.7, 0.6  # example 1: layers 2 and 3
    roles = synthetic_roles(writer)
    assert roles.top_heads("writer", 2) == ["L3H1", "L0H0"]
    assert roles.top_heads("decision", 1) == ["L3H1"]  # the smallest drop: the head alone keeps the most
    assert roles.writer_share_late(top=2) == pytest.approx(3 / 4)
    assert roles.writer_share_late(top=1) == pytest.approx(1.0)
    assert relative_depth(2, 4) == 0.625 and relative_depth(1, 4) == 0.375
    frame = roles.to_dataframe()
    assert list(frame.columns) == ["head", "layer", "relative_depth", "writer", "direct_logit", "mover", "decision"]
    assert len(frame) == 8


def test_head_mask():
    mask = head_mask(["L1H2", (0, 0)], n_layers=2, n_heads=3)
    assert mask.tolist() == [[True, False, False], [False, False, True]]
    with pytest.raises(ReasonlensError, match="outside"):
        head_mask(["L9H0"], n_layers=2, n_heads=3)
    with pytest.raises(ReasonlensError, match="not of the form"):
        head_mask(["layer1"], n_layers=2, n_heads=3)


def test_save_load_round_trip(setup, tmp_path):
    roles = setup[-1]
    back = HeadRoles.load(roles.save(tmp_path / "roles.pt"))
    for name in ("writer", "direct_logit", "mover", "head_only_prob", "resid_mid_prob"):
        assert torch.equal(getattr(back, name).values, getattr(roles, name).values)
        assert getattr(back, name).labels == getattr(roles, name).labels
    assert back.meta == roles.meta
    assert back.top_heads() == roles.top_heads()


def test_bad_input(setup):
    model, tokens, mask, _, answer, source, roles = setup

    def run(tokens=tokens, mask=mask, answer=answer, source=source):
        return head_roles(model, tokens, mask, answer, source)

    with pytest.raises(ReasonlensError, match="one value per prompt"):
        run(answer=answer[:2])
    with pytest.raises(ReasonlensError, match="non-empty"):
        run(tokens=tokens[:0], mask=mask[:0], answer=answer[:0], source=source[:0])
    with pytest.raises(ReasonlensError, match="left-padded"):
        run(mask=mask.flip(-1))
    with pytest.raises(ReasonlensError, match="not a real token"):
        run(source=torch.tensor([0, 0, 0]))  # position 0 is padding in the shorter prompts
    with pytest.raises(ReasonlensError, match="outside the vocabulary"):
        run(answer=torch.tensor([0, 1, 10_000]))
    with pytest.raises(ReasonlensError, match="unknown head role"):
        roles.top_heads("copy")
    with pytest.raises(ReasonlensError, match="out of range"):
        relative_depth(6, 6)
    with pytest.raises(ReasonlensError, match="batch_size"):
        head_roles(model, tokens, mask, answer, source, batch_size=0)

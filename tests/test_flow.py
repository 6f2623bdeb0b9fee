"""The pathway tracer: well-formed trees, every stage against a manual computation from the cache of the padded
batch, the roots against the writer scores, source classification by regions, save / load, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_util import padded, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.patching.circuit import circuit_logits, mean_head_activations
from reasonlens.patching.flow import FlowResult, source_region, trace_pathways
from reasonlens.patching.heads import head_roles

PROMPTS = [
    "Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:",
    "Q: Max is a cat.",
    "Q: Each numpus is blue. Sam is a numpus.\nA:",
]
N_LAYERS = 4


def walk(nodes):
    for node in nodes:
        yield node
        yield from walk(node.children)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flow") / "llama"
    write_checkpoint(folder, "llama", scale=3.0, n_layers=N_LAYERS)  # deeper than the default, for longer chains
    return load_model(folder)


@pytest.fixture(scope="module")
def batch(model):
    tokens, mask, _ = padded(model, PROMPTS)
    width = tokens.shape[1]
    starts = (mask == 0).sum(1).tolist()
    regions = [{"few_shot": (s, s + 4), "question": (s + 4, width - 4), "cot": (width - 4, width)} for s in starts]
    return tokens, mask, regions


@pytest.fixture(scope="module")
def cache(model, batch):
    tokens, mask, _ = batch
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask, position_ids=positions)
    return logits, cache


@pytest.fixture(scope="module")
def flow(model, batch):
    tokens, mask, regions = batch
    return trace_pathways(model, tokens, mask, regions, l=3, k=2, p=2, batch_size=2)


def lens(model, x):
    return torch.softmax(model.unembed(model.ln_final(x[None, None]))[0, 0], -1)


def test_trees_are_well_formed(model, batch, cache, flow):
    tokens, _, _ = batch
    logits, _ = cache
    assert flow.predicted == logits[:, -1].argmax(-1).tolist()
    for e, roots in enumerate(flow.roots):
        assert 1 <= len(roots) <= 3
        for root in roots:
            assert (root.depth, root.pos, root.token) == (0, tokens.shape[1] - 1, flow.predicted[e])
        for node in walk(roots):
            d = node.depth
            assert len(node.sources) <= max(1, 2 - d)
            positions = [s for s, _ in node.sources]
            for child in node.children:
                assert child.depth == d + 1 and child.layer < node.layer and child.pos in positions
            for position in positions:
                assert len([c for c in node.children if c.pos == position]) <= max(1, 2 - d) * max(1, 3 - d)
    assert max(n.depth for roots in flow.roots for n in walk(roots)) >= 2


def test_roots_are_the_top_writer_heads(model, batch, flow):
    tokens, mask, _ = batch
    source = torch.full((len(PROMPTS),), tokens.shape[1] - 1)
    writer = head_roles(model, tokens, mask, torch.tensor(flow.predicted), source).writer.values
    for e, roots in enumerate(flow.roots):
        order = torch.sort(-writer[e].flatten(), stable=True).indices[:3].tolist()
        assert [(r.layer, r.head) for r in roots] == [divmod(i, model.cfg.n_heads) for i in order]
        for root in roots:
            assert root.prob == pytest.approx(float(writer[e, root.layer, root.head]), abs=1e-5)


@torch.no_grad()
def test_stages_match_the_cache(model, batch, cache, flow):
    _, mask, _ = batch
    _, acts = cache
    for e, roots in enumerate(flow.roots):
        for node in walk(roots):
            d = node.depth
            z = acts[f"blocks.{node.layer}.attn.hook_z"][e, node.pos, node.head]
            assert node.prob == pytest.approx(float(lens(model, z @ model.W_O[node.layer, node.head])[node.token]),
                                              abs=1e-5)
            row = acts[f"blocks.{node.layer}.attn.hook_pattern"][e, node.head, node.pos].double().numpy()
            real = [j for j in range(node.pos + 1) if mask[e, j]]
            median = np.median(row[real])
            above = sorted(((j, row[j]) for j in real if row[j] > median), key=lambda t: -t[1])
            assert [s for s, _ in node.sources] == [j for j, _ in above[:max(1, 2 - d)]]
            for position, _ in node.sources:
                probs = lens(model, acts[f"blocks.{node.layer}.hook_resid_pre"][e, position]).double().numpy()
                top = [t for t in np.argsort(-probs, kind="stable")[:max(1, 2 - d)] if probs[t] > np.median(probs)]
                children = [c for c in node.children if c.pos == position]
                assert {c.token for c in children} <= set(top)
                for token in {c.token for c in children}:  # stage I for that token, below the node's layer
                    outs = torch.stack([acts[f"blocks.{l}.attn.hook_z"][e, position, h] @ model.W_O[l, h]
                                        for l in range(node.layer) for h in range(model.cfg.n_heads)])
                    p_token = torch.softmax(model.unembed(model.ln_final(outs[None]))[0], -1)[:, token]
                    best = torch.sort(-p_token, stable=True).indices[:max(1, 3 - d)].tolist()
                    assert [(c.layer, c.head) for c in children if c.token == token] == \
                        [divmod(i, model.cfg.n_heads) for i in best]


def test_pathways_and_their_sources(flow, batch):
    tokens, _, regions = batch
    pathways = flow.pathways()
    assert pathways and len(set(pathways)) == len(pathways)
    for p in pathways:
        assert p.region == source_region(p.source, regions[p.example])
        layers = [layer for layer, _, _ in p.heads]
        assert layers == sorted(layers, reverse=True) and len(set(layers)) == len(layers)
        assert p.heads[0][2] == tokens.shape[1] - 1
    counts = flow.source_counts()
    assert counts.labels["region"] == ["few_shot", "question", "cot", "other"]
    for e in range(len(PROMPTS)):
        assert int(counts.values[e].sum()) == len([p for p in pathways if p.example == e])
    assert sum(flow.counts_by_source().values()) == len(pathways)
    assert source_region(3, {"question": (0, 3)}) == "other"


def test_edges_and_head_counts(flow):
    for e in range(len(PROMPTS)):
        labels = {n.label for n in walk(flow.roots[e])}
        for source, target in flow.edges(e):
            assert target in labels | {"output"}
            assert source in labels or source.startswith("pos ")
    assert int(flow.head_counts(0).values.sum()) == sum(len(r) for r in flow.roots)
    assert flow.head_counts(0).values.shape == (N_LAYERS, 4)


def test_max_depth_and_circuit(model, batch):
    tokens, mask, regions = batch
    shallow = trace_pathways(model, tokens, mask, regions, max_depth=0)
    assert all(not r.children for roots in shallow.roots for r in roots)
    assert all(len(p.heads) == 1 for p in shallow.pathways())
    circuit = torch.zeros(N_LAYERS, 4, dtype=torch.bool)
    circuit[::2] = True  # layers 0 and 2
    restricted = trace_pathways(model, tokens, mask, regions, circuit)
    assert all(circuit[n.layer, n.head] for roots in restricted.roots for n in walk(roots))
    assert restricted.meta["circuit_size"] == 8


def test_mean_ablated_circuit_traces_the_circuit_prediction(model, batch):
    tokens, mask, regions = batch
    means = mean_head_activations(model, tokens, mask)
    circuit = torch.zeros(N_LAYERS, 4, dtype=torch.bool)
    circuit[2:] = True
    result = trace_pathways(model, tokens, mask, regions, circuit, means=means)
    assert result.predicted == circuit_logits(model, tokens, mask, circuit, means).argmax(-1).tolist()
    assert result.meta["mean_ablated"]


def test_save_load_round_trip(flow, tmp_path):
    back = FlowResult.load(flow.save(tmp_path / "flow.json"))
    assert back.to_dict() == flow.to_dict()
    assert back.pathways() == flow.pathways()


def test_bad_input(model, batch):
    tokens, mask, regions = batch
    with pytest.raises(ReasonlensError, match="one dict"):
        trace_pathways(model, tokens, mask, regions[:2])
    with pytest.raises(ReasonlensError, match="start <= end"):
        trace_pathways(model, tokens, mask, [{"question": (5, 2)}] * 3)
    with pytest.raises(ReasonlensError, match="circuit must be"):
        trace_pathways(model, tokens, mask, regions, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ReasonlensError, match="l, k and p"):
        trace_pathways(model, tokens, mask, regions, l=0)
    with pytest.raises(ReasonlensError, match="non-empty"):
        trace_pathways(model, tokens[:0], mask[:0], [])
    with pytest.raises(ReasonlensError, match="example must be"):
        trace_pathways(model, tokens, mask, regions, max_depth=0).edges(5)

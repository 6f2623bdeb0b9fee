"""Relation-pair datasets against the ontology, probes on planted and shuffled signals, the probe pipeline."""

import pytest
import torch
from model_util import write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.ontology import format_prompt, generate
from reasonlens.patching.relations import (
    RELATION_CLASSES,
    RelationProbeConfig,
    RelationProbeResult,
    probe_scores,
    relation_dataset,
    relation_probes,
    residual_layer_hooks,
)
from reasonlens.tokenizer import build_reference_tokenizer

FAST = RelationProbeConfig(max_iter=30)


@pytest.fixture(scope="module")
def tok():
    return build_reference_tokenizer()


@pytest.fixture(scope="module")
def examples():
    return generate(40, kind=("fictional", "false"), hops=(1, 2, 3), ordering=("postorder", "random"), seed=5)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(str(write_checkpoint(tmp_path_factory.mktemp("llama"), "llama", scale=3.0, n_ctx=256)))


def _graph(example):
    """Directed edges of the example's world, from its ontology (not its sentences): entity -> concept,
    child -> parent, concept -> property (with whether it holds)."""
    onto = example.ontology
    entity_concept = next(s.fact.predicate for s in example.context if s.role == "entity_fact")
    edges = {(example.entity, entity_concept): True} | {(c, p): True for c, p in onto.parents.items()}
    edges |= {(c, prop): holds for c, props in onto.properties.items() for prop, holds in props}
    return edges


def _reaches(edges, a, b):
    stack, seen = [a], set()
    while stack:
        node = stack.pop()
        for x, y in edges:
            if x == node and y not in seen:
                seen.add(y)
                stack.append(y)
    return b in seen


def _node(word, nodes):
    return next(n for n in nodes if word.lower() in (n.lower(), n.lower() + "s", n.lower() + "es"))


def test_pairs_agree_with_the_ontology(tok, examples):
    data = relation_dataset(tok, examples, balance=False)
    assert {p.relation for p in data.pairs} == set(RELATION_CLASSES)
    for p in data.pairs:
        ex, ids = examples[p.example_index], data.token_ids[p.example_index]
        assert ids == tuple(tok(format_prompt(ex))["input_ids"])
        assert p.first < p.second
        for position, word in ((p.first, p.first_word), (p.second, p.second_word)):  # first token of the word
            assert word.lower().startswith(tok.convert_ids_to_tokens(ids[position]))
        edges = _graph(ex)
        nodes = {n for e in edges for n in e}
        a, b = _node(p.first_word, nodes), _node(p.second_word, nodes)
        if p.relation == "unrelated":
            assert a != b and not _reaches(edges, a, b) and not _reaches(edges, b, a)
        else:
            assert edges.get((a, b)) is (p.relation == "related")
            between = tok.decode(list(ids[p.first:p.second + 1]))
            assert ("not" in between.split()) is (p.relation == "negated") and "." not in between


def test_every_context_relation_is_a_pair(tok, examples):
    data = relation_dataset(tok, examples, balance=False)
    for i, ex in enumerate(examples):
        stated = sorted((s.fact.subject.lower(), s.fact.predicate, s.fact.negated) for s in ex.context)
        found = sorted((_node(p.first_word, {s.fact.subject for s in ex.context}).lower(),
                        _node(p.second_word, {s.fact.predicate for s in ex.context}), p.relation == "negated")
                       for p in data.pairs if p.example_index == i and p.relation != "unrelated")
        assert found == stated


def test_balanced_classes(tok, examples):
    full = relation_dataset(tok, examples, balance=False).class_counts()
    balanced = relation_dataset(tok, examples, seed=3)
    counts = balanced.class_counts()
    assert len(set(counts.values())) == 1 and counts["negated"] == min(full.values())
    assert full["unrelated"] > full["negated"]  # balancing had work to do
    assert relation_dataset(tok, examples, seed=3).pairs == balanced.pairs


def _planted(n_groups=60, per_group=6, dim=8, seed=0):
    """Layer 0: noise; layer 1: the class shifts one feature by 4 standard deviations per class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_groups * per_group) % 3
    groups = torch.arange(n_groups).repeat_interleave(per_group)
    noise = torch.randn((2, len(labels), dim), generator=g)
    noise[1, :, 0] += 4.0 * labels
    return noise, labels, groups


def test_probe_finds_planted_signal_and_only_there():
    features, labels, groups = _planted()
    scores = probe_scores(features, labels, groups, seeds=(0, 1), config=FAST, layer_labels=["noise", "signal"])
    assert scores.values.shape == (5, 2, 2, 2) and scores.axis_labels("layer") == ["noise", "signal"]
    assert scores.axis_labels("metric") == ["accuracy", "macro_f1", "recall_0", "recall_1", "recall_2"]
    accuracy = scores.values[0]  # [seed, probe, layer]
    assert (accuracy[:, :, 1] > 0.85).all() and (scores.values[2:, :, :, 1] > 0.75).all()  # every class recalled
    assert (accuracy[:, :, 0] < 0.55).all()
    assert abs(scores.meta["chance"] - 1 / 3) < 0.05


def test_probe_is_at_chance_on_shuffled_labels():
    features, labels, groups = _planted()
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    scores = probe_scores(features, shuffled, groups, seeds=(0, 1, 2), config=FAST)
    assert (scores.values[0, :, :, 1].mean() - 1 / 3).abs() < 0.1


def test_relation_probes_on_a_tiny_model(model, examples, tmp_path):
    result = relation_probes(model, examples, layers=[0, 2], seeds=(0, 1), config=FAST, batch_size=7)
    assert result.scores.axes == ("metric", "seed", "probe", "layer")
    assert result.scores.values.shape == (5, 2, 2, 2) and result.layer_labels == ["embed", "L1"]
    assert result.metrics == ["accuracy", "macro_f1", "recall_related", "recall_negated", "recall_unrelated"]
    assert ((result.scores.values >= 0) & (result.scores.values <= 1)).all()
    assert result.mean("accuracy").shape == (2, 2) and result.std("macro_f1").shape == (2, 2)
    assert result.best_layer("linear") in ("embed", "L1") and abs(result.chance - 1 / 3) < 0.1
    counts = result.scores.meta["class_counts"]
    assert len(set(counts.values())) == 1 and result.scores.meta["n_examples"] == len(examples)
    frame = result.to_dataframe()
    assert len(frame) == 4 and {"accuracy", "accuracy_std", "macro_f1", "recall_negated_std"} <= set(frame.columns)
    loaded = RelationProbeResult.load(result.save(tmp_path / "rel.pt"))
    torch.testing.assert_close(loaded.scores.values, result.scores.values)
    assert loaded.scores.meta == result.scores.meta


def test_residual_layers(model):
    names, labels = residual_layer_hooks(model)
    assert names == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert labels == ["embed", "L0", "L1"]


def test_bad_input(model, examples, tok):
    with pytest.raises(ReasonlensError, match="not residual layers"):
        relation_probes(model, examples, layers=[3])
    with pytest.raises(ReasonlensError, match="too few"):
        relation_probes(model, examples[:3], config=FAST)
    with pytest.raises(ReasonlensError, match="unknown probe"):
        relation_probes(model, examples, probes=("forest",))
    with pytest.raises(ReasonlensError, match="one class"):
        probe_scores(torch.zeros((1, 10, 2)), torch.zeros(10, dtype=torch.long), torch.arange(10))
    with pytest.raises(ReasonlensError, match="test_fraction"):
        probe_scores(*_planted(), test_fraction=1.0)
    with pytest.raises(ReasonlensError, match="no tokenizer"):
        relation_dataset(None, examples)
    with pytest.raises(ReasonlensError, match="unknown metric"):
        RelationProbeResult(probe_scores(*_planted(), seeds=(0,), probes=("linear",))).mean("auc")

"""The logit lens against the model's own output and a brute-force oracle; prior-vs-context items and results."""

import functools

import pytest
import torch
from jaxtyping import TypeCheckError
from model_util import PROMPT, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.ontology import generate
from reasonlens.ontology.lexicon import true_properties
from reasonlens.patching.lens import (
    PriorContextResult,
    collect_activations,
    conflict_items,
    logit_lens,
    prior_vs_context,
)
from reasonlens.results import LabelledTensor

PROMPTS = [PROMPT, "Q: Rex is a wumpus.", "Q: Every wumpus is wooden. Wumpuses are yumpuses.\nA: Rex"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    return load_model(str(write_checkpoint(tmp_path_factory.mktemp(request.param), request.param, scale=3.0,
                                                     n_ctx=256)))


@pytest.fixture(scope="module")
def false_examples():
    return generate(80, kind="false", hops=(1, 2), ordering=("postorder", "preorder", "random"), seed=11)


def _rows(model):
    return [model.to_tokens(p)[0].tolist() for p in PROMPTS]


def _oracle(model, row, position, site, layer):
    """Lens of ``site`` at ``layer`` by brute force: one forward that overwrites the last block's output with
    that residual, so the model's own final norm and unembedding decode it."""
    ids = torch.tensor([row])
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n == f"blocks.{layer}.hook_{site}")
    resid = cache[f"blocks.{layer}.hook_{site}"]

    def replace(act, hook, value):
        return value

    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    logits = model.run_with_hooks(ids, fwd_hooks=[(last, functools.partial(replace, value=resid))])
    return logits[0, position].log_softmax(-1)


def test_last_layer_equals_model_log_probs(model):
    rows = _rows(model)
    lens = logit_lens(model, rows)
    assert lens.axes == ("example", "layer", "vocab") and lens.values.shape[1] == model.cfg.n_layers
    assert lens.axis_labels("layer") == [f"L{l}" for l in range(model.cfg.n_layers)]
    for i, row in enumerate(rows):
        real = model(torch.tensor([row]))[0, -1].log_softmax(-1)
        torch.testing.assert_close(lens.values[i, -1], real, atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "resid_post"])
def test_every_layer_equals_brute_force_oracle(model, site):
    rows = _rows(model)
    positions = [3, -2, 5]
    lens = logit_lens(model, rows, site=site, positions=positions, batch_size=2)
    for i, (row, p) in enumerate(zip(rows, positions)):
        for layer in range(model.cfg.n_layers):
            torch.testing.assert_close(lens.values[i, layer], _oracle(model, row, p, site, layer), atol=1e-5, rtol=0)
    assert lens.meta["positions"] == [3, len(rows[1]) - 2, 5] and lens.meta["site"] == site


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sequence_alone(model, side):
    rows = _rows(model)
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols], mask[i, cols] = torch.tensor(row), 1
    batched = logit_lens(model, ids, mask, positions=[1, 2, -1])
    for i, (row, p) in enumerate(zip(rows, [1, 2, -1])):
        alone = logit_lens(model, [row], positions=p)
        torch.testing.assert_close(batched.values[i], alone.values[0], atol=1e-5, rtol=0)


def test_strings_and_ids_agree(model):
    torch.testing.assert_close(logit_lens(model, PROMPTS).values, logit_lens(model, _rows(model)).values)


def test_collect_activations_matches_cache(model):
    rows = _rows(model)
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    acts = collect_activations(model, rows, [[0, 2], [1], [4, 0, 3]], names, batch_size=2)
    for row, pos, act in zip(rows, [[0, 2], [1], [4, 0, 3]], acts):
        _, cache = model.run_with_cache(torch.tensor([row]))
        for h, name in enumerate(names):
            torch.testing.assert_close(act[h], cache[name][0, pos], atol=1e-5, rtol=0)


def test_lens_bad_input(model):
    rows = _rows(model)
    with pytest.raises(ReasonlensError, match="unknown lens site"):
        logit_lens(model, rows, site="attn_out")
    with pytest.raises(ReasonlensError, match="outside sequence"):
        logit_lens(model, rows, positions=100)
    with pytest.raises(ReasonlensError, match="one per sequence"):
        logit_lens(model, rows, positions=[0, 1])
    with pytest.raises((ReasonlensError, TypeCheckError)):  # jaxtyping checks the shapes first under pytest
        logit_lens(model, torch.ones((2, 4), dtype=torch.long), torch.ones((2, 3), dtype=torch.long))
    with pytest.raises(ReasonlensError, match="vocabulary"):
        logit_lens(model, [[1, 10**6]])
    with pytest.raises(ReasonlensError, match="one string"):
        logit_lens(model, PROMPT)
    with pytest.raises(ReasonlensError, match="batch_size"):
        logit_lens(model, rows, batch_size=0)
    with pytest.raises(ReasonlensError, match="context length"):
        logit_lens(model, [[1] * 300])
    with pytest.raises(ReasonlensError, match="unknown hook name"):
        collect_activations(model, rows, [[0]] * 3, ["blocks.9.hook_resid_post"])


@pytest.mark.parametrize("decision", ["property", "label"])
def test_conflict_items_read_the_decision(model, false_examples, decision):
    tok = model.tokenizer
    items = conflict_items(tok, false_examples, decision=decision)
    assert items and len({it.example_index for it in items}) == len(items)
    positive = {"not", "True"}
    assert sum(it.context_word in positive for it in items) * 2 == len(items)  # balanced polarities
    for it in items:
        ex = false_examples[it.example_index]
        concept = next(s.fact.predicate for s in ex.context if s.role == "entity_fact")
        text = tok.decode(list(it.token_ids), skip_special_tokens=True)
        if decision == "property":
            fact = ex.cot[-1].fact
            assert text.endswith(f"{ex.entity} is".lower())
            assert it.context_word == ("not" if fact.negated else fact.predicate)
            assert true_properties(concept)[fact.predicate] == fact.negated  # the prior disagrees
            assert {it.context_word, it.prior_word} == {"not", fact.predicate}
        else:
            assert text.endswith(ex.cot[-1].text.lower())
            assert it.context_word == ex.answer and ex.meta["prior_label"] != ex.label
            assert it.prior_word == ("True" if ex.meta["prior_label"] else "False")
        assert tok.convert_ids_to_tokens(it.context_token) == it.context_word.lower()
        assert tok.convert_ids_to_tokens(it.prior_token) == it.prior_word.lower()


def test_prior_vs_context_equals_model_at_last_layer(model, false_examples, tmp_path):
    result = prior_vs_context(model, false_examples, batch_size=3)
    items = conflict_items(model.tokenizer, false_examples)
    n_layers = model.cfg.n_layers
    assert result.n_items == len(items) and result.log_probs.values.shape == (len(items), 2, n_layers)
    wins, probs = result.context_win_fraction(), result.mean_probs()
    assert wins.shape == (n_layers,) and ((0 <= wins) & (wins <= 1)).all()
    assert probs.shape == (2, n_layers) and ((0 <= probs) & (probs <= 1)).all()
    for k, it in enumerate(items):
        real = model(torch.tensor([it.token_ids]))[0, -1].log_softmax(-1)
        expected = real[[it.context_token, it.prior_token]]
        torch.testing.assert_close(result.log_probs.values[k, :, -1], expected, atol=1e-5, rtol=0)
    frame = result.to_dataframe()
    assert list(frame["layer"]) == result.layer_labels and len(frame) == n_layers
    loaded = PriorContextResult.load(result.save(tmp_path / "pvc.pt"))
    torch.testing.assert_close(loaded.log_probs.values, result.log_probs.values)
    assert loaded.log_probs.meta == result.log_probs.meta and loaded.crossover_layer == result.crossover_layer


def _synthetic(win_pattern, site="resid_post"):
    """A result whose per-layer win fraction is ``win_pattern`` (4 items per layer)."""
    odds = torch.tensor([[1.0 if k < 4 * w else -1.0 for w in win_pattern] for k in range(4)])
    log_probs = torch.stack([odds / 2 - 1, -odds / 2 - 1], dim=1)
    return PriorContextResult(LabelledTensor(log_probs, axes=("example", "token", "layer"), meta={"site": site}))


def test_crossover_layer_and_relative_depth():
    result = _synthetic([0.75, 0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(result.context_win_fraction(), torch.tensor([0.75, 0.25, 0.5, 0.75, 1.0]))
    assert result.crossover_layer == 3 and result.crossover_relative_depth == 4 / 5  # layer 0 lost again later
    assert result.crossover(0.75) == 4 and result.crossover(0.0) == 0
    assert _synthetic([0.25, 0.75, 1.0], site="resid_pre").crossover_relative_depth == 1 / 3
    assert _synthetic([0.25, 0.75, 1.0], site="resid_mid").crossover_relative_depth == 1.5 / 3
    assert _synthetic([1.0, 0.5]).crossover_layer is None and _synthetic([1.0, 0.5]).crossover_relative_depth is None
    torch.testing.assert_close(result.log_odds().mean(), torch.tensor([0.5, -0.5, 0.0, 0.5, 1.0]))
    with pytest.raises(ReasonlensError, match="min_win_fraction"):
        result.crossover(1.0)


def test_prior_vs_context_bad_input(model, false_examples):
    with pytest.raises(ReasonlensError, match="contradicts the pretraining prior"):
        prior_vs_context(model, generate(5, kind="fictional", seed=0))
    with pytest.raises(ReasonlensError, match="unknown decision"):
        prior_vs_context(model, false_examples, decision="query")
    with pytest.raises(ReasonlensError, match="no tokenizer"):
        conflict_items(None, false_examples)
    same_polarity = [ex for ex in false_examples if ex.cot[-1].fact.negated]
    with pytest.raises(ReasonlensError, match="cannot be balanced"):
        conflict_items(model.tokenizer, same_polarity)
    assert conflict_items(model.tokenizer, same_polarity, balance=False)

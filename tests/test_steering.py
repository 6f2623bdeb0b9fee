"""Component selections and steering: gamma = 1 changes nothing, gamma scales exactly the chosen components."""

import pytest
import torch
from model_util import PROMPT, write_checkpoint

from reasonlens.attribution.components import Selection, dice, random_dice
from reasonlens.attribution.steering import steer
from reasonlens.errors import ReasonlensError
from reasonlens.generation import GenerationConfig, PromptPrefill, generate
from reasonlens.model import load_model
from reasonlens.ontology import generate as generate_examples

SELECTIONS = [["L0R3", "L1R17", "L1R40"], ["L0N5", "L1N100"], ["L0H1", "L1H0", "L1H3"]]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp("steer") / request.param, request.param, scale=3.0))


@pytest.mark.parametrize("labels", SELECTIONS)
def test_gamma_one_leaves_generations_bit_identical(model, labels):
    hooks = Selection.from_labels(labels).hooks(1.0)
    for config in (GenerationConfig(max_new_tokens=12), GenerationConfig(max_new_tokens=12, temperature=0.8,
                                                                         top_p=0.9, num_samples=3, seed=4)):
        plain = generate(model, [PROMPT, "Q: Max is a cat.\nA:"], config)
        steered = generate(model, [PROMPT, "Q: Max is a cat.\nA:"], config, fwd_hooks=hooks)
        assert steered.output_ids == plain.output_ids
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        base = model(ids)
        with model.hooks(fwd_hooks=hooks):
            same = model(ids)
    assert torch.equal(base, same)


@pytest.mark.parametrize("labels", SELECTIONS)
@pytest.mark.parametrize("gamma", [0.0, 1.7])
def test_gamma_scales_exactly_the_selected_components(model, labels, gamma):
    selection = Selection.from_labels(labels)
    ids = model.to_tokens(PROMPT)

    def manual(act, hook, units):
        act = act.clone()
        if selection.component == "head":
            act[:, :, units] = act[:, :, units] * gamma
        else:
            act[..., units] = act[..., units] * gamma
        return act

    from functools import partial

    from reasonlens.attribution.components import HOOKS

    expected_hooks = [(HOOKS[selection.component].format(l=l), partial(manual, units=units))
                      for l, units in selection.by_layer().items()]
    with torch.no_grad(), model.hooks(fwd_hooks=expected_hooks):
        expected = model(ids)
    with torch.no_grad(), model.hooks(fwd_hooks=selection.hooks(gamma)):
        got = model(ids)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(model(ids), got)


def test_steer_on_the_main_model():
    model = load_model("reasonlens-main")
    examples = generate_examples(12, hops=2, seed=30)
    plain = steer(model, examples)
    assert plain.n == 12 and 0 < plain.accuracy <= 1 and plain.mean_steps > 2
    heads = Selection.from_labels([f"L{l}H{h}" for l in range(6) for h in range(4)])
    same = steer(model, examples, heads, gamma=1.0)
    assert same.texts == plain.texts
    assert steer(model, examples, heads, gamma=0.0).accuracy < plain.accuracy
    prefill = PromptPrefill()  # settings sharing the prompt passes below their first layer decode the same
    for labels, gamma in ((["L3R5", "L4R17"], 0.0), (["L2N7", "L5N100"], 1.5), (["L4H1"], 0.0)):
        selection = Selection.from_labels(labels)
        assert steer(model, examples, selection, gamma, prefill=prefill) == steer(model, examples, selection, gamma)
    assert len(prefill) == 1


def test_selection_labels_and_dice():
    s = Selection.from_labels(["L2H1", "L0H3"])
    assert s.labels == ["L0H3", "L2H1"] and s.component == "head" and len(s) == 2
    assert dice(s, Selection.from_labels(["L2H1"])) == pytest.approx(2 / 3)
    assert dice(s, s) == 1.0 and random_dice(5, 100) == 0.05
    assert repr(s) == "Selection(head: L0H3 L2H1)"


@pytest.mark.parametrize("labels, message", [
    (["L2X1"], "not a component name"),
    (["blocks.2.attn"], "not a component name"),
    (["L2H1", "L2N1"], "one kind of component"),
    (["L2H1", "L2H1"], "twice"),
])
def test_bad_labels(labels, message):
    with pytest.raises(ReasonlensError, match=message):
        Selection.from_labels(labels)


def test_bad_gamma_and_missing_components(model):
    s = Selection.from_labels(["L1H0"])
    for gamma in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ReasonlensError, match="gamma must be"):
            s.hooks(gamma)
    with pytest.raises(ReasonlensError, match="do not exist"):
        steer(model, generate_examples(1, seed=0), Selection.from_labels(["L7H0"]), gamma=0.0)
    with pytest.raises(ReasonlensError, match="do not exist"):
        steer(model, generate_examples(1, seed=0), Selection.from_labels(["L0N999"]), gamma=0.0)
    with pytest.raises(ReasonlensError, match="empty"):
        steer(model, [], s)

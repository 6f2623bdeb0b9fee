"""Plain integrated gradients along IPG's path equal captum's LayerIntegratedGradients.

captum interpolates a layer's output between its values for ``inputs`` and ``baselines``. The forward function
takes a scale ``[batch, 1]`` that a TransformerLens hook, registered on the hook point before captum's own,
multiplies the interpolated positions by; with inputs 1, baselines 0 and ``riemann_right`` the interpolated
output is ``alpha * h`` there and ``h`` elsewhere, which is the path of ``path_attributions`` (zero baseline).
"""

import pytest
import torch
from model_util import write_checkpoint

from reasonlens.attribution.components import HOOKS
from reasonlens.attribution.paths import PathSequences, path_attributions
from reasonlens.model import load_model

captum_attr = pytest.importorskip("captum.attr")

PROMPTS = ["Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:",
           "Q: Max is a cat.\nA:",
           "Q: Each numpus is blue. Sam is a numpus.\nA:"]
OUTPUTS = [[30, 12, 7, 55, 9], [9, 14, 60], [101, 3, 3, 20, 44, 8, 71]]
N_TARGET = [2, 1, 3]  # the "answer": the last tokens of each output


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp("captum") / request.param, request.param, scale=3.0))


def captum_scores(model, kind, layer, prompts, outputs, n_target, steps):
    """``[example, unit]`` from captum, all examples in one right-padded batch."""
    width = max(len(p) + len(o) for p, o in zip(prompts, outputs))
    tokens = torch.zeros(len(prompts), width, dtype=torch.long)
    chain = torch.zeros(len(prompts), width, dtype=torch.bool)  # positions that predict an output token
    target = torch.zeros(len(prompts), width, dtype=torch.bool)  # positions that predict a target token
    nxt = torch.zeros(len(prompts), width, dtype=torch.long)
    for b, (p, o, n) in enumerate(zip(prompts, outputs, n_target)):
        seq = p + o
        tokens[b, :len(seq)] = torch.tensor(seq)
        nxt[b, :len(seq) - 1] = torch.tensor(seq[1:])
        chain[b, len(p) - 1:len(seq) - 1] = True
        target[b, len(seq) - 1 - n:len(seq) - 1] = True
    state = {}

    def forward(scale, tokens, chain, target, nxt):
        state["scale"], state["chain"] = scale, chain
        logits = model(tokens, attention_mask=torch.ones_like(tokens))
        return (torch.log_softmax(logits, -1).gather(-1, nxt[..., None])[..., 0] * target).sum(1)

    def scale_chain(act, hook):
        extra = (1,) * (act.dim() - 2)
        where = state["chain"].view(state["chain"].shape + extra)
        return act * torch.where(where, state["scale"].view((-1, 1) + extra), torch.ones(()))

    name = HOOKS[kind].format(l=layer)
    with model.hooks(fwd_hooks=[(name, scale_chain)]):  # registered before captum's hook
        lig = captum_attr.LayerIntegratedGradients(forward, model.hook_dict[name])
        ones = torch.ones(len(prompts), 1)
        attr = lig.attribute(ones, baselines=torch.zeros_like(ones), additional_forward_args=(tokens, chain, target, nxt),
                             n_steps=steps, method="riemann_right")
    attr = attr.sum(1)  # over positions (zero outside the chain: input and baseline agree there)
    # a head's gate: over d_head too (the hook point's module sees z flattened to [batch, pos, head * d_head])
    return attr.reshape(len(prompts), model.cfg.n_heads, -1).sum(-1) if kind == "head" else attr


@pytest.mark.parametrize("kind", ["resid", "neuron", "head"])
def test_path_attributions_equal_captum_layer_integrated_gradients(model, kind):
    prompts = [model.to_tokens(p)[0].tolist() for p in PROMPTS]
    seqs = PathSequences(prompts, OUTPUTS, [1.0] * 3, N_TARGET)
    ours = path_attributions(model, kind, [0, 1], seqs, steps=4, batch_size=5).attributions
    for li in (0, 1):
        theirs = captum_scores(model, kind, li, prompts, OUTPUTS, N_TARGET, steps=4)
        assert theirs.abs().max() > 1e-3  # a real signal, not zeros on both sides
        torch.testing.assert_close(ours[:, li], theirs, atol=1e-5, rtol=1e-5)

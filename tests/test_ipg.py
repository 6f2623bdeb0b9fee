"""Integrated Policy Gradient: the batched path integral against the paper's direct loop, completeness,
zero advantages, symmetry, and bad input."""

import math

import pytest
import torch
from model_util import write_checkpoint

from reasonlens.attribution import paths
from reasonlens.attribution.components import HOOKS
from reasonlens.attribution.ipg import (
    ActivationMagnitude,
    Attribution,
    IntegratedGradients,
    IntegratedPolicyGradient,
    IPGConfig,
    RandomAttribution,
    group_advantages,
)
from reasonlens.attribution.paths import PathSequences, path_attributions
from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.ontology import generate

PROMPTS = ["Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:",
           "Q: Max is a cat.\nA:",
           "Q: Each numpus is blue. Sam is a numpus.\nA:"]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma", "gpt2"])
def model(request, tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp("ipg") / request.param, request.param, scale=3.0))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp("ipg-llama") / "llama", "llama", scale=3.0))


def sequences(model, n_target=None):
    """Three prompts with continuations of different lengths (one shares its prompt with another)."""
    prompts = [model.to_tokens(p)[0].tolist() for p in PROMPTS]
    outputs = [[30, 12, 7, 55], [9, 14], [101, 3, 3, 20, 44, 8], [17]]
    return PathSequences([prompts[0], prompts[1], prompts[2], prompts[0]], outputs, [0.7, -1.3, 0.4, 2.0],
                         [n_target] * 4 if n_target else [None] * 4)


def loop_attributions(model, kind, layer, seqs, steps, starts):
    """The paper's pseudocode: one forward and one backward per sequence per step, on the whole sequence."""
    name = HOOKS[kind].format(l=layer)
    out = []
    for s, (prompt, output) in enumerate(zip(seqs.prompt_ids, seqs.output_ids)):
        ids = torch.tensor([prompt + output])
        pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(output))
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=[name])
        h = cache[name][0, pos]
        h0 = torch.zeros(model.cfg.n_heads) if kind == "head" else starts[s]
        total = torch.zeros_like(h0) if kind == "head" else torch.zeros_like(h)
        for k in range(1, steps + 1):
            if kind == "head":
                leaf = torch.full((model.cfg.n_heads,), k / steps, requires_grad=True)

                def hook(act, hook, leaf=leaf):
                    act = act.clone()
                    act[0, pos] = act[0, pos] * leaf[None, :, None]
                    return act
            else:
                leaf = (h0 + k / steps * (h - h0)).detach().requires_grad_()

                def hook(act, hook, leaf=leaf):
                    act = act.clone()
                    act[0, pos] = leaf
                    return act
            with model.hooks(fwd_hooks=[(name, hook)]):
                logp = torch.log_softmax(model(ids)[0, pos], -1).gather(-1, torch.tensor(output)[:, None])[:, 0]
            n = seqs.n_target[s] or len(output)
            (grad,) = torch.autograd.grad(seqs.weights[s] * logp[len(output) - n:].sum(), leaf)
            total += grad
        out.append(total / steps if kind == "head" else ((h - h0) * total / steps).sum(0))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["resid", "neuron", "head"])
def test_batched_path_equals_the_direct_loop(model, kind):
    seqs = sequences(model)
    result = path_attributions(model, kind, [0, 1], seqs, steps=3, batch_size=5)
    zero = [torch.zeros(len(o), result.attributions.shape[-1]) for o in seqs.output_ids]
    for li, layer in enumerate([0, 1]):
        expected = loop_attributions(model, kind, layer, seqs, 3, zero)
        torch.testing.assert_close(result.attributions[:, li], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind, layer", [("resid", 0), ("resid", 1), ("neuron", 0), ("head", 0), ("head", 1)])
def test_a_path_enters_the_stack_after_the_blocks_it_cannot_change(model, kind, layer):
    """Every path enters after its own block: a resid path with the interpolated residual, a neuron or head path
    through the rest of its block (the last block is entered at itself, with a hook): block 0 then runs in the
    clean pass only."""
    from reasonlens.runtime import can_enter_at_block, can_finish_block, full_stack

    seqs = sequences(model)
    assert can_enter_at_block(model) and can_finish_block(model, "z") and can_finish_block(model, "neuron")
    calls = []
    handle = model.blocks[0].original_component.register_forward_hook(lambda *args: calls.append(1))
    try:
        entered = path_attributions(model, kind, [layer], seqs, steps=3, batch_size=5)
        n_entered = len(calls)
        with full_stack(model):
            full = path_attributions(model, kind, [layer], seqs, steps=3, batch_size=5)
    finally:
        handle.remove()
    n_full = len(calls) - n_entered
    assert n_full - n_entered == 4  # 12 rows in chunks of 5: 3 gradient forwards and 1 at alpha = 0 skip block 0
    torch.testing.assert_close(entered.attributions, full.attributions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entered.objective_start, full.objective_start, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("baseline", ["mean", "noise"])
def test_mean_and_noise_baselines_equal_the_direct_loop(llama, baseline):
    seqs = sequences(llama, n_target=2)
    result = path_attributions(llama, "resid", [1], seqs, steps=4, baseline=baseline, batch_size=7, seed=3)
    name = HOOKS["resid"].format(l=1)
    hs = []
    for prompt, output in zip(seqs.prompt_ids, seqs.output_ids):
        with torch.no_grad():
            _, cache = llama.run_with_cache(torch.tensor([prompt + output]), names_filter=[name])
        hs.append(cache[name][0, len(prompt) - 1:len(prompt) - 1 + len(output)])
    width = max(len(o) for o in seqs.output_ids)
    if baseline == "mean":
        mean = torch.cat(hs).mean(0)
        starts = [mean.expand_as(h) for h in hs]
    else:
        noise = torch.randn(len(hs), width, llama.cfg.d_model, generator=torch.Generator().manual_seed(3))
        starts = [noise[s, :len(h)] for s, h in enumerate(hs)]
    torch.testing.assert_close(result.attributions[:, 0], loop_attributions(llama, "resid", 1, seqs, 4, starts),
                               atol=1e-5, rtol=1e-5)


def test_prefix_cache_and_full_sequence_runs_agree(llama, monkeypatch):
    seqs = sequences(llama)
    cached = path_attributions(llama, "neuron", [0], seqs, steps=2, batch_size=4)
    monkeypatch.setattr(paths, "has_plain_kv_cache", lambda model: False)
    full = path_attributions(llama, "neuron", [0], seqs, steps=2, batch_size=4)
    torch.testing.assert_close(cached.attributions, full.attributions, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cached.objective_start, full.objective_start, atol=1e-6, rtol=1e-5)


def test_batch_size_does_not_change_scores(llama):
    seqs = sequences(llama)
    a = path_attributions(llama, "head", [0, 1], seqs, steps=3, batch_size=1).attributions
    b = path_attributions(llama, "head", [0, 1], seqs, steps=3, batch_size=64).attributions
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind, baseline", [("resid", "mean"), ("neuron", "zero"), ("head", "zero")])
def test_completeness_error_shrinks_as_q_grows(llama, kind, baseline):
    """Scores of a layer sum to the objective's change along its path, up to the Riemann error. (A zero
    baseline on the residual stream of a pre-norm model is excluded: RMSNorm makes the objective jump at
    alpha = 0, so the scores sum to F(1) - F(0+) instead; see docs/ipg.md.)"""
    seqs = sequences(llama)
    errors = []
    for steps in (2, 8, 64):
        r = path_attributions(llama, kind, [0, 1], seqs, steps=steps, baseline=baseline, batch_size=64)
        change = r.objective_end[:, None] - r.objective_start
        errors.append(float((r.attributions.sum(-1) - change).abs().max()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.05 * float(change.abs().max())


@pytest.mark.parametrize("kind", ["neuron", "head"])
def test_midpoint_and_trapezoid_rules(llama, kind):
    """Exact identities between the rules (the scores are linear in the weighted gradients): the midpoint points
    of q are the odd points of 2q, so midpoint(q) = 2 right(2q) - right(q); trapezoid(1) = (g(0) + g(1)) / 2 and
    trapezoid(2) = right(2) - (g(1) - g(0)) / 4. Both converge faster than the right sum."""
    seqs = sequences(llama)

    def scores(rule, steps):
        return path_attributions(llama, kind, [1], seqs, steps=steps, rule=rule, batch_size=64)

    right = {q: scores("right", q).attributions for q in (1, 2, 3, 6)}
    torch.testing.assert_close(scores("midpoint", 3).attributions, 2 * right[6] - right[3], atol=1e-6, rtol=1e-5)
    g1, g0 = right[1], 2 * scores("trapezoid", 1).attributions - right[1]
    torch.testing.assert_close(scores("trapezoid", 2).attributions, right[2] - (g1 - g0) / 4, atol=1e-6, rtol=1e-5)

    def gap(rule, steps):
        r = scores(rule, steps)
        return float((r.attributions.sum(-1) - (r.objective_end[:, None] - r.objective_start)).abs().max())

    assert gap("midpoint", 4) < gap("right", 4) and gap("trapezoid", 4) < gap("right", 4)


def test_identical_components_get_identical_scores(tmp_path):
    folder = write_checkpoint(tmp_path / "sym", "llama", scale=3.0)
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        mlp = hf.model.layers[1].mlp  # neurons 5 and 9 identical
        mlp.gate_proj.weight[9] = mlp.gate_proj.weight[5]
        mlp.up_proj.weight[9] = mlp.up_proj.weight[5]
        mlp.down_proj.weight[:, 9] = mlp.down_proj.weight[:, 5]
        attn, d = hf.model.layers[0].self_attn, hf.config.hidden_size // hf.config.num_attention_heads
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):  # heads 0 and 1 identical (4 heads, no GQA)
            proj.weight[d:2 * d] = proj.weight[:d]
        attn.o_proj.weight[:, d:2 * d] = attn.o_proj.weight[:, :d]
    hf.save_pretrained(folder)
    model = load_model(folder)
    seqs = sequences(model)
    neurons = path_attributions(model, "neuron", [1], seqs, steps=3).attributions[:, 0]
    torch.testing.assert_close(neurons[:, 9], neurons[:, 5], atol=1e-6, rtol=1e-5)
    heads = path_attributions(model, "head", [0], seqs, steps=3).attributions[:, 0]
    torch.testing.assert_close(heads[:, 1], heads[:, 0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(heads[:, 2], heads[:, 0])


def test_group_advantages():
    a = group_advantages(torch.tensor([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.3, 0.1, 0.2]], dtype=torch.float64))
    assert a[1].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(a[0], torch.tensor([2.0, -1.0, -1.0], dtype=torch.float64) / math.sqrt(3))
    assert torch.isfinite(a).all() and a.sum(1).abs().max() < 1e-12


@pytest.fixture(scope="module")
def headroom():
    return load_model("reasonlens-headroom")


def test_valid_steps_and_gold_label_logprob_rewards(headroom):
    from reasonlens.attribution.rewards import Trajectory, gold_label_logprob, valid_steps
    from reasonlens.ontology import format_prompt

    example = generate(1, hops=3, seed=4)[0]
    tok = headroom.tokenizer
    prompt = headroom.to_tokens(format_prompt(example))[0].tolist()
    chain = tok(" " + example.cot_text, add_special_tokens=False)["input_ids"]
    wrong = "False" if example.answer == "True" else "True"
    for label in (example.answer, wrong):  # whatever the chain's own label, the reward reads the gold one after it
        own = tok(" " + label, add_special_tokens=False)["input_ids"]
        t = Trajectory(f" {example.cot_text} {label}", label, chain + own, prompt)
        assert valid_steps(example, t) == len(example.cot)
        gold = tok(" " + example.answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = headroom(torch.tensor([prompt + chain + gold]))[0]
        expected = torch.log_softmax(logits[len(prompt) + len(chain) - 1:-1], -1)[torch.arange(len(gold)), gold].sum()
        assert gold_label_logprob(headroom)(example, t) == pytest.approx(float(expected), abs=1e-5)
    broken = Trajectory(" " + " ".join(s.text for s in example.cot[:1]) + " Wren is a dog. " + example.answer,
                        example.answer, [], prompt)
    assert valid_steps(example, broken) == 1
    with pytest.raises(ReasonlensError, match="prompt_ids"):
        gold_label_logprob(headroom)(example, Trajectory(t.text, t.answer, t.output_ids))


def test_sampled_groups_are_scored_without_sampling_again(headroom):
    from reasonlens.attribution.rewards import valid_steps

    config = IPGConfig(component="head", layers=(3,), n_samples=3, steps=2, max_new_tokens=40)
    examples = generate(3, hops=2, seed=8)
    ipg = IntegratedPolicyGradient(headroom, config)
    samples = ipg.sample(examples)
    assert len(samples.trajectories) == 9
    torch.testing.assert_close(ipg.attribute(examples, samples=samples).values, ipg.attribute(examples).values)
    by_steps = IntegratedPolicyGradient(headroom, config, reward=valid_steps).attribute(examples, samples=samples)
    assert by_steps.meta["texts"] == ipg.attribute(examples, samples=samples).meta["texts"]
    with pytest.raises(ReasonlensError, match="other examples or other sampling settings"):
        IntegratedPolicyGradient(headroom, IPGConfig(**{**config.to_dict(), "seed": 1})).attribute(examples,
                                                                                                  samples=samples)


def test_zero_advantages_give_zero_scores_and_are_counted(headroom):
    ipg = IntegratedPolicyGradient(headroom, IPGConfig(component="head", layers=(2,), n_samples=3, steps=2),
                                   reward=lambda example, trajectory: 1.0)
    scores = ipg.attribute(generate(3, hops=1, seed=5))
    assert scores.values.abs().max() == 0 and scores.n_informative == 0
    assert scores.meta["n_zero_advantage_groups"] == 3
    assert torch.isfinite(torch.tensor(scores.meta["advantages"])).all()
    with pytest.raises(ReasonlensError, match="every score is zero"):
        scores.top(2)


def test_ipg_on_the_headroom_model(headroom, tmp_path):
    examples = generate(6, hops=3, seed=21)  # two of the six groups disagree on the headroom model
    cfg = IPGConfig(component="neuron", layers=(3, 4), n_samples=4, steps=4)
    scores = IntegratedPolicyGradient(headroom, cfg).attribute(examples)
    assert scores.values.shape == (6, 2, headroom.cfg.d_mlp)
    assert scores.meta["n_zero_advantage_groups"] < 6 and scores.values.abs().sum() > 0
    informative = [m for m, adv in enumerate(scores.meta["advantages"]) if any(adv)]
    assert all(scores.values[m].abs().sum() > 0 for m in informative) and scores.n_informative == len(informative)
    summed, change = scores.completeness()
    assert summed.shape == change.shape == (6, 2) and bool((change[informative] != 0).all())
    assert len(scores.meta["texts"]) == 6 and all(len(group) == 4 for group in scores.meta["texts"])
    top = scores.top(10)
    assert len(top) == 10 and top.component == "neuron" and set(top.layers) <= {3, 4}
    best = scores.mean().flatten().topk(10).values
    assert min(float(scores.mean()[[3, 4].index(l), u]) for l, u in zip(top.layers, top.units)) == float(best.min())
    loaded = Attribution.load(scores.save(tmp_path / "ipg.pt"))
    assert loaded.top(10) == top and loaded.meta["method"] == "ipg"
    raw = IntegratedPolicyGradient(headroom, IPGConfig(component="neuron", layers=(3,), n_samples=4, steps=1)
                                   ).attribute(examples)
    assert raw.meta["method"] == "raw_pg"


def test_baselines(headroom):
    examples = generate(3, hops=1, seed=4)
    ig = IntegratedGradients(headroom, component="resid", layers=[2], steps=4).attribute(examples)
    assert ig.values.shape == (3, 1, headroom.cfg.d_model) and ig.meta["method"] == "integrated_gradients"
    act = ActivationMagnitude(headroom, component="head", layers=[1, 2]).attribute(examples)
    assert act.values.shape == (3, 2, 4) and (act.values > 0).all()
    random = [RandomAttribution(headroom, component="neuron", layers=[1, 2], seed=s).attribute(examples) for s in (0, 1)]
    assert random[0].values.shape == (3, 2, headroom.cfg.d_mlp) and (random[0].values[0] == random[0].values[2]).all()
    r1, r2 = random[0].top(5), random[1].top(5)
    assert len(r1) == 5 and r1 != r2 and set(r1.layers) <= {1, 2}
    # the first p of one uniform random order of the components, for every p
    order = torch.randperm(2 * headroom.cfg.d_mlp, generator=torch.Generator().manual_seed(0))
    for p in (1, 5, 40):
        drawn = sorted((1 + int(i) // headroom.cfg.d_mlp, int(i) % headroom.cfg.d_mlp) for i in order[:p])
        assert list(zip(random[0].top(p).layers, random[0].top(p).units)) == drawn


@pytest.mark.parametrize("reward, message", [
    (lambda e, t: "yes", "must return one real number"),
    (lambda e, t: float("nan"), "rewards must be finite"),
    (lambda e, t: None, "must return one real number"),
])
def test_bad_rewards(headroom, reward, message):
    ipg = IntegratedPolicyGradient(headroom, IPGConfig(component="head", layers=(1,), n_samples=2, steps=1,
                                                       max_new_tokens=8), reward=reward)
    with pytest.raises(ReasonlensError, match=message):
        ipg.attribute(generate(1, hops=1, seed=0))


@pytest.mark.parametrize("overrides, message", [
    ({"n_samples": 1}, "at least 2"),
    ({"steps": 0}, "steps"),
    ({"component": "mlp"}, "unknown component 'mlp'"),
    ({"baseline": "uniform"}, "unknown baseline"),
    ({"component": "head", "baseline": "mean"}, "baseline must be 'zero'"),
    ({"steps": 1, "rule": "midpoint"}, "raw policy gradient"),
    ({"rule": "simpson"}, "rule"),
])
def test_bad_config(overrides, message):
    with pytest.raises(ReasonlensError, match=message):
        IPGConfig(**overrides)


def test_bad_layers_and_empty_support_set(headroom):
    with pytest.raises(ReasonlensError, match="do not exist"):
        IntegratedPolicyGradient(headroom, IPGConfig(layers=(9,))).attribute(generate(1, seed=0))
    with pytest.raises(ReasonlensError, match="support set is empty"):
        IntegratedPolicyGradient(headroom).attribute([])

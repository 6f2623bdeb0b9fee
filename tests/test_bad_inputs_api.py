"""Every bad input to the Python API gets a ReasonlensError that names the problem (reasonlens.validation):
never a traceback from inside torch, never a silent wrong answer. Tiny random models, errors raised before any
forward pass, so the whole file runs in seconds."""

import functools
import inspect
import json
import math

import pytest
import torch
from model_util import random_pair, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model


def user(fn):
    """``fn`` as users call it: without the test run's jaxtyping hook, which would refuse a badly typed argument with
    its own TypeCheckError before reasonlens's check names the problem."""
    return inspect.unwrap(fn)

N_CTX, B, T = 32, 3, 10


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    """A tiny rotary (Llama) and a tiny learned-position (GPT-2) model with a context of 32 tokens."""
    return load_model(str(write_checkpoint(tmp_path_factory.mktemp(request.param), request.param, n_ctx=N_CTX)))


@pytest.fixture(scope="module")
def pair():
    clean, corrupted = random_pair(B, T, torch.Generator().manual_seed(0))
    return clean, corrupted, torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10])


def _long(n: int = N_CTX + 8) -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.randint(5, 150, (1, n), generator=torch.Generator().manual_seed(1))
    corrupted = clean.clone()
    corrupted[0, 3] = 4
    return clean, corrupted


# ------------------------------------------------------------------------------------------------- token tensors


def _patchers():
    from reasonlens.patching.engine import attribution_patch, patch
    attribution_patch, patch = user(attribution_patch), user(patch)

    return [patch, attribution_patch]


@pytest.mark.parametrize("fn", _patchers(), ids=["patch", "attribution_patch"])
def test_patch_tokens(model, pair, fn):
    clean, corrupted, answer, wrong = pair
    run = functools.partial(fn, model, progress=False, positions="all", layers=[0])
    vocab = model.cfg.d_vocab
    big = clean.clone()
    big[1, 4] = vocab
    with pytest.raises(ReasonlensError, match=rf"clean tokens: token id {vocab} at row 1, position 4 is outside the "
                                              rf"vocabulary \[0, {vocab}\)"):
        run(big, corrupted)
    with pytest.raises(ReasonlensError, match="corrupted tokens: token id -1 .*outside the vocabulary"):
        run(clean, corrupted - corrupted - 1)
    with pytest.raises(ReasonlensError, match="clean tokens must hold integer token ids, got a float32 tensor"):
        run(clean.float(), corrupted.float())
    with pytest.raises(ReasonlensError, match="corrupted tokens must hold integer token ids"):
        run(clean, corrupted.double())
    with pytest.raises(ReasonlensError, match="must hold integer token ids, got a bool"):
        run(clean.bool(), corrupted)
    with pytest.raises(ReasonlensError, match=r"non-empty \[batch, pos\] tensor, got shape \(1, 3, 10\)"):
        run(clean[None], corrupted[None])
    with pytest.raises(ReasonlensError, match=r"non-empty \[batch, pos\] tensor, got shape \(10,\)"):
        run(clean[0], corrupted[0])
    with pytest.raises(ReasonlensError, match=r"non-empty \[batch, pos\] tensor, got shape \(0, 10\)"):
        run(clean[:0], corrupted[:0])
    with pytest.raises(ReasonlensError, match="must be a \\[batch, pos\\] tensor of token ids, got \\[\\[1, 2\\]\\]"):
        fn(model, [[1, 2]], None, source="zero", normalize="none", progress=False)  # the no-hook runtime path
    with pytest.raises(ReasonlensError, match="different token lengths"):
        run(clean, corrupted[:, 1:])


@pytest.mark.parametrize("fn", _patchers(), ids=["patch", "attribution_patch"])
def test_patch_answer_and_wrong(model, pair, fn):
    clean, corrupted, answer, wrong = pair
    run = functools.partial(fn, model, clean, corrupted, progress=False, positions="all", layers=[0],
                            metric="logit_diff")
    with pytest.raises(ReasonlensError, match=r"answer: token id 1000000 for prompt 2 is outside the vocabulary"):
        run(answer=torch.tensor([1, 2, 10**6]), wrong=wrong)
    with pytest.raises(ReasonlensError, match=r"wrong: token id -1 for prompt 0 is outside the vocabulary"):
        run(answer=answer, wrong=torch.tensor([-1, 2, 3]))
    with pytest.raises(ReasonlensError, match=r"answer has shape \(2,\) but the batch has 3 prompts"):
        run(answer=answer[:2], wrong=wrong)
    with pytest.raises(ReasonlensError, match=r"wrong has shape \(3, 1\) but the batch has 3 prompts"):
        run(answer=answer, wrong=wrong[:, None])
    with pytest.raises(ReasonlensError, match="answer must hold integer tokens, got a float32 tensor"):
        run(answer=answer.float(), wrong=wrong)
    with pytest.raises(ReasonlensError, match="metric must be 'kl', 'prob', 'logit_diff' or a callable"):
        fn(model, clean, corrupted, metric=3, progress=False)


@pytest.mark.parametrize("fn", _patchers(), ids=["patch", "attribution_patch"])
def test_patch_context_length(model, fn):
    """GPT-2 has no position embedding past its context (an IndexError deep in torch); a rotary model would
    silently run there, while generate refuses: every method that takes tokens refuses the same way."""
    clean, corrupted = _long()
    with pytest.raises(ReasonlensError, match=f"clean prompt 0 has {N_CTX + 8} tokens, more than the model's "
                                              f"context length {N_CTX}"):
        fn(model, clean, corrupted, layers=[0], positions="all", progress=False)
    clean, corrupted = _long(N_CTX)  # exactly the context fits
    fn(model, clean, corrupted, layers=[0], positions="all", progress=False)
    # with left padding only the real tokens count: a padded width beyond the context is fine
    wide, wide_corr = _long(N_CTX + 4)
    mask = torch.ones_like(wide)
    mask[:, :4] = 0
    fn(model, wide, wide_corr, attention_mask=mask, layers=[0], positions="all", normalize="none", progress=False)


@pytest.mark.parametrize("fn", _patchers(), ids=["patch", "attribution_patch"])
def test_patch_attention_mask(model, pair, fn):
    clean, corrupted, *_ = pair
    run = functools.partial(fn, model, clean, corrupted, progress=False, positions="all", layers=[0])
    with pytest.raises(ReasonlensError, match=r"attention_mask has shape \(3, 9\) but clean tokens have \(3, 10\)"):
        run(attention_mask=torch.ones(B, T - 1, dtype=torch.long))
    hole = torch.ones_like(clean)
    hole[0, 3] = 0
    with pytest.raises(ReasonlensError, match="row 0 has a padding 0 between real tokens \\(a hole\\)"):
        run(attention_mask=hole)
    with pytest.raises(ReasonlensError, match=r"only 0 \(padding\) and 1 \(real token\), got \[2\]"):
        run(attention_mask=torch.full_like(clean, 2))
    with pytest.raises(ReasonlensError, match=r"only 0 \(padding\) and 1 \(real token\), got \[0.5\]"):
        run(attention_mask=torch.full((B, T), 0.5))
    right = torch.ones_like(clean)
    right[2, -2:] = 0
    with pytest.raises(ReasonlensError, match="left-padded.*row 2 ends with padding"):
        run(attention_mask=right)
    with pytest.raises(ReasonlensError, match="attention_mask must be a tensor"):
        run(attention_mask=[[1] * T] * B)
    left = torch.ones_like(clean, dtype=torch.bool)
    left[0, :2] = False
    run(attention_mask=left)  # a bool mask is fine


def test_patch_spans(model, pair):
    from reasonlens.patching.engine import patch
    patch = user(patch)

    clean, corrupted, *_ = pair
    run = functools.partial(patch, model, clean, corrupted, progress=False, positions="spans", layers=[0])
    with pytest.raises(ReasonlensError, match=r"span 0 of example 0 is \(6, 2\): its start must be before its end"):
        run(spans=[[(6, 2)]] * B)
    with pytest.raises(ReasonlensError, match=r"is \(4, 4\): its start must be before its end"):
        run(spans=[[(4, 4)]] * B)
    with pytest.raises(ReasonlensError, match=r"span 0 of example 1 is \(0, 11\), outside the batch's positions 0..10"):
        run(spans=[[(0, 2)], [(0, 11)], [(0, 2)]])
    with pytest.raises(ReasonlensError, match=r"is \(-1, 2\), outside"):
        run(spans=[[(-1, 2)]] * B)
    with pytest.raises(ReasonlensError, match="a span is a pair of integer token positions"):
        run(spans=[[(0, 2, 4)]] * B)
    with pytest.raises(ReasonlensError, match="same, non-zero number of spans"):
        run(spans=[[]] * B)
    with pytest.raises(ReasonlensError, match="spans are given for 2 examples but the batch has 3"):
        run(spans=[[(0, 2)]] * 2)
    with pytest.raises(ReasonlensError, match="spans were given but positions is 'all'"):
        patch(model, clean, corrupted, progress=False, positions="all", spans=[[(0, 2)]] * B)


def test_patch_layers_units_and_config(model, pair):
    from reasonlens.patching.engine import PatchConfig, patch
    patch = user(patch)

    clean, corrupted, *_ = pair
    run = functools.partial(patch, model, clean, corrupted, progress=False, positions="all")
    with pytest.raises(ReasonlensError, match=r"layers must be integers, got \[1.0\]"):
        run(layers=[1.0])  # was: "no hook point 'blocks.1.0.hook_resid_pre'"
    with pytest.raises(ReasonlensError, match=r"layers must be integers, got \[True\]"):
        run(layers=[True])
    with pytest.raises(ReasonlensError, match=r"layers \[0, 0\] repeat \[0\]; list each once"):
        run(layers=[0, 0])
    with pytest.raises(ReasonlensError, match="layers is empty"):
        run(layers=[])
    with pytest.raises(ReasonlensError, match="layers must be a list of integers or None, got 1"):
        run(layers=1)
    with pytest.raises(ReasonlensError, match="layers must be a list of integers or None, got '0'"):
        run(layers="0")
    with pytest.raises(ReasonlensError, match=r"layers \[-1\] out of range"):
        run(layers=[-1])
    with pytest.raises(ReasonlensError, match=r"layers \[5\] out of range: the model has layers 0..1"):
        run(layers=[5])
    with pytest.raises(ReasonlensError, match="units is empty"):
        run(site="z", units=[])
    with pytest.raises(ReasonlensError, match=r"units \[1, 1\] repeat \[1\]"):
        run(site="z", units=[1, 1])
    with pytest.raises(ReasonlensError, match=r"units must be integers, got \[0.5\]"):
        run(site="z", units=[0.5])
    with pytest.raises(ReasonlensError, match="units must be 'each', None or a list"):
        run(site="z", units="all")
    with pytest.raises(ReasonlensError, match=r"heads \[9\] out of range: site 'z' has 4 heads"):
        run(site="z", units=[9])
    with pytest.raises(ReasonlensError, match="batch_size must be an integer, got True"):
        run(batch_size=True)
    with pytest.raises(ReasonlensError, match="batch_size must be an integer, got 2.5"):
        run(batch_size=2.5)
    with pytest.raises(ReasonlensError, match="batch_size must be at least 1, got 0"):
        PatchConfig(batch_size=0)
    with pytest.raises(ReasonlensError, match="normalize must be one of"):
        PatchConfig(normalize=True)
    with pytest.raises(ReasonlensError, match="unknown patching site"):
        PatchConfig(site=3)
    with pytest.raises(ReasonlensError, match="reference tokens must hold integer token ids"):
        run(source="mean", normalize="none", reference=(clean.float(), torch.ones_like(clean)))
    with pytest.raises(ReasonlensError, match="reference must be \\(tokens, attention_mask\\)"):
        run(source="mean", normalize="none", reference=clean)


def test_gqa_units_name_the_key_value_heads(tmp_path):
    from reasonlens.patching.engine import patch
    patch = user(patch)

    qwen = load_model(str(write_checkpoint(tmp_path, "qwen2", n_ctx=N_CTX)))
    clean = torch.randint(5, 150, (2, 6), generator=torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[:, 2] = 4
    with pytest.raises(ReasonlensError, match=r"kv_heads \[2\] out of range: site 'k' has 2 key/value heads "
                                              r"\(grouped-query attention: 4 query heads share them\)"):
        patch(qwen, clean, corrupted, site="k", units=[2], positions="all", progress=False)


# ------------------------------------------------------------------------------------------------- generation


def test_generate_token_lists(model):
    from reasonlens.generation import GenerationConfig, generate
    generate = user(generate)

    config = GenerationConfig(max_new_tokens=2)
    vocab = model.cfg.d_vocab
    with pytest.raises(ReasonlensError, match=rf"prompt 1 has token ids outside the vocabulary \[0, {vocab}\)"):
        generate(model, [[1, 2], [1, vocab]], config)
    with pytest.raises(ReasonlensError, match="prompt 0 has token ids outside the vocabulary .*\\(-3\\)"):
        generate(model, [[1, -3]], config)
    with pytest.raises(ReasonlensError, match="prompt 0 must hold integer token ids, got \\[1.5, 2.0\\]"):
        generate(model, [[1.5, 2.0]], config)  # was silently truncated to [1, 2]
    with pytest.raises(ReasonlensError, match="prompt 0 must hold integer token ids"):
        generate(model, [[True, 2]], config)
    with pytest.raises(ReasonlensError, match="prompt 0 has no tokens"):
        generate(model, [[]], config)
    with pytest.raises(ReasonlensError, match="prompt 0 must be a 1-D integer tensor"):
        generate(model, [torch.tensor([1.0, 2.0])], config)
    with pytest.raises(ReasonlensError, match=f"context length {N_CTX}.*lower max_new_tokens"):
        generate(model, [[1] * (N_CTX - 1)], config)
    with pytest.raises(ReasonlensError, match="config must be a GenerationConfig"):
        generate(model, [[1, 2]], {"max_new_tokens": 2})
    assert generate(model, [torch.tensor([1, 2])], config).prompt_ids == [[1, 2]]  # 1-D integer tensors are fine


@pytest.mark.parametrize("overrides, message", [
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer, got 2.5"),
    ({"max_new_tokens": True}, "max_new_tokens must be an integer, got True"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
    ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
    ({"temperature": float("inf")}, "temperature must be a finite number, got inf"),
    ({"temperature": -0.5}, "temperature must be >= 0, got -0.5"),
    ({"temperature": True}, "temperature must be a number, got True"),
    ({"top_p": float("nan")}, "top_p must be a finite number"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"num_samples": 2.0, "temperature": 1.0}, "num_samples must be an integer"),
    ({"seed": 0.5}, "seed must be an integer"),
    ({"stop_at_answer": "yes"}, "stop_at_answer must be True or False"),
    ({"num_samples": 2}, "temperature > 0"),
])
def test_generation_config(overrides, message):
    from reasonlens.generation import GenerationConfig

    with pytest.raises(ReasonlensError, match=message):
        GenerationConfig(**overrides)


@pytest.mark.parametrize("temperature", [1e-320, 1e-300, 1e-45, 1e-8])
def test_tiny_temperatures_sample_the_argmax(temperature):
    """softmax(logits / 1e-320) was inf / inf = NaN, and sampling then emitted the last token id every step."""
    from reasonlens.generation import tempered_probs
    tempered_probs = user(tempered_probs)

    logits = torch.tensor([[1.0, 3.0, -2.0, 2.5], [0.0, 0.0, -1.0, -5.0], [-1e4, 7.0, 7.0, 1e3]])
    probs = tempered_probs(logits, temperature)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=torch.float64))
    assert probs.argmax(-1).tolist() == [1, 0, 3]
    assert probs[0, 1] == 1.0 and probs[2, 3] == 1.0 and probs[1, :2].tolist() == [0.5, 0.5]  # ties share
    ordinary = tempered_probs(logits, 0.7)
    torch.testing.assert_close(ordinary, torch.softmax(logits.double() / 0.7, -1))


def test_tiny_temperature_generates_the_greedy_tokens(model):
    from reasonlens.generation import GenerationConfig, generate
    generate = user(generate)

    prompts = [[1, 14, 23, 4], [1, 27, 6]]
    greedy = generate(model, prompts, GenerationConfig(max_new_tokens=6, stop_at_answer=False)).output_ids
    tiny = generate(model, prompts, GenerationConfig(max_new_tokens=6, temperature=1e-320, stop_at_answer=False,
                                                     num_samples=2)).output_ids
    assert tiny == [greedy[0], greedy[0], greedy[1], greedy[1]]


def test_nan_logits_are_an_error_when_sampling():
    from reasonlens.generation import tempered_probs
    tempered_probs = user(tempered_probs)

    with pytest.raises(ReasonlensError, match="logits are NaN or infinite"):
        tempered_probs(torch.tensor([[0.0, float("nan")]]), 0.7)


# ------------------------------------------------------------------------------------------------- attribution


def _examples():
    from reasonlens.ontology import generate
    generate = user(generate)

    return generate(2, hops=2, seed=0)


def test_integrated_gradients_and_ipg_refuse_sequences_longer_than_the_context(model):
    """A prompt plus its gold chain is far longer than 32 tokens: GPT-2 raised an IndexError deep in torch."""
    from reasonlens.attribution.ipg import IntegratedGradients, IntegratedPolicyGradient, IPGConfig

    with pytest.raises(ReasonlensError, match=f"sequence 0 has [0-9]+ tokens, more than the model's context length "
                                              f"{N_CTX}.*shorter prompts or chains"):
        IntegratedGradients(model, layers=[0], steps=1).attribute(_examples())
    ipg = IntegratedPolicyGradient(model, IPGConfig(layers=(0,), n_samples=2, steps=1, max_new_tokens=4))
    with pytest.raises(ReasonlensError, match=f"prompt 0 has [0-9]+ tokens.*context length {N_CTX}"):
        ipg.attribute(_examples())


def test_path_attributions_check_their_sequences(model):
    from reasonlens.attribution.paths import PathSequences, path_attributions
    path_attributions = user(path_attributions)

    good = PathSequences([[1, 2, 3]], [[4, 5]], [1.0], [None])
    with pytest.raises(ReasonlensError, match="output 0 has token ids outside the vocabulary"):
        path_attributions(model, "resid", [0], PathSequences([[1, 2]], [[4, 10**6]], [1.0], [None]), steps=1)
    with pytest.raises(ReasonlensError, match="sequence 0 has 40 tokens, more than the model's context length"):
        path_attributions(model, "resid", [0], PathSequences([[1] * 30], [[4] * 10], [1.0], [None]), steps=1)
    with pytest.raises(ReasonlensError, match="weights\\[0\\] must be a finite number, got nan"):
        PathSequences([[1, 2]], [[4]], [float("nan")], [None])
    with pytest.raises(ReasonlensError, match="n_target\\[0\\] must be None"):
        PathSequences([[1, 2]], [[4]], [1.0], [0])
    with pytest.raises(ReasonlensError, match="steps \\(q\\) must be an integer >= 1, got True"):
        path_attributions(model, "resid", [0], good, steps=True)
    with pytest.raises(ReasonlensError, match=r"layers \[0, 0\] repeat"):
        path_attributions(model, "resid", [0, 0], good, steps=1)
    with pytest.raises(ReasonlensError, match=r"layers \[7\] out of range"):
        path_attributions(model, "resid", [7], good, steps=1)


def test_n_target_beyond_the_output_reads_all_of_it(model):
    """``picked[T - n_target:]`` with n_target > T sliced from the end: a silent wrong objective."""
    from reasonlens.attribution.paths import PathSequences, path_attributions
    path_attributions = user(path_attributions)

    def run(n_target):
        seqs = PathSequences([[1, 2, 3]], [[4, 5, 6]], [1.0], [n_target])
        return path_attributions(model, "resid", [0], seqs, steps=1).objective_end

    torch.testing.assert_close(run(5), run(None))
    torch.testing.assert_close(run(3), run(None))


@pytest.mark.parametrize("overrides, message", [
    ({"steps": True}, r"steps \(q\) must be an integer >= 1 .*got True"),
    ({"steps": 2.5}, r"steps \(q\) must be an integer"),
    ({"n_samples": 3.0}, "n_samples .N. must be an integer, at least 2"),
    ({"layers": (0, 0)}, r"layers \[0, 0\] repeat \[0\]"),
    ({"layers": (1.0,)}, r"layers must be integers, got \[1.0\]"),
    ({"layers": ()}, "layers is empty"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"max_new_tokens": True}, "max_new_tokens must be an integer"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"baseline": None}, "unknown baseline"),
])
def test_ipg_config(overrides, message):
    from reasonlens.attribution.ipg import IPGConfig

    with pytest.raises(ReasonlensError, match=message):
        IPGConfig(**overrides)


def test_attribution_functions(model):
    from reasonlens.attribution.components import Selection
    from reasonlens.attribution.ipg import (
        ActivationMagnitude,
        IntegratedGradients,
        IntegratedPolicyGradient,
        RandomAttribution,
    )

    with pytest.raises(ReasonlensError, match=r"steps \(q\) must be an integer >= 1 .*got True"):
        IntegratedGradients(model, layers=[0], steps=True)
    with pytest.raises(ReasonlensError, match="unknown baseline"):
        IntegratedGradients(model, layers=[0], baseline="uniform")
    with pytest.raises(ReasonlensError, match=r"layers \[0, 0\] repeat"):
        IntegratedGradients(model, layers=[0, 0], steps=1)
    with pytest.raises(ReasonlensError, match="layers must be integers, got \\[True\\]"):
        RandomAttribution(model, layers=[True])
    with pytest.raises(ReasonlensError, match="unknown component 'heads'"):
        ActivationMagnitude(model, component="heads")
    with pytest.raises(ReasonlensError, match="p must be an integer"):
        RandomAttribution(model).attribute().top(True)
    with pytest.raises(ReasonlensError, match="examples must be a list"):
        RandomAttribution(model).attribute("Q: ...")
    with pytest.raises(ReasonlensError, match="examples\\[1\\] is a str"):
        user(IntegratedPolicyGradient.attribute)(IntegratedPolicyGradient(model), [_examples()[0], "Q: ..."])
    with pytest.raises(ReasonlensError, match="gamma must be a number, got True"):
        Selection.from_labels(["L0R1"]).hooks(True)
    with pytest.raises(ReasonlensError, match="gamma must be a finite number, got nan"):
        Selection.from_labels(["L0R1"]).hooks(float("nan"))
    with pytest.raises(ReasonlensError, match="a selection's units must be integers"):
        Selection("resid", (0,), (1.5,))


# ------------------------------------------------------------------------------------------------- heads, circuit, flow, lens


def _padded(model):
    from reasonlens.runtime import left_pad
    left_pad = user(left_pad)

    return left_pad([[1, 14, 23, 4, 27], [1, 6, 66]], 0)


def test_heads_circuit_flow_tokens(model):
    from reasonlens.patching.circuit import circuit_curve, circuit_logits, mean_head_activations
    circuit_curve, circuit_logits, mean_head_activations = user(circuit_curve), user(circuit_logits), user(mean_head_activations)
    from reasonlens.patching.flow import trace_pathways
    trace_pathways = user(trace_pathways)
    from reasonlens.patching.heads import head_roles
    head_roles = user(head_roles)

    tokens, mask = _padded(model)
    answer, source = torch.tensor([5, 6]), torch.tensor([3, 4])
    with pytest.raises(ReasonlensError, match="tokens must hold integer token ids, got a float32"):
        head_roles(model, tokens.float(), mask, answer, source)
    with pytest.raises(ReasonlensError, match="answer must hold integer tokens, got a float32"):
        head_roles(model, tokens, mask, answer.float(), source)
    with pytest.raises(ReasonlensError, match="source_position must hold integer positions"):
        head_roles(model, tokens, mask, answer, source.double())
    with pytest.raises(ReasonlensError, match="source_position holds negative positions"):
        head_roles(model, tokens, mask, answer, torch.tensor([3, -1]))
    with pytest.raises(ReasonlensError, match="batch_size must be an integer, got True"):
        head_roles(model, tokens, mask, answer, source, batch_size=True)
    hole = mask.clone()
    hole[0, 2] = 0
    with pytest.raises(ReasonlensError, match="a hole"):
        mean_head_activations(model, tokens, hole)
    with pytest.raises(ReasonlensError, match="reference tokens: token id -2 .*outside the vocabulary"):
        mean_head_activations(model, tokens - 2 * (tokens == 0).long(), mask)  # padding ids are looked up too
    means = mean_head_activations(model, tokens, mask)
    keep = torch.ones(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.bool)
    with pytest.raises(ReasonlensError, match=r"attention_mask has shape \(2, 4\) but tokens have \(2, 5\)"):
        circuit_logits(model, tokens, mask[:, 1:], keep, means)
    with pytest.raises(ReasonlensError, match=f"prompt 0 has {N_CTX + 1} tokens, more than the model's context"):
        circuit_logits(model, torch.ones(1, N_CTX + 1, dtype=torch.long), torch.ones(1, N_CTX + 1), keep, means)
    with pytest.raises(ReasonlensError, match=r"scores hold 8 NaN or infinite value\(s\)"):
        circuit_curve(model, tokens, mask, torch.full((2, 4), float("nan")), means)
    with pytest.raises(ReasonlensError, match=r"sizes \[2, 2\] repeat"):
        circuit_curve(model, tokens, mask, torch.zeros(2, 4), means, sizes=[2, 2])
    with pytest.raises(ReasonlensError, match="max_half_width must be an integer, got True"):
        circuit_curve(model, tokens, mask, torch.zeros(2, 4), means, max_half_width=True)
    regions = [{"prompt": (0, 5)}, {"prompt": (2, 5)}]
    with pytest.raises(ReasonlensError, match="tokens: token id 1003 at row 0, position 3 is outside the vocabulary"):
        trace_pathways(model, tokens + 999 * (tokens == 4).long(), mask, regions)
    with pytest.raises(ReasonlensError, match="l, k and p must be integers >= 1"):
        trace_pathways(model, tokens, mask, regions, l=True, k=0)
    with pytest.raises(ReasonlensError, match="region 'prompt' of prompt 0 is"):
        trace_pathways(model, tokens, mask, [{"prompt": (0.5, 5)}, {"prompt": (2, 5)}])


def test_lens_tokens(model):
    from reasonlens.patching.lens import logit_lens
    from reasonlens.runtime import collect_activations
    collect_activations, logit_lens = user(collect_activations), user(logit_lens)

    tokens, mask = _padded(model)
    right = torch.tensor([[1, 14, 23, 4, 27], [1, 6, 66, 0, 0]])
    right_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    torch.testing.assert_close(logit_lens(model, right, right_mask).values, logit_lens(model, tokens, mask).values)
    with pytest.raises(ReasonlensError, match="tokens must hold integer token ids"):
        logit_lens(model, tokens.float(), mask)
    hole = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 0, 0]])
    with pytest.raises(ReasonlensError, match="attention_mask row 0 has a padding 0 between real tokens"):
        logit_lens(model, right, hole)
    with pytest.raises(ReasonlensError, match="attention_mask row 1 has no real token"):
        logit_lens(model, right, torch.tensor([[1] * 5, [0] * 5]))
    with pytest.raises(ReasonlensError, match="context length"):
        logit_lens(model, torch.ones(1, N_CTX + 1, dtype=torch.long))
    with pytest.raises(ReasonlensError, match="positions must be None .*, got True"):
        logit_lens(model, tokens, mask, positions=True)
    with pytest.raises(ReasonlensError, match="sequence 0 must hold integer token ids"):
        logit_lens(model, [[1, 2.5]])
    with pytest.raises(ReasonlensError, match="positions of sequence 0 must be a list of integer"):
        collect_activations(model, [[1, 2, 3]], [[0.5]], ["blocks.0.hook_resid_post"])
    with pytest.raises(ReasonlensError, match="no hook names given"):
        collect_activations(model, [[1, 2, 3]], [[0]], [])
    with pytest.raises(ReasonlensError, match="batch_size must be an integer, got True"):
        collect_activations(model, [[1, 2, 3]], [[0]], ["blocks.0.hook_resid_post"], batch_size=True)


# ------------------------------------------------------------------------------------------------- probes


def _features(n: int = 40, layers: int = 3, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    return torch.randn(n, layers, d, generator=g) + labels[:, None, None], labels


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_probes_refuse_non_finite_features(bad):
    """NaN features trained to a 0.5-accuracy probe with no error."""
    from reasonlens.importance.probes import ProbeConfig, probe_by_layer, train_probe
    probe_by_layer, train_probe = user(probe_by_layer), user(train_probe)

    features, labels = _features()
    features[7, 1, 2] = bad
    config = ProbeConfig(epochs=1, seeds=(0,))
    with pytest.raises(ReasonlensError, match=r"features hold 1 NaN or infinite value\(s\) \(the first at index "
                                              r"\(7, 1, 2\)"):
        train_probe(features, labels, config)
    with pytest.raises(ReasonlensError, match="NaN or infinite"):
        train_probe(features[:, 1], labels, config)
    with pytest.raises(ReasonlensError, match="NaN or infinite"):
        probe_by_layer(features, labels, config)


def test_probe_inputs():
    from reasonlens.importance.probes import ProbeConfig, train_probe
    train_probe = user(train_probe)

    features, labels = _features()
    config = ProbeConfig(epochs=1, seeds=(0,))
    with pytest.raises(ReasonlensError, match=r"features must have 2 or 3 axes"):
        train_probe(features[..., None], labels, config)
    with pytest.raises(ReasonlensError, match="labels must have 1 axes"):
        train_probe(features, labels[:, None], config)


@pytest.mark.parametrize("overrides, message", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite number"),
    ({"epochs": True}, "epochs must be an integer, got True"),
    ({"hidden": 2.5}, "hidden must be an integer"),
    ({"seeds": (42, 42)}, r"seeds \[42, 42\] repeat \[42\]"),
    ({"seeds": ()}, "no seeds given"),
    ({"seeds": 42}, "seeds must be a list of integers"),
    ({"test_fraction": float("nan")}, "test_fraction must be a finite number"),
    ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0, 1\)"),
    ({"arch": "cnn"}, "unknown probe arch"),
])
def test_probe_config(overrides, message):
    from reasonlens.importance.probes import ProbeConfig

    with pytest.raises(ReasonlensError, match=message):
        ProbeConfig(**overrides)


def test_relation_probes_refuse_non_finite_features():
    from reasonlens.patching.relations import RelationProbeConfig, probe_scores
    probe_scores = user(probe_scores)

    features = torch.randn(2, 20, 4)
    features[1, 3, 0] = float("nan")
    labels, groups = torch.arange(20) % 2, torch.arange(20)
    with pytest.raises(ReasonlensError, match="features hold 1 NaN"):
        probe_scores(features, labels, groups)
    with pytest.raises(ReasonlensError, match=r"seeds \[0, 0\] repeat"):
        probe_scores(features.nan_to_num(), labels, groups, seeds=(0, 0))
    with pytest.raises(ReasonlensError, match="mlp_alpha must be a finite number"):
        RelationProbeConfig(mlp_alpha=float("nan"))
    with pytest.raises(ReasonlensError, match="hidden_sizes must be integers"):
        RelationProbeConfig(hidden_sizes=(64, 2.5))


# ------------------------------------------------------------------------------------------------- other configs


def test_other_configs():
    from reasonlens.importance.labels import LabelConfig
    from reasonlens.importance.scoring import ScoringConfig
    from reasonlens.importance.study import StepImportanceConfig
    from reasonlens.patching.horizon import HorizonConfig
    from reasonlens.patching.mechanism import MechanismConfig

    with pytest.raises(ReasonlensError, match="stages must be a list of integers, got True"):
        HorizonConfig(stages=True)  # was: TypeError: 'bool' object is not iterable
    with pytest.raises(ReasonlensError, match="without repeats"):
        HorizonConfig(layers=[1, 1])
    with pytest.raises(ReasonlensError, match="max_new_tokens must be an integer or None"):
        HorizonConfig(max_new_tokens=2.5)
    with pytest.raises(ReasonlensError, match="n_examples must be an integer, got 2.5"):
        MechanismConfig(n_examples=2.5).check()
    with pytest.raises(ReasonlensError, match=r"relation_seeds \[1, 1\] repeat"):
        MechanismConfig(relation_seeds=(1, 1)).check()
    with pytest.raises(ReasonlensError, match="every entry of thresholds must be a finite number, got nan"):
        LabelConfig(thresholds=(0.1, float("nan")))
    with pytest.raises(ReasonlensError, match=r"thresholds \[0.1, 0.1\] repeat"):
        LabelConfig(thresholds=(0.1, 0.1))
    with pytest.raises(ReasonlensError, match="use_attainability must be True or False"):
        LabelConfig(use_attainability="no")
    with pytest.raises(ReasonlensError, match="temperature must be a finite number"):
        ScoringConfig(temperature=float("inf"))
    with pytest.raises(ReasonlensError, match="tau must be a finite number, got nan"):
        ScoringConfig(tau=float("nan"))
    with pytest.raises(ReasonlensError, match=r"tau must be in \(0, 1\], got 0"):
        ScoringConfig(tau=0.0)
    with pytest.raises(ReasonlensError, match=r"hops \[2, 2\] repeat"):
        StepImportanceConfig(hops=(2, 2))
    with pytest.raises(ReasonlensError, match="redundant_step_p must be in"):
        StepImportanceConfig(redundant_step_p=1.5)


def test_sampled_sufficiency_with_a_tiny_temperature_is_finite():
    from reasonlens.importance.scoring import ScoringConfig, SubsetScorer

    scorer = SubsetScorer.__new__(SubsetScorer)
    scorer.chain = type("C", (), {"label": True, "prompt_ids": [1], "step_ids": [[2]]})()
    scorer.gold = frozenset({0})
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0]])
    for mode in ("sampled", "expected"):
        scorer.config = ScoringConfig(mode=mode, temperature=1e-320, k_samples=20)
        assert scorer._sufficiency(logits, [(0,), ()]) == [1.0, 0.0]  # was NaN probabilities: 0 for both


# ------------------------------------------------------------------------------------------------- saved results


def test_loading_missing_garbage_and_foreign_files(tmp_path):
    from reasonlens.attribution.ipg import Attribution
    from reasonlens.importance.probes import ProbeResult
    from reasonlens.patching.circuit import CircuitResult
    from reasonlens.patching.engine import PatchSweep
    from reasonlens.patching.flow import FlowResult
    from reasonlens.patching.heads import HeadRoles
    from reasonlens.results import LabelledTensor

    missing = tmp_path / "missing.pt"
    with pytest.raises(ReasonlensError, match="no file .*missing.pt; pass the path a PatchSweep was saved to"):
        PatchSweep.load(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 4)
    for cls in (PatchSweep, LabelledTensor, HeadRoles, CircuitResult):
        with pytest.raises(ReasonlensError, match=f"garbage.pt is not a {cls.__name__} file"):
            cls.load(garbage)
    with pytest.raises(ReasonlensError, match="is a folder"):
        PatchSweep.load(tmp_path)
    other = tmp_path / "other.pt"
    torch.save({"values": torch.zeros(2)}, other)
    with pytest.raises(ReasonlensError, match=r"holds no PatchSweep \(it lacks \['axes', 'labels', 'meta'\]\)"):
        PatchSweep.load(other)
    attribution = Attribution(torch.zeros(1, 1, 1), axes=("example", "layer", "unit"), meta={"component": "resid"})
    path = attribution.save(tmp_path / "ipg.pt")
    with pytest.raises(ReasonlensError, match="holds a Attribution, not a PatchSweep; load it with Attribution.load"):
        PatchSweep.load(path)
    assert LabelledTensor.load(path).values.shape == (1, 1, 1)  # the base class reads any result
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    for cls in (FlowResult, ProbeResult):
        with pytest.raises(ReasonlensError, match=f"bad.json is not a {cls.__name__} file"):
            cls.load(bad_json)
    bad_json.write_text(json.dumps([1, 2]))
    with pytest.raises(ReasonlensError, match="holds no FlowResult"):
        FlowResult.load(bad_json)


# ------------------------------------------------------------------------------------------------- the validators


def test_validators():
    from reasonlens.validation import check_finite, check_float, check_int, check_int_list
    check_finite, check_float, check_int, check_int_list = user(check_finite), user(check_float), user(check_int), user(check_int_list)

    assert check_int(3, "n") == 3 and check_int(None, "n", optional=True) is None
    with pytest.raises(ReasonlensError, match="n must be an integer, got True \\(a bool\\)"):
        check_int(True, "n")
    with pytest.raises(ReasonlensError, match="n must be an integer, got 2.0"):
        check_int(2.0, "n")
    with pytest.raises(ReasonlensError, match="n must be in 1..3, got 4"):
        check_int(4, "n", low=1, high=3)
    assert check_float(1, "x") == 1.0
    for bad in (math.nan, math.inf, "1"):
        with pytest.raises(ReasonlensError, match="x must be a"):
            check_float(bad, "x")
    assert check_int_list(torch.tensor([2, 0]), "layers") == [2, 0]
    assert check_int_list(range(3), "layers") == [0, 1, 2]
    with pytest.raises(ReasonlensError, match="layers must be integers"):
        check_int_list([0, torch.tensor(1.0)], "layers")
    with pytest.raises(ReasonlensError, match="must be a list of integers, got \\{0: 1\\}"):
        check_int_list({0: 1}, "layers")
    assert check_finite(torch.tensor([1, 2]), "ids").tolist() == [1, 2]
    with pytest.raises(ReasonlensError, match="v hold 2 NaN or infinite value\\(s\\) \\(the first at index \\(1,\\)"):
        check_finite(torch.tensor([0.0, math.nan, math.inf]), "v")

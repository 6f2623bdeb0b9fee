"""The decoding loop: cached batched greedy decoding equals a naive re-forward loop, seeded sampling, hooks
at every step, stopping, and its input errors."""

from __future__ import annotations

import pytest
import torch
from model_util import N_CTX, write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.generation import STOP_REASONS, GenerationConfig, PromptPrefill, first_hooked_block, generate
from reasonlens.model import load_model
from reasonlens.spans import TokenSpan
from reasonlens.tokenizer import build_reference_tokenizer

PROMPTS = [  # different lengths, so batches are left-padded
    "Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:",
    "Q: Max is a cat.",
    "Every",
    "Q: Each numpus is blue. Sam is a numpus.\nA:",
]
GREEDY = GenerationConfig(max_new_tokens=10, stop_at_answer=False, batch_size=4)
SAMPLE = GenerationConfig(max_new_tokens=10, stop_at_answer=False, temperature=1.0, top_p=0.9, seed=3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    # Weights scaled up so greedy choices are far from ties and outputs vary with the prompt.
    root = tmp_path_factory.mktemp("gen")
    return {arch: write_checkpoint(root / arch, arch, scale=5.0) for arch in ("llama", "qwen2", "gpt2")}


@pytest.fixture(scope="module")
def model(folders):
    return load_model(folders["llama"])


def naive_greedy(model, prompt: str, n: int) -> list[int]:
    """One prompt, no cache, no padding: a full forward pass per new token, up to EOS."""
    tokens = model.to_tokens(prompt)
    out: list[int] = []
    with torch.no_grad():
        while len(out) < n and (not out or out[-1] != model.tokenizer.eos_token_id):
            out.append(int(model(tokens)[0, -1].argmax()))
            tokens = torch.cat([tokens, torch.tensor([[out[-1]]])], dim=1)
    return out


@pytest.mark.parametrize(("arch", "compat"), [("llama", True), ("llama", False), ("qwen2", True),
                                                ("gpt2", True)])
def test_greedy_batched_cached_equals_naive_loop(folders, arch, compat):
    model = load_model(folders[arch], compatibility_mode=compat)
    gen = generate(model, PROMPTS, GREEDY)
    assert gen.output_ids == [naive_greedy(model, p, GREEDY.max_new_tokens) for p in PROMPTS]
    assert len({tuple(o) for o in gen.output_ids}) > 1
    assert gen.prompt_ids == [model.to_tokens(p)[0].tolist() for p in PROMPTS]


def test_token_prompts_and_batch_size(model):
    gen = generate(model, PROMPTS, GREEDY)
    tokens = [model.to_tokens(p)[0].tolist() for p in PROMPTS]
    assert generate(model, tokens, GREEDY).output_ids == gen.output_ids
    one_by_one = GenerationConfig(max_new_tokens=10, stop_at_answer=False, batch_size=1)
    assert generate(model, PROMPTS, one_by_one).output_ids == gen.output_ids


def test_sampling_is_seeded(model):
    a, b = generate(model, PROMPTS, SAMPLE), generate(model, PROMPTS, SAMPLE)
    assert a.output_ids == b.output_ids
    other = generate(model, PROMPTS, GenerationConfig(**{**SAMPLE.__dict__, "seed": 4}))
    assert other.output_ids != a.output_ids
    # Each sequence has its own stream: batching and further prompts do not change its tokens.
    assert generate(model, PROMPTS, GenerationConfig(**{**SAMPLE.__dict__, "batch_size": 3})).output_ids == \
        a.output_ids
    assert generate(model, PROMPTS + ["Q: Rex is a cat."], SAMPLE).output_ids[:len(PROMPTS)] == a.output_ids
    # A nucleus too small to hold more than the top token is greedy decoding.
    nucleus = GenerationConfig(**{**SAMPLE.__dict__, "top_p": 1e-9})
    assert generate(model, PROMPTS, nucleus).output_ids == generate(model, PROMPTS, GREEDY).output_ids


def test_groups_of_samples(model):
    config = GenerationConfig(**{**SAMPLE.__dict__, "num_samples": 3})
    gen = generate(model, PROMPTS[:2], config)
    assert len(gen) == 6 and gen.prompt_index == [0, 0, 0, 1, 1, 1]
    assert len({tuple(o) for o in gen.output_ids[:3]}) > 1
    assert gen.sequences()[4] == gen.prompt_ids[4] + gen.output_ids[4]


def test_hooks_fire_at_every_step_and_act(model):
    calls = []

    def scale(factor):
        def hook(z, hook):
            calls.append(z.shape[1])
            return z * factor
        return [("blocks.0.attn.hook_z", hook)]

    for config in (GREEDY, SAMPLE):
        base = generate(model, PROMPTS, config)
        calls.clear()
        same = generate(model, PROMPTS, config, fwd_hooks=scale(1.0))
        assert same.output_ids == base.output_ids
        # one prompt pass over the padded batch, then one call per new token
        assert calls == [len(same.prompt_ids[0])] + [1] * (config.max_new_tokens - 1)
        assert generate(model, PROMPTS, config, fwd_hooks=scale(0.0)).output_ids != base.output_ids
        assert generate(model, PROMPTS, config).output_ids == base.output_ids  # the hooks were removed
    by_filter = [(lambda name: name.endswith("attn.hook_z"), scale(0.0)[0][1])]  # a name filter, TL style
    greedy = generate(model, PROMPTS, GREEDY).output_ids
    assert generate(model, PROMPTS, GREEDY, fwd_hooks=by_filter).output_ids != greedy


def force(script: dict[int, str], rows: set[int] | None = None):
    """A hook on the logits that forces ``script[k]`` as the k-th generated token (of ``rows``, default all)."""
    tok = build_reference_tokenizer()
    step = [0]

    def hook(logits, hook):
        word = script.get(step[0])
        step[0] += 1
        if word is not None:
            logits = logits.clone()
            for r in rows if rows is not None else range(logits.shape[0]):
                logits[r, -1, tok.convert_tokens_to_ids(word)] = 1e4
        return logits

    return [("hook_unembed", hook)]


def test_stop_at_eos(model):
    config = GenerationConfig(max_new_tokens=10)
    base = generate(model, PROMPTS, GenerationConfig(max_new_tokens=10, stop_at_answer=False))
    gen = generate(model, PROMPTS, config, fwd_hooks=force({2: "[EOS]"}, rows={0}))
    eos = build_reference_tokenizer().eos_token_id
    # batches run longest prompt first, so PROMPTS[0] is row 0
    assert gen.stop_reasons[0] == "eos" and gen.output_ids[0] == base.output_ids[0][:2] + [eos]
    assert "[EOS]" not in gen.texts[0]
    for i in (1, 2, 3):  # the other rows of the batch are unaffected
        assert gen.output_ids[i] == base.output_ids[i][:len(gen.output_ids[i])]
        assert gen.stop_reasons[i] in STOP_REASONS


@pytest.mark.parametrize("sampled", [False, True])
def test_dropping_finished_sequences_gives_the_same_tokens(model, sampled):
    """Row 0 stops at its third token; the batch then shrinks, and every sequence decodes as in the fixed batch
    (a row-agnostic hook, like steering's, acts on the remaining rows alike)."""
    settings = dict(max_new_tokens=10, temperature=0.7 if sampled else 0.0, num_samples=2 if sampled else 1, seed=3)
    scale = [("blocks.0.hook_resid_post", lambda act, hook: act * 0.9)]
    fixed = generate(model, PROMPTS, GenerationConfig(**settings), fwd_hooks=[*force({2: "[EOS]"}, rows={0}), *scale])
    steps = []
    shrinking = generate(model, PROMPTS, GenerationConfig(**settings, drop_finished=True), fwd_hooks=[
        *force({2: "[EOS]"}, rows={0}), *scale, ("hook_embed", lambda act, hook: steps.append(act.shape[0]))])
    assert shrinking.output_ids == fixed.output_ids and shrinking.stop_reasons == fixed.stop_reasons
    assert fixed.stop_reasons[0] == "eos" and min(steps) < max(steps)  # the batch did shrink


@pytest.mark.parametrize(("words", "reason", "answer"), [
    (["rex", "is", "a", "wumpus", ".", "true", "."], "answer", "True"),
    (["rex", "is", "false"], "answer", "False"),
    (["rex", "\n", "\n", "q"], "blank_line", None),
])
def test_stop_at_answer(model, words, reason, answer):
    gen = generate(model, [PROMPTS[0]], GenerationConfig(max_new_tokens=8), fwd_hooks=force(dict(enumerate(words))))
    assert gen.stop_reasons == [reason] and gen.answers == [answer]
    expected = words[:words.index(answer.lower()) + 1] if answer else words[:3]
    assert build_reference_tokenizer().convert_ids_to_tokens(gen.output_ids[0]) == expected
    if answer == "True":
        assert gen.texts == ["rex is a wumpus. true"] and gen.steps == [[TokenSpan(0, 5)]]
    no_stop = generate(model, [PROMPTS[0]], GenerationConfig(max_new_tokens=8, stop_at_answer=False),
                       fwd_hooks=force(dict(enumerate(words))))
    assert no_stop.stop_reasons == ["length"] and len(no_stop.output_ids[0]) == 8


def test_prompt_too_long(model):
    with pytest.raises(ReasonlensError, match=f"context length {N_CTX}.*lower max_new_tokens"):
        generate(model, PROMPTS, GenerationConfig(max_new_tokens=N_CTX - 3))


def test_input_errors(model):
    with pytest.raises(ReasonlensError, match="unknown hook name"):
        generate(model, PROMPTS, GREEDY, fwd_hooks=[("blocks.0.attn.hook_zz", lambda z, hook: z)])
    with pytest.raises(ReasonlensError, match="no prompts"):
        generate(model, [], GREEDY)
    with pytest.raises(ReasonlensError, match="one string"):
        generate(model, PROMPTS[0], GREEDY)
    with pytest.raises(ReasonlensError, match="outside the vocabulary"):
        generate(model, [[1, 10_000]], GREEDY)
    with pytest.raises(ReasonlensError, match="temperature > 0"):
        GenerationConfig(num_samples=2)
    with pytest.raises(ReasonlensError, match="top_p"):
        GenerationConfig(top_p=0.0)


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    root = tmp_path_factory.mktemp("deep")
    return {arch: write_checkpoint(root / arch, arch, scale=5.0, n_layers=4) for arch in ("llama", "qwen2", "gemma",
                                                                                          "gpt2")}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2"])
@pytest.mark.parametrize("drop_finished", [False, True])
def test_a_kept_prompt_pass_gives_the_same_tokens(four_layers, arch, drop_finished):
    """Runs sharing a PromptPrefill enter each prompt pass at their first hooked block and decode exactly what runs
    without it decode; the unhooked pass is kept once per batch of the same rows."""
    from reasonlens.runtime import full_stack

    model = load_model(four_layers[arch])
    config = GenerationConfig(max_new_tokens=8, batch_size=3, drop_finished=drop_finished)
    prefill = PromptPrefill()
    for layer, gamma in ((1, 0.0), (1, 1.7), (2, 0.5)):
        hooks = [(f"blocks.{layer}.hook_resid_post", lambda act, hook, g=gamma: act * g),
                 (f"blocks.{layer + 1}.attn.hook_z", lambda act, hook: act * 0.8)]
        plain = generate(model, PROMPTS, config, fwd_hooks=hooks)
        kept = generate(model, PROMPTS, config, fwd_hooks=hooks, prefill=prefill)
        assert kept.output_ids == plain.output_ids and kept.stop_reasons == plain.stop_reasons
    assert len(prefill) == 2  # two batches (3 + 1 prompts), each run once without hooks
    changed = generate(model, PROMPTS, config, fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: act * 0.0)])
    assert changed.output_ids != generate(model, PROMPTS, config).output_ids  # the hooks do act
    with full_stack(model):  # a model that cannot be entered mid-stack keeps nothing and runs every block
        other = PromptPrefill()
        hooks = [("blocks.1.hook_resid_post", lambda act, hook: act * 0.5)]
        assert generate(model, PROMPTS, config, fwd_hooks=hooks, prefill=other).output_ids == \
            generate(model, PROMPTS, config, fwd_hooks=hooks).output_ids
        assert len(other) == 0


def test_first_hooked_block():
    assert first_hooked_block([("blocks.4.mlp.hook_post", print), ("blocks.2.attn.hook_z", print)]) == 2
    assert first_hooked_block([("blocks.4.mlp.hook_post", print), ("hook_embed", print)]) == 0
    assert first_hooked_block([(lambda name: True, print)]) == 0
    assert first_hooked_block([]) == 0

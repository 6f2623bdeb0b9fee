"""The horizon experiment: patched generations equal an independent Hugging Face oracle token for token, an
identity patch changes nothing, left padding changes nothing, the corruption hits the chosen statement and
keeps tokenization, save / load, the reference model's table, the heatmap, and bad input."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
import torch
from model_util import write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.ontology import generate
from reasonlens.patching import horizon as horizon_module
from reasonlens.patching.horizon import (
    STATEMENTS,
    HorizonConfig,
    HorizonResult,
    UncorruptibleStatementError,
    horizon_pair,
    measure_horizon,
)
from reasonlens.plot import horizon_heatmap

MAX_NEW = 6
# A prompt pass over all rows, then up to MAX_NEW tokens each; stages 0 and 2 of a 2-hop chain.
CONFIG = HorizonConfig(stages=[0, 2], layers=[0, 1], require_clean=False, max_new_tokens=MAX_NEW, batch_size=64)
_LABEL = re.compile(r"(?<!\w)(true|false)(?!\w)", re.IGNORECASE)
_BLANK = re.compile(r"\n[^\S\n]*\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # Weights scaled up so greedy choices are far from ties and outputs depend on the prompt.
    return write_checkpoint(tmp_path_factory.mktemp("horizon"), "llama", scale=5.0, n_ctx=256)


@pytest.fixture(scope="module")
def model(folder):
    return load_model(folder)


@pytest.fixture(scope="module")
def examples():
    # Mixed orderings and forms: prompts of different lengths, so batches are left-padded.
    return generate(3, hops=2, ordering=("postorder", "preorder", "random"), seed=11)


@pytest.fixture(scope="module")
def result(model, examples):
    return measure_horizon(model, examples, CONFIG, progress=False)


def oracle_generation(hf, tokenizer, clean: list[int], corrupted: list[int] | None, layer: int | None,
                      max_new: int) -> list[int]:
    """Greedy decoding by hand with a plain HF model: no cache, no padding, one full forward per token; with
    ``layer``, the input of its ``o_proj`` (every head's z) over the prompt positions is the corrupted run's."""
    attn = hf.model.layers[layer].self_attn if layer is not None else None
    with torch.no_grad():
        source = None
        if attn is not None:
            store = {}
            def keep(module, args):
                store["z"] = args[0].clone()

            handle = attn.o_proj.register_forward_pre_hook(keep)
            hf(torch.tensor([corrupted]))
            handle.remove()
            source = store["z"]
            assert source.shape[1] == len(clean)

        def patch(module, args):
            z = args[0].clone()
            z[:, :source.shape[1]] = source
            return (z, *args[1:])

        handle = attn.o_proj.register_forward_pre_hook(patch) if attn is not None else None
        out: list[int] = []
        try:
            while len(out) < max_new:
                token = int(hf(torch.tensor([clean + out])).logits[0, -1].argmax())
                out.append(token)
                text = tokenizer.decode(out, skip_special_tokens=True)
                if token == tokenizer.eos_token_id or _LABEL.search(text) or _BLANK.search(text):
                    break
        finally:
            if handle is not None:
                handle.remove()
    return out


def test_patched_generations_equal_hf_oracle(model, folder, examples, result):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    tok = model.tokenizer
    assert result.n == 3 and result.n_skipped == 0 and result.n_dropped == 0
    differs = 0
    for j, i in enumerate(result.example_indices):
        pair = horizon_pair(model, examples[i], rng=random.Random(f"reasonlens-horizon-0-{i}"))
        assert pair.replaced == result.replaced[j]
        for s, k in enumerate(result.stages):
            n = pair.stage_lengths[k]
            clean, corrupted = list(pair.clean[:n]), list(pair.corrupted[:n])
            unpatched = oracle_generation(hf, tok, clean, None, None, MAX_NEW)
            assert tok.decode(unpatched, skip_special_tokens=True) == result.clean_texts[j][s]
            on_corrupted = oracle_generation(hf, tok, corrupted, None, None, MAX_NEW)
            assert tok.decode(on_corrupted, skip_special_tokens=True) == result.corrupted_texts[j][s]
            for l, layer in enumerate(result.layers):
                expected = oracle_generation(hf, tok, clean, corrupted, layer, MAX_NEW)
                assert result.output_ids[j][s][l] == expected, (i, k, layer)
                differs += expected != unpatched
    assert differs > 0  # the patch matters somewhere, so the comparison is not vacuous


def test_identity_patch_changes_nothing(model, examples, monkeypatch):
    real = horizon_module.horizon_pair

    def clean_as_corrupted(*args, **kwargs):
        pair = real(*args, **kwargs)
        return dataclasses.replace(pair, corrupted=pair.clean)

    monkeypatch.setattr(horizon_module, "horizon_pair", clean_as_corrupted)
    out = measure_horizon(model, examples, CONFIG, progress=False)
    for j in range(out.n):
        for s in range(len(out.stages)):
            assert out.corrupted_texts[j][s] == out.clean_texts[j][s]
            assert all(text == out.clean_texts[j][s] for text in out.texts[j][s])
    assert torch.equal(out.intact.values.bool(), out.clean[:, :, None].expand_as(out.label_intact))


def test_left_padding_and_batching_do_not_change_results(model, examples, result):
    lengths = {horizon_pair(model, e, rng=random.Random(f"reasonlens-horizon-0-{i}")).stage_lengths[0]
               for i, e in enumerate(examples)}
    assert len(lengths) > 1  # the batch of 64 rows mixes prompt lengths, so most rows are left-padded
    one_by_one = measure_horizon(model, examples, dataclasses.replace(CONFIG, batch_size=1), progress=False)
    assert one_by_one.output_ids == result.output_ids
    assert one_by_one.clean_texts == result.clean_texts and one_by_one.corrupted_texts == result.corrupted_texts
    uneven = measure_horizon(model, examples, dataclasses.replace(CONFIG, batch_size=5), progress=False)
    assert uneven.output_ids == result.output_ids and uneven.texts == result.texts


@pytest.mark.parametrize("ordering", ["postorder", "preorder", "random"])
@pytest.mark.parametrize("statement", STATEMENTS)
def test_corruption_hits_the_statement_and_keeps_tokenization(model, ordering, statement):
    tok = model.tokenizer
    for example in generate(4, hops=3, ordering=ordering, style=("prontoqa" if ordering != "random" else "dutta"),
                            seed=5):
        for which in range(2 if statement == "proof_rule" else 1):
            pair = horizon_pair(model, example, statement=statement, which=which, rng=random.Random(which))
            old, new = pair.replaced
            assert pair.statement.role == statement and old == pair.statement.text
            if statement == "proof_rule":  # in the order the chain restates them
                assert old == [s.text for s in example.cot if s.role == "rule_copy"][which]
            assert pair.prompt.count(old) == 1 and pair.corrupted_prompt == pair.prompt.replace(old, new)
            # Fresh words of the same types, in the same surface form.
            fresh = set(re.findall(r"\w+", new.lower())) - set(re.findall(r"\w+", old.lower())) - {"a", "an"}
            seen = set(re.findall(r"\w+", (pair.prompt + pair.rests[0]).lower()))
            assert len(fresh) == 2 and not fresh & seen
            assert old.split()[0].lower() in ("every", "each") and new.split()[0] == old.split()[0] \
                or old.split()[0].lower() not in ("every", "each")
            assert (" not " in old) == (" not " in new) and old.count(" are ") == new.count(" are ")
            # Same length, every token outside the statement unchanged, the statement's tokens rewritten.
            a, b = pair.statement_tokens
            assert len(pair.clean) == len(pair.corrupted)
            differ = [i for i, (x, y) in enumerate(zip(pair.clean, pair.corrupted)) if x != y]
            assert differ and a <= differ[0] and differ[-1] < b
            assert tok.decode(list(pair.clean[a:b])) == old.lower()
            assert tok.decode(list(pair.corrupted[a:b])) == new.lower()
            # Stage k is the prompt plus the first k gold sentences, a prefix of the whole sequence.
            assert pair.stage_lengths[0] == len(model.to_tokens(pair.prompt)[0])
            for k, n in enumerate(pair.stage_lengths[1:], start=1):
                written = " ".join(s.text for s in example.cot[:k])
                assert tok.decode(list(pair.clean[:n]), skip_special_tokens=True).endswith(written.lower())
                assert pair.rests[k] == "".join(f" {s.text}" for s in example.cot[k:]) + " " + example.answer


def test_uncorruptible_examples_are_skipped_and_counted(model, monkeypatch):
    mixed = generate(4, hops=(1, 2), seed=2)
    hops_one = [i for i, e in enumerate(mixed) if e.hops == 1]
    assert hops_one and len(hops_one) < len(mixed)
    out = measure_horizon(model, mixed, dataclasses.replace(CONFIG, stages=[0], layers=[1]), progress=False)
    assert [i for i, _ in out.skipped] == hops_one and "no proof_rule" in out.skipped[0][1]
    assert out.n + out.n_skipped == len(mixed)
    # A replacement that does not tokenize (an unknown word) is rejected.
    monkeypatch.setattr(horizon_module, "replacement_pool", lambda word_type, lemma, example: ["qqzx", "zzqy"])
    with pytest.raises(UncorruptibleStatementError, match="changes tokenization"):
        horizon_pair(model, next(e for e in mixed if e.hops == 2), statement="entity_fact")
    with pytest.raises(ReasonlensError, match="none of the 4 examples"):
        measure_horizon(model, mixed, CONFIG, progress=False)


def test_reference_model_table_and_round_trip(tmp_path):
    reference = load_model("reasonlens-main")
    exs = generate(4, hops=2, ordering="preorder", distractor=False, extra_concepts=0, seed=2024)
    out = measure_horizon(reference, exs, HorizonConfig(batch_size=128), progress=False)
    n_layers = reference.cfg.n_layers
    assert out.fraction.values.shape == (5, n_layers) and out.stages == [0, 1, 2, 3, 4]
    assert out.fraction.labels == {"stage": [f"k={k}" for k in range(5)], "layer": [f"L{l}" for l in range(n_layers)]}
    assert out.n + out.n_dropped + out.n_skipped == 4 and out.n >= 1
    assert bool(out.clean[[out.candidate_indices.index(i) for i in out.example_indices]].all())
    ci = out.intervals()
    assert ci.shape == (5, n_layers, 2) and bool((ci[..., 0] <= out.fraction.values).all())
    assert bool((out.fraction.values <= ci[..., 1]).all())
    summary = out.summary()
    json.dumps(summary)
    assert [s["stage"] for s in summary["stages"]] == out.stages and summary["n"] == out.n
    for s in summary["stages"]:
        layer = s["first_intact_layer"]
        assert layer is None or (s["intact"][f"L{layer}"] >= 0.9 and s["first_intact_depth"] == (layer + 0.5) / n_layers)

    path = out.save(tmp_path / "horizon.pt")
    back = HorizonResult.load(path)
    assert back.summary() == summary
    assert torch.equal(back.intact.values, out.intact.values) and back.intact.labels == out.intact.labels
    for name in ("label_intact", "clean", "corrupted"):
        assert torch.equal(getattr(back, name), getattr(out, name))
    for name in ("stages", "layers", "n_layers", "n_examples", "example_indices", "candidate_indices", "skipped",
                 "replaced", "texts", "output_ids", "clean_texts", "corrupted_texts", "meta"):
        assert getattr(back, name) == getattr(out, name), name

    fig = horizon_heatmap(out)
    assert list(fig.data[0].x) == out.layer_labels and len(fig.data[0].y) == 5
    assert fig.data[0].z.tolist() == out.fraction.values.tolist()


def test_bad_input(model, examples, tmp_path):
    with pytest.raises(ReasonlensError, match="no examples"):
        measure_horizon(model, [], CONFIG, progress=False)
    with pytest.raises(ReasonlensError, match=r"layer\(s\) \[2\] out of range.*0\.\.1"):
        measure_horizon(model, examples, dataclasses.replace(CONFIG, layers=[0, 2]), progress=False)
    with pytest.raises(ReasonlensError, match=r"stage\(s\) \[6\] out of range.*0\.\.5"):
        measure_horizon(model, examples, dataclasses.replace(CONFIG, stages=[6]), progress=False)
    with pytest.raises(ReasonlensError, match="unknown statement"):
        HorizonConfig(statement="query")
    with pytest.raises(ReasonlensError, match="without repeats"):
        HorizonConfig(layers=[1, 1])
    with pytest.raises(ReasonlensError, match="batch_size"):
        HorizonConfig(batch_size=0)
    with pytest.raises(ReasonlensError, match="which=3"):
        horizon_pair(model, examples[0], statement="entity_fact", which=3)
    bare = load_model(write_checkpoint(tmp_path / "bare", tokenizer=False), compatibility_mode=False)
    with pytest.raises(ReasonlensError, match="has no tokenizer"):
        measure_horizon(bare, examples, CONFIG, progress=False)

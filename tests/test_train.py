"""The training recipe: loss weights, determinism, checkpoints that load as ordinary HF models."""

import json
import re

import pytest
import torch
from transformers import LlamaForCausalLM

from reasonlens.ontology import format_prompt, generate
from reasonlens.tokenizer import build_reference_tokenizer
from reasonlens.train import READOUT_FILE, ArchitectureConfig, TrainConfig, _Encoder, _Sampler, cpu_has_bfloat16, train

TINY = ArchitectureConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, max_positions=512)


def tiny_config(**kw) -> TrainConfig:
    base = dict(architecture=TINY, background_steps=2, cot_steps=4, batch_size=4, eval_every=3, eval_n=3,
                warmup_steps=1, curriculum_steps=2, threads=1)
    return TrainConfig(**{**base, **kw})


def test_decision_tokens_weighted_and_prompt_unweighted():
    tok = build_reference_tokenizer()
    enc = _Encoder(tok)
    ex = generate(1, hops=2, seed=3)[0]
    ids, weights = enc.cot_example(ex, [], decision_weight=5.0)
    assert len(ids) == len(weights)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    prompt_len = 1 + len(enc.ids(format_prompt(ex)))
    assert set(weights[:prompt_len]) == {0.0}
    # the property rule copy, the derived property fact and the label are the decision tokens
    n_decision = sum(len(enc.ids(" " + s.text)) for s in ex.cot if s.fact.kind == "property") + 1
    assert weights.count(5.0) == n_decision
    assert tok.decode(ids[-2:-1]).strip() == ex.answer.lower()


def test_sampler_is_deterministic_and_groups_by_length():
    tok = build_reference_tokenizer()
    cfg = tiny_config(batch_size=8)
    a = list(_Sampler(cfg, _Encoder(tok)).batches(6))
    b = list(_Sampler(cfg, _Encoder(tok)).batches(6))
    assert a == b
    assert len(a) == 6 and all(len(batch) == 8 for batch in a)
    spread = [max(len(s[0]) for s in batch) - min(len(s[0]) for s in batch) for batch in a]
    assert sum(spread) / len(spread) < 40


def test_training_is_reproducible_and_writes_checkpoints(tmp_path):
    log_a = train(tiny_config(seed=5), tmp_path / "a", progress=False)
    train(tiny_config(seed=5), tmp_path / "b", progress=False)
    wa = LlamaForCausalLM.from_pretrained(tmp_path / "a" / "final").state_dict()
    wb = LlamaForCausalLM.from_pretrained(tmp_path / "b" / "final").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "step-3" / "tokenizer.json").exists()
    saved = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert [e["step"] for e in saved["evals"]] == [3, 6] == [e["step"] for e in log_a["evals"]]
    for entry in saved["evals"]:
        for kind in ("fictional", "false"):
            assert set(entry[kind]) == {"label_accuracy", "proof_accuracy", "first_errors", "stop_accuracy",
                                        "continue_accuracy"}
            for key in ("label_accuracy", "proof_accuracy", "continue_accuracy"):
                assert 0.0 <= entry[kind][key] <= 1.0


def test_different_seeds_give_different_models(tmp_path):
    for seed in (0, 1):
        train(tiny_config(seed=seed, cot_steps=1, eval_every=100), tmp_path / str(seed), progress=False)
    wa = LlamaForCausalLM.from_pretrained(tmp_path / "0" / "final").state_dict()
    wb = LlamaForCausalLM.from_pretrained(tmp_path / "1" / "final").state_dict()
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stopping_early_reproduces_the_prefix_and_a_later_stage_continues(tmp_path):
    full = tiny_config(seed=2, cot_steps=8, eval_every=5)
    train(full, tmp_path / "full", progress=False)
    train(tiny_config(seed=2, cot_steps=8, eval_every=5, stop_after=5), tmp_path / "stopped", progress=False)
    a = LlamaForCausalLM.from_pretrained(tmp_path / "full" / "step-5").state_dict()
    b = LlamaForCausalLM.from_pretrained(tmp_path / "stopped" / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    stage2 = tiny_config(seed=2, background_steps=0, cot_steps=3, curriculum_steps=0, form_weight=4.0,
                         init_from=str(tmp_path / "stopped" / "final"), question_offset=full.next_question_offset)
    assert stage2.question_seeds[0] == full.question_seeds[1]
    train(stage2, tmp_path / "stage2", progress=False)
    c = LlamaForCausalLM.from_pretrained(tmp_path / "stage2" / "final").state_dict()
    assert not all(torch.equal(b[k], c[k]) for k in b)


def test_min_extra_concepts_reaches_the_questions_after_the_curriculum(monkeypatch):
    import reasonlens.train as train_module
    from reasonlens.evaluate import rule_choice_points

    drawn = []

    def spy(n, config, seed):
        exs = generate(n, config, seed=seed)
        drawn.append((config.min_extra_concepts, exs[0]))
        return exs

    monkeypatch.setattr(train_module, "generate", spy)
    cfg = tiny_config(background_steps=0, background_replay=0.0, curriculum_steps=2, min_extra_concepts=1,
                      kind_weights={"fictional": 0.5, "false": 0.5})
    sampler = _Sampler(cfg, _Encoder(build_reference_tokenizer()))
    for step in range(12):
        sampler.sequence(step)
    assert [m for m, _ in drawn] == [0, 0] + [1] * 10  # the curriculum keeps its short chains
    for _, ex in drawn[2:]:  # each offers a "stop" choice (as rule_choices labels it)
        assert any(step.fact.kind == "property" for _, step, _ in rule_choice_points(ex))


def test_form_weight_marks_the_first_token_of_each_restated_rule():
    tok = build_reference_tokenizer()
    enc = _Encoder(tok)
    ex = generate(1, hops=3, seed=8)[0]
    _, plain = enc.cot_example(ex, [], decision_weight=1.0)
    ids, weighted = enc.cot_example(ex, [], decision_weight=1.0, form_weight=7.0)
    assert weighted.count(7.0) == sum(s.role == "rule_copy" for s in ex.cot) and plain.count(7.0) == 0


def test_isa_rule_weight_covers_every_token_of_each_restated_is_a_rule():
    enc = _Encoder(build_reference_tokenizer())
    ex = generate(1, hops=3, seed=8)[0]
    _, weights = enc.cot_example(ex, [], decision_weight=1.0, isa_rule_weight=3.0)
    isa_rule_tokens = sum(len(enc.ids(" " + s.text)) for s in ex.cot if s.role == "rule_copy" and s.fact.kind == "isa")
    assert isa_rule_tokens > 0 and weights.count(3.0) == isa_rule_tokens


def test_sequences_carry_the_queried_property_for_the_auxiliary_loss():
    tok = build_reference_tokenizer()
    sampler = _Sampler(tiny_config(background_steps=1), _Encoder(tok))
    ids, weights, query = sampler.sequence(0)  # a background step
    assert query == -1 and len(ids) == len(weights)
    questions = [seq for seq in map(sampler.sequence, range(1, 7)) if seq[2] != -1]  # -1: background replay
    assert questions
    for ids, _, query in questions:
        asked = re.findall(r"true or false ?: \w+ is (?:not )?(\w+) ?\.", tok.decode(ids))[-1]
        assert tok.convert_ids_to_tokens(query) == asked


def test_query_auxiliary_loss_trains_only_the_model(tmp_path):
    """The auxiliary read-out changes training but is not part of the model: the checkpoint is the plain model."""
    plain = train(tiny_config(seed=5), tmp_path / "plain", progress=False)
    aux = train(tiny_config(seed=5, query_aux_weight=1.0, query_aux_layer=1), tmp_path / "aux", progress=False)
    assert aux["evals"][0]["loss"] > plain["evals"][0]["loss"]  # the auxiliary term is part of the loss
    wp = LlamaForCausalLM.from_pretrained(tmp_path / "plain" / "final").state_dict()
    wa = LlamaForCausalLM.from_pretrained(tmp_path / "aux" / "final").state_dict()
    assert wp.keys() == wa.keys() and not all(torch.equal(wp[k], wa[k]) for k in wp)


def test_a_later_stage_continues_the_saved_read_out(tmp_path):
    """Each checkpoint of a read-out run keeps the read-out beside it; a stage started from it continues that
    read-out instead of a fresh random one, whose gradient would swamp the model's at the stage's start."""
    import shutil

    from safetensors.torch import load_file

    stage1 = tiny_config(seed=3, query_aux_weight=1.0, query_aux_layer=1)
    train(stage1, tmp_path / "stage1", progress=False)
    saved = load_file(str(tmp_path / "stage1" / "final" / READOUT_FILE))
    assert saved["weight"].shape == (len(build_reference_tokenizer()), TINY.d_model)
    assert (tmp_path / "stage1" / "step-3" / READOUT_FILE).exists()
    shutil.copytree(tmp_path / "stage1" / "final", tmp_path / "fresh")
    (tmp_path / "fresh" / READOUT_FILE).unlink()
    later = dict(background_steps=0, cot_steps=3, question_offset=stage1.next_question_offset)
    logs, weights = {}, {}
    for name, start in (("carried", "stage1/final"), ("fresh", "fresh")):
        cfg = tiny_config(seed=3, query_aux_weight=1.0, query_aux_layer=1, init_from=str(tmp_path / start), **later)
        logs[name] = train(cfg, tmp_path / f"stage2-{name}", progress=False)
        weights[name] = LlamaForCausalLM.from_pretrained(tmp_path / f"stage2-{name}" / "final").state_dict()
    assert not all(torch.equal(weights["carried"][k], weights["fresh"][k]) for k in weights["carried"])
    assert logs["carried"]["evals"][0]["loss"] < logs["fresh"]["evals"][0]["loss"]


def test_query_auxiliary_read_out_rejects_a_layer_the_model_lacks(tmp_path):
    from reasonlens.errors import ReasonlensError

    with pytest.raises(ReasonlensError, match="query_aux_layer in 0..1"):
        train(tiny_config(query_aux_weight=1.0, query_aux_layer=2), tmp_path / "run", progress=False)
    with pytest.raises(ReasonlensError, match="query_aux_weight must be >= 0"):
        train(tiny_config(query_aux_weight=-1.0), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # rejected before a model is built or anything written


def test_bfloat16_training_tracks_float32_and_saves_a_standard_checkpoint(tmp_path):
    """bfloat16 autocast changes the arithmetic, not the recipe: the same data and a loss within a few percent of
    float32's, reproducible, and a checkpoint that loads as a plain float32 model with standard attention."""
    from reasonlens.model import load_model

    logs = {p: train(tiny_config(seed=4, precision=p), tmp_path / p, progress=False) for p in ("float32", "bfloat16")}
    again = train(tiny_config(seed=4, precision="bfloat16"), tmp_path / "again", progress=False)
    w32, w16, w16b = (LlamaForCausalLM.from_pretrained(tmp_path / d / "final") for d in ("float32", "bfloat16", "again"))
    assert not all(torch.equal(a, b) for a, b in zip(w32.state_dict().values(), w16.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(w16.state_dict().values(), w16b.state_dict().values()))
    assert logs["bfloat16"]["tokens"] == logs["float32"]["tokens"] == again["tokens"]
    for e32, e16 in zip(logs["float32"]["evals"], logs["bfloat16"]["evals"]):
        assert e16["loss"] == pytest.approx(e32["loss"], rel=0.03)
    assert w16.dtype == torch.float32 and w16.config._attn_implementation == "sdpa"
    assert "_attn_implementation" not in json.loads((tmp_path / "bfloat16" / "final" / "config.json").read_text())
    load_model(str(tmp_path / "bfloat16" / "final"))


def test_cpu_bfloat16_units_are_read_from_the_cpu_flags(tmp_path):
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512bw {}\nbugs\t\t: spectre_v1\n"
    assert cpu_has_bfloat16(cpuinfo.format("amx_bf16 amx_tile")) is True
    assert cpu_has_bfloat16(cpuinfo.format("avx512_bf16")) is True
    assert cpu_has_bfloat16(cpuinfo.format("avx512_vnni")) is False
    assert cpu_has_bfloat16("") is False


def test_bfloat16_training_on_a_cpu_without_bfloat16_units_warns_and_logs_it(tmp_path, monkeypatch):
    """Emulated bfloat16 is slower than float32: say so instead of silently training 1.5x slower."""
    import reasonlens.train as train_module

    monkeypatch.setattr(train_module, "cpu_has_bfloat16", lambda cpuinfo=None: False)
    with pytest.warns(UserWarning, match="no bfloat16 units.*precision='float32' is faster"):
        log = train(tiny_config(precision="bfloat16"), tmp_path / "b16", progress=False)
    assert log["cpu_bfloat16_units"] is False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(tiny_config(precision="float32"), tmp_path / "f32", progress=False)


def test_training_rejects_an_unknown_precision(tmp_path):
    from reasonlens.errors import ReasonlensError

    with pytest.raises(ReasonlensError, match="precision must be one of"):
        train(tiny_config(precision="float16"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_training_rejects_an_init_from_that_is_not_a_checkpoint(tmp_path):
    from reasonlens.errors import ReasonlensError

    with pytest.raises(ReasonlensError, match="is not a saved checkpoint.*'final' or 'step-\\*' folder"):
        train(tiny_config(init_from=str(tmp_path / "stage1")), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_answer_now_sequences_target_only_the_label():
    from reasonlens.ontology.prompt import ANSWER_NOW

    tok = build_reference_tokenizer(2)
    enc = _Encoder(tok)
    ex = generate(1, hops=3, seed=4)[0]
    ids, weights = enc.answer_now_example(ex, [], [0, 2, 5])
    text = tok.decode(ids[1:-1])
    chain = " ".join(ex.cot[i].text for i in (0, 2, 5))
    assert text == tok.decode(tok(format_prompt(ex) + " " + chain + ANSWER_NOW + " " + ex.answer,
                                  add_special_tokens=False)["input_ids"])
    targets = [t for t, w in zip(ids, weights) if w > 0]
    assert targets == [tok.convert_tokens_to_ids(ex.answer.lower()), tok.eos_token_id]
    empty, _ = enc.answer_now_example(ex, [], [])  # no chain at all: the question, the suffix, the label
    assert tok.decode(empty[1:-1]).endswith("a : so the answer is " + ex.answer.lower())


def test_v2_knobs_reach_the_questions_after_the_curriculum(monkeypatch):
    """sizes, answer_now_p and max_shots act after the curriculum only; the answer-now chains are ordered
    subsets of the gold chain (none of it .. all of it)."""
    import reasonlens.train as train_module
    from reasonlens.ontology.generator import V1_SIZES

    drawn = []

    def spy(n, config, seed):
        exs = generate(n, config, seed=seed)
        drawn.append((config, exs))
        return exs

    monkeypatch.setattr(train_module, "generate", spy)
    cfg = tiny_config(background_steps=0, background_replay=0.0, curriculum_steps=2, sizes=V1_SIZES, vocabulary=2,
                      answer_now_p=0.5, max_shots=2, few_shot_p=0.5)
    tok = build_reference_tokenizer(2)
    sampler = _Sampler(cfg, _Encoder(tok))
    seqs = [sampler.sequence(step) for step in range(200)]
    assert [c.below_concepts for c, _ in drawn[:2]] == [None, None]  # the curriculum keeps its short chains
    assert all(c.below_concepts == 4 and c.extra_concepts == 6 for c, _ in drawn[2:])
    assert max(len(exs[0].ontology.parents) + 1 for _, exs in drawn) == 10
    assert {len(exs) - 1 for _, exs in drawn[2:]} == {0, 1, 2}  # 0, 1 or 2 demonstrations
    answer = tok.convert_tokens_to_ids("answer")
    now = [(s, exs[0]) for s, (_, exs) in zip(seqs, drawn) if answer in s[0]]
    assert 60 < len(now) < 140
    lengths = set()
    for (ids, weights, _), ex in now:
        written = tok.decode(ids[1:ids.index(answer) - 2])  # before "so the"
        after_prompt = written.split("a :")[-1]
        steps = [s for s in ex.cot if tok.decode(tok(s.text, add_special_tokens=False)["input_ids"]) in after_prompt]
        lengths.add(len(steps))
        assert sum(w > 0 for w in weights) == 2  # the label and EOS
    assert 0 in lengths and max(lengths) >= 5


def test_v2_training_resizes_a_version_1_checkpoint_and_bad_knobs_are_errors(tmp_path):
    from reasonlens.errors import ReasonlensError

    train(tiny_config(seed=1), tmp_path / "v1", progress=False)
    v2 = tiny_config(seed=1, background_steps=0, curriculum_steps=0, init_from=str(tmp_path / "v1" / "final"),
                     vocabulary=2, answer_now_p=0.5, cot_steps=3)
    train(v2, tmp_path / "v2", progress=False)
    old = LlamaForCausalLM.from_pretrained(tmp_path / "v1" / "final")
    new = LlamaForCausalLM.from_pretrained(tmp_path / "v2" / "final")
    assert new.config.vocab_size == len(build_reference_tokenizer(2)) == old.config.vocab_size + 3
    bad_configs = [(dict(answer_now_p=0.5), "needs vocabulary=2"), (dict(vocabulary=3), "vocabulary must be"),
                   (dict(sizes={"depth": 3}), "unknown generator option"), (dict(max_shots=0), "max_shots")]
    if not torch.cuda.is_available():
        bad_configs.append((dict(device="cuda:0"), "no CUDA GPU"))
    for bad, message in bad_configs:
        with pytest.raises(ReasonlensError, match=message):
            train(tiny_config(**bad), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()

"""Subtask decomposition of k-hop CoTs and Dutta et al.'s clean / corrupted pairs."""

from __future__ import annotations

import random
import re

import pytest
import torch
from model_util import write_checkpoint
from tokenizers_util import SlowTokenizer, subword_tokenizers

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.ontology import generate
from reasonlens.ontology.lexicon import ENTITIES, FICTIONAL_CONCEPTS, PROPERTIES
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.patching.subtasks import (
    REGIONS,
    SUBTASK_KINDS,
    WORD_TYPES,
    UncorruptibleError,
    _runner_prefix,
    chain_subtasks,
    subtask_pair,
    subtask_pairs,
)
from reasonlens.tokenizer import build_reference_tokenizer

# Dutta et al.'s ten 2-hop subtasks (TMLR 2024: decision, copy and induction steps), then the label.
DUTTA_KINDS = ["decision", "copy", "decision", "copy", "decision", "induction", "decision", "copy", "decision",
               "induction", "decision"]
STYLES = [("prontoqa", "negation"), ("dutta", "wrong_property")]


@pytest.fixture(scope="module")
def tok():
    return build_reference_tokenizer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(write_checkpoint(tmp_path_factory.mktemp("llama"), "llama", n_ctx=512)))


@pytest.fixture(scope="module")
def main_model():
    return load_model("reasonlens-main")


def two_hop(n: int = 6, style: str = "prontoqa", false_mode: str = "negation", seed: int = 3):
    return generate(n, hops=2, kind="fictional", style=style, false_mode=false_mode, seed=seed)


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


# ------------------------------------------------------------------------------------------ decomposition


@pytest.mark.parametrize("style,false_mode", STYLES)
def test_two_hop_decomposition_is_duttas_ten_plus_label(style, false_mode):
    assert [s.kind for s in chain_subtasks(2)] == DUTTA_KINDS
    assert {s.kind for s in chain_subtasks(2)} == set(SUBTASK_KINDS) and {s.word_type for s in chain_subtasks(2)} == set(WORD_TYPES)
    for ex in two_hop(4, style, false_mode):
        found = chain_subtasks(ex)
        assert [s.kind for s in found] == DUTTA_KINDS
        assert [s.signature for s in found] == [s.signature for s in chain_subtasks(2)]
        entity, c0, c1 = ex.entity, ex.cot[0].fact.predicate, ex.cot[2].fact.predicate
        prop = ex.cot[-1].fact.predicate
        lemmas = [entity, c0, c0, c1, entity, c1, c1, prop, entity, prop, ex.answer]
        assert [s.lemma for s in found] == lemmas
        for s in found[:-1]:  # the word as written in the CoT sentence
            assert s.word is not None and s.word.lower() in words(ex.cot[s.step].text)
        assert found[-1].slot == "label" and found[-1].word == ex.answer and found[-1].step is None
        assert found[3].name.startswith("s3: copy '") and found[5].word_type == "concept"


@pytest.mark.parametrize("hops", [1, 2, 3, 4, 5])
def test_k_hop_counts_and_kinds(hops):
    layout = chain_subtasks(hops)
    assert len(layout) == 2 * (2 * hops + 1) + 1
    assert [s.index for s in layout] == list(range(len(layout)))
    assert sum(s.kind == "induction" for s in layout) == hops  # one derived fact per hop
    assert sum(s.kind == "copy" for s in layout) == hops + 1   # premise + one rule per hop
    assert layout[-2].word_type == "property" and layout[-1].word_type == "label"
    assert all(s.word is None for s in layout) and layout[1].name == "s1: copy (premise_copy predicate)"
    for ex in generate(3, hops=hops, kind=("fictional", "true", "false"), seed=hops):
        assert [s.signature for s in chain_subtasks(ex)] == [s.signature for s in layout]
        assert [s.word_type for s in chain_subtasks(ex)] == [s.word_type for s in layout]


def test_redundant_steps_extend_the_decomposition():
    ex = next(e for e in generate(40, hops=3, redundant_step_p=1.0, seed=1) if e.redundant_steps)
    found = chain_subtasks(ex)
    assert len(found) == 2 * len(ex.cot) + 1
    stated = {s.fact for s in ex.context}
    for s in found[:-1]:
        fact = ex.cot[s.step].fact
        assert s.kind == ("decision" if s.slot == "subject" else "copy" if fact in stated else "induction")


def test_bad_decomposition_input():
    with pytest.raises(ReasonlensError, match="positive integer"):
        chain_subtasks(0)


# ------------------------------------------------------------------------------------- one pair, reference


def check_pair(tok, ex, pair, demos=()):
    """Invariants of a pair under the word-level reference tokenizer."""
    text = format_prompt(ex, demos) + format_completion(ex)
    full = tok(text)["input_ids"]
    n = len(pair.clean)
    assert list(pair.clean) == full[:n] and pair.answer == full[n]  # gold prefix, next gold token
    assert len(pair.corrupted) == n
    differ = [i for i in range(n) if pair.clean[i] != pair.corrupted[i]]
    assert differ == [pair.corrupted_position]  # one word's (single) token
    assert pair.corrupted_answer != pair.answer
    written, replacement = pair.replaced
    assert replacement.lower() not in words(text) and written.lower() in words(text)
    if pair.subtask.word_type == "concept":  # plural stays plural
        assert written.lower().endswith("es") == replacement.lower().endswith("es")
    if pair.subtask.slot != "label":
        assert pair.clean[pair.source_position] == pair.answer  # the occurrence to copy holds the answer
        assert pair.source_position == pair.corrupted_position
        assert pair.corrupted[pair.source_position] == pair.corrupted_answer
    else:
        assert tok.convert_ids_to_tokens(pair.corrupted_answer) == ("false" if ex.label else "true")
    regions = pair.regions
    assert set(regions) == set(REGIONS)
    assert regions["few_shot"][0] == 1 and regions["cot"][1] == n  # after BOS, up to the target
    assert regions["few_shot"][1] == regions["question"][0] and regions["question"][1] == regions["cot"][0]
    start, end = regions[pair.source_region]
    assert start <= pair.source_position < end


@pytest.mark.parametrize("style,false_mode", STYLES)
def test_pairs_on_the_reference_tokenizer(tok, style, false_mode):
    checked = 0
    for ex in two_hop(6, style, false_mode):
        for s in chain_subtasks(ex):
            try:
                pair = subtask_pair(tok, ex, s.index, rng=random.Random(s.index))
            except UncorruptibleError as e:  # only the label of a chain with a negated conclusion
                assert s.slot == "label" and "flips the label" in str(e) and ex.cot[-1].fact.negated
                continue
            check_pair(tok, ex, pair)
            checked += 1
    assert checked >= 6 * 10


def test_dutta_corruption_rule(tok):
    """As in Dutta et al.'s stored pairs: subtask 0 corrupts the query entity, 5 the rule just restated in the
    CoT, 9 the property of the restated property rule; 1 (nothing written yet) the entity fact."""
    ex = two_hop(1, "dutta", "wrong_property")[0]
    prompt = format_prompt(ex)

    def n_tokens(text: str) -> int:
        return len(tok(text)["input_ids"])

    def sentence_tokens(sentence: str, text: str) -> range:
        start = text.rindex(sentence)
        return range(n_tokens(text[:start]), n_tokens(text[:start + len(sentence)]))

    completion = format_completion(ex)
    s0, s1, s5, s9 = (subtask_pair(tok, ex, k) for k in (0, 1, 5, 9))
    assert s0.source_region == "question" and s0.source_position in sentence_tokens(ex.query.text, prompt)
    assert s1.source_region == "question" and s1.source_position in sentence_tokens(ex.context[-1].text, prompt)
    assert ex.context[-1].role == "entity_fact"
    for pair, step in ((s5, 1), (s9, 3)):
        cot_sentence = sentence_tokens(ex.cot[step].text, prompt + completion[:completion.index(ex.cot[step + 1].text)])
        assert pair.source_region == "cot" and pair.source_position in cot_sentence
        assert pair.source_position == cot_sentence[-2]  # the rule's predicate, before the period


def test_replacement_is_random_but_seeded(tok):
    ex = two_hop(1)[0]
    picks = {subtask_pair(tok, ex, 5, rng=random.Random(seed)).replaced[1] for seed in range(12)}
    assert len(picks) > 1 and all(p.lower() in FICTIONAL_CONCEPTS for p in picks)
    assert subtask_pair(tok, ex, 5, rng=random.Random(4)) == subtask_pair(tok, ex, 5, rng=random.Random(4))
    assert subtask_pair(tok, ex, 0).replaced[1] in ENTITIES and subtask_pair(tok, ex, 9).replaced[1] in PROPERTIES


def test_true_ontology_draws_real_words(tok):
    ex = generate(1, hops=2, kind="true", seed=2)[0]
    pair = subtask_pair(tok, ex, 5)
    check_pair(tok, ex, pair)
    assert pair.replaced[1].lower() not in FICTIONAL_CONCEPTS


def test_demonstrations_make_a_few_shot_region(tok):
    ex, demo = two_hop(2)
    for s in (0, 5):
        pair = subtask_pair(tok, ex, s, demonstrations=[demo])
        check_pair(tok, ex, pair, [demo])
        start, end = pair.regions["few_shot"]
        assert end - start == len(tok(format_prompt(demo) + format_completion(demo) + "\n\n")["input_ids"]) - 1
        assert pair.source_region != "few_shot"


def test_label_pairs_flip_the_label(tok):
    examples = two_hop(30)
    true_ex = next(e for e in examples if e.label and not e.cot[-1].fact.negated)
    pair = subtask_pair(tok, true_ex, 10)
    assert pair.source_region == "question" and pair.replaced[0] == true_ex.query.fact.predicate
    # a negated query about the positive conclusion: a fresh property makes it hold (closed world)
    negated_query = next(e for e in examples if not e.label and not e.cot[-1].fact.negated)
    pair = subtask_pair(tok, negated_query, 10)
    assert pair.replaced[0] == negated_query.query.fact.predicate and pair.replaced[1] != pair.replaced[0]
    assert tok.convert_ids_to_tokens(pair.corrupted_answer) == "true"
    wrong = next(e for e in two_hop(20, "dutta", "wrong_property")
                 if not e.label and not e.cot[-1].fact.negated)
    pair = subtask_pair(tok, wrong, 10)
    assert pair.replaced == (wrong.query.fact.predicate, wrong.cot[-1].fact.predicate)  # now it holds: True
    negated_conclusion = next(e for e in examples if e.cot[-1].fact.negated)
    with pytest.raises(UncorruptibleError, match="flips the label"):
        subtask_pair(tok, negated_conclusion, 10)


def _expected_start(ex, subtask, prompt: str) -> tuple[int, str]:
    """Where the sentence starts whose word each subtask's corruption must replace, and the sentence: the
    query for the label and the chain's first word, the stated sentence for a copy, the previous derived
    fact for an entity or rule subject, the rule just restated for an induction (by hand, from the roles)."""
    if subtask.slot == "label" or subtask.index == 0:
        return prompt.rindex(ex.query.text), ex.query.text
    if subtask.kind == "copy":
        stated = next(s.text for s in ex.context if s.fact == ex.cot[subtask.step].fact)
        return prompt.index(stated), stated
    j = subtask.step - (2 if subtask.word_type == "entity" else 1)
    assert ex.cot[j].role in ("premise_copy", "derived_fact", "rule_copy")
    return len(prompt) + 1 + sum(len(c.text) + 1 for c in ex.cot[:j]), ex.cot[j].text


@pytest.mark.parametrize("ordering", ["postorder", "preorder", "random"])
def test_corruption_hits_the_sentence_that_is_read_under_every_ordering(tok, ordering):
    """Copies corrupt the stated sentence they restate (not a later mention elsewhere in the question, not
    the query), the other chain words their previous mention in the chain, whatever the context order."""
    examples = generate(12, hops=2, kind="fictional", seed=5, ordering=ordering, distractor=False,
                        extra_concepts=0)
    hit = 0
    for ex in examples:
        prompt = format_prompt(ex)
        text = prompt + format_completion(ex)
        for s in chain_subtasks(ex):
            try:
                pair = subtask_pair(tok, ex, s.index, rng=random.Random(s.index))
            except UncorruptibleError:
                assert s.slot == "label" and ex.cot[-1].fact.negated
                continue
            start, sentence = _expected_start(ex, s, prompt)
            assert text[start:start + len(sentence)] == sentence
            first = len(tok(text[:start])["input_ids"])  # tokens before the sentence (BOS included)
            last = len(tok(text[:start + len(sentence)])["input_ids"])
            assert first <= pair.corrupted_position < last, (s.name, sentence, pair.replaced)
            hit += 1
    assert hit >= 12 * 10
    assert {e.meta["ordering"] for e in examples} == {ordering}


def test_pair_bad_input(tok):
    ex = two_hop(1)[0]
    with pytest.raises(ReasonlensError, match="out of range"):
        subtask_pair(tok, ex, 11)
    with pytest.raises(ReasonlensError, match="slow tokenizer"):
        subtask_pair(SlowTokenizer(), ex, 0)
    with pytest.raises(UncorruptibleError, match="corruption changes tokenization"):  # unknown to the vocabulary
        subtask_pair(tok, ex, 0, replacements={"entity": ["Zyxw"]})


# ---------------------------------------------------------------------------------------- subword tokenizers


@pytest.mark.parametrize("name", ["byte-level", "byte-level-prefix-space", "metaspace"])
def test_subword_tokenizers_corrupt_equal_length_or_raise(name):
    tok = subword_tokenizers()[name]
    worked = 0
    for ex in two_hop(5, "dutta", "wrong_property") + two_hop(5):
        text = format_prompt(ex) + format_completion(ex)
        for s in chain_subtasks(ex):
            try:
                pair = subtask_pair(tok, ex, s.index)
            except UncorruptibleError as e:
                assert "corruption changes tokenization" in str(e) or "flips the label" in str(e)
                continue
            worked += 1
            n = len(pair.clean)
            assert len(pair.corrupted) == n and list(pair.clean) == tok(text)["input_ids"][:n]
            differ = [i for i in range(n) if pair.clean[i] != pair.corrupted[i]]
            assert differ and differ[0] == pair.corrupted_position
            clean_text, corrupted_text = tok.decode(list(pair.clean)), tok.decode(list(pair.corrupted))
            written, replacement = pair.replaced  # the texts differ by one replaced word
            assert any(clean_text[:m.start()] + replacement + clean_text[m.end():] == corrupted_text
                       for m in re.finditer(re.escape(written), clean_text))
            assert pair.corrupted_answer != pair.answer
            first_piece = tok.decode([pair.answer]).strip()  # the answer: the first token of the target word
            assert first_piece and (s.word or "").startswith(first_piece)
    assert worked >= 60


def test_subword_length_change_raises():
    tok = subword_tokenizers()["byte-level"]
    ex = two_hop(1)[0]
    long_name = "Bartholomew"
    assert len(tok(" " + long_name)["input_ids"]) != len(tok(" " + ex.entity)["input_ids"])
    with pytest.raises(UncorruptibleError, match="corruption changes tokenization"):
        subtask_pair(tok, ex, 0, replacements={"entity": [long_name]})


def test_runner_bos_is_prepended(tmp_path):
    """A tokenizer without BOS (GPT-2 style): the runner's BOS leads every prefix, as when generating."""
    from model_util import write_subword_gpt2

    tok = subword_tokenizers()["byte-level"]
    model = load_model(str(write_subword_gpt2(tmp_path, tok)))
    ex = two_hop(1)[0]
    prefix = _runner_prefix(model, tok, format_prompt(ex))
    assert prefix == [tok.bos_token_id]
    pair = subtask_pair(tok, ex, 5, runner_prefix=prefix)
    bare = subtask_pair(tok, ex, 5)
    full = model.to_tokens(format_prompt(ex) + format_completion(ex))[0].tolist()
    assert list(pair.clean) == full[:len(pair.clean)] and len(pair.clean) == len(bare.clean) + 1
    assert pair.source_position == bare.source_position + 1 and pair.regions["cot"][1] == bare.regions["cot"][1] + 1
    pairs = subtask_pairs(model, two_hop(3), 5, skip_uncorruptible=True)
    assert pairs.n_kept + pairs.n_dropped + pairs.n_skipped == 3


# ----------------------------------------------------------------------------------------- batched pairs


def oracle_kept(model, tok, examples, subtask):
    """Indices whose clean prefix, run alone and unpadded, predicts the answer."""
    kept = []
    for i, ex in enumerate(examples):
        pair = subtask_pair(tok, ex, subtask)  # the clean prefix does not depend on the corruption
        with torch.no_grad():
            logits = model(torch.tensor([pair.clean]))
        if int(logits[0, -1].argmax()) == pair.answer:
            kept.append(i)
    return kept


def test_tiny_random_model_drops_and_counts(tiny, tok):
    examples = two_hop(8)
    pairs = subtask_pairs(tiny, examples, 5, batch_size=3)
    assert pairs.n_kept + pairs.n_dropped == 8 and pairs.n_skipped == 0
    assert pairs.n_dropped >= 7  # a random model almost never predicts the answer
    assert pairs.kept_indices == oracle_kept(tiny, tok, examples, 5)
    assert pairs.clean.shape[0] == len(pairs) == pairs.n_kept


def test_main_model_keeps_most_and_batches_exactly(main_model, tok):
    examples = two_hop(12, seed=11)
    pairs = subtask_pairs(main_model, examples, 5, batch_size=5, seed=1)
    assert pairs.kind == "induction" and pairs.name == "s5: induction (derived_fact predicate)"
    assert pairs.n_kept >= 9 and pairs.n_kept + pairs.n_dropped == 12
    assert pairs.kept_indices == oracle_kept(main_model, tok, examples, 5)
    assert pairs.examples == [examples[i] for i in pairs.kept_indices]
    assert pairs.meta == {"seed": 1, "demonstrations": 0}
    n, width = pairs.clean.shape
    assert pairs.corrupted.shape == pairs.attention_mask.shape == (n, width)
    rows = torch.arange(n)
    assert torch.equal(pairs.clean[rows, pairs.source_position], pairs.answer)
    assert torch.equal(pairs.corrupted[rows, pairs.corrupted_position], pairs.corrupted_answer)
    assert ((pairs.clean != pairs.corrupted).sum(-1) == 1).all()
    assert (pairs.attention_mask[:, -1] == 1).all()
    for r in range(n):
        pad = int((pairs.attention_mask[r] == 0).sum())
        assert (pairs.clean[r, :pad] == tok.pad_token_id).all() and pairs.clean[r, pad] == tok.bos_token_id
        assert pairs.regions[r]["few_shot"][0] == pad + 1 and pairs.regions[r]["cot"][1] == width
        assert pairs.str_tokens[r][pad:] == tok.convert_ids_to_tokens(pairs.clean[r, pad:].tolist())
        assert pairs.source_region[r] == "cot"
    assert pairs.position_ids[0, -1] == pairs.attention_mask[0].sum() - 1
    # the padded batch's predictions are the unpadded ones
    with torch.no_grad():
        logits = main_model(pairs.clean, attention_mask=pairs.attention_mask, position_ids=pairs.position_ids)
    assert torch.equal(logits[:, -1].argmax(-1), pairs.answer)
    same = subtask_pairs(main_model, examples, 5, batch_size=12, seed=1)
    assert torch.equal(same.clean, pairs.clean) and torch.equal(same.corrupted, pairs.corrupted)


def test_main_model_label_subtask_skips_when_asked(main_model):
    examples = two_hop(8)
    with pytest.raises(UncorruptibleError, match="skip_uncorruptible=True"):
        subtask_pairs(main_model, examples, 10)
    pairs = subtask_pairs(main_model, examples, 10, skip_uncorruptible=True, demonstrations=1)
    assert pairs.n_skipped == sum(e.cot[-1].fact.negated for e in examples)
    assert pairs.n_kept + pairs.n_dropped + pairs.n_skipped == 8
    assert all(r["few_shot"][1] > r["few_shot"][0] for r in pairs.regions)


def test_all_dropped_gives_empty_tensors(tmp_path):
    silent = load_model(str(write_checkpoint(tmp_path, "llama", scale=0.0, n_ctx=512)))  # always predicts [PAD]
    pairs = subtask_pairs(silent, two_hop(3), 5)
    assert (pairs.n_kept, pairs.n_dropped) == (0, 3)
    assert pairs.clean.shape == pairs.attention_mask.shape == (0, 0) and pairs.answer.shape == (0,)
    assert pairs.examples == [] and pairs.regions == [] and pairs.str_tokens == []


def test_batched_bad_input(tiny, tmp_path):
    with pytest.raises(ReasonlensError, match="no examples"):
        subtask_pairs(tiny, [], 0)
    with pytest.raises(ReasonlensError, match="out of range"):
        subtask_pairs(tiny, generate(2, hops=1, seed=0), 7)
    mixed = generate(1, hops=1, seed=0) + generate(1, hops=2, seed=0)
    with pytest.raises(ReasonlensError, match="disagree on subtask 3"):
        subtask_pairs(tiny, mixed, 3)
    with pytest.raises(ReasonlensError, match="demonstrations"):
        subtask_pairs(tiny, two_hop(2), 0, demonstrations=2)
    with pytest.raises(ReasonlensError, match="batch_size"):
        subtask_pairs(tiny, two_hop(2), 0, batch_size=0)
    short = load_model(str(write_checkpoint(tmp_path, "llama", n_ctx=64)))
    with pytest.raises(ReasonlensError, match="context length"):
        subtask_pairs(short, two_hop(2), 9)

"""Span alignment on the reference word-level tokenizer and on tiny byte-level / Metaspace subword BPEs."""

from __future__ import annotations

import re

import pytest
from tokenizers_util import SlowTokenizer, subword_tokenizers

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import generate
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.spans import (
    TokenSpan,
    char_to_token_spans,
    example_spans,
    sentence_char_spans,
    single_token_id,
    step_spans,
    word_token_spans,
)
from reasonlens.tokenizer import build_reference_tokenizer

NAMES = ("reference", "byte-level", "byte-level-prefix-space", "metaspace")
TEXT = "Every wumpus is a yumpus. Wumpuses are not wooden.\nPolly is a wumpus. True"


@pytest.fixture(scope="module")
def toks():
    return {"reference": build_reference_tokenizer(), **subword_tokenizers()}


@pytest.fixture(scope="module")
def pairs():
    """(example, demonstrations) for both prompt styles and all ontology kinds, unseen by the tokenizers."""
    out = []
    for style in ("prontoqa", "dutta"):
        for kind in ("fictional", "true", "false"):
            ex, demo = generate(2, hops=(1, 3), kind=kind, style=style, seed=99)
            out += [(ex, ()), (ex, (demo,))]
    return out


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def decoded(tok, ids, span: TokenSpan) -> str:
    return squash(tok.decode(list(ids)[span.slice()]))


def assert_ordered_and_tight(tok, ids, spans: list[TokenSpan]) -> None:
    """Spans are in order, do not overlap, and only whitespace or special tokens lie between them."""
    for prev, nxt in zip(spans, spans[1:]):
        assert prev.end <= nxt.start
        assert squash(tok.decode(list(ids)[prev.end:nxt.start], skip_special_tokens=True)) == ""


@pytest.mark.parametrize("name", NAMES)
def test_example_spans_round_trip(toks, pairs, name):
    tok = toks[name]
    for ex, demos in pairs:
        sp = example_spans(tok, ex, demos)
        ids = sp.input_ids
        assert sp.text == format_prompt(ex, demos) + format_completion(ex)
        assert list(ids) == tok(sp.text)["input_ids"]
        assert len(sp.context) == len(ex.context) and len(sp.cot) == len(ex.cot)
        for span, sentence in zip([*sp.context, sp.query, *sp.cot], [*ex.context, ex.query, *ex.cot]):
            assert span.text == sentence.text
            assert decoded(tok, ids, span) == squash(sentence.text)
        assert decoded(tok, ids, sp.answer) == ex.answer.lower()
        assert_ordered_and_tight(tok, ids, [*sp.context, sp.query])
        assert_ordered_and_tight(tok, ids, [*sp.cot, sp.answer])
        assert sp.query.end <= sp.prompt_len <= sp.cot[0].start
        prompt = format_prompt(ex, demos)
        assert squash(tok.decode(list(ids[:sp.prompt_len]), skip_special_tokens=True)) == squash(prompt)
        assert squash(tok.decode(list(ids[sp.prompt_len:]))) == squash(format_completion(ex))


@pytest.mark.parametrize("name", NAMES)
def test_example_spans_prompt_only(toks, pairs, name):
    tok = toks[name]
    ex, demos = pairs[1]
    sp, full = example_spans(tok, ex, demos, with_completion=False), example_spans(tok, ex, demos)
    assert sp.cot == () and sp.answer is None and sp.prompt_len == len(sp.input_ids)
    assert sp.context == full.context and sp.query == full.query and sp.prompt_len == full.prompt_len


@pytest.mark.parametrize("name", NAMES)
def test_step_spans_of_completion_match_example_spans(toks, pairs, name):
    tok = toks[name]
    for ex, demos in pairs:
        sp = example_spans(tok, ex, demos)
        prompt_chars = len(format_prompt(ex, demos))
        assert step_spans(tok, sp.text, start_char=prompt_chars) == list(sp.cot)


def test_step_spans_of_completion_alone_follow_the_sentences(toks):
    ex = generate(1, hops=2, seed=3)[0]
    for tok in toks.values():
        steps = step_spans(tok, format_completion(ex))
        ids = tok(format_completion(ex))["input_ids"]
        assert [decoded(tok, ids, s) for s in steps] == [squash(s.text) for s in ex.cot]


def test_sentence_char_spans():
    text = "### Input:\nEvery wumpus is a yumpus.  True or false: Polly is a yumpus.\n### Response:\nPolly is a"
    assert [text[s:e] for s, e in sentence_char_spans(text)] == [
        "Every wumpus is a yumpus.", "True or false: Polly is a yumpus."]
    text = "Q: Wumpuses are wooden.\nA: Polly is a wumpus.\nWumpuses are wooden.\n\nTrue"
    assert [text[s:e] for s, e in sentence_char_spans(text)] == [
        "Wumpuses are wooden.", "Polly is a wumpus.", "Wumpuses are wooden."]
    assert sentence_char_spans("") == [] and sentence_char_spans("True") == []


@pytest.mark.parametrize("name", NAMES)
def test_word_token_spans(toks, name):
    tok = toks[name]
    ids = tok(TEXT)["input_ids"]
    spans = word_token_spans(tok, TEXT, "wumpus", snap=True)
    assert len(spans) == 2 and all("wumpus" in decoded(tok, ids, s) for s in spans)
    assert len(word_token_spans(tok, TEXT, "WUMPUS", ignore_case=True, snap=True)) == 2
    assert word_token_spans(tok, TEXT, "WUMPUS") == [] and word_token_spans(tok, TEXT, "yumpuses") == []
    assert [decoded(tok, ids, s) for s in word_token_spans(tok, TEXT, "Wumpuses", snap=True)] == ["wumpuses"]


def test_word_token_spans_refuse_a_word_glued_to_a_period(toks):
    tok = toks["metaspace"]  # "wumpus." ends in the token "umpus."
    with pytest.raises(ReasonlensError, match=r"'wumpus' does not align .*'umpus\.'.*snap=True"):
        word_token_spans(tok, TEXT, "wumpus")
    assert tok.convert_ids_to_tokens(tok(TEXT)["input_ids"])[word_token_spans(tok, TEXT, "wumpus", snap=True)[1]
                                                             .slice()] == ["▁w", "umpus."]


@pytest.mark.parametrize("name", NAMES)
def test_misaligned_char_span_raises_unless_snapped(toks, name):
    tok = toks[name]
    enc = tok(TEXT, return_offsets_mapping=True)
    i = next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if e - s >= 3 and TEXT[s:e].strip() == TEXT[s:e])
    s, e = enc["offset_mapping"][i]
    token = tok.convert_ids_to_tokens(enc["input_ids"][i])
    with pytest.raises(ReasonlensError, match=re.escape(repr(token))):
        char_to_token_spans(tok, TEXT, [(s + 1, e)])
    with pytest.raises(ReasonlensError, match="snap=True"):
        char_to_token_spans(tok, TEXT, [(s, e - 1)])
    assert char_to_token_spans(tok, TEXT, [(s + 1, e - 1)], snap=True) == [TokenSpan(i, i + 1)]
    assert char_to_token_spans(tok, TEXT, [(s, e)]) == [TokenSpan(i, i + 1)]


@pytest.mark.parametrize("name", NAMES)
def test_char_spans_ignore_edge_whitespace(toks, name):
    tok = toks[name]
    start = TEXT.index("Wumpuses")
    end = TEXT.index("Polly")
    assert char_to_token_spans(tok, TEXT, [(start - 1, end)]) == char_to_token_spans(tok, TEXT, [(start, end - 1)])
    assert char_to_token_spans(tok, TEXT, [(start, end)])[0].text == "Wumpuses are not wooden."


def test_bos_is_outside_every_span(toks):
    for name in ("reference", "metaspace"):
        tok = toks[name]
        assert tok(TEXT)["input_ids"][0] == tok.bos_token_id
        assert char_to_token_spans(tok, TEXT, [(0, 5)])[0].start == 1
        assert char_to_token_spans(tok, TEXT, [(0, 5)], add_special_tokens=False)[0].start == 0


@pytest.mark.parametrize("name", NAMES)
def test_single_token_id_matches_the_token_in_context(toks, name):
    tok = toks[name]
    ids = tok("Polly is a wumpus. True")["input_ids"]
    (is_span,) = word_token_spans(tok, "Polly is a wumpus. True", "is")
    assert single_token_id(tok, "is") == ids[is_span.start] and len(is_span) == 1
    assert single_token_id(tok, "True") == ids[-1]


@pytest.mark.parametrize("name", ["byte-level", "byte-level-prefix-space", "metaspace"])
def test_single_token_id_refuses_split_words(toks, name):
    tok = toks[name]
    with pytest.raises(ReasonlensError, match=r"'wumpus' is \d tokens in this tokenizer \(\[.*'umpus'\]\); "
                                              r"this method needs one token per word — use a span-level method"):
        single_token_id(tok, "wumpus")
    with pytest.raises(ReasonlensError, match="'True' is 3 tokens"):
        single_token_id(tok, "True", context="after-newline")


def test_single_token_id_on_the_reference_tokenizer(toks):
    tok = toks["reference"]
    assert single_token_id(tok, "Wumpus") == single_token_id(tok, "wumpus", context="after-newline")
    with pytest.raises(ReasonlensError, match=r"'Wumpuses' is 2 tokens .*\['wumpus', '##es'\]"):
        single_token_id(tok, "Wumpuses")
    with pytest.raises(ReasonlensError, match="not in this tokenizer's vocabulary"):
        single_token_id(tok, "zorblax")
    with pytest.raises(ReasonlensError, match="not a single word"):
        single_token_id(tok, "a wumpus")


CALLS = {
    "char_to_token_spans": lambda tok: char_to_token_spans(tok, TEXT, [(0, 5)]),
    "step_spans": lambda tok: step_spans(tok, TEXT),
    "example_spans": lambda tok: example_spans(tok, generate(1, hops=1, seed=0)[0]),
    "word_token_spans": lambda tok: word_token_spans(tok, TEXT, "wumpus"),
    "single_token_id": lambda tok: single_token_id(tok, "wumpus"),
}


@pytest.mark.parametrize("call", CALLS)
def test_missing_or_slow_tokenizer_is_a_clear_error(call):
    with pytest.raises(ReasonlensError, match="no tokenizer"):
        CALLS[call](None)
    with pytest.raises(ReasonlensError, match="SlowTokenizer is a slow tokenizer without character offsets.*use_fast"):
        CALLS[call](SlowTokenizer())


def test_bad_spans_are_clear_errors(toks):
    tok = toks["reference"]
    with pytest.raises(ReasonlensError, match="outside the text"):
        char_to_token_spans(tok, TEXT, [(0, len(TEXT) + 1)])
    with pytest.raises(ReasonlensError, match="holds no text"):
        char_to_token_spans(tok, TEXT, [(5, 6)])
    with pytest.raises(ReasonlensError, match="blank"):
        word_token_spans(tok, TEXT, " ")
    with pytest.raises(ReasonlensError, match="start < end"):
        TokenSpan(3, 3)

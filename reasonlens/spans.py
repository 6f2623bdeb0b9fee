"""Token spans of sentences, chain-of-thought steps and words, for any fast Hugging Face tokenizer.

Every step-level method asks this module which token positions hold a sentence, a CoT step or a word.
Alignment goes through the tokenizer's character offsets, so it holds for word-level (the reference
models), byte-level BPE (GPT-2 ``Ġword``), Metaspace / sentencepiece (Llama ``▁word``) and WordPiece
(``##es``) tokenizers alike. A token's *content* is the characters its offsets cover, minus surrounding
whitespace; tokens that are only whitespace (``Ġ``, ``▁``, ``\\n``) and special tokens (BOS) have no
content and belong to no span. A span is the run of tokens whose content overlaps its characters.

Positions are those of ``tokenizer(text)`` (``add_special_tokens=True`` by default). A runner that prepends
a BOS the tokenizer does not add itself (TransformerLens on GPT-2) moves every position by one:
``span.shift(1)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from transformers import PreTrainedTokenizerBase

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.ontology.sentences import sentence_char_spans
from reasonlens.ontology.types import Example

# Where a word starts in the probe text of :func:`single_token_id`; "mid-sentence" counts the space before it.
_PROBES: dict[str, tuple[str, int]] = {"mid-sentence": ("x ", 1), "after-newline": ("x\n", 2)}


@dataclass(frozen=True)
class TokenSpan:
    """Token positions ``[start, end)`` holding ``text`` (the characters the span was built from).

    ``text`` is for reading and error messages; it takes no part in equality.

    >>> span = TokenSpan(2, 5, "Polly is a wumpus.")
    >>> len(span), list(range(8))[span.slice()], span.shift(1) == TokenSpan(3, 6)
    (3, [2, 3, 4], True)
    """

    start: int
    end: int
    text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ReasonlensError(f"a token span needs 0 <= start < end, got [{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    def slice(self) -> slice:
        """``slice(start, end)``, to index a sequence or tensor by position."""
        return slice(self.start, self.end)

    def shift(self, offset: int) -> TokenSpan:
        """The same span ``offset`` positions later (e.g. 1 after prepending a BOS token yourself)."""
        return TokenSpan(self.start + offset, self.end + offset, self.text)


@dataclass(frozen=True)
class ExampleSpans:
    """Token spans of one example's prompt (and completion), as the model sees ``input_ids``.

    ``prompt_len`` is the prompt/completion boundary: positions ``[0, prompt_len)`` are the prompt.
    ``query`` includes its ``True or false:`` prefix, like ``example.query.text``. ``cot`` has one span per
    step of ``example.cot``; ``cot`` is empty and ``answer`` is ``None`` when the completion was left out.
    """

    text: str
    input_ids: tuple[int, ...]
    context: tuple[TokenSpan, ...]
    query: TokenSpan
    cot: tuple[TokenSpan, ...]
    answer: TokenSpan | None
    prompt_len: int


@dataclass(frozen=True)
class _Encoding:
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[bool]
    content: list[tuple[int, int] | None]


def _fast(tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase:
    if tokenizer is None:
        raise ReasonlensError(
            "no tokenizer: span alignment needs the model's tokenizer; pass model.tokenizer or "
            "AutoTokenizer.from_pretrained(name)")
    if not getattr(tokenizer, "is_fast", False):
        raise ReasonlensError(
            f"{type(tokenizer).__name__} is a slow tokenizer without character offsets; span alignment needs a "
            "fast one: AutoTokenizer.from_pretrained(name, use_fast=True), or wrap a tokenizers.Tokenizer in "
            "PreTrainedTokenizerFast(tokenizer_object=...)")
    return tokenizer


def _encode(tokenizer: PreTrainedTokenizerBase | None, text: str, add_special_tokens: bool) -> _Encoding:
    tokenizer = _fast(tokenizer)
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    offsets = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    special = [bool(m) for m in enc["special_tokens_mask"]]
    decoded = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)
    content: list[tuple[int, int] | None] = []
    for (s, e), is_special, piece in zip(offsets, special, decoded):
        covered = text[s:e]
        if is_special or not piece.strip() or not covered.strip():
            content.append(None)
        else:
            content.append((s + len(covered) - len(covered.lstrip()), e - len(covered) + len(covered.rstrip())))
    return _Encoding(ids, tokenizer.convert_ids_to_tokens(ids), offsets, special, content)


def _token_span(enc: _Encoding, text: str, start: int, end: int, snap: bool) -> TokenSpan:
    if not 0 <= start <= end <= len(text):
        raise ReasonlensError(f"character span ({start}, {end}) is outside the text of length {len(text)}")
    piece = text[start:end]
    a, b = start + len(piece) - len(piece.lstrip()), end - len(piece) + len(piece.rstrip())
    if a >= b:
        raise ReasonlensError(f"character span ({start}, {end}) holds no text ({piece!r}); pass a non-blank span")
    hits = [(i, c) for i, c in enumerate(enc.content) if c is not None and c[0] < b and c[1] > a]
    if not hits:
        raise ReasonlensError(f"no token covers {text[a:b]!r} at characters ({a}, {b}); was it tokenized from "
                              "this text?")
    (first, (lo, _)), (last, (_, hi)) = hits[0], hits[-1]
    if (lo < a or hi > b) and not snap:
        bad = first if lo < a else last
        s, e = enc.offsets[bad]
        raise ReasonlensError(
            f"span {text[a:b]!r} does not align with token boundaries: token {enc.tokens[bad]!r} covers "
            f"{text[s:e]!r}; pass snap=True to widen the span to whole tokens")
    return TokenSpan(first, last + 1, text[min(a, lo):max(b, hi)])


def char_to_token_spans(tokenizer: PreTrainedTokenizerBase | None, text: str, char_spans: Sequence[tuple[int, int]],
                        *, add_special_tokens: bool = True, snap: bool = False) -> list[TokenSpan]:
    """Token spans of the character spans ``[start, end)`` of ``text``, tokenized once.

    Whitespace at the edges of a span is ignored. A span edge strictly inside a token raises
    :class:`ReasonlensError` unless ``snap=True``, which widens the span to whole tokens.

    >>> from reasonlens.tokenizer import build_reference_tokenizer
    >>> tok = build_reference_tokenizer()  # prepends [BOS]
    >>> char_to_token_spans(tok, "Wumpuses are wooden.", [(0, 8), (9, 20)])
    [TokenSpan(start=1, end=3, text='Wumpuses'), TokenSpan(start=3, end=6, text='are wooden.')]
    >>> char_to_token_spans(tok, "Wumpuses are wooden.", [(0, 4)], snap=True)  # "Wump" is inside a token
    [TokenSpan(start=1, end=2, text='Wumpus')]
    """
    enc = _encode(tokenizer, text, add_special_tokens)
    return [_token_span(enc, text, s, e, snap) for s, e in char_spans]


def step_spans(tokenizer: PreTrainedTokenizerBase | None, text: str, *, start_char: int = 0,
               add_special_tokens: bool = True, snap: bool = False) -> list[TokenSpan]:
    """Token spans of the sentences in ``text[start_char:]`` (e.g. the CoT steps of a decoded output),
    with positions counted in the tokenization of the whole ``text``.

    >>> from reasonlens.tokenizer import build_reference_tokenizer
    >>> text = "Q: Polly is a wumpus.\\nA: Polly is a wumpus. Wumpuses are wooden. True"
    >>> [(s.start, s.end) for s in step_spans(build_reference_tokenizer(), text, start_char=text.index("A:"))]
    [(11, 16), (16, 21)]
    """
    sentences = sentence_char_spans(text[start_char:])
    shifted = [(s + start_char, e + start_char) for s, e in sentences]
    return char_to_token_spans(tokenizer, text, shifted, add_special_tokens=add_special_tokens, snap=snap)


def example_spans(tokenizer: PreTrainedTokenizerBase | None, example: Example, demonstrations: Sequence[Example] = (),
                  *, with_completion: bool = True, style: str | None = None, add_special_tokens: bool = True,
                  snap: bool = False) -> ExampleSpans:
    """Spans of ``example``'s context sentences, query, CoT steps and answer label in
    ``format_prompt(example, demonstrations) + format_completion(example)``, tokenized once.

    >>> from reasonlens.ontology import generate
    >>> from reasonlens.tokenizer import build_reference_tokenizer
    >>> tok = build_reference_tokenizer()
    >>> ex = generate(1, hops=1, seed=0)[0]
    >>> sp = example_spans(tok, ex)
    >>> len(sp.cot) == len(ex.cot), tok.decode(sp.input_ids[sp.answer.slice()]) == ex.answer.lower()
    (True, True)
    >>> sp.query.start < sp.prompt_len <= sp.cot[0].start
    True
    """
    prompt = format_prompt(example, demonstrations, style)
    text = prompt + (format_completion(example, style) if with_completion else "")
    pieces = [*(s.text for s in example.context), example.query.text]
    if with_completion:
        pieces += [*(s.text for s in example.cot), example.answer]
    cursor = len(prompt) - len(format_prompt(example, (), style))  # start of the example's own block
    char_spans = []
    for piece in pieces:
        start = text.index(piece, cursor)
        cursor = start + len(piece)
        char_spans.append((start, cursor))
    enc = _encode(tokenizer, text, add_special_tokens)
    spans = [_token_span(enc, text, s, e, snap) for s, e in char_spans]
    prompt_len = len(enc.ids)
    if with_completion:
        prompt_len = next(i for i, (_, e) in enumerate(enc.offsets) if not enc.special[i] and e > len(prompt))
        if enc.offsets[prompt_len][0] < len(prompt):
            raise ReasonlensError(
                f"token {enc.tokens[prompt_len]!r} spans the prompt/completion boundary, so the prompt alone "
                "tokenizes differently; end the prompt where this tokenizer splits (e.g. before a space)")
    n = len(example.context)
    return ExampleSpans(
        text=text, input_ids=tuple(enc.ids), context=tuple(spans[:n]), query=spans[n],
        cot=tuple(spans[n + 1:-1]), answer=spans[-1] if with_completion else None, prompt_len=prompt_len)


def word_token_spans(tokenizer: PreTrainedTokenizerBase | None, text: str, word: str, *, ignore_case: bool = False,
                     add_special_tokens: bool = True, snap: bool = False) -> list[TokenSpan]:
    """Token spans of every whole-word occurrence of ``word`` in ``text``.

    >>> from reasonlens.tokenizer import build_reference_tokenizer
    >>> text = "Every wumpus is a yumpus. Polly is a wumpus."
    >>> word_token_spans(build_reference_tokenizer(), text, "Wumpus", ignore_case=True)
    [TokenSpan(start=2, end=3, text='wumpus'), TokenSpan(start=10, end=11, text='wumpus')]
    """
    if not word.strip():
        raise ReasonlensError(f"word {word!r} is blank; pass the word to look for")
    pattern = re.compile(rf"(?<!\w){re.escape(word.strip())}(?!\w)", re.IGNORECASE if ignore_case else 0)
    char_spans = [m.span() for m in pattern.finditer(text)]
    return char_to_token_spans(tokenizer, text, char_spans, add_special_tokens=add_special_tokens, snap=snap)


def single_token_id(tokenizer: PreTrainedTokenizerBase | None, word: str, *,
                    context: Literal["mid-sentence", "after-newline"] = "mid-sentence") -> int:
    """The id of ``word`` as one token where it stands ``context`` (after a space, or at the start of a
    line), including a leading space the tokenizer folds into the token (GPT-2 ``Ġword``, Llama ``▁word``).

    >>> from reasonlens.tokenizer import build_reference_tokenizer
    >>> tok = build_reference_tokenizer()
    >>> tok.convert_ids_to_tokens(single_token_id(tok, "Wumpus"))
    'wumpus'
    """
    if context not in _PROBES:
        raise ReasonlensError(f"unknown context {context!r}; choose from {sorted(_PROBES)}")
    if not word or any(c.isspace() for c in word):
        raise ReasonlensError(f"{word!r} is not a single word; pass it without spaces")
    tokenizer = _fast(tokenizer)
    prefix, word_start = _PROBES[context]
    enc = _encode(tokenizer, prefix + word, add_special_tokens=False)
    picked = [i for i, (_, e) in enumerate(enc.offsets) if e > word_start and not enc.special[i]]
    if len(picked) == 1 and enc.ids[picked[0]] != tokenizer.unk_token_id:
        return enc.ids[picked[0]]
    if len(picked) == 1:
        raise ReasonlensError(f"{word!r} is not in this tokenizer's vocabulary (it becomes the unknown token); "
                              "check the spelling or use a tokenizer that knows the word")
    raise ReasonlensError(
        f"{word!r} is {len(picked)} tokens in this tokenizer ({[enc.tokens[i] for i in picked]}); this "
        "method needs one token per word — use a span-level method (word_token_spans / step_spans in "
        "reasonlens.spans) or a tokenizer where the word is a single token")

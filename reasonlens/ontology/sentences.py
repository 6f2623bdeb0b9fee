"""Sentence segmentation shared by the checker, the importers and span alignment."""

from __future__ import annotations

import re

# A period-terminated run of text within one line, and a header ("Q:", "A:", "### Input:") that may open it.
_SENTENCE = re.compile(r"[^\s.][^.\n]*\.")
_HEADER = re.compile(r"\s*(?:#+ *\w+|[A-Z]):\s*")


def sentence_char_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the period-terminated sentences of ``text``.

    A sentence never crosses a newline; a header (``Q:``, ``A:``, ``### Input:``) is not part of it,
    while ``True or false:`` is. Text without a final period (a header line, an answer label, a cut-off
    step) is no sentence.

    >>> text = "Q: Every wumpus is a yumpus. True or false: Polly is a yumpus.\\nA: Polly is a wumpus. True"
    >>> [text[s:e] for s, e in sentence_char_spans(text)]
    ['Every wumpus is a yumpus.', 'True or false: Polly is a yumpus.', 'Polly is a wumpus.']
    """
    spans = []
    for m in _SENTENCE.finditer(text):
        header = _HEADER.match(text, m.start(), m.end())
        spans.append((header.end() if header else m.start(), m.end()))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph (see :func:`sentence_char_spans`), plus a trailing fragment without a
    period (an answer label, a cut-off step) as it is.

    >>> split_sentences("Q: Polly is a wumpus. Wumpuses are red. True")
    ['Polly is a wumpus.', 'Wumpuses are red.', 'True']
    """
    spans = sentence_char_spans(text)
    out = [text[s:e] for s, e in spans]
    tail = _HEADER.sub("", text[spans[-1][1]:] if spans else text, count=1).strip()
    return out + ([tail] if tail else [])

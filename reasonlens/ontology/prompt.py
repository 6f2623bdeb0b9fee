"""Prompt assembly with 0..k few-shot demonstrations, in the PrOntoQA v1 and Dutta et al. formats."""

from __future__ import annotations

from collections.abc import Sequence

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.types import Example

DUTTA_SUFFIX = " Let us think step by step."
# Written after any prefix of a chain of thought, it asks for the label at once ("answer now").
ANSWER_NOW = " So the answer is"


def _block(example: Example, style: str) -> str:
    if style == "prontoqa":
        return f"Q: {example.question} {example.query_text}\nA:"
    if style == "dutta":
        return f"### Input:\n{example.question} {example.query_text}{DUTTA_SUFFIX}\n### Response:\n"
    raise ReasonlensError(f"unknown prompt style {style!r}; choose 'prontoqa' or 'dutta'")


def format_completion(example: Example, style: str | None = None) -> str:
    """What the model should write after the prompt: the chain of thought and the label.

    >>> from reasonlens.ontology import generate
    >>> ex = generate(1, hops=1, seed=0)[0]
    >>> format_completion(ex).endswith(ex.answer)
    True
    """
    style = style or example.style
    lead = " " if style == "prontoqa" else ""
    return f"{lead}{example.cot_text} {example.answer}"


def format_prompt(example: Example, demonstrations: Sequence[Example] = (), style: str | None = None) -> str:
    """The prompt for ``example``, preceded by solved ``demonstrations``.

    PrOntoQA: ``"Q: {context} {query}\\nA: {cot} {label}\\n\\n"`` per demonstration, then
    ``"Q: {context} {query}\\nA:"``. Dutta et al.: ``### Input:`` / ``### Response:`` blocks.

    >>> from reasonlens.ontology import generate
    >>> ex, demo = generate(2, hops=1, seed=0)
    >>> format_prompt(ex, [demo]).count("Q: ")
    2
    """
    style = style or example.style
    parts = [_block(d, style) + format_completion(d, style) + "\n\n" for d in demonstrations]
    return "".join(parts) + _block(example, style)

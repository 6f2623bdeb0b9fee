"""Steering: decode with a :class:`~reasonlens.attribution.components.Selection` scaled by ``gamma`` at every
position of the prompt and of the generated tokens, and measure what changed.

>>> from reasonlens.attribution.components import Selection
>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> model, examples = load_model("reasonlens-main"), generate(8, hops=1, seed=3)
>>> steer(model, examples, Selection.from_labels(["L2H1"]), gamma=1.0).accuracy == steer(model, examples).accuracy
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from reasonlens.attribution.components import Selection
from reasonlens.attribution.rewards import Trajectory, correctness
from reasonlens.errors import ReasonlensError
from reasonlens.ontology import Example

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from reasonlens.generation import PromptPrefill


@dataclass(frozen=True)
class SteeringOutcome:
    """Greedy decoding under an intervention: label ``accuracy``, mean CoT steps and tokens, the texts, and
    which questions were answered right (``correct``, in the order given: for paired comparisons)."""

    accuracy: float
    mean_steps: float
    mean_tokens: float
    n: int
    texts: tuple[str, ...]
    correct: tuple[bool, ...]

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("texts", "correct")}

    def bits(self) -> str:
        """``correct`` as a string, ``"1"`` for each question answered right (``"0110..."``)."""
        return "".join("1" if ok else "0" for ok in self.correct)


def decoding_budget(model: TransformerBridge, examples: Sequence[Example]) -> int:
    """New tokens to allow: the longest gold chain and answer plus 16."""
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    return 16 + max(len(tok(" " + e.cot_text + " " + e.answer, add_special_tokens=False)["input_ids"]) for e in examples)


def steer(model: TransformerBridge, examples: Sequence[Example], selection: Selection | None = None,
          gamma: float = 1.0, *, max_new_tokens: int | None = None, batch_size: int = 128,
          prefill: PromptPrefill | None = None, progress: bool = False) -> SteeringOutcome:
    """Greedy-decode every example with ``selection`` scaled by ``gamma`` (None: the unmodified model), in batches of
    ``batch_size`` questions from which finished ones drop out (the memory bound). Steering many selections on the
    same examples, pass them one :class:`~reasonlens.generation.PromptPrefill`: each prompt pass then runs from the
    selection's first layer on (the same tokens, less work)."""
    from reasonlens.generation import GenerationConfig, generate
    from reasonlens.ontology import format_prompt

    examples = list(examples)
    if not examples:
        raise ReasonlensError("no examples to decode: the evaluation set is empty")
    hooks = []
    if selection is not None:
        selection.check(model)
        hooks = selection.hooks(gamma)
    if max_new_tokens is None:
        max_new_tokens = decoding_budget(model, examples)
    gen = generate(model, [format_prompt(e) for e in examples],
                   GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, drop_finished=True),
                   fwd_hooks=hooks, prefill=prefill, progress=progress)
    trajectories = [Trajectory(gen.texts[i], gen.answers[i], gen.output_ids[i]) for i in range(len(gen))]
    n = len(examples)
    correct = tuple(bool(correctness(e, t)) for e, t in zip(examples, trajectories))
    return SteeringOutcome(accuracy=sum(correct) / n, mean_steps=sum(t.n_steps for t in trajectories) / n,
                           mean_tokens=sum(t.n_tokens for t in trajectories) / n, n=n,
                           texts=tuple(gen.texts), correct=correct)

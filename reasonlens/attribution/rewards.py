"""Rewards for Integrated Policy Gradient: a callable ``reward(example, trajectory) -> float`` scores one
sampled chain of thought.

- :func:`correctness`: 1 when the trajectory's answer label equals the example's, else 0 (the paper's reward).
- :func:`valid_steps`: how many steps of the chain the ontology's proof checker accepts (a copy of a context
  sentence or a one-step deduction), so chains that all end right can still differ.
- :func:`gold_label_logprob`: ``log P(gold label | prompt + the sampled chain before its label)`` under a model,
  a graded form of correctness.
- :func:`reasoning_length`: the number of CoT steps (sentences before the label) or tokens, through any
  monotone ``transform`` (e.g. ``lambda n: -n`` rewards short chains).
- any user callable with the same signature.

>>> from reasonlens.ontology import generate
>>> ex = generate(1, hops=2, seed=0)[0]
>>> t = Trajectory(text=f" {ex.cot_text} {ex.answer}", answer=ex.answer, output_ids=[])
>>> correctness(ex, t), reasoning_length()(ex, t) == len(ex.cot)
(1.0, True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import Example

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Reward = Callable[[Example, "Trajectory"], float]


@dataclass(frozen=True)
class Trajectory:
    """One decoded continuation: its ``text``, its ``answer`` label (``"True"``, ``"False"`` or ``None``), the
    generated ``output_ids`` and the ``prompt_ids`` it continues."""

    text: str
    answer: str | None
    output_ids: list[int]
    prompt_ids: list[int] = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        """CoT steps: the sentences before the answer label."""
        from reasonlens.ontology import split_sentences

        body = self.text
        if self.answer is not None:
            cut = body.lower().rfind(self.answer.lower())
            body = body[:cut] if cut >= 0 else body
        return len([s for s in split_sentences(body) if s.strip(" .")])

    @property
    def n_tokens(self) -> int:
        return len(self.output_ids)


def correctness(example: Example, trajectory: Trajectory) -> float:
    """1.0 if the trajectory's answer label matches ``example.answer``, else 0.0 (no label counts as wrong)."""
    return float(trajectory.answer is not None and trajectory.answer.lower() == example.answer.lower())


def valid_steps(example: Example, trajectory: Trajectory) -> float:
    """The number of the chain's steps (sentences before its label) that the proof checker accepts against the
    example's context (:func:`reasonlens.ontology.checker.check_chain`)."""
    from reasonlens.ontology.checker import check_chain

    result = check_chain([s.text for s in example.context], example.query.text, trajectory.text)
    return float(sum(step.valid for step in result.steps))


def gold_label_logprob(model: TransformerBridge) -> Reward:
    """A reward: the log-probability ``model`` gives the example's gold label right after the sampled chain of
    thought (the trajectory's tokens up to its own label, or all of them when it has none), whatever label the
    chain went on to produce. Needs trajectories with their ``prompt_ids`` (as IPG samples them)."""
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)

    def label_ids(label: str) -> list[int]:
        return tok(" " + label, add_special_tokens=False)["input_ids"]

    def gold_label_logprob(example: Example, trajectory: Trajectory) -> float:
        import torch

        if not trajectory.prompt_ids:
            raise ReasonlensError("gold_label_logprob needs the trajectory's prompt_ids (the tokens it continues)")
        body = list(trajectory.output_ids)
        if trajectory.answer is not None:
            own = label_ids(trajectory.answer)
            starts = [i for i in range(len(body) - len(own) + 1) if body[i:i + len(own)] == own]
            body = body[:starts[-1]] if starts else body
        gold = label_ids(example.answer)
        ids = torch.tensor([list(trajectory.prompt_ids) + body + gold], device=model.cfg.device)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids)[0, -len(gold) - 1:-1].float(), -1)
        return float(logp.gather(-1, torch.tensor(gold, device=logp.device)[:, None]).sum())

    return gold_label_logprob


def reasoning_length(unit: str = "steps", transform: Callable[[float], float] | None = None) -> Reward:
    """A reward of the chain's length in ``unit`` (``"steps"`` or ``"tokens"``), through ``transform`` (identity
    by default; pass a monotone function such as ``lambda n: -n`` to reward short chains)."""
    if unit not in ("steps", "tokens"):
        raise ReasonlensError(f"unit must be 'steps' or 'tokens', got {unit!r}")

    def length_reward(example: Example, trajectory: Trajectory) -> float:
        n = trajectory.n_steps if unit == "steps" else trajectory.n_tokens
        return float(n if transform is None else transform(n))

    length_reward.__name__ = f"reasoning_length_{unit}"
    return length_reward


def score(reward: Reward, example: Example, trajectory: Trajectory) -> float:
    """``reward(example, trajectory)`` checked to be a finite real number."""
    value = reward(example, trajectory)
    if hasattr(value, "item") and hasattr(value, "numel") and value.numel() == 1:
        value = value.item()  # a one-element tensor or array
    if not isinstance(value, numbers.Real):
        raise ReasonlensError(f"the reward {getattr(reward, '__name__', reward)!r} returned {value!r} "
                              f"({type(value).__name__}); it must return one real number")
    value = float(value)
    if not math.isfinite(value):
        raise ReasonlensError(f"the reward {getattr(reward, '__name__', reward)!r} returned {value} for the "
                              f"trajectory {trajectory.text[:80]!r}; rewards must be finite")
    return value

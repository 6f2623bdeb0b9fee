"""Rewards for Integrated Policy Gradient: a callable ``reward(example, trajectory) -> float`` scores one
sampled chain of thought.

- :func:`correctness`: 1 when the trajectory's answer label equals the example's, else 0.
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

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import Example

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

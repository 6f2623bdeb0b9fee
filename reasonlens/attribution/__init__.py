"""Attribution of reasoning outcomes to model components (Integrated Policy Gradient, Li et al. 2026) and steering.

Everything below is importable from ``reasonlens.attribution`` (loaded on first use):

- :mod:`~reasonlens.attribution.ipg`: IPG and its baselines (integrated gradients, activation magnitude, random),
  each a class whose ``.attribute(examples)`` returns an :class:`~reasonlens.attribution.ipg.Attribution`;
- :mod:`~reasonlens.attribution.components`: component selections (``Selection``) and their overlap (``dice``);
- :mod:`~reasonlens.attribution.rewards`: rewards (correctness, reasoning length);
- :mod:`~reasonlens.attribution.steering`: suppress / enhance selected components while decoding;
- :mod:`~reasonlens.attribution.study`: the whole study (``reasonlens run ipg``).

>>> from reasonlens.attribution import Selection
>>> Selection.from_labels(["L3H1", "L2H0"]).labels
['L2H0', 'L3H1']
"""

from typing import Any

from reasonlens.lazy import lazy_exports

_EXPORTS = lazy_exports(__name__, {
    "ipg": ("IPGConfig", "IntegratedPolicyGradient", "IntegratedGradients", "ActivationMagnitude", "RandomAttribution",
            "Attribution", "group_advantages"),
    "components": ("Selection", "dice", "random_dice"),
    "rewards": ("Trajectory", "correctness", "reasoning_length"),
    "steering": ("SteeringOutcome", "steer"),
    "paths": ("PathSequences", "path_attributions"),
    "study": ("IPGStudyConfig", "IPGStudyResult", "Variant", "run_ipg_study"),
})
__all__ = _EXPORTS.all


def __getattr__(name: str) -> Any:
    return _EXPORTS.get(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

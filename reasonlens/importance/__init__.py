"""Step importance (Nikankin et al., 2026): label which chain-of-thought steps are removable, probe activations
for it, compare with token and surface baselines and across models.

Everything below is importable from ``reasonlens.importance`` (loaded on first use):

- :mod:`~reasonlens.importance.chains`: chains of thought as token blocks (``chains_from_examples``);
- :mod:`~reasonlens.importance.scoring`: sufficiency and attainability of step subsequences, batched;
- :mod:`~reasonlens.importance.influence`: the step-to-step influence matrix (gradient, gradient x input, IG);
- :mod:`~reasonlens.importance.labels`: the removability pipeline (filters, prefix, the two-stage search);
- :mod:`~reasonlens.importance.activations`, :mod:`~reasonlens.importance.probes`,
  :mod:`~reasonlens.importance.controls`: step activations, probes, and their controls;
- :mod:`~reasonlens.importance.study`: the whole study (``reasonlens run step-importance``).

>>> from reasonlens.importance import ProbeConfig
>>> ProbeConfig().arch
'lw_mlp'
"""

from typing import Any

from reasonlens.lazy import lazy_exports

_EXPORTS = lazy_exports(__name__, {
    "chains": ("Chain", "make_chain", "chains_from_examples"),
    "scoring": ("ScoringConfig", "SubsetScorer", "sufficiency", "attainability", "answer_probabilities"),
    "influence": ("influence_matrix",),
    "labels": ("LabelConfig", "ChainLabels", "StepLabels", "label_steps"),
    "activations": ("StepSet", "step_activations"),
    "probes": ("ProbeConfig", "ProbeResult", "train_probe", "probe_by_layer", "agreement", "compare_probes",
               "compare_agreement"),
    "controls": ("SURFACE_PROBE_CONFIG", "TEXT_PROBE_CONFIG", "train_text_probe", "surface_features",
                 "surface_correlations", "random_init_model", "cross_model", "chain_groups"),
    "study": ("StepImportanceConfig", "StepImportanceResult", "ProbeSuite", "run_step_importance_study", "step_set",
              "generator_step_set", "probe_suite", "TRUE_FALSE_LABELS"),
})
__all__ = _EXPORTS.all


def __getattr__(name: str) -> Any:
    return _EXPORTS.get(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

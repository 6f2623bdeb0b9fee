"""Activation patching and the chain-of-thought mechanism analyses of Dutta et al. (TMLR 2024).

Everything below is importable from ``reasonlens.patching`` (loaded on first use):

- :mod:`~reasonlens.patching.engine`: the exact patching engine (``patch``, ``attribution_patch``) and its config;
- :mod:`~reasonlens.patching.subtasks`: the subtasks of a chain of thought and their clean / corrupted pairs;
- :mod:`~reasonlens.patching.circuit`, :mod:`~reasonlens.patching.heads`, :mod:`~reasonlens.patching.flow`: circuits
  by mean ablation, head roles, answer pathways;
- :mod:`~reasonlens.patching.lens`, :mod:`~reasonlens.patching.relations`, :mod:`~reasonlens.patching.horizon`: the
  logit lens and prior vs context, relation probes, the horizon experiment;
- :mod:`~reasonlens.patching.mechanism`: the whole study (``reasonlens run cot-mechanism``).

>>> from reasonlens.patching import PatchConfig, chain_subtasks
>>> PatchConfig(site="z", positions="each").unit, len(chain_subtasks(2))
('head', 11)
"""

from typing import Any

from reasonlens.lazy import lazy_exports

_EXPORTS = lazy_exports(__name__, {
    "engine": ("PatchConfig", "PatchSweep", "patch", "attribution_patch", "compare_rankings", "mean_activations",
               "reference_means"),
    "subtasks": ("Subtask", "SubtaskPair", "SubtaskPairs", "UncorruptibleError", "chain_subtasks", "subtask_pair",
                 "subtask_pairs"),
    "circuit": ("HeadMeans", "CircuitResult", "mean_head_activations", "mean_ablation_hooks", "circuit_logits",
                "circuit_matches", "circuit_agreement", "circuit_curve"),
    "heads": ("HeadRoles", "head_roles", "head_mask"),
    "flow": ("FlowResult", "Pathway", "trace_pathways"),
    "lens": ("PriorContextResult", "logit_lens", "conflict_items", "prior_vs_context"),
    "relations": ("RelationProbeConfig", "RelationProbeResult", "relation_dataset", "probe_scores", "relation_probes"),
    "horizon": ("HorizonConfig", "HorizonResult", "UncorruptibleStatementError", "horizon_pair", "measure_horizon"),
    "mechanism": ("MechanismConfig", "MechanismResult", "analyze_mechanism"),
})
__all__ = _EXPORTS.all


def __getattr__(name: str) -> Any:
    return _EXPORTS.get(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

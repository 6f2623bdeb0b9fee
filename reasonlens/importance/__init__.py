"""Step importance (Nikankin et al., 2026): label which chain-of-thought steps are removable, probe activations
for it, compare with token and surface baselines and across models.

- :mod:`~reasonlens.importance.chains`: chains of thought as token blocks (``chains_from_examples``);
- :mod:`~reasonlens.importance.scoring`: sufficiency and attainability of step subsequences, batched;
- :mod:`~reasonlens.importance.influence`: the step-to-step influence matrix (gradient, gradient x input, IG);
- :mod:`~reasonlens.importance.labels`: the removability pipeline (filters, prefix, the two-stage search);
- :mod:`~reasonlens.importance.activations`, :mod:`~reasonlens.importance.probes`,
  :mod:`~reasonlens.importance.controls`: step activations, probes, and their controls;
- :mod:`~reasonlens.importance.study`: the whole study (``reasonlens run step-importance``).
"""

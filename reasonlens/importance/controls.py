"""Baselines for the step-importance probes, trained with the same protocol (Nikankin et al., 2026, section 2.3): a
TF-IDF text probe, surface features (and their correlation with a probe's predictions), a randomly
initialised model of the same architecture, and cross-model transfer.

On PrOntoQA the text is templated, so token-level features (TF-IDF, the generator's role tag) can be strongly
predictive; the role one-hot of :func:`surface_features` is the generator's own tag and may encode the label
outright when labels come from it.

>>> from reasonlens.importance.activations import StepSet
>>> from reasonlens.importance.chains import chains_from_examples
>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> chains = chains_from_examples(load_model("reasonlens-main"), generate(1, hops=1, seed=0))
>>> features, names = surface_features(StepSet.from_labels(chains, [[1, 0, 0]]))
>>> features[:, names.index("relative_position")].tolist()
[0.3333333432674408, 0.6666666865348816, 1.0]
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.importance.activations import Pooling, StepSet, step_activations
from reasonlens.importance.probes import (
    ProbeConfig,
    ProbeResult,
    TfidfEncoder,
    check_labels,
    compare_agreement,
    compare_probes,
    train_probe,
    train_with_encoder,
)
from reasonlens.model import load_model, require_tokenizer

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# The paper's TF-IDF probe: an MLP with 128 hidden units, lr 1e-3, weight decay 1e-4, batch 256, 30 epochs.
TEXT_PROBE_CONFIG = ProbeConfig(arch="mlp", hidden=128, lr=1e-3, weight_decay=1e-4, batch_size=256)
# The "regression on all surface features" baseline: a linear probe, with a learning rate that lets a dozen
# standardised features converge in 30 epochs on a few hundred steps.
SURFACE_PROBE_CONFIG = ProbeConfig(arch="linear", lr=1e-2)
SURFACE_ROLES: tuple[str, ...] = ("premise_copy", "rule_copy", "derived_fact", "redundant", "unknown")
OPERATORS = frozenset("+-−*/=<>≤≥≠±")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NOT = re.compile(r"\bnot\b", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------- TF-IDF


def _take_texts(texts: list[str], rows: Tensor) -> list[str]:
    return [texts[i] for i in rows.tolist()]


def train_text_probe(texts: Sequence[str], labels: Int[Tensor, " step"], config: ProbeConfig = TEXT_PROBE_CONFIG, *,
                     groups: Int[Tensor, " step"] | None = None, progress: bool = False) -> ProbeResult:
    """The TF-IDF baseline: per seed and per training run, the vectorizer is fitted on that run's training
    rows only (never on the validation or test rows), then the same probe protocol as
    :func:`~reasonlens.importance.probes.train_probe` (default: the paper's TF-IDF MLP settings). The result's
    probe (``result.probe.encoder.vocabulary``) reads texts: ``result.predict(steps.texts)``. ``groups`` (e.g.
    :func:`chain_groups`) split by chain, with the same splits as ``train_probe`` for the same labels, groups and
    seeds."""
    check_labels(labels, len(texts))
    return train_with_encoder(list(texts), labels, _take_texts, TfidfEncoder.fit, config, progress, groups=groups)


def chain_groups(steps: StepSet) -> Int[Tensor, " step"]:
    """The chain index of each labelled step of ``steps``: the ``groups`` that split probes by chain.

    >>> from reasonlens.importance.chains import chains_from_examples
    >>> from reasonlens.model import load_model
    >>> from reasonlens.ontology import generate
    >>> chains = chains_from_examples(load_model("reasonlens-main"), generate(2, hops=1, seed=0))
    >>> chain_groups(StepSet.from_labels(chains, [[1, 0, 0], [None, 1, 0]])).tolist()
    [0, 0, 0, 1, 1]
    """
    return torch.tensor([c for c, _, _ in steps.items], dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------- surface


def surface_features(steps: StepSet) -> tuple[Float[Tensor, "step feature"], list[str]]:
    """Per labelled step: ``relative_position`` (step number / steps in the chain, 1/n .. 1),
    ``token_length``, ``numbers`` (digit runs), ``operators`` (characters of ``+ - * / = < > ≤ ≥ ≠ ±``), the
    generator's role tag one-hot (``role_<name>`` for :data:`SURFACE_ROLES`, ``unknown`` for untagged steps)
    and ``negation`` ("not" in the step). Train the surface regression baseline with
    ``train_probe(features, labels, SURFACE_PROBE_CONFIG)``."""
    if not steps.items:
        raise ReasonlensError("the step set has no labelled steps; label at least one step of one chain")
    names = ["relative_position", "token_length", "numbers", "operators", *(f"role_{r}" for r in SURFACE_ROLES),
             "negation"]
    rows = []
    for c, s, _ in steps.items:
        chain = steps.chains[c]
        text = chain.steps[s]
        role = chain.roles[s] if chain.roles[s] in SURFACE_ROLES else "unknown"
        rows.append([(s + 1) / len(chain), len(chain.step_ids[s]), len(_NUMBER.findall(text)),
                     sum(ch in OPERATORS for ch in text), *(float(r == role) for r in SURFACE_ROLES),
                     float(bool(_NOT.search(text)))])
    return torch.tensor(rows, dtype=torch.float32), names


class Correlations(dict):
    """``{feature name: |Pearson r| with the predictions}``; ``constant`` names the features (and
    ``"predictions"``) that were constant, whose correlation is undefined and reported as 0."""

    def __init__(self, values: dict[str, float], constant: list[str]) -> None:
        super().__init__(values)
        self.constant = constant


def surface_correlations(features: Float[Tensor, "step feature"], names: Sequence[str],
                         predictions: Int[Tensor, " step"] | Float[Tensor, " step"]) -> Correlations:
    """|Pearson r| of each feature with a probe's predictions (labels or logits), never NaN.

    >>> features = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    >>> r = surface_correlations(features, ["a", "b"], torch.tensor([0, 1, 1]))
    >>> round(r["a"], 3), r["b"], r.constant
    (0.866, 0.0, ['b'])
    """
    if features.shape[1] != len(names):
        raise ReasonlensError(f"{features.shape[1]} feature columns but {len(names)} names; pass one name per column")
    if len(predictions) != len(features):
        raise ReasonlensError(f"{len(features)} feature rows but {len(predictions)} predictions; pass one per step")
    x = features.double() - features.double().mean(0)
    y = predictions.double() - predictions.double().mean()
    x_norm, y_norm = x.norm(dim=0), y.norm()
    constant = [n for n, v in zip(names, x_norm.tolist()) if v < 1e-12]
    if y_norm < 1e-12:
        return Correlations(dict.fromkeys(names, 0.0), [*constant, "predictions"])
    r = (x * y[:, None]).sum(0) / (x_norm.clamp_min(1e-12) * y_norm)
    return Correlations({n: 0.0 if n in constant else abs(v) for n, v in zip(names, r.tolist())}, constant)


# ---------------------------------------------------------------------------------------------------------- models


def random_init_model(model: TransformerBridge, seed: int = 0) -> TransformerBridge:
    """A randomly initialised model of ``model``'s architecture (its Hugging Face config, initialised under
    ``torch.manual_seed(seed)``) with its tokenizer, loaded like ``model`` (device, dtype, compatibility mode)."""
    from transformers import AutoModelForCausalLM

    tokenizer = require_tokenizer(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(model.original_model.config)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return load_model(folder, device=model.cfg.device, dtype=model.cfg.dtype,
                          compatibility_mode=bool(getattr(model, "compatibility_mode", False)))


def cross_model(model_a: TransformerBridge, model_b: TransformerBridge, steps: StepSet,
                config: ProbeConfig = ProbeConfig(), *, features_a: Float[Tensor, "step layer d_model"] | None = None,
                layers: Sequence[int] | None = None, pooling: Pooling = "mean", batch_size: int = 16,
                random_init_seed: int = 0, groups: Int[Tensor, " step"] | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Cross-model transfer of ``steps`` (chains and labels from model A): probes trained on A's, on B's and on
    a random-init A-architecture model's activations of the same chains, with the same labels and splits
    (grouped with ``groups``, e.g. :func:`chain_groups`).

    Returns held-out and best-epoch accuracies (``accuracy_a``, ``accuracy_b``, ``random_init_accuracy``,
    ``*_best_epoch_accuracy``); the agreement of the B probe (``agreement``) and of the random-init probe
    (``random_init_agreement``) with the A probe, each seed's held-out probes on that seed's test rows, averaged
    over all seeds (``n_test``: the first seed's test rows); ``agreement_vs_random_init``
    (:func:`~reasonlens.importance.probes.compare_agreement`: the two agreements with intervals, their
    difference and a permutation test), ``accuracy_vs_random_init`` (``{"a": ..., "b": ...}``:
    :func:`~reasonlens.importance.probes.compare_probes` of each probe against the random-init one) and the
    three :class:`ProbeResult` under ``results``. The models must share a vocabulary (chains are token ids).
    """
    if require_tokenizer(model_a).get_vocab() != require_tokenizer(model_b).get_vocab():
        raise ReasonlensError("models A and B have different vocabularies, so A's chains (token ids) mean nothing to "
                              "B; rebuild the chains from their texts with model B (importance.chains.make_chain)")
    labels = steps.labels

    def probe(model: TransformerBridge, features: Tensor | None) -> ProbeResult:
        if features is None:
            features = step_activations(model, steps, layers=layers, pooling=pooling, batch_size=batch_size,
                                        progress=progress)
        return train_probe(features, labels, config, groups=groups, progress=progress)

    results = {"a": probe(model_a, features_a), "b": probe(model_b, None),
               "random_init": probe(random_init_model(model_a, random_init_seed), None)}
    agreements = compare_agreement(results["a"], results["b"], results["random_init"], seed=random_init_seed)
    return {"accuracy_a": results["a"].held_out_accuracy, "accuracy_b": results["b"].held_out_accuracy,
            "random_init_accuracy": results["random_init"].held_out_accuracy,
            "a_best_epoch_accuracy": results["a"].best_epoch_accuracy,
            "b_best_epoch_accuracy": results["b"].best_epoch_accuracy,
            "random_init_best_epoch_accuracy": results["random_init"].best_epoch_accuracy,
            "agreement": agreements["agreement"][0], "random_init_agreement": agreements["agreement"][1],
            "agreement_vs_random_init": agreements,
            "accuracy_vs_random_init": {k: compare_probes(results[k], results["random_init"], seed=random_init_seed)
                                        for k in ("a", "b")},
            "n_test": len(results["a"].runs[0].test_index), "results": results}

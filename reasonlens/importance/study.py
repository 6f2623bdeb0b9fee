"""The step-importance experiments of Nikankin et al. (2026) on a reference model, as one recipe
(``reasonlens run step-importance``).

1. **Labels.** Chains of thought (the generator's gold chains, which carry redundant steps whose removability
   the generator knows, or the model's greedy chains) are labelled by removability: filters, sufficient
   prefix, stage 1 (influence threshold sweep: removable steps) and stage 2 (greedy removal: the core ``T*``,
   important steps). The random-ranking variant gives the core-size baseline. The labels are checked against
   the generator's ground truth (precision and recall of "removable" vs "redundant").
2. **Probes** on the residual stream after every block, pooled over each step's tokens: the layer-wise MLP
   (the paper's default) and the other architectures; controls with the same classifier: context-free
   activations, TF-IDF n-grams, surface features (with their correlation to the probe's predictions), a
   randomly initialised model of the same architecture; one probe per layer and per pooled position.
3. **Cross-model**: the same chains and labels, probed on a second model's activations (accuracy and
   agreement with the first model's probe, against a random-init model).

>>> StepImportanceConfig().hops
(2, 3, 4)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check

import torch

from reasonlens.errors import ReasonlensError
from reasonlens.importance.activations import POOLINGS, StepSet, step_activations
from reasonlens.importance.chains import Chain
from reasonlens.importance.controls import (
    cross_model,
    surface_correlations,
    surface_features,
    train_text_probe,
)
from reasonlens.importance.labels import LabelConfig, StepLabels, label_steps
from reasonlens.importance.probes import (
    LAYER_METRICS,
    ProbeConfig,
    ProbeResult,
    agreement,
    compare_probes,
    probe_by_layer,
    train_probe,
)
from reasonlens.importance.scoring import ScoringConfig
from reasonlens.results import ConfigDict, read_results, result_part, write_results
from reasonlens.resume import StudyCheckpoints
from reasonlens.validation import check_float, check_int, check_int_list, load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ARCHITECTURES: tuple[str, ...] = ("lw_mlp", "lw_linear", "mlp", "linear")
CONTROLS: tuple[str, ...] = ("context", "no_context", "tfidf", "surface", "random_init")
# The surface regression without the generator's role tags, which on the generator's labels are the label itself.
EXTRA_CONTROLS: tuple[str, ...] = ("surface_no_role",)
# The controls the context probe is compared with (a permutation test each).
COMPARED: tuple[str, ...] = ("no_context", "tfidf", "surface", "surface_no_role", "random_init")


# The study's labelling on a True/False task (named in results.json): the paper code's scoring, less two filters
# that cannot work with two answers. Necessity (at most 1 of 5 answers right without the CoT) keeps a chain by
# the luck of the draw when chance is 50% (7% of the main model's chains pass), and "sufficient on its own"
# marks as shortcuts the steps that name the queried property, after which the rest is rarely sufficient.
TRUE_FALSE_LABELS = LabelConfig(scoring=ScoringConfig(necessity_max_correct=5), shortcut_alone=False)


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class StepImportanceConfig(ConfigDict):
    """What the study runs.

    - ``n_per_cell`` questions per (kind, hops) cell whose chains (``source``: ``"greedy"``, the model's own, as
      in the paper, or ``"gold"``, the generator's) are labelled and probed;
    - ``validation_per_cell`` more questions per cell whose gold chains carry a redundant step at each hop
      boundary with probability ``redundant_step_p``: the ground truth the labels are checked against, and the
      generator-label probes;
    - ``labels`` (default :data:`TRUE_FALSE_LABELS`) and ``probe`` configure the pipeline and the probes; the
      paper code's exact labelling (``LabelConfig()``) also runs on the validation chains, for its filter counts.
    """

    kinds: tuple[str, ...] = ("fictional", "false")
    hops: tuple[int, ...] = (2, 3, 4)
    n_per_cell: int = 100
    validation_per_cell: int = 60
    redundant_step_p: float = 0.5
    source: str = "greedy"
    labels: LabelConfig = field(default_factory=lambda: TRUE_FALSE_LABELS)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        check_int(self.n_per_cell, "n_per_cell", low=1)
        check_int(self.validation_per_cell, "validation_per_cell", low=1)
        if (isinstance(self.kinds, (str, bytes)) or not isinstance(self.kinds, (tuple, list)) or not self.kinds
                or not all(isinstance(k, str) for k in self.kinds) or len(set(self.kinds)) != len(self.kinds)):
            raise ReasonlensError(f"kinds must be a non-empty list of distinct ontology kinds, e.g. ('fictional', "
                                  f"'false'), got {self.kinds!r}")
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "hops", tuple(check_int_list(self.hops, "hops", low=1, example="(2, 3)")))
        check_float(self.redundant_step_p, "redundant_step_p", low=0, high=1)
        if not isinstance(self.source, str) or self.source not in ("gold", "greedy"):
            raise ReasonlensError(f"unknown chain source {self.source!r}; choose 'gold' or 'greedy'")
        if not isinstance(self.labels, LabelConfig) or not isinstance(self.probe, ProbeConfig):
            raise ReasonlensError("labels must be a LabelConfig and probe a ProbeConfig (reasonlens.importance)")
        check_int(self.seed, "seed")
        check_int(self.batch_size, "batch_size", low=1)


LABEL_SOURCES: tuple[str, ...] = ("removability", "generator")


@dataclass
class ProbeSuite:
    """The probes and controls trained on one labelled step set: ``probes`` by name (:data:`CONTROLS`,
    ``"arch <name>"``, ``"position <pooling>"``), single-layer accuracies ``per_layer`` (``{"context": [...],
    "no_context": [...]}``), ``surface_correlation`` (|r| of each surface feature with the context probe's
    predictions), ``cross_model`` (empty without a second model) and ``removable_probability`` (the context
    probe's P(removable) of every step of every chain, labelled or not: ``[chain][step]``)."""

    steps: StepSet
    probes: dict[str, ProbeResult]
    per_layer: dict[str, list[float]]
    surface_correlation: dict[str, float]
    cross_model: dict[str, Any]
    removable_probability: list[list[float]]

    def comparisons(self) -> dict[str, dict[str, Any]]:
        """Every comparison the docs make, each :func:`~reasonlens.importance.probes.compare_probes` (the two
        held-out accuracies, their 95% intervals over chains, the difference and its permutation p-value): the
        context probe against each control of :data:`COMPARED`."""
        return {f"context vs {name}": compare_probes(self.probes["context"], self.probes[name]) for name in COMPARED}

    def summary(self) -> dict[str, Any]:
        held = {name: r.held_out_accuracy for name, r in self.probes.items()}
        labels = self.steps.labels
        context = self.probes["context"]
        return {
            "n_steps": {"removable": int(labels.sum()), "important": int((labels == 0).sum())},
            "n_chains": len({c for c, _, _ in self.steps.items}),
            "n_test_steps": context.n_test_steps, "n_test_chains": context.n_test_groups,
            "probe_interval": {name: list(self.probes[name].interval()) for name in (*CONTROLS, *EXTRA_CONTROLS)},
            "comparisons": self.comparisons(),
            "probe_accuracy": {name: held[name] for name in (*CONTROLS, *EXTRA_CONTROLS)},
            "probe_accuracy_best_epoch": {name: r.best_epoch_accuracy for name, r in self.probes.items()},
            "probe_accuracy_std": {name: r.held_out_std for name, r in self.probes.items()},
            "architectures": {arch: held[f"arch {arch}"] for arch in ARCHITECTURES},
            "positions": {p: held[f"position {p}"] for p in POOLINGS},
            "per_layer": self.per_layer,
            "surface_correlation": self.surface_correlation,
            "cross_model": {k: v for k, v in self.cross_model.items() if k != "results"},
        }


@dataclass
class StepImportanceResult:
    """Everything the study measured; :meth:`summary` is ``results.json``.

    ``labels`` (and ``random_labels``, the random-ranking baseline) label the study's chains (the model's greedy
    chains by default); ``validation_labels`` label the gold chains with redundant steps, whose ground truth they
    are checked against, and ``paper_labels`` label those with the paper code's exact configuration (for its filter
    counts), and ``oracle_labels`` with the oracle ranking (the generator's redundant steps first: what the scores
    allow when the ranking is perfect). ``suites["removability"]`` probes ``labels``; ``suites["generator"]`` probes the generator's ground
    truth (redundant steps removable, proof steps important) on the validation chains. A suite is missing where
    its labels have too few steps of a class (``skipped`` says why)."""

    model: str
    second_model: str | None
    config: StepImportanceConfig
    labels: StepLabels
    random_labels: StepLabels
    validation_labels: StepLabels
    paper_labels: StepLabels
    oracle_labels: StepLabels
    suites: dict[str, ProbeSuite]
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def core_size(self) -> dict[str, Any] | None:
        """``|T*| / |prefix|`` of the activation-based and random-ranking searches on the chains both labelled,
        and their paired difference (bootstrap interval over chains, sign-flip p-value)."""
        from reasonlens.stats import paired_difference

        random = {c.index: len(c.core) / c.prefix_len for c in self.random_labels.chains}
        pairs = [(len(c.core) / c.prefix_len, random[c.index]) for c in self.labels.chains if c.index in random]
        if not pairs:
            return None
        a, b = torch.tensor(pairs, dtype=torch.float64).T
        return {"activation": float(a.mean()), "random": float(b.mean()), "n_chains": len(pairs),
                **paired_difference(a[None], b[None])}

    def summary(self) -> dict[str, Any]:
        """``results.json``: the removability labels' probe results at the top level (``probe_accuracy``,
        ``comparisons``, ``cross_model``, ...), the generator labels' under ``generator_labels``, then
        ``validation`` (the labels against the generator's ground truth), ``core_size`` and the score
        distributions."""
        main = self.suites["removability"].summary() if "removability" in self.suites else \
            {"probe_accuracy": dict.fromkeys((*CONTROLS, *EXTRA_CONTROLS)),
             "cross_model": dict.fromkeys(("accuracy", "agreement", "random_init_agreement"))}
        validation = self.validation_labels
        return {
            "model": self.model, "second_model": self.second_model, "config": self.config.to_dict(),
            "filter_counts": self.labels.filter_counts, **main,
            "generator_labels": self.suites["generator"].summary() if "generator" in self.suites else None,
            "skipped": self.skipped,
            "labels_vs_ground_truth": validation.agreement_with_ground_truth() if validation.chains else None,
            "validation": {"filter_counts": validation.filter_counts,
                           "paper_config_filter_counts": self.paper_labels.filter_counts,
                           "scores": validation.score_summary(),
                           "influence_by_role": validation.influence_by_role(),
                           "oracle_ranking": self.oracle_labels.agreement_with_ground_truth()
                           if self.oracle_labels.chains else None,
                           "oracle_filter_counts": self.oracle_labels.filter_counts},
            "core_size": self.core_size(),
            "scores": self.labels.score_summary(),
            "seconds": self.timings,
        }

    def save(self, out: str | Path) -> Path:
        """Write ``results.json`` (:func:`~reasonlens.results.write_results`), every labelling (``labels/``,
        ``random_labels/``, ``validation_labels/``, ``paper_labels/``) and every probe
        (``probes/<label source>/<name>.json``)."""
        out = write_results(self, out)
        for name in LABELLINGS:
            getattr(self, name).save(out / name)
        for source, suite in self.suites.items():
            for name, probe in suite.probes.items():
                probe.save(out / "probes" / source / f"{name}.json")
            (out / "probes" / source / "steps.json").write_text(json.dumps(
                {"chains": [chain.to_dict() for chain in suite.steps.chains], "items": suite.steps.items,
                 "removable_probability": suite.removable_probability}))
        return out

    @classmethod
    def load(cls, out: str | Path) -> StepImportanceResult:
        """Read a folder written by :meth:`save`."""
        what = "StepImportanceResult"
        data = read_results(out, what, ("config", "model", "second_model", "generator_labels", "skipped", "seconds"))
        out = Path(out)
        config = StepImportanceConfig.from_dict(data["config"])
        suites = {}
        for source in LABEL_SOURCES:
            summary = data if source == "removability" else data["generator_labels"]
            folder = f"probes/{source}"
            if source in data["skipped"] or summary is None:
                continue
            stored = load_saved(result_part(out, f"{folder}/steps.json", what), what,
                                ("chains", "items", "removable_probability"), fmt="json")
            suites[source] = ProbeSuite(
                steps=StepSet([Chain.from_dict(d) for d in stored["chains"]], [tuple(i) for i in stored["items"]]),
                probes={name: ProbeResult.load(result_part(out, f"{folder}/{name}.json", what))
                        for name in summary["probe_accuracy_best_epoch"]},
                per_layer=summary["per_layer"], surface_correlation=summary["surface_correlation"],
                cross_model=summary["cross_model"], removable_probability=stored["removable_probability"])
        labellings = {name: StepLabels.load(result_part(out, name, what)) for name in LABELLINGS}
        return cls(model=data["model"], second_model=data["second_model"], config=config, suites=suites,
                   skipped=data["skipped"], timings=data["seconds"], **labellings)


LABELLINGS: tuple[str, ...] = ("labels", "random_labels", "validation_labels", "paper_labels", "oracle_labels")


def step_set(labels: StepLabels) -> StepSet:
    """The labelled steps of ``labels`` (removable 1, important 0) as a :class:`StepSet` for the probes."""
    labels._require_chains()
    return StepSet.from_labels([c.chain for c in labels.chains], [c.labels for c in labels.chains])


def generator_step_set(chains: list[Chain]) -> StepSet:
    """The generator's ground truth as labels: steps tagged ``"redundant"`` removable (1), the other tagged
    steps (premise and rule copies, derived facts: the proof) important (0); untagged steps (greedy chains
    that leave the gold chain) unlabelled."""
    return StepSet.from_labels(chains, [[None if r is None else int(r == "redundant") for r in c.roles]
                                        for c in chains])


def probe_suite(model: TransformerBridge, steps: StepSet, config: ProbeConfig = ProbeConfig(), *,
                second_model: TransformerBridge | None = None, names: tuple[str, str] = ("model", "second"),
                seed: int = 0, batch_size: int = 16, progress: bool = False) -> ProbeSuite:
    """Every probe and control of the study on one labelled step set (see :class:`ProbeSuite`)."""
    from reasonlens.importance.controls import SURFACE_PROBE_CONFIG, TEXT_PROBE_CONFIG, chain_groups, random_init_model

    y, groups = steps.labels, chain_groups(steps)

    def activations(m: TransformerBridge, step_set: StepSet = steps, **kw: Any) -> torch.Tensor:
        return step_activations(m, step_set, batch_size=batch_size, progress=progress, **kw)

    def linear(c: ProbeConfig) -> ProbeConfig:
        return replace(c, arch="linear")

    # One pass over every step of every chain: the labelled rows train the probes, all rows get a prediction.
    every = StepSet(steps.chains, [(c, i, 0) for c, chain in enumerate(steps.chains) for i in range(len(chain))])
    row_of = {(c, i): r for r, (c, i, _) in enumerate(every.items)}
    all_features = activations(model, every)
    features = all_features[[row_of[(c, i)] for c, i, _ in steps.items]]
    alone = activations(model, context=False)
    transfer: dict[str, Any] = {}
    probes: dict[str, ProbeResult] = {}
    if second_model is not None:  # trains the context and random-init probes on the way
        transfer = cross_model(model, second_model, steps, config, features_a=features, batch_size=batch_size,
                               random_init_seed=seed, groups=groups, progress=progress)
        results = transfer["results"]
        probes["context"] = results["a"]
        # Each seed's held-out probes on that seed's test steps (the same rows for the three), all seeds together.
        preds = {name: torch.tensor([p for run in results[key].runs for p in run.test_predictions])
                 for name, key in ((names[0], "a"), (names[1], "b"), ("random init", "random_init"))}
        transfer["accuracy"] = transfer["accuracy_b"]
        transfer["matrix"] = {"names": list(preds), "matrix": [[agreement(preds[a], preds[b]) for b in preds]
                                                                for a in preds]}
    else:
        probes["context"] = train_probe(features, y, config, groups=groups)
    for arch in ARCHITECTURES:
        probes[f"arch {arch}"] = probes["context"] if arch == config.arch else \
            train_probe(features, y, replace(config, arch=arch), groups=groups)
    probes["no_context"] = train_probe(alone, y, config, groups=groups)
    probes["tfidf"] = train_text_probe(steps.texts, y, replace(TEXT_PROBE_CONFIG, seeds=config.seeds), groups=groups)
    surface, surface_names = surface_features(steps)
    surface_config = replace(SURFACE_PROBE_CONFIG, seeds=config.seeds)
    probes["surface"] = train_probe(surface, y, surface_config, groups=groups)
    no_role = [i for i, name in enumerate(surface_names) if not name.startswith("role_")]
    probes["surface_no_role"] = train_probe(surface[:, no_role], y, surface_config, groups=groups)
    probes["random_init"] = transfer["results"]["random_init"] if transfer else \
        train_probe(activations(random_init_model(model, seed)), y, config, groups=groups)
    for pooling in POOLINGS:
        probes[f"position {pooling}"] = probes["context"] if pooling == "mean" else \
            train_probe(activations(model, pooling=pooling), y, config, groups=groups)
    held_out = LAYER_METRICS.index("held_out_accuracy")
    per_layer = {name: probe_by_layer(f, y, linear(config), groups=groups).values[held_out].mean(0).tolist()
                 for name, f in (("context", features), ("no_context", alone))}
    correlation = dict(surface_correlations(surface, surface_names, probes["context"].predictions.float()))
    flat = torch.sigmoid(probes["context"].probe.logits(all_features)).tolist()
    probability = [flat[row_of[(c, 0)]:row_of[(c, 0)] + len(chain)] for c, chain in enumerate(steps.chains)]
    return ProbeSuite(steps=steps, probes=probes, per_layer=per_layer, surface_correlation=correlation,
                      cross_model=transfer, removable_probability=probability)


def _questions(c: StepImportanceConfig, per_cell: int, seed_base: int, redundant_step_p: float) -> list:
    from reasonlens.ontology import generate

    cells = [(kind, hops) for kind in c.kinds for hops in c.hops]
    return [e for i, (kind, hops) in enumerate(cells)
            for e in generate(per_cell, kind=kind, hops=hops, seed=seed_base + 100 * c.seed + i,
                              redundant_step_p=redundant_step_p)]


def run_step_importance_study(model: TransformerBridge, config: StepImportanceConfig | None = None, *,
                              second_model: TransformerBridge | None = None, model_name: str = "model",
                              second_model_name: str | None = None, progress: bool = False,
                              checkpoint_dir: str | Path | None = None) -> StepImportanceResult:
    """Run the study on ``model`` (see the module docstring); ``second_model`` (same vocabulary) adds the
    cross-model transfer. With ``checkpoint_dir``, each analysis (the chains, each labelling, each probe suite) is
    saved there as it finishes, and a rerun with the same configuration and models resumes
    (:mod:`reasonlens.resume`)."""
    from reasonlens.importance.chains import chains_from_examples
    from reasonlens.importance.probes import MIN_PER_CLASS

    c = config or StepImportanceConfig()
    timings: dict[str, float] = {}
    saved = StudyCheckpoints(checkpoint_dir, study="step-importance", config=c, models=(model, second_model),
                             log=print if progress else None)
    start = time.time()
    examples = _questions(c, c.n_per_cell, 7000, c.redundant_step_p if c.source == "gold" else 0.0)
    chains = saved.run("chains", lambda: chains_from_examples(model, examples, source=c.source,
                                                              batch_size=c.batch_size, progress=progress))
    if not chains:
        raise ReasonlensError(f"the model wrote no complete sentence in any of its {len(examples)} greedy chains, so "
                              "there is no step to label; check that it writes a chain of thought after the prompt, "
                              "or pass source='gold' (the generator's chains)")
    gold = saved.run("validation-chains", lambda: chains_from_examples(
        model, _questions(c, c.validation_per_cell, 9000, c.redundant_step_p), progress=progress))
    scores: dict = {}  # every subset scored once across the labellings of the same chains

    def labelled(name: str, some: list[Chain], config: LabelConfig) -> StepLabels:
        return saved.run(name, lambda: label_steps(model, some, config, progress=progress, scorer_cache=scores))

    labels = labelled("labels", chains, c.labels)
    random_labels = labelled("random-labels", chains, replace(c.labels, ranking="random"))
    validation = labelled("validation-labels", gold, c.labels)
    paper = labelled("paper-labels", gold, LabelConfig())
    oracle = labelled("oracle-labels", gold, replace(c.labels, ranking="oracle", require_stage2_removal=False))
    timings["labels"] = time.time() - start

    sets = {"removability": step_set(labels) if labels.chains else None, "generator": generator_step_set(gold)}
    suites, skipped = {}, {}
    for source, steps in sets.items():
        start = time.time()
        if steps is None:
            skipped[source] = f"no chain passed the filters ({labels.filter_counts}): label more chains (n_per_cell)"
            continue
        counts = [int((steps.labels == k).sum()) for k in (0, 1)]
        if min(counts) < MIN_PER_CLASS:
            skipped[source] = (f"{counts[1]} removable and {counts[0]} important steps; a probe needs at least "
                               f"{MIN_PER_CLASS} of each: label more chains (n_per_cell)")
            continue
        suites[source] = saved.run(f"probes-{source}", lambda: probe_suite(
            model, steps, c.probe, second_model=second_model, names=(model_name, second_model_name or "second"),
            seed=c.seed, batch_size=c.batch_size, progress=progress))
        timings[f"probes ({source} labels)"] = time.time() - start
    return StepImportanceResult(model=model_name, second_model=second_model_name, config=c, labels=labels,
                                random_labels=random_labels, validation_labels=validation, paper_labels=paper,
                                oracle_labels=oracle,
                                suites=suites, skipped=skipped, timings=timings)

"""The IPG experiments of Li et al. (2026) on a reference model, as one recipe (``reasonlens run ipg``).

1. Attribute answer correctness with IPG, raw policy gradient, plain integrated gradients of the gold answer,
   activation magnitude, and random sets (several seeds) on a support set of ``n_support`` questions.
2. Suppression (``gamma = 0``) and enhancement (``gamma = enhance_gamma``) of each method's top-``p``
   components for every ``p`` in ``p_values``: greedy label accuracy on ``n_eval`` held-out questions.
3. Length control: IPG of a reasoning-length reward (CoT steps), then a ``gamma`` sweep of its top
   ``length_p`` components: accuracy and mean steps.
4. Stability: Dice overlap of the IPG top-``dice_p`` sets across task variants (hop counts, a false ontology)
   and across support-set sizes, against the overlap of random sets (``p / n``).

>>> IPGStudyConfig().p_values
(2, 4, 8, 16, 32)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check

from reasonlens.attribution.components import Selection, dice, n_units, random_dice
from reasonlens.attribution.ipg import (
    ActivationMagnitude,
    Attribution,
    IntegratedGradients,
    IntegratedPolicyGradient,
    IPGConfig,
    RandomAttribution,
)
from reasonlens.attribution.rewards import reasoning_length
from reasonlens.attribution.steering import steer
from reasonlens.errors import ReasonlensError
from reasonlens.results import ConfigDict, read_results, result_part, write_results
from reasonlens.resume import StudyCheckpoints
from reasonlens.validation import check_float, check_float_list, check_int, check_int_list

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

METHODS: tuple[str, ...] = ("ipg", "activation", "random", "raw_pg", "integrated_gradients")


@dataclass(frozen=True)
class Variant:
    """A task variant: ontology ``kind`` and ``hops`` of the generated questions."""

    name: str
    kind: str
    hops: int


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class IPGStudyConfig(ConfigDict):
    """What the study runs (defaults: about 10 minutes on one CPU core for the reference models).

    ``p_values``, ``length_p`` and ``dice_p`` (how many components are steered, steered for length, compared)
    default by ``component``: 2-32, 8 and 16 residual dimensions or neurons, 1-4, 2 and 2 heads; ``support_sizes``
    (the nested support sets of the stability check) defaults to those of 10 and 20 below ``n_support``.

    >>> IPGStudyConfig(component="head").p_values, IPGStudyConfig(n_support=15).support_sizes
    ((1, 2, 3, 4), (10,))
    """

    component: str = "resid"
    layers: tuple[int, ...] = (3, 4)
    task: Variant = Variant("fictional 3-hop", "fictional", 3)
    n_support: int = 40
    n_eval: int = 100
    p_values: tuple[int, ...] | None = None
    enhance_gamma: float = 1.5
    random_seeds: int = 3
    steps: int = 10
    n_samples: int = 6
    length_p: int | None = None
    length_gammas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    redundant_step_p: float = 0.3
    dice_p: int | None = None
    variants: tuple[Variant, ...] = (Variant("fictional 2-hop", "fictional", 2),
                                     Variant("fictional 4-hop", "fictional", 4),
                                     Variant("false 3-hop", "false", 3))
    support_sizes: tuple[int, ...] | None = None
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_int(self.n_support, "n_support", low=1)
        heads = self.component == "head"
        defaults = {"p_values": (1, 2, 3, 4) if heads else (2, 4, 8, 16, 32), "length_p": 2 if heads else 8,
                    "dice_p": 2 if heads else 16,
                    "support_sizes": tuple(m for m in (10, 20) if m < self.n_support)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: the component's default, set once
        check_int(self.n_eval, "n_eval", low=1)
        check_int_list(self.layers, "layers", low=0, example="(3, 4)")
        for name, variant in [("task", self.task), *(("variants", v) for v in self.variants)]:
            if not isinstance(variant, Variant):
                raise ReasonlensError(f"{name} must hold Variant(name, kind, hops), got {variant!r}")
            check_int(variant.hops, f"hops of variant {variant.name!r}", low=1)
        p_values = check_int_list(self.p_values, "p_values", example="(2, 4, 8)")
        if any(p < 1 for p in p_values):
            raise ReasonlensError(f"p_values must be positive counts of components, got {self.p_values}")
        support = check_int_list(self.support_sizes, "support_sizes", allow_empty=True, example="(10, 20)")
        if any(m > self.n_support or m < 1 for m in support):
            raise ReasonlensError(f"support_sizes {self.support_sizes} must lie in 1..n_support ({self.n_support})")
        check_int(self.random_seeds, "random_seeds", low=1)
        check_float(self.enhance_gamma, "enhance_gamma", low=0)
        check_int(self.steps, "steps", low=1)
        check_int(self.n_samples, "n_samples", low=2)
        check_int(self.length_p, "length_p", low=1)
        check_float_list(self.length_gammas, "length_gammas", low=0, unique=True)
        check_float(self.redundant_step_p, "redundant_step_p", low=0, high=1)
        check_int(self.dice_p, "dice_p", low=1)
        check_int(self.seed, "seed")
        check_int(self.batch_size, "batch_size", low=1)

    def ipg(self, **overrides: Any) -> IPGConfig:
        settings = dict(component=self.component, layers=self.layers, steps=self.steps, n_samples=self.n_samples,
                        batch_size=self.batch_size, seed=self.seed)
        return IPGConfig(**{**settings, **overrides})


@dataclass
class IPGStudyResult:
    """Everything the study measured; :meth:`summary` is ``results.json``."""

    model: str
    config: IPGStudyConfig
    accuracy_original: float
    mean_steps_original: float
    suppression: dict[str, dict[int, float]]
    enhancement: dict[str, dict[int, float]]
    length_control: dict[float, dict[str, float]]
    dice: dict[str, Any]
    scores: dict[str, Attribution] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "config": self.config.to_dict(),
                "accuracy_original": self.accuracy_original, "mean_steps_original": self.mean_steps_original,
                "suppression": _str_keys(self.suppression), "enhancement": _str_keys(self.enhancement),
                "length_control": {str(g): v for g, v in self.length_control.items()}, "dice": self.dice,
                "n_zero_advantage_groups": {k: s.meta.get("n_zero_advantage_groups") for k, s in self.scores.items()
                                            if "n_zero_advantage_groups" in s.meta},
                "top_components": {k: s.ranked_labels(max(self.config.p_values)) for k, s in self.scores.items()},
                "seconds": self.timings}

    def save(self, out: str | Path) -> Path:
        """Write ``results.json`` (:func:`~reasonlens.results.write_results`) and each method's scores
        (``scores_<method>.pt``) into ``out``."""
        out = write_results(self, out)
        for name, scores in self.scores.items():
            scores.save(out / f"scores_{name}.pt")
        return out

    @classmethod
    def load(cls, out: str | Path) -> IPGStudyResult:
        """Read a folder written by :meth:`save`."""
        data = read_results(out, "IPGStudyResult", ("model", "config", "accuracy_original", "mean_steps_original",
                                                    "suppression", "enhancement", "length_control", "dice",
                                                    "top_components", "seconds"))
        scores = {name: Attribution.load(result_part(out, f"scores_{name}.pt", "IPGStudyResult"))
                  for name in data["top_components"]}
        config = IPGStudyConfig.from_dict(data["config"])
        return cls(model=data["model"], config=config, accuracy_original=data["accuracy_original"],
                   mean_steps_original=data["mean_steps_original"],
                   suppression={m: {int(p): v for p, v in row.items()} for m, row in data["suppression"].items()},
                   enhancement={m: {int(p): v for p, v in row.items()} for m, row in data["enhancement"].items()},
                   length_control={float(g): v for g, v in data["length_control"].items()}, dice=data["dice"],
                   scores=scores, timings=data["seconds"])


def run_ipg_study(model: TransformerBridge, config: IPGStudyConfig | None = None, *, model_name: str = "model",
                  progress: bool = False, checkpoint_dir: str | Path | None = None) -> IPGStudyResult:
    """Run the study on ``model`` (see the module docstring). With ``checkpoint_dir``, each analysis (each
    attribution, the steering table, the length control, each variant) is saved there as it finishes, and a rerun
    with the same configuration and model resumes (:mod:`reasonlens.resume`)."""
    import time

    from tqdm.auto import tqdm

    from reasonlens.ontology import generate

    config = config or IPGStudyConfig()
    c = config
    total = n_units(model, c.component) * len(c.layers)
    too_many = {name: p for name, p in [*[("p_values", p) for p in c.p_values], ("dice_p", c.dice_p),
                                         ("length_p", c.length_p)] if p > total}
    if too_many:
        raise ReasonlensError(f"{too_many} exceed the {total} {c.component} components of layers {list(c.layers)}; "
                              "choose fewer components")
    timings: dict[str, float] = {}
    saved = StudyCheckpoints(checkpoint_dir, study="ipg", config=c, models=(model,), log=print if progress else None)

    def questions(variant: Variant, n: int, seed: int, **kw):
        return generate(n, kind=variant.kind, hops=variant.hops, seed=seed, **kw)

    support = questions(c.task, c.n_support, 1000 + c.seed)
    evaluation = questions(c.task, c.n_eval, 2000 + c.seed)

    start = time.time()
    ipg = saved.run("ipg", lambda: IntegratedPolicyGradient(model, c.ipg()).attribute(support, progress=progress))
    if not ipg.n_informative:
        rewards = [r for group in ipg.meta["rewards"] for r in group]
        raise ReasonlensError(
            f"every one of the {c.n_support} support groups ({c.task.name}, {c.n_samples} sampled chains each) got "
            f"equal rewards (mean reward {sum(rewards) / len(rewards):.2f}), so correctness gives IPG no signal on this model; use a "
            "model that sometimes fails (reasonlens-headroom), a harder task (IPGStudyConfig(task=Variant(...))), "
            "more support questions or another seed")
    scores: dict[str, Attribution] = {
        "ipg": ipg,
        "raw_pg": saved.run("raw_pg", lambda: IntegratedPolicyGradient(model, c.ipg(steps=1)).attribute(
            support, progress=progress)),
        "integrated_gradients": saved.run("integrated_gradients", lambda: IntegratedGradients(
            model, component=c.component, layers=c.layers, steps=c.steps, batch_size=c.batch_size).attribute(
            support, progress=progress)),
        "activation": saved.run("activation", lambda: ActivationMagnitude(model, component=c.component, layers=c.layers).attribute(
            support)),
    }
    timings["attribution"] = time.time() - start

    start = time.time()
    original = saved.run("original", lambda: steer(model, evaluation))
    selections: dict[str, dict[int, list[Selection]]] = {
        name: {p: [s.top(p)] for p in c.p_values} for name, s in scores.items()}
    random = [RandomAttribution(model, component=c.component, layers=c.layers, seed=c.seed + r).attribute()
              for r in range(c.random_seeds)]
    selections["random"] = {p: [scores_r.top(p) for scores_r in random] for p in c.p_values}
    suppression: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    enhancement: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    jobs = [(m, p) for m in METHODS for p in c.p_values]
    for method, p in tqdm(jobs, desc="steering", unit="setting", disable=not progress):
        sets = selections[method][p]
        suppression[method][p], enhancement[method][p] = saved.run(f"steering-{method}-p{p}", lambda: (
            sum(steer(model, evaluation, s, 0.0).accuracy for s in sets) / len(sets),
            sum(steer(model, evaluation, s, c.enhance_gamma).accuracy for s in sets) / len(sets)))
    timings["steering"] = time.time() - start

    start = time.time()
    length_support = questions(c.task, c.n_support, 3000 + c.seed, redundant_step_p=c.redundant_step_p)
    length_eval = questions(c.task, c.n_eval, 4000 + c.seed, redundant_step_p=c.redundant_step_p)
    scores["length"] = saved.run("length", lambda: IntegratedPolicyGradient(
        model, c.ipg(), reward=reasoning_length("steps")).attribute(length_support, progress=progress))
    length_set = scores["length"].top(c.length_p)

    def length_outcomes() -> dict[float, dict[str, float]]:
        table = {}
        for gamma in c.length_gammas:
            outcome = steer(model, length_eval, length_set, gamma)
            table[gamma] = {"accuracy": outcome.accuracy, "mean_steps": outcome.mean_steps,
                            "mean_tokens": outcome.mean_tokens}
        return table

    length_control = saved.run("length-control", length_outcomes)
    timings["length_control"] = time.time() - start

    start = time.time()
    sets = {c.task.name: scores["ipg"].top(c.dice_p)}
    for i, variant in enumerate(c.variants):
        attribution = saved.run(f"variant-{i}", lambda: IntegratedPolicyGradient(model, c.ipg()).attribute(
            questions(variant, c.n_support, 5000 + 100 * i + c.seed), progress=progress))
        scores[f"variant {variant.name}"] = attribution
        sets[variant.name] = attribution.top(c.dice_p)
    by_size = {f"M={m}": _top_of_first(scores["ipg"], m, c.dice_p) for m in c.support_sizes}
    by_size[f"M={c.n_support}"] = sets[c.task.name]
    dice_result = {
        "p": c.dice_p, "random_expectation": random_dice(c.dice_p, total),
        "variants": _dice_table(sets), "support_sizes": _dice_table(by_size),
    }
    timings["stability"] = time.time() - start
    return IPGStudyResult(model=model_name, config=c, accuracy_original=original.accuracy,
                          mean_steps_original=original.mean_steps, suppression=suppression,
                          enhancement=enhancement, length_control=length_control, dice=dice_result,
                          scores=scores, timings=timings)


def _top_of_first(scores: Attribution, m: int, p: int) -> Selection | None:
    """The top-``p`` set from the first ``m`` prompts of a support set (None if none of them is informative)."""
    sub = Attribution(scores.values[:m], axes=scores.axes, labels=scores.labels, meta=scores.meta)
    return sub.top(p) if sub.n_informative else None


def _dice_table(sets: dict[str, Selection | None]) -> dict[str, Any]:
    """``{"names", "matrix"}`` of pairwise Dice overlaps (None where a set is missing)."""
    names = list(sets)
    return {"names": names, "matrix": [[None if sets[a] is None or sets[b] is None else dice(sets[a], sets[b])
                                        for b in names] for a in names]}


def _str_keys(table: dict[str, dict[int, float]]) -> dict[str, dict[str, float]]:
    return {m: {str(p): v for p, v in row.items()} for m, row in table.items()}

"""The IPG experiments of Li et al. (2026) on a reference model, as one recipe (``reasonlens run ipg``), sized to
say whether IPG beats its baselines.

1. **Attribution**, for each of ``seeds`` independent support sets of ``n_support`` questions (disjoint, and
   disjoint from the evaluation set) with their own samples: IPG of each reward in ``rewards`` (the first,
   correctness, is the paper's; the others score the same sampled chains), raw policy gradient, plain integrated
   gradients of the gold answer, activation magnitude, and a random ranking.
2. **Suppression** (``gamma = 0``) and **enhancement** (``gamma = enhance_gamma``) of each method's top-``p``
   components for every ``p``: greedy label accuracy on the same ``n_eval`` held-out questions, with a 95%
   bootstrap interval over seeds and questions, and for IPG minus each other method the paired difference (same
   questions, same support set), its interval and a sign-flip p-value.
3. **The paper's ablations** on the first seed's samples: the path's baseline (zero / mean / noise), q in
   ``ablation_steps`` and the integration rule (``ablation_rules``), raw PG vs IPG: each one's completeness gap
   and the Dice overlap of its top set with the reference IPG's, and (baselines) suppression accuracy.
4. **Transfer**: the components attributed on the task suppress on other task variants (2/4-hop, a false
   ontology), against random sets of the same size.
5. **Stability**: Dice of the IPG top-``dice_p`` sets between the disjoint support sets and across task
   variants, against the overlap of two random sets (mean and 95% range).
6. **Length control**: IPG of a reasoning-length reward, then a ``gamma`` sweep of its top ``length_p``
   components (one seed).

>>> IPGStudyConfig().p_values, IPGStudyConfig().seeds
((4, 16, 32), 3)
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
from reasonlens.attribution.paths import BASELINES, RULES
from reasonlens.attribution.rewards import correctness, gold_label_logprob, reasoning_length, valid_steps
from reasonlens.attribution.steering import steer
from reasonlens.errors import ReasonlensError
from reasonlens.generation import PromptPrefill
from reasonlens.results import ConfigDict, read_results, result_part, write_results
from reasonlens.resume import StudyCheckpoints
from reasonlens.stats import outcome_matrix
from reasonlens.validation import check_float, check_float_list, check_int, check_int_list

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

REWARDS: tuple[str, ...] = ("correctness", "gold_label_logprob", "valid_steps")
BASELINE_METHODS: tuple[str, ...] = ("raw_pg", "integrated_gradients", "activation", "random")
MODES: tuple[str, ...] = ("suppression", "enhancement")


def method_names(rewards: tuple[str, ...]) -> tuple[str, ...]:
    """The steered methods: ``ipg`` (the first reward), ``ipg_<reward>`` for the others, then the baselines.

    >>> method_names(("correctness", "gold_label_logprob"))
    ('ipg', 'ipg_gold_label_logprob', 'raw_pg', 'integrated_gradients', 'activation', 'random')
    """
    return ("ipg", *(f"ipg_{r}" for r in rewards[1:]), *BASELINE_METHODS)


@dataclass(frozen=True)
class Variant:
    """A task variant: ontology ``kind`` and ``hops`` of the generated questions."""

    name: str
    kind: str
    hops: int


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class IPGStudyConfig(ConfigDict):
    """What the study runs (defaults: about 14 minutes on 2 cores for the headroom model).

    ``p_values``, ``length_p`` and ``dice_p`` (how many components are steered, steered for length, compared)
    default by ``component``: 4, 16 and 32 residual dimensions or neurons, 8 and 16; 1, 2 and 4 heads, 2 and 2.
    ``rewards``: the first is the one the baselines are compared with (the paper's correctness by default);
    choose from :data:`REWARDS`. ``ablation_*``: the paper's ablations, run on the first seed's samples.

    >>> IPGStudyConfig(component="head").p_values
    (1, 2, 4)
    """

    component: str = "resid"
    layers: tuple[int, ...] = (3, 4)
    task: Variant = Variant("fictional 3-hop", "fictional", 3)
    n_support: int = 100
    seeds: int = 3
    n_eval: int = 300
    p_values: tuple[int, ...] | None = None
    enhance_gamma: float = 1.5
    rewards: tuple[str, ...] = ("correctness", "gold_label_logprob")
    steps: int = 10
    n_samples: int = 6
    ablation_steps: tuple[int, ...] = (5, 10, 20, 50)
    ablation_rules: tuple[str, ...] = ("right", "midpoint")
    ablation_baselines: tuple[str, ...] = ("zero", "mean", "noise")
    length_p: int | None = None
    length_gammas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    redundant_step_p: float = 0.3
    dice_p: int | None = None
    variants: tuple[Variant, ...] = (Variant("fictional 2-hop", "fictional", 2),
                                     Variant("fictional 4-hop", "fictional", 4),
                                     Variant("false 3-hop", "false", 3))
    n_bootstrap: int = 2000
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_int(self.n_support, "n_support", low=2)
        check_int(self.seeds, "seeds", low=1)
        heads = self.component == "head"
        defaults = {"p_values": (1, 2, 4) if heads else (4, 16, 32), "length_p": 2 if heads else 8,
                    "dice_p": 2 if heads else 16}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: the component's default, set once
        check_int(self.n_eval, "n_eval", low=2)
        check_int_list(self.layers, "layers", low=0, example="(3, 4)")
        for name, variant in [("task", self.task), *(("variants", v) for v in self.variants)]:
            if not isinstance(variant, Variant):
                raise ReasonlensError(f"{name} must hold Variant(name, kind, hops), got {variant!r}")
            check_int(variant.hops, f"hops of variant {variant.name!r}", low=1)
        p_values = check_int_list(self.p_values, "p_values", example="(4, 16, 32)")
        if any(p < 1 for p in p_values):
            raise ReasonlensError(f"p_values must be positive counts of components, got {self.p_values}")
        rewards = tuple(self.rewards)
        if not rewards or any(r not in REWARDS for r in rewards) or len(set(rewards)) != len(rewards):
            raise ReasonlensError(f"rewards must be distinct names from {REWARDS}, got {self.rewards!r}")
        check_float(self.enhance_gamma, "enhance_gamma", low=0)
        check_int(self.steps, "steps", low=2, hint="IPG integrates along a path; steps=1 is raw PG, which the "
                                                    "study runs as a baseline anyway")
        check_int(self.n_samples, "n_samples", low=2)
        check_int_list(self.ablation_steps, "ablation_steps", low=2, allow_empty=True, example="(5, 10, 20)")
        for rule in self.ablation_rules:
            if rule not in RULES:
                raise ReasonlensError(f"unknown rule {rule!r} in ablation_rules; use {RULES}")
        for baseline in self.ablation_baselines:
            if baseline not in BASELINES:
                raise ReasonlensError(f"unknown baseline {baseline!r} in ablation_baselines; use {BASELINES}")
        check_int(self.length_p, "length_p", low=1)
        check_float_list(self.length_gammas, "length_gammas", low=0, unique=True)
        check_float(self.redundant_step_p, "redundant_step_p", low=0, high=1)
        check_int(self.dice_p, "dice_p", low=1)
        check_int(self.n_bootstrap, "n_bootstrap", low=100)
        check_int(self.seed, "seed")
        check_int(self.batch_size, "batch_size", low=1)

    def ipg(self, seed: int = 0, **overrides: Any) -> IPGConfig:
        """The IPG settings of attribution seed ``seed``."""
        settings = dict(component=self.component, layers=self.layers, steps=self.steps, n_samples=self.n_samples,
                        batch_size=self.batch_size, seed=1000 * self.seed + seed)
        return IPGConfig(**{**settings, **overrides})


@dataclass
class IPGStudyResult:
    """Everything the study measured; :meth:`summary` is ``results.json``.

    ``correct[mode][method][p]`` holds, per attribution seed, which evaluation questions were answered right
    (``"0110..."``); ``transfer_correct[variant][method]`` likewise on that variant's questions. The tables in
    :meth:`summary` are computed from them."""

    model: str
    config: IPGStudyConfig
    original_correct: str
    correct: dict[str, dict[str, dict[int, list[str]]]]
    transfer_correct: dict[str, dict[str, list[str]]]
    ablations: list[dict[str, Any]]
    length_control: dict[float, dict[str, float]]
    dice: dict[str, Any]
    support: dict[str, Any]
    scores: dict[str, Attribution] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def methods(self) -> tuple[str, ...]:
        return method_names(tuple(self.config.rewards))

    def accuracy(self, mode: str, method: str, p: int) -> dict[str, Any]:
        """``{"accuracy", "ci95", "per_seed", "n_questions", "n_seeds"}`` of one steering setting."""
        return _accuracy(outcome_matrix(self.correct[mode][method][p]), self.config)

    def paired(self, mode: str, p: int, other: str) -> dict[str, Any]:
        """IPG minus ``other`` at ``p`` on the same questions and support sets: ``{"difference", "ci95",
        "p_value"}`` (bootstrap over seeds and questions; sign-flip test on the per-question mean difference)."""
        return _paired(outcome_matrix(self.correct[mode]["ipg"][p]), outcome_matrix(self.correct[mode][other][p]),
                       self.config)

    def summary(self) -> dict[str, Any]:
        c = self.config
        tables = {mode: {m: {str(p): self.accuracy(mode, m, p) for p in c.p_values} for m in self.methods}
                  for mode in MODES}
        paired = {mode: {str(p): {m: self.paired(mode, p, m) for m in self.methods if m != "ipg"}
                         for p in c.p_values} for mode in MODES}
        transfer = {}
        for variant, runs in self.transfer_correct.items():
            row = {m: _accuracy(outcome_matrix(v), c) for m, v in runs.items()}
            row["ipg_minus_random"] = _paired(outcome_matrix(runs["ipg"]), outcome_matrix(runs["random"]), c)
            transfer[variant] = row
        return {"model": self.model, "config": c.to_dict(),
                "accuracy_original": _accuracy(outcome_matrix([self.original_correct]), c),
                "support": self.support, **tables, "paired": paired, "ablations": self.ablations,
                "transfer": {"p": max(c.p_values), **transfer}, "length_control": {str(g): v for g, v in
                                                                                   self.length_control.items()},
                "dice": self.dice,
                "top_components": {k: s.ranked_labels(max(c.p_values)) for k, s in self.scores.items()},
                "correct": {"original": self.original_correct,
                            **{mode: {m: {str(p): v for p, v in rows.items()} for m, rows in table.items()}
                               for mode, table in self.correct.items()},
                            "transfer": self.transfer_correct},
                "seconds": self.timings}

    def save(self, out: str | Path) -> Path:
        """Write ``results.json`` (:func:`~reasonlens.results.write_results`) and each attribution
        (``scores_<name>.pt``) into ``out``."""
        out = write_results(self, out)
        for name, scores in self.scores.items():
            scores.save(out / f"scores_{_file_name(name)}.pt")
        return out

    @classmethod
    def load(cls, out: str | Path) -> IPGStudyResult:
        """Read a folder written by :meth:`save`."""
        data = read_results(out, "IPGStudyResult", ("model", "config", "correct", "ablations", "length_control",
                                                    "dice", "support", "top_components", "seconds"))
        scores = {name: Attribution.load(result_part(out, f"scores_{_file_name(name)}.pt", "IPGStudyResult"))
                  for name in data["top_components"]}
        correct = data["correct"]
        return cls(model=data["model"], config=IPGStudyConfig.from_dict(data["config"]),
                   original_correct=correct["original"],
                   correct={mode: {m: {int(p): v for p, v in rows.items()} for m, rows in correct[mode].items()}
                            for mode in MODES},
                   transfer_correct=correct["transfer"], ablations=data["ablations"],
                   length_control={float(g): v for g, v in data["length_control"].items()}, dice=data["dice"],
                   support=data["support"], scores=scores, timings=data["seconds"])


def _file_name(name: str) -> str:
    return name.replace(" ", "_")


def _accuracy(matrix, c: IPGStudyConfig) -> dict[str, Any]:
    from reasonlens.stats import bootstrap_interval

    return {"accuracy": float(matrix.mean()), "ci95": bootstrap_interval(matrix, c.n_bootstrap, seed=c.seed).tolist(),
            "per_seed": matrix.mean(1).tolist(), "n_questions": matrix.shape[1], "n_seeds": matrix.shape[0]}


def _paired(a, b, c: IPGStudyConfig) -> dict[str, Any]:
    from reasonlens.stats import paired_difference

    return paired_difference(a, b, c.n_bootstrap, seed=c.seed)


def _reward(name: str, model: TransformerBridge):
    return {"correctness": correctness, "valid_steps": valid_steps}.get(name) or gold_label_logprob(model)


def _completeness_gap(scores: Attribution) -> float | None:
    """Mean |scores summed - objective change| over the informative (example, layer) pairs, relative to the mean
    |objective change| (None without an informative example)."""
    summed, change = scores.completeness()
    informative = scores.values.flatten(1).ne(0).any(1)
    if not bool(informative.any()) or float(change[informative].abs().mean()) == 0:
        return None
    return float((summed - change)[informative].abs().mean() / change[informative].abs().mean())


def _random_dice_range(p: int, total: int) -> list[float]:
    """The central 95% range of the Dice overlap of two independent random ``p``-sets out of ``total``."""
    from scipy.stats import hypergeom

    overlap = hypergeom(total, p, p)
    return [float(overlap.ppf(0.025)) / p, float(overlap.ppf(0.975)) / p]


def _support_sets(c: IPGStudyConfig, evaluation) -> tuple[list[list], dict[str, Any]]:
    """``seeds`` disjoint support sets of ``n_support`` questions, none of them an evaluation question."""
    from reasonlens.ontology import format_prompt, generate

    held_out = {format_prompt(e) for e in evaluation}
    pool, seen, dropped, draw = [], set(), 0, 0
    while len(pool) < c.n_support * c.seeds:
        if draw >= 5:
            raise ReasonlensError(f"could not draw {c.n_support * c.seeds} distinct support questions of "
                                  f"{c.task.name} (dropped {dropped} repeats); use fewer seeds or a smaller n_support")
        for e in generate(c.n_support * c.seeds, kind=c.task.kind, hops=c.task.hops, seed=1000 + 17 * c.seed + draw):
            prompt = format_prompt(e)
            if prompt in seen or prompt in held_out:
                dropped += 1
                continue
            seen.add(prompt)
            pool.append(e)
        draw += 1
    sets = [pool[i * c.n_support:(i + 1) * c.n_support] for i in range(c.seeds)]
    return sets, {"seeds": c.seeds, "n_support": c.n_support, "disjoint": True, "dropped_repeats": dropped}


def run_ipg_study(model: TransformerBridge, config: IPGStudyConfig | None = None, *, model_name: str = "model",
                  progress: bool = False, checkpoint_dir: str | Path | None = None) -> IPGStudyResult:
    """Run the study on ``model`` (see the module docstring). With ``checkpoint_dir``, each analysis (each
    attribution, each steering setting, the ablations, each variant) is saved there as it finishes, and a rerun
    with the same configuration and model resumes (:mod:`reasonlens.resume`)."""
    import time

    from tqdm.auto import tqdm

    from reasonlens.ontology import generate

    c = config or IPGStudyConfig()
    total = n_units(model, c.component) * len(c.layers)
    too_many = {name: p for name, p in [*[("p_values", p) for p in c.p_values], ("dice_p", c.dice_p),
                                         ("length_p", c.length_p)] if p > total}
    if too_many:
        raise ReasonlensError(f"{too_many} exceed the {total} {c.component} components of layers {list(c.layers)}; "
                              "choose fewer components")
    timings: dict[str, float] = {}
    saved = StudyCheckpoints(checkpoint_dir, study="ipg", config=c, models=(model,), log=print if progress else None)
    evaluation = generate(c.n_eval, kind=c.task.kind, hops=c.task.hops, seed=2000 + c.seed)
    supports, support_info = _support_sets(c, evaluation)
    methods = method_names(tuple(c.rewards))

    # 1. Attribution, per seed: one sample of each support set serves every reward, raw PG and the ablations.
    start = time.time()
    scores: dict[str, Attribution] = {}
    informative: dict[str, list[int]] = {r: [] for r in c.rewards}
    samples_by_seed = []  # the ablations reuse the first seed's
    for s, support in enumerate(supports):
        samples = saved.run(f"samples-{s}", lambda: IntegratedPolicyGradient(model, c.ipg(s)).sample(
            support, progress=progress))
        samples_by_seed.append(samples)
        for r, reward in enumerate(c.rewards):
            name = methods[r]
            scores[f"{name} seed {s}"] = saved.run(f"{name}-{s}", lambda: IntegratedPolicyGradient(
                model, c.ipg(s), reward=_reward(reward, model)).attribute(support, samples=samples,
                                                                           progress=progress))
            informative[reward].append(scores[f"{name} seed {s}"].n_informative)
        if not informative[c.rewards[0]][-1]:
            rewards = [r for group in scores[f"ipg seed {s}"].meta["rewards"] for r in group]
            raise ReasonlensError(
                f"every one of the {c.n_support} support groups of seed {s} ({c.task.name}, {c.n_samples} sampled "
                f"chains each) got equal rewards (mean reward {sum(rewards) / len(rewards):.2f}), so "
                f"{c.rewards[0]} gives IPG no signal on this model; use a model "
                "that sometimes fails (reasonlens-headroom), a harder task (IPGStudyConfig(task=Variant(...))), more "
                "support questions, or a graded reward first (rewards=('gold_label_logprob', ...))")
        scores[f"raw_pg seed {s}"] = saved.run(f"raw_pg-{s}", lambda: IntegratedPolicyGradient(
            model, c.ipg(s, steps=1)).attribute(support, samples=samples, progress=progress))
        scores[f"integrated_gradients seed {s}"] = saved.run(f"ig-{s}", lambda: IntegratedGradients(
            model, component=c.component, layers=c.layers, steps=c.steps, batch_size=c.batch_size).attribute(
            support, progress=progress))
        scores[f"activation seed {s}"] = saved.run(f"activation-{s}", lambda: ActivationMagnitude(
            model, component=c.component, layers=c.layers).attribute(support))
        scores[f"random seed {s}"] = RandomAttribution(model, component=c.component, layers=c.layers,
                                                       seed=1000 * c.seed + s).attribute()
    support_info["n_informative_prompts"] = informative
    shortfall = min(informative[c.rewards[0]])
    support_info["informative_note"] = None if shortfall >= 60 else (
        f"{shortfall} of {c.n_support} support prompts carry a {c.rewards[0]} signal in the weakest seed (below 60): "
        f"the other groups' {c.n_samples} sampled chains all got the same reward; more support questions "
        "(--n-support) or samples per prompt raise it, at proportional cost")
    timings["attribution"] = time.time() - start

    # 2. Suppression and enhancement on the same held-out questions.
    start = time.time()
    original = saved.run("original", lambda: steer(model, evaluation).bits())
    gammas = {"suppression": 0.0, "enhancement": c.enhance_gamma}
    correct: dict[str, dict[str, dict[int, list[str]]]] = {mode: {m: {} for m in methods} for mode in MODES}
    decoded: dict[tuple[Selection, float], str] = {}  # methods that pick the same set decode it once
    prefill = PromptPrefill()  # every setting's prompt passes start at its first steered layer

    def steered(selection: Selection, gamma: float) -> str:
        if (selection, gamma) not in decoded:
            decoded[selection, gamma] = steer(model, evaluation, selection, gamma, prefill=prefill).bits()
        return decoded[selection, gamma]

    jobs = [(mode, m, p) for mode in MODES for m in methods for p in c.p_values]
    for mode, method, p in tqdm(jobs, desc="steering", unit="setting", disable=not progress):
        correct[mode][method][p] = saved.run(f"{mode}-{method}-p{p}", lambda: [
            steered(scores[f"{method} seed {s}"].top(p), gammas[mode]) for s in range(c.seeds)])
    timings["steering"] = time.time() - start

    # 3. The paper's ablations, on the first seed's samples.
    start = time.time()
    reference_accuracy = outcome_matrix(correct["suppression"]["ipg"][max(c.p_values)][:1]).mean().item()
    ablations = saved.run("ablations", lambda: _ablations(model, c, samples_by_seed[0], scores, evaluation,
                                                          reference_accuracy, prefill))
    timings["ablations"] = time.time() - start

    # 4-5. Transfer to other variants and stability across them.
    start = time.time()
    p_max = max(c.p_values)
    transfer: dict[str, dict[str, list[str]]] = {}
    sets = {f"{c.task.name} seed {s}": scores[f"ipg seed {s}"].top(c.dice_p) for s in range(c.seeds)}
    for i, variant in enumerate(c.variants):
        questions = generate(c.n_eval, kind=variant.kind, hops=variant.hops, seed=6000 + 100 * i + c.seed)
        variant_prefill = PromptPrefill()
        transfer[variant.name] = saved.run(f"transfer-{i}", lambda: {
            "original": [steer(model, questions).bits()],
            **{m: [steer(model, questions, scores[f"{m} seed {s}"].top(p_max), 0.0, prefill=variant_prefill).bits()
                   for s in range(c.seeds)] for m in ("ipg", "random")}})
        variant_support = generate(c.n_support, kind=variant.kind, hops=variant.hops, seed=5000 + 100 * i + c.seed)
        attribution = saved.run(f"variant-{i}", lambda: IntegratedPolicyGradient(model, c.ipg(0)).attribute(
            variant_support, progress=progress))
        scores[f"ipg {variant.name}"] = attribution
        sets[variant.name] = attribution.top(c.dice_p) if attribution.n_informative else None
    seed_pairs = [dice(sets[f"{c.task.name} seed {a}"], sets[f"{c.task.name} seed {b}"])
                  for a in range(c.seeds) for b in range(a + 1, c.seeds)]
    dice_result = {"p": c.dice_p, "n_components": total, "random_expectation": random_dice(c.dice_p, total),
                   "random_range95": _random_dice_range(c.dice_p, total),
                   "disjoint_support_sets": {"pairs": seed_pairs,
                                             "mean": sum(seed_pairs) / len(seed_pairs) if seed_pairs else None},
                   "variants": _dice_table(sets)}
    timings["transfer_and_stability"] = time.time() - start

    # 6. Length control.
    start = time.time()
    length_support = generate(c.n_support, kind=c.task.kind, hops=c.task.hops, seed=3000 + c.seed,
                              redundant_step_p=c.redundant_step_p)
    length_eval = generate(c.n_eval, kind=c.task.kind, hops=c.task.hops, seed=4000 + c.seed,
                           redundant_step_p=c.redundant_step_p)
    scores["length"] = saved.run("length", lambda: IntegratedPolicyGradient(
        model, c.ipg(0), reward=reasoning_length("steps")).attribute(length_support, progress=progress))
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
    return IPGStudyResult(model=model_name, config=c, original_correct=original, correct=correct,
                          transfer_correct=transfer, ablations=ablations, length_control=length_control,
                          dice=dice_result, support=support_info, scores=scores, timings=timings)


def _ablations(model: TransformerBridge, c: IPGStudyConfig, samples, scores: dict[str, Attribution], evaluation,
               reference_accuracy: float, prefill: PromptPrefill) -> list[dict[str, Any]]:
    """One row per variant of the reference IPG (first seed, first reward, on that seed's samples): its
    completeness gap, the Dice of its top-``dice_p`` set with the reference's, and for each path baseline the
    suppression accuracy at the largest p on the first seed (the reference's is ``reference_accuracy``)."""
    reward = _reward(c.rewards[0], model)
    reference_scores = scores["ipg seed 0"]
    reference = reference_scores.top(c.dice_p)
    p_max = max(c.p_values)

    def ipg(**settings: Any) -> Attribution:
        if all(getattr(c.ipg(0), k) == v for k, v in settings.items()):
            return reference_scores
        return IntegratedPolicyGradient(model, c.ipg(0, **settings), reward=reward).attribute(
            list(samples.examples), samples=samples)

    def row(name: str, attribution: Attribution, **settings: Any) -> dict[str, Any]:
        return {"name": name, **settings, "completeness_gap": _completeness_gap(attribution),
                "dice_with_reference": dice(attribution.top(c.dice_p), reference)}

    rows = [row("raw PG", scores["raw_pg seed 0"], baseline="zero", steps=1, rule="right")]
    for rule in c.ablation_rules:
        for steps in c.ablation_steps:
            rows.append(row(f"q={steps} {rule}", ipg(steps=steps, rule=rule), baseline="zero", steps=steps, rule=rule))
    if c.component != "head":  # head gates always start from 0
        for baseline in c.ablation_baselines:
            attribution = ipg(baseline=baseline)
            entry = row(f"{baseline} baseline", attribution, baseline=baseline, steps=c.steps, rule="right")
            entry["suppression_p"] = p_max
            entry["suppression_accuracy"] = reference_accuracy if attribution is reference_scores else steer(
                model, evaluation, attribution.top(p_max), 0.0, prefill=prefill).accuracy
            rows.append(entry)
    return rows


def _dice_table(sets: dict[str, Selection | None]) -> dict[str, Any]:
    """``{"names", "matrix"}`` of pairwise Dice overlaps (None where a set is missing)."""
    names = list(sets)
    return {"names": names, "matrix": [[None if sets[a] is None or sets[b] is None else dice(sets[a], sets[b])
                                        for b in names] for a in names]}

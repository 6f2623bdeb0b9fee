"""The tour behind ``reasonlens demo``: each method of the toolkit on the shipped reference models, at reduced
sizes, on one page.

The sections run the same verbs and draw the same figures as the full recipes: :func:`analyze_mechanism` and the
mechanism report's figures (``reasonlens run cot-mechanism``), :class:`IntegratedPolicyGradient` on heads with
:func:`steer` (``reasonlens run ipg --kind head``), :func:`run_step_importance_study` (``reasonlens run
step-importance``) and :func:`evaluate` (``reasonlens eval``). ``notebooks/00_tour.ipynb`` walks through it step by
step.

>>> from reasonlens.tour import TourConfig
>>> TourConfig().ipg_p
(1, 2, 4)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonlens.errors import ReasonlensError
from reasonlens.results import ConfigDict, read_results, result_part, write_results
from reasonlens.validation import check_int, check_int_list

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from reasonlens.attribution.ipg import Attribution
    from reasonlens.evaluate import EvalResult
    from reasonlens.importance.study import StepImportanceResult
    from reasonlens.patching.mechanism import MechanismResult
    from reasonlens.reports.html import HtmlReport

MECHANISM_COMMAND = "reasonlens run cot-mechanism --model reasonlens-main --out out/cot-mechanism"
IPG_COMMAND = "reasonlens run ipg --model reasonlens-headroom --kind head --layers 0 1 2 3 4 5 --out out/ipg-heads"
IMPORTANCE_COMMAND = "reasonlens run step-importance --model reasonlens-main --out out/step-importance"
EVAL_COMMAND = "reasonlens eval --model reasonlens-main --out out/eval"


@dataclass(frozen=True)
class TourConfig(ConfigDict):
    """The tour's sizes (defaults: about 3 minutes on 2 cores), each far below its recipe's default.

    - ``mechanism_subtasks`` of the 2-hop chain layout (copy, induction, decision, label), ``mechanism_examples``
      questions each; no few-shot or horizon condition; ``conflict_examples`` false-ontology questions for the
      prior-vs-context lens, ``relation_examples`` questions for the relation probes (one seed).
    - IPG on every head of the headroom model from ``ipg_support`` 3-hop fictional questions (``ipg_samples``
      sampled chains each, ``ipg_steps`` path steps), then its top ``ipg_p`` heads suppressed on ``ipg_eval``
      held-out questions against ``random_sets`` random head sets of each size.
    - Step importance on ``importance_per_cell`` gold chains per (kind, hops) cell, one probe seed.
    - Label and proof accuracy on ``eval_per_cell`` questions per (kind, hops) cell.

    >>> TourConfig(ipg_p=(0,))
    Traceback (most recent call last):
    ...
    reasonlens.errors.ReasonlensError: ipg_p [0] out of range: each must be at least 1
    """

    mechanism_subtasks: tuple[int, ...] = (1, 5, 6, 10)
    mechanism_examples: int = 48
    conflict_examples: int = 400
    relation_examples: int = 120
    ipg_support: int = 100
    ipg_samples: int = 6
    ipg_steps: int = 10
    ipg_eval: int = 300
    ipg_p: tuple[int, ...] = (1, 2, 4)
    random_sets: int = 4
    importance_per_cell: int = 20
    eval_per_cell: int = 10
    n_bootstrap: int = 2000
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "mechanism_subtasks", tuple(check_int_list(
            self.mechanism_subtasks, "mechanism_subtasks", low=0, example="(1, 5, 10)")))
        object.__setattr__(self, "ipg_p", tuple(check_int_list(self.ipg_p, "ipg_p", low=1, example="(1, 2, 4)")))
        for name, low in (("mechanism_examples", 2), ("conflict_examples", 1), ("relation_examples", 1),
                          ("ipg_support", 1), ("ipg_samples", 2),
                          ("ipg_steps", 1), ("ipg_eval", 2), ("random_sets", 1), ("importance_per_cell", 1),
                          ("eval_per_cell", 1), ("n_bootstrap", 100), ("batch_size", 1)):
            check_int(getattr(self, name), name, low=low)
        check_int(self.seed, "seed")


@dataclass
class TourResult:
    """What the tour measured: one result per section, the IPG steering outcomes as bit strings per question
    (``"0110..."``, the order of the evaluation questions), and the seconds each section took."""

    config: TourConfig
    models: dict[str, str]
    evaluation: EvalResult
    mechanism: MechanismResult
    ipg_scores: Attribution
    steering: dict[str, Any]
    importance: StepImportanceResult
    timings: dict[str, float] = field(default_factory=dict)

    def ipg_table(self) -> dict[str, Any]:
        """Suppression accuracy with 95% bootstrap intervals: the unmodified model, IPG's top ``p`` heads, random
        ``p``-head sets (over sets and questions), and the paired difference IPG minus random with its interval
        and sign-flip p-value (on the same questions)."""
        from reasonlens.stats import bootstrap_interval, outcome_matrix, paired_difference

        c = self.config

        def accuracy(m) -> dict[str, Any]:
            return {"accuracy": float(m.mean()), "ci95": bootstrap_interval(m, c.n_bootstrap, seed=c.seed).tolist()}

        table: dict[str, Any] = {"original": accuracy(outcome_matrix([self.steering["original"]])), "ipg": {},
                                 "random": {}, "ipg_minus_random": {}}
        for p in c.ipg_p:
            ipg = outcome_matrix([self.steering["ipg"][str(p)]])
            random = outcome_matrix(self.steering["random"][str(p)])
            table["ipg"][str(p)] = accuracy(ipg)
            table["random"][str(p)] = accuracy(random)
            # one row per random set, the same questions
            table["ipg_minus_random"][str(p)] = paired_difference(ipg, random, c.n_bootstrap, seed=c.seed)
        return table

    def summary(self) -> dict[str, Any]:
        mechanism = self.mechanism.summary()
        importance = self.importance.summary()
        metrics = self.evaluation.metrics()
        return {"config": self.config.to_dict(), "models": self.models,
                "mechanism": {k: mechanism[k] for k in ("circuit_head_fraction_90", "writer_share_late",
                                                        "crossover_layer", "crossover_relative_depth", "pathways")},
                "ipg": {**self.ipg_table(), "top_heads": self.ipg_scores.ranked_labels(max(self.config.ipg_p)),
                        "n_informative_prompts": self.ipg_scores.n_informative,
                        "support_dropped": self.steering["support_dropped"]},
                "step_importance": {k: importance[k] for k in ("probe_accuracy", "labels_vs_ground_truth",
                                                               "core_size")},
                "evaluation": {k: metrics[k] for k in ("label_accuracy", "proof_accuracy")},
                "steering": self.steering, "seconds": self.timings}

    def save(self, out: str | Path) -> Path:
        """Write ``results.json`` and each section's own result folder (``evaluation/``, ``mechanism/``,
        ``step-importance/``) and the IPG scores (``ipg_scores.pt``) into ``out``."""
        out = write_results(self, out)
        self.evaluation.save(out / "evaluation")
        self.mechanism.save(out / "mechanism")
        self.importance.save(out / "step-importance")
        self.ipg_scores.save(out / "ipg_scores.pt")
        return out

    @classmethod
    def load(cls, out: str | Path) -> TourResult:
        """Read a folder written by :meth:`save`."""
        from reasonlens.attribution.ipg import Attribution
        from reasonlens.evaluate import EvalResult
        from reasonlens.importance.study import StepImportanceResult
        from reasonlens.patching.mechanism import MechanismResult

        data = read_results(out, "TourResult", ("config", "models", "steering", "seconds"))
        return cls(config=TourConfig.from_dict(data["config"]), models=data["models"],
                   evaluation=EvalResult.load(result_part(out, "evaluation", "TourResult")),
                   mechanism=MechanismResult.load(result_part(out, "mechanism", "TourResult")),
                   ipg_scores=Attribution.load(result_part(out, "ipg_scores.pt", "TourResult")),
                   steering=data["steering"],
                   importance=StepImportanceResult.load(result_part(out, "step-importance", "TourResult")),
                   timings=data["seconds"])


def model_with_role(role: str) -> str:
    """The name of the shipped model with ``role`` (``"main"``, ``"headroom"``, ``"second-seed"``)."""
    from reasonlens.model import list_models

    for info in list_models():
        if info.role == role:
            return info.name
    raise ReasonlensError(f"no shipped model has the role {role!r}; the tour needs the shipped zoo (reasonlens "
                          "models lists it; build it with `reasonlens train --zoo --install`)")


def run_tour(config: TourConfig | None = None, *, progress: bool = False,
             models: dict[str, TransformerBridge] | None = None) -> TourResult:
    """Run every section on the shipped main and headroom models (or on ``models``: ``{"main": ..., "headroom":
    ...}``, loaded ones by role)."""
    from reasonlens.model import load_model

    c = config or TourConfig()
    names = {"main": model_with_role("main"), "headroom": model_with_role("headroom")}
    loaded = dict(models or {})
    for role, name in names.items():
        if role not in loaded:
            loaded[role] = load_model(name)
    timings: dict[str, float] = {}

    def timed(name: str, run):
        if progress:
            print(f"[tour] {name} ...", flush=True)
        start = time.time()
        value = run()
        timings[name] = time.time() - start
        return value

    mechanism = timed("mechanism", lambda: _mechanism(loaded["main"], names["main"], c, progress))
    scores, steering = timed("ipg", lambda: _ipg(loaded["headroom"], c, progress))
    importance = timed("step importance", lambda: _importance(loaded["main"], names["main"], c, progress))
    evaluation = timed("evaluation", lambda: _evaluation(loaded["main"], names["main"], c, progress))
    return TourResult(config=c, models=names, evaluation=evaluation, mechanism=mechanism, ipg_scores=scores,
                      steering=steering, importance=importance, timings=timings)


def _mechanism(model: TransformerBridge, name: str, c: TourConfig, progress: bool) -> MechanismResult:
    from reasonlens.patching.mechanism import MechanismConfig, analyze_mechanism

    config = MechanismConfig(n_examples=c.mechanism_examples, subtasks=c.mechanism_subtasks, few_shot=0,
                             n_horizon=0, n_conflict=c.conflict_examples, n_relation=c.relation_examples,
                             relation_seeds=(c.seed,),
                             batch_size=c.batch_size)
    return analyze_mechanism(model, config, model_name=name, progress=progress)


def _ipg(model: TransformerBridge, c: TourConfig, progress: bool) -> tuple[Attribution, dict[str, Any]]:
    from reasonlens.attribution import IntegratedPolicyGradient, IPGConfig, RandomAttribution, steer
    from reasonlens.generation import PromptPrefill
    from reasonlens.ontology import format_prompt, generate

    layers = tuple(range(model.cfg.n_layers))
    evaluation = generate(c.ipg_eval, kind="fictional", hops=3, seed=7000 + c.seed)
    held_out = {format_prompt(e) for e in evaluation}
    drawn = generate(c.ipg_support, kind="fictional", hops=3, seed=8000 + c.seed)
    support = [e for e in drawn if format_prompt(e) not in held_out]
    if not support:
        raise ReasonlensError("every IPG support question is also an evaluation question; change the seed")
    scores = IntegratedPolicyGradient(model, IPGConfig(component="head", layers=layers, steps=c.ipg_steps,
                                                       n_samples=c.ipg_samples, seed=c.seed)).attribute(
        support, progress=progress)
    if not scores.n_informative:
        raise ReasonlensError(f"all {len(support)} IPG support groups got equal rewards, so correctness gives IPG no "
                              "signal; use more support questions (ipg_support)")

    prefill = PromptPrefill()  # each head set's prompt passes start at its first layer

    def bits(selection=None) -> str:
        return steer(model, evaluation, selection, 0.0, prefill=prefill).bits()

    random_sets = [RandomAttribution(model, component="head", layers=layers, seed=1000 * c.seed + i).attribute()
                   for i in range(c.random_sets)]
    steering = {"original": bits(), "n_support": len(support), "support_dropped": len(drawn) - len(support),
                "ipg": {str(p): bits(scores.top(p)) for p in c.ipg_p},
                "random": {str(p): [bits(r.top(p)) for r in random_sets] for p in c.ipg_p}}
    return scores, steering


def _importance(model: TransformerBridge, name: str, c: TourConfig, progress: bool) -> StepImportanceResult:
    from reasonlens.importance import ProbeConfig
    from reasonlens.importance.study import StepImportanceConfig, run_step_importance_study

    config = StepImportanceConfig(hops=(2, 3), n_per_cell=c.importance_per_cell, source="gold",
                                  validation_per_cell=c.importance_per_cell, probe=ProbeConfig(seeds=(42,)), seed=c.seed)
    return run_step_importance_study(model, config, model_name=name, progress=progress)


def _evaluation(model: TransformerBridge, name: str, c: TourConfig, progress: bool) -> EvalResult:
    from reasonlens.evaluate import EvalConfig, evaluate
    from reasonlens.model import model_info

    info = model_info(name)
    return evaluate(model, EvalConfig(n_per_cell=c.eval_per_cell, batch_size=c.batch_size, closed_book=False),
                    model_name=name, train_question_seeds=info.train_question_seeds if info else None,
                    progress=progress)


def _interval(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['accuracy']:.2f} [{low:.2f}, {high:.2f}]"


def tour_report(result: TourResult, main_model: TransformerBridge | None = None) -> HtmlReport:
    """The tour's page: each section's figures, two sentences on what they show, and the full recipe's command
    (an attention view of the top mover heads when ``main_model`` is given).

    >>> from reasonlens.tour import TourResult
    >>> tour_report(TourResult.load("out/demo")).save("out/demo/report.html")  # doctest: +SKIP
    """
    from reasonlens import plot
    from reasonlens.reports.html import HtmlReport

    c = result.config
    mechanism = result.mechanism
    done = mechanism.analysed()
    report = HtmlReport("reasonlens: a tour of chain-of-thought interpretability")
    total = sum(result.timings.values())
    report.paragraph(
        f"Every method of the toolkit on the shipped reference models ({result.models['main']}, and "
        f"{result.models['headroom']} for attribution), each at a reduced size stated in its section, "
        f"in {total / 60:.1f} minutes. Each section names the recipe that runs it at full size and the page "
        "that explains it. The reference models are 6-layer Llama-style models trained by reasonlens on generated "
        "ontology questions; they are far smaller than the papers' models (docs/model-card.md).")

    report.heading("1. Which heads carry each step of the chain (Dutta et al.)")
    report.paragraph(
        "Activation patching: each head's clean output is written into a run whose source sentence was corrupted; "
        "the score is the share of the clean next-token distribution it restores (normalised KL, 1 = all). The "
        f"subtasks are {', '.join(s.name for s in mechanism.subtasks)}, on {c.mechanism_examples} 2-hop questions "
        f"each (the recipe: all 11 subtasks, few-shot and horizon conditions). Each panel has its own colour "
        "scale, stated in its title; cells beyond it are marked ◆.")
    if done:
        report.figure(plot.head_heatmap({s.name: s.head_scores for s in done}, title="normalised KL restored"))
        report.paragraph(
            "Circuit sufficiency: keep the k best heads, mean-ablate the rest over false-ontology prompts, and "
            "count how often the model still predicts what the full model does. Then the heads' roles: answer "
            "writers (the head's output alone, read through the unembedding, favours the answer) and movers "
            "(attention from the last position to the answer's source token).")
        report.figure(plot.circuit_curves({s.name: s.circuit for s in done}))
        report.figure(plot.head_heatmap({**{f"writer, {s.name}": s.roles.writer for s in done[-1:]},
                                         **{f"mover, {s.name}": s.roles.mover for s in done[-1:]}},
                                        title="head roles"))
        first = next((s for s in done if s.flow is not None), None)
        if first is not None:
            report.heading("2. Where the answer comes from: pathways and the phase shift")
            report.paragraph(
                f"The pathway tree of one {first.name} example: from the prediction at the last position, the "
                "circuit heads that write it, the positions they read, recursively; a source in the question and "
                "one in the chain written so far are the paper's parallel pathways.")
            report.figure(plot.pathway_graph(first.flow, 0, tokens=first.example_tokens))
            if main_model is not None and first.example_ids:
                report.paragraph("Attention of the top mover heads on that example (hover a token):")
                report.paragraph(plot.attention_view(main_model, first.example_ids, first.roles.top_heads("mover", 3)),
                                 raw_html=True)
    if mechanism.prior is not None:
        report.paragraph(
            f"Logit lens on {c.conflict_examples} false-ontology questions whose context contradicts what the model "
            "learned first: the layer where the in-context answer overtakes the prior one is the paper's mid-layer "
            "phase shift.")
        report.figure(plot.prior_context_curves(mechanism.prior))
    if mechanism.relations is not None:
        report.paragraph(
            f"Relation probes on {c.relation_examples} questions: from the residual streams at two words of the "
            "context, a probe per layer tells whether the context relates them, negates the relation or leaves them "
            "unrelated; the paper finds the relations decodable in the early layers.")
        report.figure(plot.relation_probe_curves(mechanism.relations))
    _recipe(report, MECHANISM_COMMAND, "docs/cot-mechanism.md")

    table = result.ipg_table()
    report.heading("3. Which heads a reasoning outcome depends on (Integrated Policy Gradient)")
    report.paragraph(
        f"IPG attributes correctness to every head of {result.models['headroom']} (an under-trained checkpoint "
        f"that answers {_interval(table['original'])} of {c.ipg_eval} held-out 3-hop questions, so there is "
        f"something to explain), from {result.steering['n_support']} support "
        f"questions with {c.ipg_samples} sampled chains each ({result.ipg_scores.n_informative} carry a signal), "
        f"q = {c.ipg_steps}. Suppressing the top heads should hurt more than suppressing random heads of the same "
        f"number ({c.random_sets} random sets per size; the recipe: 3 attribution seeds, 300 questions, five "
        "baselines and the paper's ablations).")
    report.figure(plot.head_heatmap(result.ipg_scores.mean(), title="IPG score of each head"))
    curves = {m: {p: table[m][str(p)]["accuracy"] for p in c.ipg_p} for m in ("ipg", "random")}
    intervals = {m: {p: table[m][str(p)]["ci95"] for p in c.ipg_p} for m in ("ipg", "random")}
    report.figure(plot.accuracy_vs_p(curves, table["original"]["accuracy"], intervals=intervals,
                                     title="suppression (gamma = 0) of p heads"))
    report.table([[p, _interval(table["ipg"][str(p)]), _interval(table["random"][str(p)]),
                   _difference(table["ipg_minus_random"][str(p)])] for p in c.ipg_p],
                 header=["heads suppressed", "IPG top heads", "random heads", "IPG minus random [95%], p"])
    _recipe(report, IPG_COMMAND, "docs/ipg.md")

    report.heading("4. Which steps of a chain matter (step importance)")
    importance = result.importance
    suite = next(iter(importance.suites.values()), None)
    report.paragraph(
        "A step is removable when the chain without it still reaches the answer (sufficiency after the answer-now "
        "suffix, with the study's True/False labelling); a probe on the model's activations at each step predicts "
        f"it. Below, chains shaded by the probe's P(removable) and underlined by their label ("
        f"{c.importance_per_cell} gold chains per cell of fictional / false ontologies with 2 and 3 hops; the "
        "recipe: the model's own greedy chains, 100 per cell, 60 gold validation chains per cell, hops 2-4, three "
        "probe seeds, controls with permutation tests and a second model).")
    if suite is None:
        report.paragraph(f"No probes were trained: {'; '.join(importance.skipped.values())}.")
    else:
        labels = {(ch, i): label for ch, i, label in suite.steps.items}
        for ch, (chain, probability) in enumerate(zip(suite.steps.chains[:2], suite.removable_probability)):
            report.paragraph(plot.chain_importance(chain.steps, probability,
                                                   [labels.get((ch, i)) for i in range(len(chain))], legend=ch == 0),
                             raw_html=True)
        probes = importance.summary()["probe_accuracy"]
        report.table([[name.replace("_", " "), value] for name, value in probes.items()],
                     header=["probe or control", "held-out accuracy"])
    _recipe(report, IMPORTANCE_COMMAND, "docs/step-importance.md")

    report.heading("5. How well the model reasons")
    metrics = result.evaluation.metrics()
    report.paragraph(f"Greedy decoding of {c.eval_per_cell} questions per cell: label accuracy / proof accuracy "
                     "(the chain is the gold proof, step by step).")
    hops = sorted({h for cells in metrics["label_accuracy"].values() for h in cells}, key=lambda h: (len(h), h))
    report.table([[kind, *[f"{cells[h]:.2f} / {metrics['proof_accuracy'][kind][h]:.2f}" for h in hops]]
                  for kind, cells in metrics["label_accuracy"].items()],
                 header=["ontology", *[f"{h} hops" for h in hops]])
    _recipe(report, EVAL_COMMAND, "docs/models-and-decoding.md")
    report.paragraph("Seconds per section: " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items())
                     + ". Reload the numbers with reasonlens.tour.TourResult.load(folder).")
    return report


def _difference(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['difference']:+.2f} [{low:+.2f}, {high:+.2f}], p = {entry['p_value']:.2g}"


def _recipe(report: HtmlReport, command: str, doc: str) -> None:
    report.paragraph(f"Full size: <code>{command}</code> &middot; explained in <code>{doc}</code>", raw_html=True)

"""The chain-of-thought mechanism study of Dutta et al. (TMLR 2024) in one call, on any model.

For every subtask of a k-hop chain (:mod:`reasonlens.patching.subtasks`): clean / corrupted pairs and what
each filter dropped (:class:`PairStats`: switch rate, KL_noise, class balance), per-head patching scores
(clean ``z`` into the corrupted run at all positions, normalised KL as a ratio of batch means), circuit
sufficiency by mean ablation over false-ontology prompts, head roles, and the pathways of the information
flow, at 0 shots and again with demonstrations; once per model: the horizon experiment
(:mod:`reasonlens.patching.horizon`), the prior-vs-context logit lens on false ontologies and the relation
probes.

>>> MechanismConfig().ordering, MechanismConfig().normalize, MechanismConfig().pair_filter
('preorder', 'batch', 'switched')

``reasonlens run cot-mechanism --model NAME --out DIR`` runs :func:`analyze_mechanism` and writes
``DIR/results.json`` (:meth:`MechanismResult.summary`), the per-analysis results and ``DIR/report.html``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check

import torch

from reasonlens.errors import ReasonlensError
from reasonlens.results import ConfigDict, read_results, result_part, write_results
from reasonlens.resume import StudyCheckpoints
from reasonlens.validation import check_int, check_int_list, load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PAIR_FILTERS: tuple[str, ...] = ("switched", "corrupted_answer")


@no_type_check  # checked by check(), so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass
class MechanismConfig(ConfigDict):
    """Sizes and choices of the study.

    - ``subtasks``: indices into the ``hops``-hop layout (default: all). ``seed`` draws the questions
      (generator seeds ``reasonlens-{seed}-{i}``, disjoint from the reference models' training questions).
    - ``ordering``: context order of the questions; ``"preorder"`` is Dutta et al.'s (property rule, "is a"
      rule, entity fact).
    - ``normalize``: ``"batch"`` scores a head by Dutta et al.'s ratio of means, (mean KL_noise - mean
      KL_patched) / mean KL_noise; ``"example"`` by the mean of per-example ratios.
    - ``pair_filter``: the pairs scored, of those whose clean run predicts the answer: ``"switched"`` (the
      corrupted run's argmax is another token) or ``"corrupted_answer"`` (it is the corrupted word, the authors'
      filter). The label subtask's pairs are then balanced by class (True / False).
    - ``few_shot``: demonstrations per prompt in the few-shot condition (0 leaves it out), run on
      ``n_few_shot`` questions per subtask; ``n_horizon`` questions for the horizon experiment (0: left out).
    """

    hops: int = 2
    n_examples: int = 48
    subtasks: tuple[int, ...] | None = None
    seed: int = 2024
    ordering: str = "preorder"
    normalize: str = "batch"
    pair_filter: str = "switched"
    n_reference: int = 48
    n_trace: int = 8
    few_shot: int = 3
    n_few_shot: int = 24
    n_horizon: int = 24
    n_conflict: int = 800
    n_relation: int = 120
    relation_seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 64

    def check(self) -> None:
        """Raise :class:`ReasonlensError` for a field of the wrong type or out of range."""
        check_int(self.hops, "hops", low=1)
        check_int(self.n_examples, "n_examples", low=2)
        check_int_list(self.subtasks, "subtasks", low=0, optional=True, example="(0, 5) (or None for all)")
        check_int(self.seed, "seed")
        if not isinstance(self.normalize, str) or self.normalize not in ("batch", "example"):
            raise ReasonlensError(f"normalize must be 'batch' or 'example', not {self.normalize!r}")
        if not isinstance(self.pair_filter, str) or self.pair_filter not in PAIR_FILTERS:
            raise ReasonlensError(f"pair_filter must be one of {PAIR_FILTERS}, not {self.pair_filter!r}")
        for name in ("n_reference", "n_conflict", "n_relation", "batch_size"):
            check_int(getattr(self, name), name, low=1)
        for name in ("n_trace", "few_shot", "n_few_shot", "n_horizon"):
            check_int(getattr(self, name), name, low=0)
        check_int_list(self.relation_seeds, "relation_seeds", example="(0, 1, 2)")
        if self.few_shot and self.n_few_shot and self.n_few_shot <= self.few_shot:
            raise ReasonlensError(f"n_few_shot ({self.n_few_shot}) must exceed few_shot ({self.few_shot}): the "
                                  "demonstrations of a question are other questions of the set")


@dataclass
class PairStats:
    """What happened to one subtask's pairs, filter by filter.

    Of ``n_examples`` questions, ``n_skipped`` had no fitting corruption, ``n_dropped`` a clean run that does
    not predict the answer; of the rest (the candidates), the corrupted run switched its argmax away from the
    answer in ``n_switched`` and wrote the corrupted word in ``n_corrupted_answer``; ``n_filtered`` did not
    pass the pair filter, ``n_unbalanced`` were left out to balance the label's classes; ``n_kept`` remain.
    ``kl_noise``: KL(P_clean || P_corrupted) of each candidate; ``classes``: kept pairs per clean label.
    """

    n_examples: int
    n_skipped: int
    n_dropped: int
    n_switched: int
    n_corrupted_answer: int
    n_filtered: int
    n_unbalanced: int
    n_kept: int
    kl_noise: list[float]
    classes: dict[str, int]

    @property
    def n_candidates(self) -> int:
        return len(self.kl_noise)

    def summary(self) -> dict[str, Any]:
        from reasonlens.stats import proportion, quantiles

        return {"questions": self.n_examples, "skipped_uncorruptible": self.n_skipped,
                "dropped_clean_wrong": self.n_dropped, "candidates": self.n_candidates,
                "switch": proportion(self.n_switched, self.n_candidates),
                "corrupted_answer": proportion(self.n_corrupted_answer, self.n_candidates),
                "kl_noise": quantiles(self.kl_noise), "dropped_by_filter": self.n_filtered,
                "dropped_to_balance": self.n_unbalanced, "kept": self.n_kept, "classes": self.classes}


@dataclass
class SubtaskAnalysis:
    """Everything measured on one subtask in one condition (0-shot or few-shot)."""

    subtask: dict[str, Any]
    pairs: PairStats
    head_scores: Any = None  # PatchSweep [example, layer, 1, head]
    circuit: Any = None  # CircuitResult
    roles: Any = None  # HeadRoles
    flow: Any = None  # FlowResult
    labels: list[bool] = field(default_factory=list)  # each kept pair's clean label
    kept_indices: list[int] = field(default_factory=list)  # the kept pairs' questions (indices into the set)
    example_tokens: list[str] = field(default_factory=list)
    example_ids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.subtask["name"]

    @property
    def n_kept(self) -> int:
        return self.pairs.n_kept

    def agreement_by_class(self) -> dict[str, dict[str, float | None]]:
        """Circuit agreement per clean label at every circuit size of the curve: ``{"True": {"k=0": ...}}``."""
        matches = self.circuit.matches
        out = {}
        for name, value in (("True", True), ("False", False)):
            rows = [i for i, label in enumerate(self.labels) if label == value]
            out[name] = {size: (float(matches.values[rows, j].mean()) if rows else None)
                         for j, size in enumerate(matches.labels["size"])}
        return out


@dataclass
class MechanismResult:
    """The study's results; :meth:`summary` is the ``results.json`` content."""

    model: str
    config: MechanismConfig
    subtasks: list[SubtaskAnalysis]
    few_shot: list[SubtaskAnalysis]
    horizon: Any  # HorizonResult or None
    prior: Any  # PriorContextResult
    relations: Any  # RelationProbeResult
    n_layers: int
    n_heads: int

    def analysed(self) -> list[SubtaskAnalysis]:
        return [s for s in self.subtasks if s.head_scores is not None]

    def summary(self) -> dict[str, Any]:
        """Headline numbers: ``circuit_head_fraction_90`` (per subtask and ``"mean"``), ``writer_share_late``,
        ``crossover_relative_depth``, ``pathways`` (per subtask: counts by source), ``pairs`` (per subtask:
        switch rate, KL_noise distribution, filter counts, class balance), ``label_agreement_by_class``,
        ``few_shot`` and ``horizon``."""
        done = self.analysed()
        fractions = {s.name: s.circuit.head_fraction_90 for s in done}
        reached = [f for f in fractions.values() if f is not None]
        shares = {s.name: s.roles.writer_share_late() for s in done}
        mover_depth = {s.name: _mean_depth(s.roles, "mover", self.n_layers) for s in done}
        writer_depth = {s.name: _mean_depth(s.roles, "writer", self.n_layers) for s in done}
        label = [s for s in done if s.subtask["slot"] == "label"]
        return {
            "model": self.model,
            "config": self.config.to_dict(),
            "circuit_head_fraction_90": {**fractions, "mean": sum(reached) / len(reached) if reached else None},
            "circuit_band": {s.name: {"heads": s.circuit.band.size, "agreement": s.circuit.band.agreement,
                                      "half_width": s.circuit.band.half_width} for s in done},
            "writer_share_late": sum(shares.values()) / len(shares) if shares else None,
            "writer_share_late_by_subtask": shares,
            "writer_mean_relative_depth": writer_depth,
            "mover_mean_relative_depth": mover_depth,
            "head_score_mean": {s.name: float(s.head_scores.mean().mean()) for s in done},
            "label_agreement_by_class": label[0].agreement_by_class() if label else None,
            "crossover_layer": self.prior.crossover_layer if self.prior is not None else None,
            "crossover_relative_depth": self.prior.crossover_relative_depth if self.prior is not None else None,
            "context_win_fraction_by_layer": (self.prior.context_win_fraction().tolist()
                                              if self.prior is not None else None),
            "relation_probe_accuracy": ({probe: self.relations.mean("accuracy")[i].tolist()
                                         for i, probe in enumerate(self.relations.probes)}
                                        if self.relations is not None else None),
            "pathways": _pathways(done),
            "pairs": {s.name: s.pairs.summary() for s in self.subtasks},
            "n_pairs": {"kept": sum(s.n_kept for s in self.subtasks),
                        "candidates": sum(s.pairs.n_candidates for s in self.subtasks),
                        "dropped_clean_wrong": sum(s.pairs.n_dropped for s in self.subtasks),
                        "skipped_uncorruptible": sum(s.pairs.n_skipped for s in self.subtasks),
                        "dropped_by_filter": sum(s.pairs.n_filtered for s in self.subtasks),
                        "dropped_to_balance": sum(s.pairs.n_unbalanced for s in self.subtasks)},
            "few_shot": ({"demonstrations": self.config.few_shot,
                          "pathways": _pathways([s for s in self.few_shot if s.head_scores is not None]),
                          "circuit_band": {s.name: {"heads": s.circuit.band.size,
                                                    "agreement": s.circuit.band.agreement}
                                           for s in self.few_shot if s.head_scores is not None},
                          "pairs": {s.name: s.pairs.summary() for s in self.few_shot}}
                         if self.few_shot else None),
            "horizon": self.horizon.summary() if self.horizon is not None else None,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``results.json`` (:func:`~reasonlens.results.write_results`), ``analyses.json`` (what :meth:`load`
        needs besides the tensors) and every analysis (``.pt`` files) under ``out_dir``."""
        out = write_results(self, out_dir)
        (out / "analyses.json").write_text(json.dumps({
            "class": "MechanismResult", "model": self.model, "config": self.config.to_dict(), "n_layers": self.n_layers,
            "n_heads": self.n_heads, "subtasks": [_analysis_record(s) for s in self.subtasks],
            "few_shot": [_analysis_record(s) for s in self.few_shot]}, indent=1))
        for prefix, analyses in (("subtask", self.subtasks), ("few_shot_subtask", self.few_shot)):
            for s in analyses:
                if s.head_scores is not None:
                    for part in _ANALYSIS_PARTS:
                        getattr(s, part).save(out / _analysis_file(prefix, s.subtask["index"], part))
        for name, file in _STUDY_FILES.items():
            if getattr(self, name) is not None:
                getattr(self, name).save(out / file)
        return out


    @classmethod
    def load(cls, out_dir: str | Path) -> MechanismResult:
        """Read a folder written by :meth:`save`.

        >>> result = MechanismResult.load("out/cot")  # doctest: +SKIP
        """
        from reasonlens.patching.circuit import CircuitResult
        from reasonlens.patching.engine import PatchSweep
        from reasonlens.patching.flow import FlowResult
        from reasonlens.patching.heads import HeadRoles
        from reasonlens.patching.horizon import HorizonResult
        from reasonlens.patching.lens import PriorContextResult
        from reasonlens.patching.relations import RelationProbeResult

        summary = read_results(out_dir, "MechanismResult",
                               ("horizon", "context_win_fraction_by_layer", "relation_probe_accuracy"))
        out = Path(out_dir)
        data = load_saved(result_part(out, "analyses.json", "MechanismResult"), "MechanismResult",
                          ("model", "config", "n_layers", "n_heads", "subtasks", "few_shot"), fmt="json",
                          expect_class="MechanismResult")
        config = MechanismConfig.from_dict(data["config"])

        part_types = {"head_scores": PatchSweep, "circuit": CircuitResult, "roles": HeadRoles, "flow": FlowResult}

        def analyses(records: list[dict[str, Any]], prefix: str) -> list[SubtaskAnalysis]:
            done = []
            for record in records:
                analysis = SubtaskAnalysis(record["subtask"], PairStats(**record["pairs"]), labels=record["labels"],
                                           kept_indices=record["kept_indices"],
                                           example_tokens=record["example_tokens"], example_ids=record["example_ids"])
                if record["analysed"]:
                    for part in _ANALYSIS_PARTS:
                        setattr(analysis, part, part_types[part].load(result_part(
                            out, _analysis_file(prefix, record["subtask"]["index"], part), "MechanismResult")))
                done.append(analysis)
            return done

        study_types = {"horizon": HorizonResult, "prior": PriorContextResult, "relations": RelationProbeResult}
        ran = {"horizon": summary["horizon"], "prior": summary["context_win_fraction_by_layer"],
               "relations": summary["relation_probe_accuracy"]}  # None: the analysis was left out
        parts = {name: study_types[name].load(result_part(out, file, "MechanismResult"))
                 if ran[name] is not None else None for name, file in _STUDY_FILES.items()}
        return cls(data["model"], config, analyses(data["subtasks"], "subtask"),
                   analyses(data["few_shot"], "few_shot_subtask"), **parts, n_layers=data["n_layers"],
                   n_heads=data["n_heads"])


# What a saved study holds besides its JSON: each analysed subtask's results, and the once-per-model analyses.
_ANALYSIS_PARTS: tuple[str, ...] = ("head_scores", "circuit", "roles", "flow")
_STUDY_FILES: dict[str, str] = {"horizon": "horizon.pt", "prior": "prior_vs_context.pt",
                                "relations": "relation_probes.pt"}


def _analysis_file(prefix: str, index: int, part: str) -> str:
    return f"{prefix}{index:02d}_{part}.pt"


def _analysis_record(analysis: SubtaskAnalysis) -> dict[str, Any]:
    return {"subtask": analysis.subtask, "pairs": asdict(analysis.pairs), "labels": analysis.labels,
            "kept_indices": analysis.kept_indices, "example_tokens": analysis.example_tokens,
            "example_ids": analysis.example_ids, "analysed": analysis.head_scores is not None}


def _pathways(done: list[SubtaskAnalysis]) -> dict[str, dict[str, int]]:
    out = {}
    for s in done:
        counts = s.flow.counts_by_source()
        out[s.name] = {src: counts.get(src, 0) for src in ("question", "cot", "few_shot")}
    return out


def _mean_depth(roles, role: str, n_layers: int, top: int = 4) -> float:
    layers = [int(h[1:].split("H")[0]) for h in roles.top_heads(role, k=top)]
    return sum((l + 0.5) / n_layers for l in layers) / len(layers)


def _pair_effects(model: TransformerBridge, pairs, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: KL(P_clean || P_corrupted) at the last position, whether the corrupted run's argmax left the
    answer, and whether it is the corrupted word."""
    from reasonlens.runtime import run_padded

    kls, argmaxes = [], []
    for start in range(0, len(pairs), batch_size):
        rows = slice(start, start + batch_size)
        clean, corr = (torch.log_softmax(run_padded(model, tokens[rows], pairs.attention_mask[rows],
                                                    last_only=True)[:, -1].float().cpu(), -1)
                       for tokens in (pairs.clean, pairs.corrupted))
        kls.append((clean.exp() * (clean - corr)).sum(-1))
        argmaxes.append(corr.argmax(-1))
    kl, top = (torch.cat(kls), torch.cat(argmaxes)) if kls else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    return kl, top != pairs.answer, top == pairs.corrupted_answer


def _select(pairs, switched: torch.Tensor, follows: torch.Tensor, config: MechanismConfig, label: bool
            ) -> tuple[torch.Tensor, int]:
    """Indices of the pairs to score, and how many passing the filter were left out to balance the classes."""
    passed = (switched if config.pair_filter == "switched" else follows).nonzero().flatten().tolist()
    if not label:
        return torch.tensor(passed, dtype=torch.long), 0
    by_class = {c: [i for i in passed if pairs.examples[i].label == c] for c in (True, False)}
    n = min(len(v) for v in by_class.values())
    keep = sorted(by_class[True][:n] + by_class[False][:n])
    return torch.tensor(keep, dtype=torch.long), len(passed) - len(keep)


def _analyse_subtask(model: TransformerBridge, examples, reference, index: int, task, config: MechanismConfig, shots: int
                     ) -> SubtaskAnalysis:
    from reasonlens.patching.circuit import circuit_curve, mean_head_activations
    from reasonlens.patching.engine import patch
    from reasonlens.patching.flow import trace_pathways
    from reasonlens.patching.heads import head_roles
    from reasonlens.patching.subtasks import subtask_pairs

    info = {"index": index, "name": task.name, "kind": task.kind, "role": task.role, "slot": task.slot}
    pairs = subtask_pairs(model, examples, index, seed=config.seed, skip_uncorruptible=True, demonstrations=shots,
                          batch_size=config.batch_size)
    kl, switched, follows = _pair_effects(model, pairs, config.batch_size)
    keep, unbalanced = _select(pairs, switched, follows, config, task.slot == "label")
    labels = [pairs.examples[i].label for i in keep.tolist()]
    stats = PairStats(n_examples=len(examples), n_skipped=pairs.n_skipped, n_dropped=pairs.n_dropped,
                      n_switched=int(switched.sum()), n_corrupted_answer=int(follows.sum()),
                      n_filtered=len(pairs) - len(keep) - unbalanced, n_unbalanced=unbalanced, n_kept=len(keep),
                      kl_noise=kl.tolist(), classes={"True": sum(labels), "False": len(labels) - sum(labels)})
    analysis = SubtaskAnalysis(info, stats, labels=labels,
                               kept_indices=[pairs.kept_indices[i] for i in keep.tolist()])
    if len(keep) < 2:
        return analysis
    clean, corrupted, mask = pairs.clean[keep], pairs.corrupted[keep], pairs.attention_mask[keep]
    answer, source = pairs.answer[keep], pairs.source_position[keep]
    regions = [pairs.regions[i] for i in keep.tolist()]
    analysis.example_tokens = pairs.str_tokens[int(keep[0])]
    analysis.example_ids = clean[0][mask[0].bool()].tolist()
    analysis.head_scores = patch(model, clean, corrupted, attention_mask=mask, metric="kl", site="z",
                                 positions="all", normalize=config.normalize, batch_size=config.batch_size,
                                 progress=False)
    ref = subtask_pairs(model, reference, index, seed=config.seed, skip_uncorruptible=True, demonstrations=shots,
                        batch_size=config.batch_size)
    ref_tokens, ref_mask = (ref.clean, ref.attention_mask) if len(ref) else (clean, mask)
    means = mean_head_activations(model, ref_tokens, ref_mask, batch_size=config.batch_size)
    scores = analysis.head_scores.mean()[:, 0]
    # The few-shot condition is for the pathways (traced in the band circuit); its curve is only k = 0 and all.
    total = model.cfg.n_layers * model.cfg.n_heads
    analysis.circuit = circuit_curve(model, clean, mask, scores, means, sizes=None if shots == 0 else [0, total],
                                     batch_size=config.batch_size)
    analysis.roles = head_roles(model, clean, mask, answer, source, batch_size=config.batch_size)
    n_trace = min(config.n_trace, len(keep))
    analysis.flow = trace_pathways(model, clean[:n_trace], mask[:n_trace], regions[:n_trace],
                                   circuit=analysis.circuit.band.keep, means=means)
    return analysis


def analyze_mechanism(model: TransformerBridge, config: MechanismConfig | None = None, *, model_name: str = "model",
                      progress: bool = True, checkpoint_dir: str | Path | None = None) -> MechanismResult:
    """Run the whole study on ``model`` (a TransformerBridge with a tokenizer). With ``checkpoint_dir``, each
    analysis (a subtask in a condition, the horizon, the prior-vs-context lens, the relation probes) is saved there
    as it finishes, and a rerun with the same configuration and model resumes (:mod:`reasonlens.resume`)."""
    from tqdm.auto import tqdm

    from reasonlens.model import require_tokenizer
    from reasonlens.ontology import generate
    from reasonlens.patching.horizon import HorizonConfig, measure_horizon
    from reasonlens.patching.lens import prior_vs_context
    from reasonlens.patching.relations import relation_probes
    from reasonlens.patching.subtasks import chain_subtasks

    config = config or MechanismConfig()
    config.check()
    require_tokenizer(model)  # fail early, with the fix in the message
    saved = StudyCheckpoints(checkpoint_dir, study="mechanism", config=config, models=(model,),
                             log=print if progress else None)
    layout = chain_subtasks(config.hops)
    chosen = range(len(layout)) if config.subtasks is None else config.subtasks
    bad = [i for i in chosen if not 0 <= i < len(layout)]
    if bad:
        raise ReasonlensError(f"subtasks {bad} out of range: a {config.hops}-hop chain has 0..{len(layout) - 1}")
    gen = dict(hops=config.hops, distractor=False, extra_concepts=0, redundant_step_p=0.0, ordering=config.ordering)
    examples = generate(config.n_examples, kind="fictional", seed=config.seed, **gen)
    reference = generate(config.n_reference, kind="false", seed=config.seed + 1, false_mode="wrong_property", **gen)
    conditions = [(examples, 0)]
    if config.few_shot and config.n_few_shot:
        conditions.append((examples[:config.n_few_shot], config.few_shot))
    runs = [(ex, shots, index) for ex, shots in conditions for index in chosen]
    analyses: dict[int, list[SubtaskAnalysis]] = {0: [], config.few_shot: []}
    for ex, shots, index in tqdm(runs, desc="subtasks (0-shot, then few-shot)", disable=not progress):
        analyses[shots].append(saved.run(f"subtask-{index}-{shots}shot", lambda: _analyse_subtask(
            model, ex, reference, index, layout[index], config, shots)))
    horizon_result = None
    if config.n_horizon:
        horizon_result = saved.run("horizon", lambda: measure_horizon(
            model, generate(config.n_horizon, kind="fictional", seed=config.seed + 4, **gen),
            HorizonConfig(batch_size=config.batch_size), progress=progress))
    conflict = generate(config.n_conflict, kind="false", seed=config.seed + 2, hops=(1, 2, 3))
    prior = saved.run("prior-vs-context", lambda: prior_vs_context(model, conflict, batch_size=config.batch_size))
    relation_examples = generate(config.n_relation, kind="fictional", seed=config.seed + 3, hops=(1, 2, 3))
    relations = saved.run("relations", lambda: relation_probes(model, relation_examples, seeds=config.relation_seeds,
                                                               batch_size=config.batch_size))
    return MechanismResult(model_name, config, analyses[0], analyses[config.few_shot] if config.few_shot else [],
                           horizon_result, prior, relations, model.cfg.n_layers, model.cfg.n_heads)
